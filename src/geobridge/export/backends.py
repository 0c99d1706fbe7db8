"""One loader for the model behind ``locate`` and ``serve``: a torch checkpoint or an ONNX export folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geobridge.errors import GeoBridgeError

BACKENDS: tuple[str, ...] = ("torch", "onnx")


def load_encoder(path: str | Path, *, backend: str = "torch", device: str = "cpu", threads: int | None = None) -> Any:
    """An object with ``embed_dim`` and ``encode(items, view=..., batch_size=...)``.

    ``backend="torch"`` loads a model or run folder with ``GeoBridge.from_pretrained``; ``backend="onnx"`` loads a
    folder written by ``geobridge export onnx`` (``threads``: onnxruntime intra-op threads, None for its default).
    """
    if backend not in BACKENDS:
        raise GeoBridgeError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "torch":
        from geobridge.models import GeoBridge

        return GeoBridge.from_pretrained(path, device=device)
    if device != "cpu" and not device.startswith("cuda"):
        raise GeoBridgeError(f"--backend onnx runs on cpu or cuda, got device {device!r}")
    from geobridge.export.onnx_runtime import OnnxEncoder

    return OnnxEncoder(path, device=device, threads=threads)
