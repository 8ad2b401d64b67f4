"""Model download against a real HTTP server on 127.0.0.1: hash, size, resume, mismatch, offline."""
import hashlib
import socket
from dataclasses import replace

import pytest

from engine.errors import Cancelled, EngineError
from engine.models import ModelSpec, cached_weights_path, ensure_weights, is_cached, load_model, resolve_model_ref
from engine.models import registry
from localhub import hub_factory  # noqa: F401  (fixture)


@pytest.fixture
def tiny_spec(tiny_model, monkeypatch):
    """A registry entry whose weights are the tiny model's checkpoint, served by the local hub."""
    spec = ModelSpec("tiny-test", str(tiny_model.config), "test/tiny", "tiny.pt", None, None, "test only",
                     "none", "random weights for tests")
    monkeypatch.setitem(registry.REGISTRY, spec.name, spec)
    return spec


def test_download_verifies_against_published_hash_and_loads(hub_factory, tiny_spec, tiny_model):
    data = tiny_model.checkpoint.read_bytes()
    hub = hub_factory({"/test/tiny/resolve/main/tiny.pt": data})
    seen = []
    path = ensure_weights(tiny_spec, progress=lambda f, m: seen.append(f))
    assert path == cached_weights_path(tiny_spec) and path.read_bytes() == data
    assert (path.parent / "tiny.pt.sha256").read_text().strip() == hashlib.sha256(data).hexdigest()
    assert is_cached(tiny_spec) and seen and max(seen) == pytest.approx(1.0)
    loaded = load_model(resolve_model_ref(name="tiny-test"))
    assert loaded.embed_dim == 32 and loaded.image_size == 32
    before = len(hub.requests)
    ensure_weights(tiny_spec)
    assert len(hub.requests) == before, "a verified cached file is used without asking the hub"


