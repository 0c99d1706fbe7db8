"""The evaluation preprocessing of an image view, in a leaf module: ``GeoBridge.transform`` (models) and the
training transforms (data, which add augmentation in front of it) share it without importing each other."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from timm.data import create_transform


def eval_transform(
    *,
    input_size: tuple[int, int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    interpolation: str = "bilinear",
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> (3, H, W) normalised tensor: timm's eval transform with ``crop_pct=1`` (the whole image,
    squashed to exactly H x W with the ``interpolation`` filter, no centre crop)."""
    return create_transform(
        input_size=input_size,
        is_training=False,
        mean=mean,
        std=std,
        interpolation=interpolation,
        crop_pct=1.0,
        crop_mode="squash",
    )
