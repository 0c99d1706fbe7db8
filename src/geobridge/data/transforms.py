"""Per-view image transforms built with timm's data utilities."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from timm.data import create_transform
from torchvision import transforms as T

from geobridge.views import IMAGE_VIEWS, check_view


def make_view_transform(
    view: str,
    *,
    input_size: tuple[int, int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    train: bool = False,
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> (3, H, W) tensor for one image view.

    Evaluation: timm's eval transform with ``crop_pct=1`` (the whole image, resized to exactly H x W).
    Training adds label-safe augmentation only: light colour jitter for every view, and for drone images a
    small random-resized crop. No flips or rotations: satellite tiles are north-up and panoramas start at
    north, so both carry orientation that the matching relies on.
    """
    check_view(view, allowed=IMAGE_VIEWS)
    _, height, width = input_size
    base = create_transform(
        input_size=(3, height, width), is_training=False, mean=mean, std=std, crop_pct=1.0, crop_mode="squash"
    )
    if not train:
        return base
    steps: list[Callable] = []
    if view == "drone":
        steps.append(T.RandomResizedCrop((height, width), scale=(0.8, 1.0), ratio=(0.9, 1.1)))
    steps.append(T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.1))
    return T.Compose([*steps, base])
