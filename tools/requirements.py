"""Write ``requirements.txt`` (the development environment) from the pins in ``engine/deps/pins.py``.

The installer and the development environment must run the same tested versions; the pins live
in the engine, which ships in the plugin, and this file is derived from them. ``make requirements``
runs this; ``tests/test_project.py`` fails when the two disagree.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.deps.pins import CLUSTER_PINS, DEVELOPMENT_PIN_SET  # noqa: E402 (after the path is set)

HEADER = """# Written by `make requirements` (tools/requirements.py) from engine/deps/pins.py; edit the pins there.
# Pin set "{label}", tested together on {tested_on}.
"""


def render(pins=DEVELOPMENT_PIN_SET) -> str:
    """The requirements file for ``pins``: exact versions, NumPy within the set's range."""
    low, below = pins.numpy_min, pins.numpy_below
    below_text = f"{below[0]}" if below[1] == 0 else f"{below[0]}.{below[1]}"
    lines = [f"{name}=={version}" for name, version in pins.pins.items()]
    lines.append(f"numpy>={low[0]}.{low[1]},<{below_text}")
    lines.append("# Optional, only for `index --dask` (never installed into QGIS):")
    lines += [f"{name}=={version}" for name, version in CLUSTER_PINS.items()]
    return HEADER.format(label=pins.label, tested_on=pins.tested_on) + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "requirements.txt")
    args = parser.parse_args(argv)
    args.out.write_text(render())
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
