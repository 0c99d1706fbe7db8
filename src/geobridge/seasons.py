"""Seasonal appearance of vegetation and open ground: one formula for the world's season shift and for training.

``season_shift`` works on float RGB in ``[0, 1]`` with the channels last, (..., 3), so the synthetic world's
``synth.appearance.season`` and the PIL training transform (one uint8 image, through ``season_image``) and the
batched training augmentation (a (B, H, W, 3) batch, one strength per sample) compute the same change:

* ``summer``: vegetation lusher and greener, light a little warmer;
* ``autumn``: vegetation turns orange and brown;
* ``winter``: vegetation bare and greyish, snow on vegetation and on bright, unsaturated open ground, light bluer.

Vegetation is what is green above both red and blue (``vegetation_weight``); other pixels keep their colour
except for the overall tint, so roads, roofs and water keep a place's layout.
"""

from __future__ import annotations

import numpy as np
import torch

SEASON_NAMES: tuple[str, ...] = ("summer", "autumn", "winter")
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma weights, as PIL's and torchvision's grayscale
_SNOW = (0.93, 0.95, 0.98)


def vegetation_weight(x: torch.Tensor) -> torch.Tensor:
    """(..., 3) RGB in [0, 1] -> (..., 1): how plant-like each pixel is, 0..1 (green above both red and blue)."""
    r, g, b = x.unbind(-1)
    return ((g - torch.maximum(r, b)) / 0.06).clamp(0, 1).unsqueeze(-1)


def season_shift(x: torch.Tensor, name: str, strength: float | torch.Tensor = 1.0) -> torch.Tensor:
    """(..., 3) float RGB in [0, 1] -> the same scene in season ``name``, clipped to [0, 1].

    ``strength`` scales the change: a float, or a tensor that broadcasts against (..., 1) (e.g. (B, 1, 1, 1) for
    a (B, H, W, 3) batch, one strength per image); 0 leaves the colours as they are.
    """
    if name not in SEASON_NAMES:
        raise ValueError(f"unknown season {name!r}; expected one of {', '.join(SEASON_NAMES)}")
    strength = torch.as_tensor(strength, dtype=x.dtype, device=x.device)

    def tint(rgb: tuple[float, float, float]) -> torch.Tensor:  # (3,) on x's dtype and device
        return torch.tensor(rgb, dtype=x.dtype, device=x.device)

    veg = vegetation_weight(x) * strength  # (..., 1)
    lum = (x * tint(LUMA)).sum(-1, keepdim=True)  # (..., 1)
    if name == "summer":
        out = x * (1 - veg) + x * tint((0.95, 1.12, 0.9)) * veg
        out = out * tint((1.03, 1.01, 0.97)) ** strength
    elif name == "autumn":
        foliage = lum * tint((1.65, 1.0, 0.42))
        out = x * (1 - 0.85 * veg) + foliage * 0.85 * veg
        out = out * tint((1.04, 1.0, 0.94)) ** strength
    else:  # winter
        bare = lum * tint((0.95, 0.93, 0.9)) * 0.85
        out = x * (1 - 0.7 * veg) + bare * 0.7 * veg
        saturation = x.amax(-1, keepdim=True) - x.amin(-1, keepdim=True)  # (..., 1)
        open_ground = (1 - saturation / 0.3).clamp(0, 1) * ((lum - 0.22) / 0.25).clamp(0, 1)
        snow = (0.85 * veg + 0.75 * open_ground).clamp(0, 0.9) * strength  # (..., 1)
        out = out * (1 - snow) + tint(_SNOW) * snow
        out = out * tint((0.97, 1.0, 1.05)) ** strength
    return out.clamp(0, 1)


def season_image(image: np.ndarray, name: str, strength: float = 1.0) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the same image in season ``name``, uint8 (rounded to the nearest level)."""
    x = torch.from_numpy(image.astype(np.float32) / 255.0)  # (H, W, 3)
    return (season_shift(x, name, strength).numpy() * 255 + 0.5).astype(np.uint8)