def test_resume_sends_only_the_rest(hub_factory, tiny_spec, tiny_model):
    data = tiny_model.checkpoint.read_bytes()
    hub = hub_factory({"/test/tiny/resolve/main/tiny.pt": data})
    part = cached_weights_path(tiny_spec).with_name("tiny.pt.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])
    path = ensure_weights(tiny_spec)
    assert path.read_bytes() == data
    assert ("GET", "/test/tiny/resolve/main/tiny.pt", "bytes=1000-") in hub.requests
    assert hub.sent == len(data) - 1000


def test_server_without_range_support_restarts(hub_factory, tiny_spec, tiny_model):
    data = tiny_model.checkpoint.read_bytes()
    hub_factory({"/test/tiny/resolve/main/tiny.pt": data}, ranges=False)
    part = cached_weights_path(tiny_spec).with_name("tiny.pt.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 500)
    assert ensure_weights(tiny_spec).read_bytes() == data


def test_hash_from_model_api_when_no_etag(hub_factory, tiny_spec, tiny_model):
    data = tiny_model.checkpoint.read_bytes()
    hub = hub_factory({"/test/tiny/resolve/main/tiny.pt": data}, etag=False)
    ensure_weights(tiny_spec)
    assert any(path.startswith("/api/models/test/tiny") for _, path, _ in hub.requests)


def test_mismatch_deletes_the_file(hub_factory, tiny_spec, tiny_model, monkeypatch):
    data = tiny_model.checkpoint.read_bytes()
    hub_factory({"/test/tiny/resolve/main/tiny.pt": data})
    wrong = replace(tiny_spec, sha256="0" * 64)
    monkeypatch.setitem(registry.REGISTRY, wrong.name, wrong)
    with pytest.raises(EngineError, match="failed the checksum.*deleted"):
        ensure_weights(wrong)
    assert not cached_weights_path(wrong).exists() and not is_cached(wrong)


def test_offline_says_where_to_put_the_file_and_accepts_it(tiny_spec, tiny_model, monkeypatch, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RSCLIP_HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("RSCLIP_CACHE_DIR", str(tmp_path / "cache"))
    target = cached_weights_path(tiny_spec)
    with pytest.raises(EngineError, match="offline") as err:
        ensure_weights(tiny_spec, timeout=5)
    assert str(target) in str(err.value) and "tiny.pt" in str(err.value)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(tiny_model.checkpoint.read_bytes())
    assert ensure_weights(tiny_spec, timeout=5) == target and is_cached(tiny_spec)


def test_cancel_keeps_the_partial_file_for_resume(hub_factory, tiny_spec, tiny_model):
    data = tiny_model.checkpoint.read_bytes() * 3
    hub_factory({"/test/tiny/resolve/main/tiny.pt": data})
    with pytest.raises(Cancelled):
        ensure_weights(tiny_spec, cancel=lambda: True)
    assert cached_weights_path(tiny_spec).with_name("tiny.pt.part").exists()
    assert not cached_weights_path(tiny_spec).exists()


def test_unverifiable_weights_are_refused(hub_factory, tiny_spec, tiny_model):
    hub_factory({"/other/resolve/main/x": b""}, etag=False)
    with pytest.raises(EngineError, match="cannot be verified|Cannot download"):
        ensure_weights(tiny_spec)


# -- published artefacts: sizes, zips, and the refusals a user meets through the command line --------------------

SKY = "skyclip-vit-b-32"
SKY_PATH = "/SkyScript/ckpt/SkyCLIP_ViT_B32_top50pct.zip"
MEMBER = "SkyCLIP_ViT_B32_top50pct/epoch_20.pt"


def training_bytes(seed: int = 0) -> bytes:
    """The tiny model saved as open_clip's DDP training script saves a checkpoint (optimizer state included)."""
    import io

    import open_clip
    import torch
    from tinymodel import TINY_CONFIG, training_checkpoint

    torch.manual_seed(seed)
    buffer = io.BytesIO()
    torch.save(training_checkpoint(open_clip.CLIP(**TINY_CONFIG)), buffer)
    return buffer.getvalue()


def make_zip(entries) -> bytes:
    """A zip of ``(name, data)`` entries; data ``("link", target)`` makes a symbolic link entry."""
    import io
    import stat
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries:
            if isinstance(data, tuple):
                info = zipfile.ZipInfo(name)
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, data[1])
            else:
                zf.writestr(zipfile.ZipInfo(name), data)
    return buffer.getvalue()


@pytest.fixture
def tiny_registry(tiny_model, hub_factory, monkeypatch):
    """Serve ``files`` and point the named registry entry at them, built as the tiny model (fast)."""

    def point(name: str, files: dict, **changes):
        hub = hub_factory(files)
        spec = registry.REGISTRY[name]
        if spec.url:
            changes.setdefault("url", hub.endpoint + SKY_PATH)
        spec = replace(spec, arch=str(tiny_model.config), **changes)
        monkeypatch.setitem(registry.REGISTRY, name, spec)
        return spec, hub

    return point


@pytest.fixture
def raster(tmp_path):
    from rasters import noise, write_raster

    return write_raster(tmp_path / "scene.tif", noise(3, 64, 64))


def cli_error(capsys, *argv) -> str:
    """Run the CLI in-process; it must fail with exactly one readable error line and no traceback."""
    from engine.cli import main

    forget_loaded_models()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("rsclip: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def forget_loaded_models():
    """A new process would load the model afresh: drop the in-process caches."""
    from engine.models.cache import ENCODERS

    ENCODERS.clear()


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def test_zip_artefact_extracts_only_its_member_and_trusts_the_first_download(tiny_registry, raster, tmp_path,
                                                                              capsys):
    from engine import jobs
    from engine.cli import main

    checkpoint = training_bytes()
    archive = make_zip([("SkyCLIP_ViT_B32_top50pct/params.txt", b"lr: 1e-9"), ("../evil.pt", b"x"),
                        ("SkyCLIP_ViT_B32_top50pct/link", ("link", str(tmp_path / "pwned"))), (MEMBER, checkpoint)])
    spec, hub = tiny_registry(SKY, {SKY_PATH: archive})
    before = set(files_under(tmp_path))
    assert main(["index", str(raster), "--index", str(tmp_path / "idx"), "--model", SKY, "--tile-size", "32"]) == 0
    folder = cached_weights_path(spec).parent
    assert files_under(folder) == ["SkyCLIP_ViT_B32_top50pct.zip.sha256", "epoch_20.pt", "epoch_20.pt.sha256"]
    assert cached_weights_path(spec).read_bytes() == checkpoint
    new = set(files_under(tmp_path)) - before
    assert all(p.startswith(("cache/", "idx/")) for p in new), new  # nothing else, nowhere else
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "evil.pt").exists()
    assert (folder / "SkyCLIP_ViT_B32_top50pct.zip.sha256").read_text().strip() == hashlib.sha256(archive).hexdigest()
    assert jobs.info(tmp_path / "idx").templates == ("a satellite photo of {}.", "a satellite image of {}")

    # trust on first use: with the checkpoint gone, a different archive is refused against the recorded hash
    cached_weights_path(spec).unlink()
    forget_loaded_models()
    hub.files[SKY_PATH] = make_zip([(MEMBER, training_bytes(seed=1))])
    line = cli_error(capsys, "index", raster, "--index", tmp_path / "idx2", "--model", SKY)
    assert "failed the checksum" in line and hashlib.sha256(archive).hexdigest() in line
    assert not (tmp_path / "idx2").exists()
    hub.files[SKY_PATH] = archive
    assert ensure_weights(spec).read_bytes() == checkpoint


def test_zip_download_resumes(tiny_registry, tmp_path):
    archive = make_zip([(MEMBER, training_bytes())])
    spec, hub = tiny_registry(SKY, {SKY_PATH: archive})
    part = cache_part = tmp_path / "cache" / SKY / "SkyCLIP_ViT_B32_top50pct.zip.part"
    cache_part.parent.mkdir(parents=True)
    part.write_bytes(archive[:5000])
    assert ensure_weights(spec) == cached_weights_path(spec)
    assert ("GET", SKY_PATH, "bytes=5000-") in hub.requests and hub.sent == len(archive) - 5000


@pytest.mark.parametrize("entries, says", [
    ([("SkyCLIP_ViT_B32_top50pct/epoch_19.pt", b"weights")],
     "has no SkyCLIP_ViT_B32_top50pct/epoch_20.pt, so it is not the skyclip-vit-b-32 checkpoint"),
    ([("../SkyCLIP_ViT_B32_top50pct/epoch_20.pt", b"weights")], "a path outside the cache folder"),
    ([("/tmp/epoch_20.pt", b"weights")], "a path outside the cache folder"),
    ([(MEMBER, ("link", "../../../../../../etc/passwd"))], "symbolic link"),
])
def test_a_zip_without_its_member_or_escaping_the_cache_is_refused(entries, says, tiny_registry, raster, tmp_path,
                                                                    capsys):
    spec, _ = tiny_registry(SKY, {SKY_PATH: make_zip(entries)})
    before = set(files_under(tmp_path))
    line = cli_error(capsys, "index", raster, "--index", tmp_path / "idx", "--model", SKY)
    assert says in line and "deleted" in line
    assert set(files_under(tmp_path)) == before, "nothing was extracted or kept, and no index was made"


def test_a_damaged_zip_is_refused(tiny_registry, raster, tmp_path, capsys):
    archive = bytearray(make_zip([(MEMBER, training_bytes())]))
    archive[len(archive) // 2] ^= 0xFF  # a flipped bit inside the stored checkpoint: its CRC-32 no longer matches
    tiny_registry(SKY, {SKY_PATH: bytes(archive)})
    line = cli_error(capsys, "index", raster, "--index", tmp_path / "idx", "--model", SKY)
    assert "SkyCLIP_ViT_B32_top50pct.zip is damaged" in line and "CRC" in line
    tiny_registry(SKY, {SKY_PATH: b"PK\x03\x04 this is no zip"})
    assert "is damaged" in cli_error(capsys, "index", raster, "--index", tmp_path / "idx", "--model", SKY)
    assert not (tmp_path / "idx").exists()


def test_wrong_size_and_damaged_downloads_are_refused(tiny_registry, tiny_model, raster, tmp_path, capsys):
    data = tiny_model.checkpoint.read_bytes()
    name, path = "remoteclip-vit-b-32", "/chendelong/RemoteCLIP/resolve/main/RemoteCLIP-ViT-B-32.pt"
    good = hashlib.sha256(data).hexdigest()
    # the server offers another size than the publisher lists: refused before the download
    tiny_registry(name, {path: data}, size=len(data) + 1, sha256=good)
    line = cli_error(capsys, "index", raster, "--index", tmp_path / "idx", "--model", name)
    assert f"offers {len(data):,} bytes for {name}, but its publisher lists {len(data) + 1:,}" in line
    # a hand-placed file of the wrong size is deleted
    spec, _ = tiny_registry(name, {path: data}, size=len(data), sha256=good)
    cached_weights_path(spec).write_bytes(data[:-10])
    line = cli_error(capsys, "index", raster, "--index", tmp_path / "idx", "--model", name)
    assert f"has {len(data) - 10:,} bytes, but its publisher lists {len(data):,}" in line and "deleted" in line
    assert not cached_weights_path(spec).exists()
    # same size, one byte changed on the way: the checksum fails and the file is deleted
    damaged = bytearray(data)
    damaged[1000] ^= 0x01
    tiny_registry(name, {path: bytes(damaged)}, size=len(data), sha256=good)
    line = cli_error(capsys, "index", raster, "--index", tmp_path / "idx", "--model", name)
    assert "failed the checksum" in line and "deleted" in line and not cached_weights_path(spec).exists()
    assert not (tmp_path / "idx").exists()
