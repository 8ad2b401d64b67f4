"""Named remote-sensing CLIP models: exact open_clip config, published artefact, licence, prompts.

Every fact below comes from the model's publisher; the comment above each entry names where.
Facts that could not be checked from this build machine (no access to model hubs) are marked
"not checked offline"; for those the download is verified against the hash Hugging Face
publishes for the file at download time, or, where no hash is published anywhere (SkyCLIP),
the hash of the first download is recorded and later downloads must match it
(trust on first use).

The activation matters: CLIP models initialised from OpenAI's weights were trained with
QuickGELU. Loading their weights into open_clip's plain config (nn.GELU) succeeds under
``strict=True`` (the activation has no parameters) but silently changes every embedding, so
each entry names the exact config, with ``-quickgelu`` where the model was trained that way.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import EngineError
from ..prompts import (GEORSCLIP_TEMPLATES, OPENAI_RESISC45_TEMPLATES, REMOTE_SENSING_TEMPLATES,
                       REMOTECLIP_TEMPLATES, SKYCLIP_TEMPLATES)

QUICK_GELU = "QuickGELU"
GELU = "GELU"


@dataclass(frozen=True)
class ModelSpec:
    """A registry model.

    ``arch`` is the exact open_clip model config the weights were trained with (``-quickgelu``
    where they use QuickGELU). The artefact is what the publisher serves: a file on a Hugging
    Face repo (``hf_repo``/``hf_file`` at ``revision``) or at ``url``; ``member`` names the
    checkpoint inside it when the artefact is a zip. ``size`` and ``sha256`` describe the
    artefact as published (None where the publisher's metadata could not be checked).
    ``activation`` is what the model was trained with (checked against the config by the tests).
    """

    name: str
    arch: str
    hf_repo: str | None
    hf_file: str | None
    url: str | None
    sha256: str | None
    licence: str
    citation: str
    description: str
    size: int | None = None
    member: str | None = None
    activation: str = GELU
    templates: tuple[str, ...] = REMOTE_SENSING_TEMPLATES
    licence_url: str = ""
    notice: str = ""
    revision: str = "main"
    unchecked: str = ""

    @property
    def verification(self) -> str:
        """How a download is verified: "pinned", "hub" or "first-use" (see the module docstring)."""
        if self.sha256:
            return "pinned"
        return "hub" if self.hf_repo else "first-use"

    @property
    def short_citation(self) -> str:
        """"Liu et al. (2024)": the citation's first author and year, for narrow places like the dock."""
        import re

        year = re.search(r"\((\d{4})\)", self.citation)
        return f"{self.citation.split(',')[0]} et al." + (f" ({year.group(1)})" if year else "")

    @property
    def source(self) -> str:
        """Where the artefact comes from, for people (not a URL to fetch: see ``download.weights_url``)."""
        where = self.url or f"huggingface.co/{self.hf_repo} ({self.hf_file})"
        return where + (f", member {self.member}" if self.member else "")


_REMOTECLIP = ("Liu, F., Chen, D., Guan, Z., Zhou, X., Zhu, J., Zhou, J. (2024). RemoteCLIP: A Vision Language "
               "Foundation Model for Remote Sensing. IEEE Transactions on Geoscience and Remote Sensing 62.")
_GEORSCLIP = ("Zhang, Z., Zhao, T., Guo, Y., Yin, J. (2024). RS5M and GeoRSCLIP: A Large Scale Vision-Language "
              "Dataset and a Large Vision-Language Model for Remote Sensing. IEEE Transactions on Geoscience and "
              "Remote Sensing 62.")
_SKYCLIP = ("Wang, Z., Prabha, R., Huang, T., Wu, J., Rajagopal, R. (2024). SkyScript: A Large and Semantically "
            "Diverse Vision-Language Dataset for Remote Sensing. AAAI 2024.")
_OPENAI = "Radford, A. et al. (2021). Learning Transferable Visual Models From Natural Language Supervision. ICML."

# RemoteCLIP: files, sizes and SHA-256 from commit bf1d8a3 of huggingface.co/chendelong/RemoteCLIP
# (quoted in issue #12; plain state_dicts, the RN50 one with int64 BatchNorm counters). Trained
# from OpenAI weights with ITRA (its --image-model-tag/--text-model-tag default to "openai"), so
# QuickGELU, although the RemoteCLIP README loads them into the plain config. Licence Apache-2.0
# (LICENSE added to github.com/ChenDelong1999/RemoteCLIP in reply to its issue #23). Prompt: the
# authors' "a satellite photo of {}.". The download asks for the "main" revision; the pinned size
# and hash refuse any other file.
def _remoteclip(name: str, arch: str, hf_file: str, size: int, sha256: str, description: str) -> ModelSpec:
    return ModelSpec(name, arch, "chendelong/RemoteCLIP", hf_file, None, sha256, "Apache-2.0", _REMOTECLIP,
                     description, size=size, activation=QUICK_GELU, templates=REMOTECLIP_TEMPLATES,
                     licence_url="https://github.com/ChenDelong1999/RemoteCLIP/blob/main/LICENSE")


# GeoRSCLIP: huggingface.co/Zilun/GeoRSCLIP, ckpt/RS5M_ViT-B-32.pt and ckpt/RS5M_ViT-H-14.pt, written
# by github.com/om-ai-lab/RS5M inference/convert_weight.py as model.state_dict() (plain state_dicts).
# ViT-B-32 was trained from ("ViT-B/32", pretrained="openai"): QuickGELU; ViT-H-14 from
# "laion2b_s32b_b79k": GELU (RS5M inference/inference.py). Sizes and SHA-256 not checked offline:
# verified against the hash Hugging Face publishes. The model card is tagged only "cc": treated as
# CC-BY-4.0, which asks for attribution. Prompts: the 105-template ensemble of RS5M
# inference/classname_and_prompt/.
def _georsclip(name: str, arch: str, hf_file: str, activation: str, description: str) -> ModelSpec:
    return ModelSpec(name, arch, "Zilun/GeoRSCLIP", hf_file, None, None, "CC-BY-4.0 (assumed)", _GEORSCLIP,
                     description, activation=activation, templates=GEORSCLIP_TEMPLATES,
                     licence_url="https://huggingface.co/Zilun/GeoRSCLIP",
                     notice="The GeoRSCLIP model card gives no licence beyond the tag \"cc\"; RS-CLIP Search treats "
                            "it as CC-BY-4.0: credit Zhang et al. (RS5M/GeoRSCLIP) wherever you publish results "
                            "made with it.",
                     unchecked="size and SHA-256 not checked offline; verified against the hash Hugging Face "
                               "publishes for the file")


REGISTRY: dict[str, ModelSpec] = {s.name: s for s in (
    _remoteclip("remoteclip-vit-b-32", "ViT-B-32-quickgelu", "RemoteCLIP-ViT-B-32.pt", 605_208_421,
                "60014e395d930a3f2963d1d89c8522bf4ad56775571e4356e866864789af85c4",
                "RemoteCLIP ViT-B/32: the default; good speed/quality balance on CPU."),
    _remoteclip("remoteclip-rn50", "RN50-quickgelu", "RemoteCLIP-RN50.pt", 408_397_807,
                "11657d33a87fc197e19a7654a76a632415ebea42feb8a61025ef389f8990c0f9",
                "RemoteCLIP ResNet-50: smallest and fastest."),
    _remoteclip("remoteclip-vit-l-14", "ViT-L-14-quickgelu", "RemoteCLIP-ViT-L-14.pt", 1_710_613_765,
                "fcc2a7e21e171f4ffcb7a9c0206b8b74ac0c9eb83c67b576958b7a4ed6c8cecb",
                "RemoteCLIP ViT-L/14: most accurate RemoteCLIP, slow without a GPU."),
    _georsclip("georsclip-vit-b-32", "ViT-B-32-quickgelu", "ckpt/RS5M_ViT-B-32.pt", QUICK_GELU,
               "GeoRSCLIP ViT-B/32 trained on RS5M."),
    _georsclip("georsclip-vit-h-14", "ViT-H-14", "ckpt/RS5M_ViT-H-14.pt", GELU,
               "GeoRSCLIP ViT-H/14: large; needs a GPU for practical speed."),
    # SkyCLIP: github.com/wangzhecheng/SkyScript README ("Download model checkpoints"): published only as
    # SkyCLIP_ViT_B32_top50pct.zip holding SkyCLIP_ViT_B32_top50pct/epoch_20.pt, an open_clip training
    # checkpoint {epoch, name, state_dict ("module." keys), optimizer, ...}; continual pretraining of
    # ViT-B-32 from "laion2b_e16": GELU. No size or hash is published: trust on first use. Code and
    # models MIT (github.com/wangzhecheng/SkyScript LICENSE). Prompts: SkyScript prompt_templates.py.
    ModelSpec("skyclip-vit-b-32", "ViT-B-32", None, None,
              "https://opendatasharing.s3.us-west-2.amazonaws.com/SkyScript/ckpt/SkyCLIP_ViT_B32_top50pct.zip",
              None, "MIT", _SKYCLIP, "SkyCLIP ViT-B/32 (top 50% SkyScript subset).",
              member="SkyCLIP_ViT_B32_top50pct/epoch_20.pt", activation=GELU, templates=SKYCLIP_TEMPLATES,
              licence_url="https://github.com/wangzhecheng/SkyScript/blob/main/LICENSE",
              unchecked="no size or SHA-256 is published: the first download's hash is recorded and later "
                        "downloads must match it (trust on first use)"),
    # OpenAI CLIP ViT-B/32 in open_clip format, as timm publishes it on Hugging Face; its
    # open_clip_config.json says quick_gelu: true, and open_clip's pretrained table marks OpenAI
    # ViT-B-32 quick_gelu=True. Licence MIT (github.com/openai/CLIP LICENSE); its model card calls
    # deployed use out of scope. Prompts: OpenAI's RESISC45 set, github.com/openai/CLIP data/prompts.md.
    ModelSpec("openai-clip-vit-b-32", "ViT-B-32-quickgelu", "timm/vit_base_patch32_clip_224.openai",
              "open_clip_pytorch_model.bin", None, None, "MIT", _OPENAI,
              "OpenAI CLIP ViT-B/32: generic baseline, not trained on remote sensing.",
              activation=QUICK_GELU, templates=OPENAI_RESISC45_TEMPLATES,
              licence_url="https://github.com/openai/CLIP/blob/main/LICENSE",
              notice="OpenAI's model card (github.com/openai/CLIP/blob/main/model-card.md) calls any deployed use "
                     "of CLIP out of scope; use it as a research baseline.",
              unchecked="size and SHA-256 not checked offline; verified against the hash Hugging Face publishes "
                        "for the file"),
)}

DEFAULT_MODEL = "remoteclip-vit-b-32"


def licence_notice(spec: ModelSpec) -> str:
    """The licence notice that travels with a model's weights (e.g. in an offline bundle)."""
    lines = [f"{spec.name}: {spec.description}",
             "",
             f"Licence: {spec.licence}",
             f"Full licence text: {spec.licence_url or 'see the publisher'}",
             f"Weights published at: {spec.source}",
             f"Attribution (cite when you publish results made with this model): {spec.citation}"]
    if spec.notice:
        lines += ["", spec.notice]
    lines += ["", "RS-CLIP Search redistributes these weights unchanged; they remain under the licence above."]
    return "\n".join(lines) + "\n"


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise EngineError(f"Unknown model {name!r}; known models are: {', '.join(REGISTRY)}.") from None
