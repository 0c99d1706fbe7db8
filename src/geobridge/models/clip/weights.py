"""CLIP weights from a local path, in either of the two layouts they are published in; nothing is downloaded.

- A **Hugging Face CLIP folder** (``openai/clip-vit-large-patch14`` as ``save_pretrained`` writes it):
  ``config.json``, ``model.safetensors`` and the tokenizer files. Run by ``transformers``' ``CLIPModel``, built
  from the folder's own config.
- An **open_clip checkpoint** in safetensors (``open_clip_model.safetensors``, as the LAION models publish it).
  Run by open_clip's ``CLIP``, built from the config's architecture fields.

Either way the state dict must fit the model exactly: every tensor present, none left over, every shape equal
(``strict``). Pickle-based files (``.bin``, ``.pt``) are refused without being opened for unpickling: unpickling
can run code. Every error is one line that names the path and what is wrong.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geobridge.errors import CheckpointError
from geobridge.models.checkpoint import load_tensors, refuse_pickle
from geobridge.models.clip.modules import architecture_of, build_clip
from geobridge.models.config import ClipConfig

logger = logging.getLogger(__name__)

HF_WEIGHTS = "model.safetensors"
HF_CONFIG = "config.json"
HF_PREPROCESSOR = "preprocessor_config.json"
# buffers that checkpoints of older transformers versions saved and today's CLIPModel computes instead
_DERIVED_KEYS = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")


def load_clip(config: ClipConfig) -> nn.Module:
    """The whole CLIP model of ``config`` with the weights at ``config.weights`` loaded strictly.

    Sets ``config.library`` from the layout found there, and for a Hugging Face folder keeps the folder's
    CLIPConfig in ``config.hf_config`` (a saved GeoBridge model rebuilds the same modules from it).
    """
    if config.weights is None:
        raise ValueError("load_clip needs clip.weights (a local path)")
    path = Path(config.weights).expanduser()
    if not path.exists():
        raise CheckpointError(f"CLIP weights not found: {path}")
    if path.is_dir():
        return _load_hf_folder(path, config)
    return _load_open_clip_file(path, config)


def _load_hf_folder(path: Path, config: ClipConfig) -> nn.Module:
    from transformers import CLIPConfig

    if not (path / HF_CONFIG).is_file():
        raise CheckpointError(f"{path}: not a Hugging Face CLIP folder ({HF_CONFIG} is missing)")
    weights = path / HF_WEIGHTS
    if not weights.is_file():
        for pickled in sorted(path.glob("*.bin")) + sorted(path.glob("*.pt")):
            refuse_pickle(pickled)
        raise CheckpointError(f"{path}: no {HF_WEIGHTS} in the folder")
    try:
        hf_config = CLIPConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path / HF_CONFIG}: not a CLIP config: {_one_line(exc)}") from exc
    found = architecture_of(hf_config)
    activation = found.pop("activation")  # the folder's own (OpenAI's quick_gelu, LAION's gelu): adopted
    if activation not in ("quick_gelu", "gelu"):
        raise CheckpointError(f"{path / HF_CONFIG}: hidden_act {activation!r} is not CLIP's (quick_gelu or gelu)")
    _check_architecture(found, config, source=path / HF_CONFIG)
    config.activation = activation
    config.library = "hf"
    config.hf_config = hf_config.to_dict()
    model = build_clip(config)
    tensors = load_tensors(weights)
    for key in _DERIVED_KEYS:
        tensors.pop(key, None)
    _load_strict(model, tensors, source=weights)
    return model


def _load_open_clip_file(path: Path, config: ClipConfig) -> nn.Module:
    refuse_pickle(path)
    tensors = load_tensors(path)
    if tensors and all(k.startswith("module.") for k in tensors):  # saved from a DDP-wrapped model
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    config.library = "open_clip"
    config.hf_config = {}
    model = build_clip(config)
    _load_strict(model, tensors, source=path)
    return model


def _check_architecture(found: dict[str, Any], config: ClipConfig, *, source: Path) -> None:
    wrong = {k: (v, getattr(config, k)) for k, v in found.items() if v != getattr(config, k)}
    if wrong:
        shown = ", ".join(f"{k} {got} (expected {want})" for k, (got, want) in sorted(wrong.items()))
        raise CheckpointError(f"{source}: wrong CLIP architecture for this model config: {shown}")


def _load_strict(model: nn.Module, tensors: dict[str, torch.Tensor], *, source: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = sorted(k for k in set(expected) & set(tensors) if tensors[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_first(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_first(unexpected)})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape ({k}: {tuple(tensors[k].shape)} in the file, "
                         f"{tuple(expected[k].shape)} in the model)")
        raise CheckpointError(f"{source}: wrong CLIP architecture for this model config: tensors {'; '.join(parts)}")
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{source}: tensor {key!r} holds NaN or inf values")
    model.load_state_dict(tensors, strict=True)


def image_normalisation(path: Path) -> tuple[list[float], list[float]] | None:
    """(mean, std) from a Hugging Face folder's ``preprocessor_config.json``, if it has them."""
    import json

    file = path / HF_PREPROCESSOR
    if not path.is_dir() or not file.is_file():
        return None
    try:
        data = json.loads(file.read_text())
        mean, std = [float(v) for v in data["image_mean"]], [float(v) for v in data["image_std"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{file}: unreadable image_mean / image_std: {_one_line(exc)}") from exc
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise CheckpointError(f"{file}: image_mean and image_std must be 3 values each (std > 0)")
    return mean, std


def _first(keys: list[str], count: int = 3) -> str:
    return ", ".join(keys[:count]) + (", ..." if len(keys) > count else "")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
