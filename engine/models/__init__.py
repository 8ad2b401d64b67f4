"""Model registry, weight download and loading (torch/open_clip are imported only when loading)."""
from .download import (artefact_path, cache_dir, cached_weights_path, ensure_weights, file_sha256, hf_endpoint,
                       is_cached, weights_url)
from .loading import (LoadedModel, ModelRef, activation_of, config_notice, load_model, read_state_dict,
                      resolve_model_ref)
from .registry import DEFAULT_MODEL, GELU, QUICK_GELU, REGISTRY, ModelSpec, get_spec

__all__ = ["DEFAULT_MODEL", "GELU", "QUICK_GELU", "REGISTRY", "LoadedModel", "ModelRef", "ModelSpec",
           "activation_of", "artefact_path", "cache_dir", "cached_weights_path", "config_notice", "ensure_weights",
           "file_sha256", "get_spec", "hf_endpoint", "is_cached", "load_model", "read_state_dict",
           "resolve_model_ref", "weights_url"]
