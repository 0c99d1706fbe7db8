"""Numeric precision of a forward pass: ``fp32``, ``bf16`` or ``fp16`` autocast, shared by training and encode."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from geobridge.errors import GeoBridgeError

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, *, device: torch.device | str, where: str = "precision") -> None:
    """Raise a GeoBridgeError for an unknown precision or fp16 off CUDA (CPU autocast has no fast fp16)."""
    if precision not in PRECISIONS:
        raise GeoBridgeError(f"{where} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and torch.device(device).type != "cuda":
        raise GeoBridgeError(f"{where}=fp16 needs a CUDA device (got {torch.device(device)}); use bf16 on the CPU")


@contextlib.contextmanager
def autocast(precision: str, *, device: torch.device | str) -> Iterator[None]:
    """``torch.autocast`` for ``bf16`` / ``fp16`` on ``device``; nothing for ``fp32``."""
    check_precision(precision, device=device)
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[precision]):
        yield


def grad_scaler(precision: str, *, device: torch.device | str) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 training (fp16 gradients underflow without one); None for fp32 and bf16."""
    check_precision(precision, device=device)
    return torch.amp.GradScaler("cuda") if precision == "fp16" else None
