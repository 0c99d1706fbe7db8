"""Safe checkpoint files: safetensors tensors plus JSON metadata. Nothing here ever unpickles."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from geobridge._atomic import atomic_path
from geobridge.errors import CheckpointError

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


def refuse_pickle(path: Path) -> None:
    """Raise a clear CheckpointError for files that would need unpickling to read."""
    head = b""
    if path.is_file():
        with open(path, "rb") as fh:
            head = fh.read(9)
    # a safetensors file opens with its header's length (8 bytes, little-endian: any first byte, 0x80 included)
    # and then the JSON header's "{"
    is_safetensors = head[8:9] == b"{"
    # raw pickle protocol 2+, or torch.save's zip container
    is_pickle = not is_safetensors and (head[:1] == b"\x80" or head[:2] == b"PK")
    if path.suffix in PICKLE_SUFFIXES or is_pickle:
        raise CheckpointError(
            f"refusing to load {path}: it is a pickle-based file, and unpickling can run arbitrary code. "
            "GeoBridge checkpoints are a folder with model.safetensors and config.json "
            "(convert trusted weights with safetensors.torch.save_file)."
        )


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], *, metadata: dict[str, str] | None = None) -> None:
    """Atomically write a safetensors file (contiguous CPU copies; shared storage is cloned)."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, tmp, metadata=metadata)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, with clear errors for missing, pickled or corrupt files."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    refuse_pickle(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt or unreadable safetensors file {path}: {exc}") from exc


def check_tensors(tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], *, source: Path) -> None:
    """Refuse stored tensors whose kind of dtype differs from the model's (int64 weights, float step counters)
    and floating tensors holding NaN or inf; the error names the tensor key and ``source``."""
    for key in sorted(tensors):
        stored, wanted = tensors[key], expected.get(key)
        if wanted is not None and stored.is_floating_point() != wanted.is_floating_point():
            kind = "floating" if wanted.is_floating_point() else "integer"
            raise CheckpointError(f"{source}: tensor {key!r} is {stored.dtype}, expected a {kind} dtype")
        if wanted is not None and wanted.dtype == torch.bool and stored.dtype != torch.bool:
            raise CheckpointError(f"{source}: tensor {key!r} is {stored.dtype}, expected torch.bool")
        if stored.is_floating_point() and not bool(torch.isfinite(stored).all()):
            bad = int((~torch.isfinite(stored)).sum())
            raise CheckpointError(f"{source}: tensor {key!r} holds {bad} NaN or inf values of {stored.numel()}")


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"file not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"invalid JSON in {path}: {exc}") from exc
