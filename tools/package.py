"""Build the plugin zip that QGIS's "Install from ZIP" accepts.

The zip holds one folder, ``rsclip_search/``, with only what the plugin runs: files git
tracks under the plugin's own folders (no tests, benchmarks, caches or build output).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = "rsclip_search"
INCLUDE_TOP = ("engine", "plugin", "ui", "resources")
INCLUDE_FILES = ("__init__.py", "metadata.txt", "LICENSE", "README.md")


def plugin_files(root: Path = ROOT) -> list[Path]:
    """Tracked files that belong in the installed plugin."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=root, capture_output=True, check=True).stdout.decode().split("\0")
    files = []
    for name in filter(None, listed):
        rel = Path(name)
        if not (root / rel).is_file() or "__pycache__" in rel.parts or rel.suffix == ".pyc":
            continue
        if rel.parts[0] in INCLUDE_TOP or (len(rel.parts) == 1 and name in INCLUDE_FILES):
            files.append(rel)
    return sorted(files)


def version(root: Path = ROOT) -> str:
    for line in (root / "metadata.txt").read_text().splitlines():
        if line.startswith("version="):
            return line.split("=", 1)[1].strip()
    raise SystemExit("metadata.txt has no version")


def build(out_dir: Path, root: Path = ROOT) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{PLUGIN_DIR}-{version(root)}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in plugin_files(root):
            zf.write(root / rel, f"{PLUGIN_DIR}/{rel.as_posix()}")
    tmp.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="dist", help="output folder")
    args = parser.parse_args(argv)
    path = build(ROOT / args.out)
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
