"""Deployable exports of a GeoBridge model: ONNX graphs per image view plus the text tower, and their runtime.

Nothing heavy is imported here: ``export_onnx`` loads torch and onnx, ``OnnxEncoder`` only onnxruntime.
"""

from __future__ import annotations

from typing import Any

from geobridge.export.backends import BACKENDS, load_encoder

__all__ = ["BACKENDS", "OnnxEncoder", "export_onnx", "load_encoder"]


def __getattr__(name: str) -> Any:
    if name == "export_onnx":
        from geobridge.export.onnx_export import export_onnx

        return export_onnx
    if name == "OnnxEncoder":
        from geobridge.export.onnx_runtime import OnnxEncoder

        return OnnxEncoder
    raise AttributeError(f"module 'geobridge.export' has no attribute {name!r}")
