"""Safe checkpoint files: safetensors tensors plus JSON metadata. Nothing here ever unpickles."""

from __future__ import annotations

import json
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
            head = fh.read(4)
    is_pickle = head[:1] == b"\x80" or head[:2] == b"PK"  # raw pickle protocol 2+, or torch.save's zip container
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


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"file not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"invalid JSON in {path}: {exc}") from exc
