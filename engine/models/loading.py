"""Build an open_clip model from a registry name or an architecture + local checkpoint.

Checkpoints load with ``torch.load(weights_only=True)``, so a checkpoint file cannot run
code; plain state_dicts, ``{"state_dict": ...}``/``{"model": ...}`` wrappers (open_clip
training checkpoints with optimizer state included) and ``module.`` prefixes (DataParallel/DDP
training) are all accepted.

A registry model is built with the open_clip config the index recorded (``ModelRef.arch``),
not the registry's current one: an index built before a registry correction (e.g. the
QuickGELU configs) keeps producing comparable vectors, and ``config_notice`` says it should
be rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import EngineError
from ..progress import CancelFn, ProgressFn
from .download import ensure_weights, file_sha256
from .registry import GELU, QUICK_GELU, REGISTRY, get_spec


@dataclass(frozen=True)
class ModelRef:
    """Which model an index was built with: what the index records and reloads."""

    kind: str
    name: str | None
    arch: str
    checkpoint: str | None
    checkpoint_sha256: str | None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelRef":
        return cls(d.get("kind", "registry"), d.get("name"), d.get("arch", ""), d.get("checkpoint"),
                   d.get("checkpoint_sha256"))

    @property
    def label(self) -> str:
        if self.kind == "registry":
            return str(self.name)
        return f"{Path(self.arch).name} + {Path(str(self.checkpoint)).name}"


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    ref: ModelRef
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embed_dim: int
    context_length: int
    logit_scale: float


def resolve_model_ref(name: str | None = None, arch: str | None = None, checkpoint: str | None = None) -> ModelRef:
    """A registry model by name, or a custom architecture with a local checkpoint."""
    if name and (arch or checkpoint):
        raise EngineError("Give either a registry model name or an architecture with a checkpoint, not both.")
    if name:
        spec = get_spec(name)
        return ModelRef("registry", spec.name, spec.arch, None, spec.sha256)
    if not arch or not checkpoint:
        raise EngineError("A custom model needs both an architecture and a checkpoint file.")
    _check_arch(arch)
    ckpt = Path(checkpoint).expanduser().resolve()
    if not ckpt.is_file():
        raise EngineError(f"The checkpoint {ckpt} does not exist.")
    arch_value = str(Path(arch).expanduser().resolve()) if _is_config_path(arch) else arch
    return ModelRef("custom", None, arch_value, str(ckpt), file_sha256(ckpt))


def activation_of(arch: str) -> str | None:
    """QuickGELU or GELU: the activation an open_clip config name or config JSON builds (None if unknown).

    Reads the config file itself (open_clip's bundled ``model_configs``), so it needs no torch.
    """
    if _is_config_path(arch):
        path = Path(arch).expanduser()
    else:
        import importlib.util

        found = importlib.util.find_spec("open_clip")
        if found is None or not found.origin:
            return None
        path = Path(found.origin).parent / "model_configs" / f"{arch}.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    cfg = cfg.get("model_cfg", cfg) if isinstance(cfg, dict) else {}
    return QUICK_GELU if cfg.get("quick_gelu") else GELU


def config_notice(model: dict, how: str | None = None) -> str | None:
    """One sentence for an index built with a registry model's config from before its correction, else None.

    ``how`` says how to rebuild (default: the command line; the dock says it its own way).
    """
    if model.get("kind") != "registry":
        return None
    spec = REGISTRY.get(str(model.get("name")))
    recorded = str(model.get("arch") or "")
    if spec is None or not recorded or recorded == spec.arch:
        return None
    how = how or (f"rebuild it into a new folder (python -m engine index --index NEW_FOLDER --model {spec.name} "
                  f"RASTER...)")
    return (f"This index predates the fix of {spec.name}'s activation (built as open_clip config {recorded}, "
            f"{activation_of(recorded) or 'unknown activation'}; the model was trained as {spec.arch}, "
            f"{spec.activation}), so its results are slightly off; it keeps working as built, and to get the "
            f"model's true embeddings, {how}.")


def _is_config_path(arch: str) -> bool:
    return arch.lower().endswith(".json") or Path(arch).expanduser().is_file()


def _check_arch(arch: str) -> None:
    if _is_config_path(arch):
        path = Path(arch).expanduser()
        if not path.is_file():
            raise EngineError(f"The model config {path} does not exist.")
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise EngineError(f"The model config {path.name} is not valid JSON ({exc}).") from None
        if not isinstance(cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg):
            raise EngineError(f"{path.name} is not an open_clip model config (needs embed_dim, vision_cfg, text_cfg).")
        return
    import open_clip

    if arch not in open_clip.list_models():
        raise EngineError(f"Unknown open_clip architecture {arch!r} (e.g. ViT-B-32, RN50, ViT-L-14), "
                          "or give the path to a model-config JSON.")


#: Held while a config is copied, registered and its copy removed, so that no registration's rescan of open_clip's
#: config paths meets another's copy half deleted.
_REGISTER_LOCK = threading.Lock()


def _register_config(path: str) -> str:
    """Register a model-config JSON with open_clip under a name unique to its content.

    open_clip registers a config by reading a file named for the model, so the JSON is copied under that name
    into a temporary folder, read there, and the folder removed: open_clip keeps what it read, and skips a
    path that is gone when it rescans. (Every process used to leave one such folder in the temp directory.)
    """
    import open_clip

    data = Path(path).read_bytes()
    name = f"rsclip_{hashlib.sha256(data).hexdigest()[:12]}"
    with _REGISTER_LOCK:
        if name not in open_clip.list_models():
            with tempfile.TemporaryDirectory(prefix="rsclip-cfg-") as folder:
                copy = Path(folder) / f"{name}.json"
                copy.write_bytes(data)
                open_clip.add_model_config(copy)
    return name


def read_state_dict(path: Path) -> dict:
    """A checkpoint's weights; never runs code from the file."""
    import pickle

    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineError(f"{path.name} is not a readable PyTorch checkpoint of plain weights "
                          f"({first[:200]}).") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise EngineError(f"{path.name} holds no model weights.")
    if all(str(k).startswith("module.") for k in obj):
        obj = {str(k)[len("module."):]: v for k, v in obj.items()}
    return obj


_RANDOM_INIT = frozenset({"uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                          "xavier_uniform_", "xavier_normal_", "orthogonal_", "random_", "exponential_",
                          "geometric_", "log_normal_", "cauchy_", "bernoulli_"})


def _skip_random_init():
    """A context in which building a model skips the random filling of its weights.

    Random initialisation is wasted work when a checkpoint then overwrites every parameter
    and persistent buffer (``load_state_dict(strict=True)``), and it is most of the build time: 22 s of
    a ViT-H-14 build on two cores, 0.3 s without it. Deterministic set-up (fills, the causal
    attention mask, non-persistent buffers) still runs. A torch function mode is local to the
    calling thread, so nothing else in the process is affected.
    """
    from torch.overrides import TorchFunctionMode

    class SkipRandomInit(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in _RANDOM_INIT:
                return args[0] if args else (kwargs or {}).get("tensor")
            return func(*args, **(kwargs or {}))

    return SkipRandomInit()


class _QuietOpenClip(logging.Filter):
    """Drops open_clip's warnings (and lesser records) made by one thread: its "No pretrained weights loaded …
    initialized randomly" while that thread builds a model whose weights are loaded right after.

    open_clip logs through the root logger (``logging.warning`` in ``open_clip/factory.py``), so the filter
    sits on the root logger and on the "open_clip" logger, and matches records by the file that made them
    and by thread: other loggers, other threads and open_clip's errors pass (unlike ``logging.disable``,
    which silences every logger of the process, QGIS's included).
    """

    def __init__(self) -> None:
        super().__init__()
        import open_clip

        self.folder = str(Path(open_clip.__file__).absolute().parent)  # as its code objects name their files
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        mine = record.thread == self.thread and record.pathname.startswith(self.folder)
        return not (mine and record.levelno <= logging.WARNING)


@contextmanager
def _quiet_open_clip() -> Iterator[None]:
    quiet = _QuietOpenClip()
    loggers = (logging.getLogger(), logging.getLogger("open_clip"))
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


def load_model(ref: ModelRef, device: str = "cpu", progress: ProgressFn | None = None,
               cancel: CancelFn | None = None) -> LoadedModel:
    """Load the model an index records, verifying its weights (``jobs.get_encoder`` keeps it for the process)."""
    import open_clip

    if ref.kind == "registry":
        spec = REGISTRY.get(str(ref.name))
        if spec is None:
            raise EngineError(f"Unknown model {ref.name!r}; known models are: {', '.join(REGISTRY)}.")
        ckpt = ensure_weights(spec, progress, cancel)
        arch = ref.arch or spec.arch  # the config the index was built with (see config_notice)
    else:
        ckpt = Path(str(ref.checkpoint))
        if not ckpt.is_file():
            raise EngineError(f"The checkpoint {ckpt} of this index's model is missing; put it back or rebuild "
                              "the index.")
        if ref.checkpoint_sha256 and file_sha256(ckpt) != ref.checkpoint_sha256:
            raise EngineError(f"The checkpoint {ckpt} changed since the index was built (its SHA-256 differs); "
                              "restore the original file or build a new index.")
        arch = ref.arch
    _check_arch(arch)
    name = _register_config(arch) if _is_config_path(arch) else arch
    with _quiet_open_clip(), _skip_random_init():  # every weight is overwritten by the strict load below
        model = open_clip.create_model(name, pretrained=None)
    state = read_state_dict(ckpt)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        own = set(model.state_dict())
        missing, unexpected = len(own - set(state)), len(set(state) - own)
        raise EngineError(f"The checkpoint {ckpt.name} does not fit architecture {Path(arch).name} "
                          f"({missing} missing, {unexpected} unexpected keys).") from None
    model = model.to(device).eval()
    visual = model.visual
    size = visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    cfg = getattr(visual, "preprocess_cfg", {}) or {}
    mean = tuple(cfg.get("mean") or getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(cfg.get("std") or getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    tokenizer = open_clip.get_tokenizer(name)
    loaded = LoadedModel(model=model, tokenizer=tokenizer, ref=ref, image_size=size, mean=mean, std=std,
                         embed_dim=int(model.text_projection.shape[1]) if hasattr(model, "text_projection")
                         and model.text_projection is not None else int(visual.output_dim),
                         context_length=int(getattr(model, "context_length", 77)),
                         logit_scale=float(model.logit_scale.exp().item()))
    return loaded
