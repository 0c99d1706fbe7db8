"""Per-view image transforms built with timm's data utilities."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from geobridge.preprocess import eval_transform
from geobridge.robust import BLUR_SIGMA, DOWNSCALE_FACTOR, NORMAL_COLOUR, SEASON_STRENGTH, RobustAugment
from geobridge.seasons import SEASON_NAMES, season_image
from geobridge.views import IMAGE_VIEWS, check_view


def make_view_transform(
    view: str,
    *,
    input_size: tuple[int, int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    interpolation: str = "bilinear",
    train: bool = False,
    rotate: bool = True,
    robust: RobustAugment | None = None,
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> (3, H, W) tensor for one image view.

    Evaluation: ``geobridge.preprocess.eval_transform`` (the whole image, resized to exactly H x W with the
    ``interpolation`` filter).

    Training adds augmentation that keeps the place's identity, per view:

    * drone: random-resized crop (60-100 % of the area) and a random horizontal flip. The orbit heading is
      unknown at query time, so drone -> satellite matching has to be invariant to heading anyway;
    * satellite: a random multiple of 90 degrees and a random flip, then a random-resized crop. This makes the
      tile embedding orientation-free, which costs the absolute-orientation cue (north-up) and buys four to eight
      times more distinct tiles per place: on the 600-place synthetic world it turned a 64 % train / 22 % test
      drone->satellite R@1 gap into 38 % / 31 % at the same step count (docs/model.md);
    * street: a random circular shift of the panorama (another heading) and a random horizontal flip;
    * every view: light colour jitter (brightness, contrast, saturation; hue is kept because colours are named
      in the descriptions).

    ``rotate=False`` keeps satellite tiles north-up and panoramas north-first (for data where orientation is known,
    e.g. CVUSA, where a consistent joint rotation would be needed instead).

    ``robust`` (training only; ``geobridge.robust.RobustAugment``) also simulates stale and poor captures, so that
    matching holds when a view is blurred, low-resolution, from another season or differently lit: Gaussian blur,
    a down- and up-scale, a season, stronger colour jitter and grayscale, each with the probability it sets.
    """
    check_view(view, allowed=IMAGE_VIEWS)
    _, height, width = input_size
    base = eval_transform(input_size=(3, height, width), mean=mean, std=std, interpolation=interpolation)
    if not train:
        return base
    steps: list[Callable] = []
    if view == "drone":
        steps += [T.RandomResizedCrop((height, width), scale=(0.6, 1.0), ratio=(0.8, 1.25)), T.RandomHorizontalFlip()]
    elif view == "satellite":
        if rotate:
            steps += [RandomRot90(), T.RandomHorizontalFlip()]
        steps.append(T.RandomResizedCrop((height, width), scale=(0.6, 1.0), ratio=(0.8, 1.25)))
    elif rotate:  # street panorama
        steps += [RandomRoll(), T.RandomHorizontalFlip()]
    if robust is not None:
        brightness, contrast, saturation = robust.colour
        steps += [
            T.RandomApply([T.GaussianBlur(5, sigma=BLUR_SIGMA)], p=robust.blur_p),
            T.RandomApply([RandomDownscale(min_factor=DOWNSCALE_FACTOR[0], max_factor=DOWNSCALE_FACTOR[1])],
                          p=robust.downscale_p),
            T.RandomApply([RandomSeason()], p=robust.season_p),
            T.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation),
            T.RandomGrayscale(p=robust.grayscale_p),
        ]
    else:
        brightness, contrast, saturation = NORMAL_COLOUR
        steps.append(T.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation))
    return T.Compose([*steps, base])


class RandomDownscale:
    """Shrink a PIL image by a uniform random factor in [min_factor, max_factor], then resize it back (a low-res
    capture at the same size)."""

    def __init__(self, *, min_factor: float, max_factor: float) -> None:
        if not 1.0 <= min_factor <= max_factor:
            raise ValueError(f"need 1 <= min_factor <= max_factor, got {min_factor} and {max_factor}")
        self.min_factor, self.max_factor = min_factor, max_factor

    def __call__(self, image: Image.Image) -> Image.Image:
        factor = self.min_factor + (self.max_factor - self.min_factor) * float(torch.rand(()))
        small = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
        return image.resize(small, Image.BILINEAR).resize(image.size, Image.BILINEAR)


class RandomSeason:
    """Show a PIL image in a uniformly drawn season (summer, autumn, winter) at a strength of 0.5-1."""

    def __call__(self, image: Image.Image) -> Image.Image:
        name = SEASON_NAMES[int(torch.randint(0, len(SEASON_NAMES), ()).item())]
        low, high = SEASON_STRENGTH
        strength = low + (high - low) * float(torch.rand(()))
        return Image.fromarray(season_image(np.asarray(image.convert("RGB")), name, strength))


class RandomRot90:
    """Rotate a PIL image by 0, 90, 180 or 270 degrees, uniformly."""

    def __call__(self, image: Image.Image) -> Image.Image:
        k = int(torch.randint(0, 4, ()).item())
        return image if k == 0 else image.rotate(90 * k, expand=True)


class RandomRoll:
    """Shift a 360-degree panorama circularly by a uniform random number of columns (a new heading)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        shift = int(torch.randint(0, image.width, ()).item())
        if shift == 0:
            return image
        out = Image.new(image.mode, image.size)
        out.paste(image.crop((shift, 0, image.width, image.height)), (0, 0))
        out.paste(image.crop((0, 0, shift, image.height)), (image.width - shift, 0))
        return out
