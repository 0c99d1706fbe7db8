"""Test-time augmentation: the image changes that leave a place's identity, per view, as tensor functions.

A view's embedding with test-time augmentation is the mean of the unit embeddings of every symmetric copy,
renormalised, so it is exactly invariant to the group (a rotated satellite tile embeds like the original).
They are the changes that training augments with (``data.transforms``), so the model has learned to map
them close together, and averaging removes the rest of the difference:

* satellite: the 8 symmetries of the square (rotations by multiples of 90 degrees, with and without a mirror);
  a non-square tile keeps the 4 that preserve its shape (identity, both mirrors, 180 degrees);
* drone: identity and the horizontal mirror (the orbit heading is unknown);
* street: 4 headings (circular shifts by quarter turns of the panorama), with and without a mirror.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from geobridge.views import IMAGE_VIEWS, check_view

Symmetry = Callable[[torch.Tensor], torch.Tensor]


def view_symmetries(view: str, *, height: int, width: int) -> list[Symmetry]:
    """The functions (B, 3, H, W) -> (B, 3, H, W) whose outputs are averaged for ``view``; the first is identity."""
    check_view(view, allowed=IMAGE_VIEWS)
    if view == "satellite":
        turns = (0, 1, 2, 3) if height == width else (0, 2)
        return [_rotate_mirror(k, mirror) for k in turns for mirror in (False, True)]
    if view == "drone":
        return [_rotate_mirror(0, False), _rotate_mirror(0, True)]
    return [_roll_mirror(width * quarter // 4, mirror) for quarter in range(4) for mirror in (False, True)]


def _rotate_mirror(turns: int, mirror: bool) -> Symmetry:
    def apply(images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W)
        out = images.flip(-1) if mirror else images
        return _rot90(out, turns) if turns else out

    return apply


def _rot90(images: torch.Tensor, turns: int) -> torch.Tensor:
    """``torch.rot90(images, turns, dims=(-2, -1))`` from flips and a transpose (ops that ONNX export knows)."""
    turns %= 4
    if turns == 1:
        return images.flip(-1).transpose(-2, -1)
    if turns == 2:
        return images.flip(-2).flip(-1)
    if turns == 3:
        return images.flip(-2).transpose(-2, -1)
    return images


def _roll_mirror(shift: int, mirror: bool) -> Symmetry:
    def apply(images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) panoramas
        out = images.flip(-1) if mirror else images
        return torch.roll(out, shifts=shift, dims=-1) if shift else out

    return apply
