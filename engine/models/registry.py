"""Named remote-sensing CLIP models: architecture, where the weights live, licence, citation.

SHA-256 values are recorded only where they are known from the publisher; otherwise the
download is verified against the hash the hub itself publishes for the file.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import EngineError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: str
    hf_repo: str | None
    hf_file: str | None
    url: str | None
    sha256: str | None
    licence: str
    citation: str
    description: str


_REMOTECLIP = ("Liu, F. et al. (2024). RemoteCLIP: A Vision Language Foundation Model for Remote Sensing. "
               "IEEE Transactions on Geoscience and Remote Sensing 62.")
_GEORSCLIP = ("Zhang, Z. et al. (2024). RS5M and GeoRSCLIP: A Large Scale Vision-Language Dataset and a Large "
              "Vision-Language Model for Remote Sensing. IEEE Transactions on Geoscience and Remote Sensing 62.")
_SKYCLIP = ("Wang, Z. et al. (2024). SkyScript: A Large and Semantically Diverse Vision-Language Dataset for "
            "Remote Sensing. AAAI 2024.")
_OPENAI = "Radford, A. et al. (2021). Learning Transferable Visual Models From Natural Language Supervision. ICML."

REGISTRY: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec("remoteclip-vit-b-32", "ViT-B-32", "chendelong/RemoteCLIP", "RemoteCLIP-ViT-B-32.pt", None, None,
              "Apache-2.0", _REMOTECLIP, "RemoteCLIP ViT-B/32: the default; good speed/quality balance on CPU."),
    ModelSpec("remoteclip-rn50", "RN50", "chendelong/RemoteCLIP", "RemoteCLIP-RN50.pt", None, None,
              "Apache-2.0", _REMOTECLIP, "RemoteCLIP ResNet-50: smallest and fastest."),
    ModelSpec("remoteclip-vit-l-14", "ViT-L-14", "chendelong/RemoteCLIP", "RemoteCLIP-ViT-L-14.pt", None, None,
              "Apache-2.0", _REMOTECLIP, "RemoteCLIP ViT-L/14: most accurate RemoteCLIP, slow without a GPU."),
    ModelSpec("georsclip-vit-b-32", "ViT-B-32", "Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-B-32.pt", None, None,
              "see the model card (huggingface.co/Zilun/GeoRSCLIP)", _GEORSCLIP,
              "GeoRSCLIP ViT-B/32 trained on RS5M."),
    ModelSpec("georsclip-vit-h-14", "ViT-H-14", "Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-H-14.pt", None, None,
              "see the model card (huggingface.co/Zilun/GeoRSCLIP)", _GEORSCLIP,
              "GeoRSCLIP ViT-H/14: large; needs a GPU for practical speed."),
    ModelSpec("skyclip-vit-b-32", "ViT-B-32", None, None,
              "https://opendatasharing.s3.us-west-2.amazonaws.com/SkyScript/ckpt/SkyCLIP_ViT_B32_top50pct/epoch_20.pt",
              None, "MIT (SkyScript code and models)", _SKYCLIP, "SkyCLIP ViT-B/32 (top 50% SkyScript subset)."),
    ModelSpec("openai-clip-vit-b-32", "ViT-B-32", "timm/vit_base_patch32_clip_224.openai",
              "open_clip_pytorch_model.bin", None, None, "MIT", _OPENAI,
              "OpenAI CLIP ViT-B/32: generic baseline, not trained on remote sensing."),
)}

DEFAULT_MODEL = "remoteclip-vit-b-32"


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise EngineError(f"Unknown model {name!r}; known models are: {', '.join(REGISTRY)}.") from None
