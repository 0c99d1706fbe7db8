"""A tiny CLIP with random weights, written in both published layouts, for the CLIP tower tests.

``write_hf_clip`` writes a Hugging Face CLIP folder as ``save_pretrained`` does (config.json, model.safetensors,
the tokenizer's vocab.json and merges.txt, preprocessor_config.json); ``write_open_clip`` an open_clip checkpoint
in safetensors. Both carry CLIP's real BPE vocabulary (open_clip ships it), so texts tokenize as with real CLIP.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from geobridge.models.clip.modules import build_clip
from geobridge.models.clip.tokens import write_clip_bpe
from geobridge.models.config import ClipConfig

TINY = dict(embed_dim=24, image_size=32, patch_size=8, vision_width=32, vision_layers=3, vision_heads=2,
            context_length=77, vocab_size=49408, text_width=32, text_layers=2, text_heads=2, activation="quick_gelu")
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def tiny_clip(library: str, *, seed: int = 0, **changes) -> torch.nn.Module:
    """The whole tiny CLIP model of ``library`` with random weights drawn from ``seed``."""
    torch.manual_seed(seed)
    model = build_clip(ClipConfig(library=library, **{**TINY, **changes}))
    with torch.no_grad():
        model.logit_scale.fill_(4.0)  # not the init value: loading must carry it over
    return model


def write_hf_clip(folder: Path, *, seed: int = 0, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_clip("hf", seed=seed, **changes)
    model.save_pretrained(str(folder))
    write_clip_bpe(folder, context_length=TINY["context_length"])
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": CLIP_MEAN, "image_std": CLIP_STD, "crop_size": TINY["image_size"]}))
    return folder


def write_open_clip(file: Path, *, seed: int = 0, **changes) -> Path:
    file.parent.mkdir(parents=True, exist_ok=True)
    model = tiny_clip("open_clip", seed=seed, **changes)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(file))
    return file


def tiny_clip_model_config(weights: Path | None, *, share_backbone: bool = False, library: str = "open_clip",
                           **image: object) -> dict:
    """A GeoBridge model config (as in a JSON file) with tiny CLIP towers."""
    size = TINY["image_size"]
    return {
        "name": "gb-clip-tiny",
        "embed_dim": TINY["embed_dim"],
        "image": {"backbone": "clip", "input_size": {v: [size, size] for v in ("drone", "satellite", "street")},
                  "mean": CLIP_MEAN, "std": CLIP_STD, "interpolation": "bicubic", "share_backbone": share_backbone,
                  "adapter": "residual", "view_embedding": True, **image},
        "text": {"kind": "clip", "freeze": False},
        "clip": {**TINY, "weights": None if weights is None else str(weights), "library": library},
    }
