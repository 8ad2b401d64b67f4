"""Checkpoint loading: formats, wrong architecture, garbage, and pickles that must not run."""

import pytest
import torch

from engine.errors import EngineError
from engine.models import REGISTRY, load_model, resolve_model_ref


def encode(ref):
    loaded = load_model(ref)
    with torch.inference_mode():
        return loaded.model.encode_image(torch.ones(1, 3, 32, 32))


def test_registry_entries_are_real_open_clip_architectures():
    import open_clip

    for name, spec in REGISTRY.items():
        assert spec.arch in open_clip.list_models(), name
        assert spec.licence and spec.citation and (spec.url or (spec.hf_repo and spec.hf_file)), name
        assert spec.sha256 is None or len(spec.sha256) == 64
    with pytest.raises(EngineError, match="Unknown model"):
        resolve_model_ref(name="nope")


def test_plain_wrapped_and_module_prefixed_checkpoints_agree(tiny_model, tmp_path):
    state = torch.load(tiny_model.checkpoint, weights_only=True)
    torch.save({"state_dict": state}, tmp_path / "wrapped.pt")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pt")
    base = encode(resolve_model_ref(arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint)))
    for name in ("wrapped.pt", "ddp.pt"):
        out = encode(resolve_model_ref(arch=str(tiny_model.config), checkpoint=str(tmp_path / name)))
        torch.testing.assert_close(out, base)


def test_wrong_architecture_and_garbage_are_refused(tiny_model, tmp_path):
    with pytest.raises(EngineError, match="does not fit architecture RN50"):
        load_model(resolve_model_ref(arch="RN50", checkpoint=str(tiny_model.checkpoint)))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not torch")
    with pytest.raises(EngineError, match="not a readable PyTorch checkpoint"):
        load_model(resolve_model_ref(arch=str(tiny_model.config), checkpoint=str(junk)))
    with pytest.raises(EngineError, match="Unknown open_clip architecture"):
        resolve_model_ref(arch="ViT-Q-99", checkpoint=str(tiny_model.checkpoint))
    with pytest.raises(EngineError, match="does not exist"):
        resolve_model_ref(arch="ViT-B-32", checkpoint=str(tmp_path / "missing.pt"))
    bad_cfg = tmp_path / "bad.json"
    bad_cfg.write_text("{not json")
    with pytest.raises(EngineError, match="not valid JSON"):
        resolve_model_ref(arch=str(bad_cfg), checkpoint=str(tiny_model.checkpoint))


class Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    marker = None

    def __reduce__(self):
        return (open, (str(Payload.marker), "w"))


def test_pickle_bearing_checkpoint_never_runs(tmp_path, tiny_model):
    Payload.marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": Payload()}, evil)
    assert not Payload.marker.exists()
    with pytest.raises(EngineError, match="not a readable PyTorch checkpoint"):
        load_model(resolve_model_ref(arch=str(tiny_model.config), checkpoint=str(evil)))
    assert not Payload.marker.exists()


def test_changed_checkpoint_is_refused(tiny_model, tmp_path):
    import shutil

    copy = tmp_path / "copy.pt"
    shutil.copyfile(tiny_model.checkpoint, copy)
    ref = resolve_model_ref(arch=str(tiny_model.config), checkpoint=str(copy))
    copy.write_bytes(copy.read_bytes() + b"\0")
    with pytest.raises(EngineError, match="changed since the index was built"):
        load_model(ref)


def test_training_checkpoint_with_optimizer_state_loads_with_weights_only(tiny_model, tmp_path):
    """open_clip's DDP training checkpoint ({epoch, name, state_dict with module., optimizer, scaler}) loads safely."""
    import open_clip
    from tinymodel import TINY_CONFIG, training_checkpoint

    torch.manual_seed(3)
    model = open_clip.CLIP(**TINY_CONFIG)
    checkpoint = training_checkpoint(model)
    assert checkpoint["optimizer"]["state"] and isinstance(checkpoint["optimizer"]["param_groups"][0]["betas"], tuple)
    torch.save(checkpoint, tmp_path / "epoch_20.pt")
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    trained = encode(resolve_model_ref(arch=str(tiny_model.config), checkpoint=str(tmp_path / "epoch_20.pt")))
    plain = encode(resolve_model_ref(arch=str(tiny_model.config), checkpoint=str(tmp_path / "plain.pt")))
    torch.testing.assert_close(trained, plain, rtol=0, atol=0)


def test_custom_checkpoints_take_any_open_clip_config_and_show_its_activation(tiny_model, tmp_path):
    """An OpenAI-initialised checkpoint of one's own needs the -quickgelu config: accepted, built and reported."""
    import json

    from engine.models import activation_of
    from open_clip.transformer import QuickGELU

    ref = resolve_model_ref(arch="ViT-B-32-quickgelu", checkpoint=str(tiny_model.checkpoint))
    assert ref.arch == "ViT-B-32-quickgelu" and activation_of(ref.arch) == "QuickGELU"
    assert activation_of("ViT-B-32") == "GELU" and activation_of("RN50-quickgelu") == "QuickGELU"
    config = tmp_path / "tiny-quickgelu.json"
    config.write_text(json.dumps({**json.loads(tiny_model.config.read_text()), "quick_gelu": True}))
    assert activation_of(str(config)) == "QuickGELU" and activation_of(str(tiny_model.config)) == "GELU"
    loaded = load_model(resolve_model_ref(arch=str(config), checkpoint=str(tiny_model.checkpoint)))
    assert any(isinstance(m, QuickGELU) for m in loaded.model.modules())
    assert not any(type(m) is torch.nn.GELU for m in loaded.model.modules())


def test_a_config_file_leaves_nothing_in_the_temp_folder_and_stays_registered(tiny_model, tmp_path, monkeypatch):
    """A config is registered with open_clip from a copy in the temp folder; the copy must not outlive the load
    (every process used to leave one folder behind), and earlier configs must still build after later ones."""
    import json
    import tempfile

    import open_clip

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    first = tmp_path / "first.json"
    first.write_text(json.dumps({**json.loads(tiny_model.config.read_text()), "quick_gelu": True}))
    second = tmp_path / "second.json"  # other bytes, so another registration
    second.write_text(json.dumps({**json.loads(tiny_model.config.read_text()), "quick_gelu": True}, indent=1))
    loaded = load_model(resolve_model_ref(arch=str(first), checkpoint=str(tiny_model.checkpoint)))
    assert list(scratch.iterdir()) == []
    load_model(resolve_model_ref(arch=str(second), checkpoint=str(tiny_model.checkpoint)))
    assert list(scratch.iterdir()) == []
    open_clip.add_model_config(tmp_path / "absent")  # a later rescan by anyone: the removed copies are skipped
    again = load_model(resolve_model_ref(arch=str(first), checkpoint=str(tiny_model.checkpoint)))
    assert list(scratch.iterdir()) == []
    with torch.inference_mode():
        torch.testing.assert_close(again.model.encode_image(torch.ones(1, 3, 32, 32)),
                                   loaded.model.encode_image(torch.ones(1, 3, 32, 32)))
