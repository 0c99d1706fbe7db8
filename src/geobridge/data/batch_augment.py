"""Batched training augmentation on uint8 image tensors: one call per view and step, on any device.

The same changes as the PIL transforms of ``data.transforms`` (the docstring of ``make_view_transform`` says why
each keeps a place's identity), drawn per sample from a ``torch.Generator``:

* drone: a random-resized crop (60-100 % of the area, aspect 0.8-1.25) and a random horizontal flip;
* satellite: a random multiple of 90 degrees and a random flip, then the random-resized crop;
* street: a random circular shift of the panorama (another heading) and a random horizontal flip;
* satellite and street together (``orientation`` from ``draw_joint_orientation``, Sample4Geo's alignment-keeping
  augmentation): the tile turned by k quarter turns and the panorama rolled by k quarter widths, both mirrored
  or neither, so a north-up tile and its north-left panorama stay aligned;
* every view of a place together (``colour`` from ``draw_joint_colour``): one hue rotation and saturation
  scale per place, the same for its drone photo, tile and panorama, so the views still agree on colour while
  the place takes another palette (roofs, vegetation and ground of a style the world may not have);
* every view: brightness and contrast jitter of +-20 % and saturation of +-10 %;
* with ``cutout`` (a ``data.config.Cutout``), last: rectangular holes filled with the normalisation mean.

Crop, flip and rotation of a square view are one affine resampling (``affine_grid`` + ``grid_sample``,
bilinear), so a batch costs two tensor passes whatever its size. ``robust`` (a ``RobustAugment``) adds the
stale-capture changes, each drawn per sample with its own probability: Gaussian blur, a down- and up-scale, a
season (``geobridge.seasons``), stronger colour jitter and grayscale. ``train=False`` only normalises, which
equals the evaluation transform on images already at the input size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from geobridge.data.config import Cutout
from geobridge.robust import BLUR_SIGMA, DOWNSCALE_FACTOR, NORMAL_COLOUR, SEASON_STRENGTH, RobustAugment
from geobridge.seasons import LUMA, SEASON_NAMES, season_shift
from geobridge.views import IMAGE_VIEWS, check_view


class BatchAugment:
    """(B, 3, H, W) uint8 images of one view -> (B, 3, H, W) float32, augmented and normalised."""

    def __init__(
        self,
        view: str,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train: bool = True,
        rotate: bool = True,
        robust: RobustAugment | None = None,
        cutout: Cutout | None = None,
    ) -> None:
        self.view = check_view(view, allowed=IMAGE_VIEWS)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.train = train
        self.rotate = rotate
        self.robust = robust
        self.cutout = cutout

    def __call__(
        self,
        images: torch.Tensor,
        *,
        generator: torch.Generator,
        orientation: tuple[torch.Tensor, torch.Tensor] | None = None,
        colour: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``orientation``: (B,) quarter turns and (B,) mirror flags that a satellite tile and the panorama of the
        same place share (``joint_orientation``); None draws them per view. ``colour``: (B, 3, 3) colour matrices
        that every view of the place shares (``draw_joint_colour``), applied before the per-view jitter."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) uint8 images, got {tuple(images.shape)} {images.dtype}")
        x = images.float().div_(255.0)  # (B, 3, H, W) in [0, 1]
        if self.train:
            x = self._geometry(x, generator, orientation)
            if colour is not None:
                x = torch.einsum("bij,bjhw->bihw", colour.to(x), x).clamp_(0.0, 1.0)
            robust = self.robust
            if robust is not None:
                x = _random_blur(x, generator, p=robust.blur_p, sigma=BLUR_SIGMA)
                x = _random_downscale(x, generator, p=robust.downscale_p, factor=DOWNSCALE_FACTOR)
                x = _random_season(x, generator, p=robust.season_p, strength=SEASON_STRENGTH)
            brightness, contrast, saturation = NORMAL_COLOUR if robust is None else robust.colour
            x = _colour_jitter(x, generator, brightness=brightness, contrast=contrast, saturation=saturation)
            if robust is not None:
                x = _random_grayscale(x, generator, p=robust.grayscale_p)
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        if self.train and self.cutout is not None and self.cutout.p > 0:
            x = _random_cutout(x, generator, cutout=self.cutout, fill=mean)
        return (x - mean) / std

    def _geometry(
        self, x: torch.Tensor, gen: torch.Generator, orientation: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        batch = x.shape[0]
        flip = torch.rand(batch, generator=gen) < 0.5  # (B,)
        if orientation is not None and self.view != "drone" and self.rotate:
            turns, flip = (t.cpu() for t in orientation)
            if self.view == "street":
                shift = joint_panorama_shift(turns, flip, width=x.shape[-1])
                return _roll_columns(x, shift.to(x.device), flip.to(x.device))
        elif self.view == "street":
            if not self.rotate:
                return x
            shift = torch.randint(0, x.shape[-1], (batch,), generator=gen)
            return _roll_columns(x, shift.to(x.device), flip.to(x.device))
        else:
            turns = torch.randint(0, 4, (batch,), generator=gen) if self.view == "satellite" and self.rotate else None
        if self.view == "satellite" and not self.rotate:
            flip = torch.zeros(batch, dtype=torch.bool)
        theta = _crop_theta(batch, gen, scale=(0.6, 1.0), ratio=(0.8, 1.25), flip=flip, turns=turns)
        grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def draw_joint_orientation(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) quarter turns in 0-3 and (B,) mirror flags, one pair per place, shared by its tile and panorama."""
    turns = torch.randint(0, 4, (batch,), generator=gen)
    return turns, torch.rand(batch, generator=gen) < 0.5


def draw_joint_colour(batch: int, gen: torch.Generator, *, p: float, hue_deg: float,
                      saturation: tuple[float, float] = (0.7, 1.3)) -> torch.Tensor:
    """(B, 3, 3) RGB matrices, one per place: with probability ``p`` a hue rotation by up to ``hue_deg`` degrees
    either way and a saturation scale in ``saturation`` (``colour_matrices``), else the identity."""
    pick = torch.rand(batch, generator=gen) < p  # (B,)
    angle = torch.empty(batch).uniform_(-hue_deg, hue_deg, generator=gen)  # (B,) degrees
    scale = torch.empty(batch).uniform_(saturation[0], saturation[1], generator=gen)  # (B,)
    return torch.where(pick.view(-1, 1, 1), colour_matrices(angle, scale), torch.eye(3).expand(batch, 3, 3))


def colour_matrices(angle_deg: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(B,) hue angles in degrees and (B,) saturation scales -> (B, 3, 3) RGB matrices.

    Both act on the chroma plane, orthogonal to the grey axis g = (1, 1, 1) / sqrt(3): M = P + s R(t) (I - P)
    with P = g g^T and R(t) the rotation by t about g (Rodrigues' formula). Greys stay grey, and a rotation by
    120 degrees maps red to green, green to blue and blue to red.
    """
    g = torch.full((3,), 3 ** -0.5)
    grey = torch.outer(g, g)  # (3, 3)
    cross = torch.tensor([[0.0, -g[2], g[1]], [g[2], 0.0, -g[0]], [-g[1], g[0], 0.0]])  # [g]_x
    angle = angle_deg.double().deg2rad().float()
    cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    rotation = cos * torch.eye(3) + sin * cross + (1 - cos) * grey  # (B, 3, 3)
    return grey + scale.view(-1, 1, 1) * rotation @ (torch.eye(3) - grey)  # (B, 3, 3)


def joint_panorama_shift(turns: torch.Tensor, flip: torch.Tensor, *, width: int) -> torch.Tensor:
    """(B,) column shifts for ``_roll_columns`` that turn and mirror a north-left panorama as the tile is turned.

    The tile's sampling map is output -> input = diag(+-1, 1) @ R(k * 90 deg) (``_crop_theta``); in image
    coordinates (y down) R(t) turns a bearing a into a + t, so a bearing a of the input appears at f * a - 90 k in
    the output (f = -1 when mirrored). The panorama's column c (bearing 360 c / W, north at the left edge,
    clockwise) must then show the input bearing f * (c + k W / 4): a shift of k W / 4 columns, or with the mirror
    of ``_roll_columns`` (source W - 1 - c + s) a shift of 1 - k W / 4.
    """
    quarter = torch.round(turns.double() * width / 4).long()  # (B,)
    return torch.where(flip, 1 - quarter, quarter) % width


def _crop_theta(
    batch: int,
    gen: torch.Generator,
    *,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flip: torch.Tensor,
    turns: torch.Tensor | None,
) -> torch.Tensor:
    """(B, 2, 3) affine maps from output to input coordinates in [-1, 1]: a random crop, mirrored and turned.

    The crop covers ``area`` of the image with aspect ``r`` (log-uniform), so its half-sides are ``sqrt(area * r)``
    and ``sqrt(area / r)`` of the image's (clipped to the whole image), at a uniform position inside it.
    """
    area = torch.empty(batch).uniform_(scale[0], scale[1], generator=gen)
    log_r = torch.empty(batch).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    width = torch.sqrt(area * log_r.exp()).clamp(max=1.0)
    height = torch.sqrt(area / log_r.exp()).clamp(max=1.0)
    cx = (torch.rand(batch, generator=gen) * 2 - 1) * (1 - width)
    cy = (torch.rand(batch, generator=gen) * 2 - 1) * (1 - height)
    sx = torch.where(flip, -width, width)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx, height
    theta[:, 0, 2], theta[:, 1, 2] = cx, cy
    if turns is not None:  # output -> input through a rotation by turns * 90 degrees first
        angle = turns.float() * (math.pi / 2)
        cos, sin = torch.cos(angle).round(), torch.sin(angle).round()
        rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
        theta[:, :, :2] = theta[:, :, :2] @ rot
    return theta


def _roll_columns(x: torch.Tensor, shift: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Each panorama of (B, 3, H, W) shifted circularly by ``shift[b]`` columns, then mirrored where ``flip[b]``."""
    width = x.shape[-1]
    cols = torch.arange(width, device=x.device)
    src = (cols[None, :] + shift[:, None]) % width  # (B, W)
    src = torch.where(flip[:, None], src.flip(-1), src)
    index = src[:, None, None, :].expand(-1, x.shape[1], x.shape[2], -1)  # (B, 3, H, W)
    return torch.gather(x, 3, index)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)  # (B, 1, H, W)


def _uniform(batch: int, gen: torch.Generator, amount: float, device: torch.device) -> torch.Tensor:
    """(B, 1, 1, 1) factors uniform in [1 - amount, 1 + amount]."""
    return torch.empty(batch).uniform_(1 - amount, 1 + amount, generator=gen).view(-1, 1, 1, 1).to(device)


def _colour_jitter(
    x: torch.Tensor, gen: torch.Generator, *, brightness: float, contrast: float, saturation: float
) -> torch.Tensor:
    batch = x.shape[0]
    x = x * _uniform(batch, gen, brightness, x.device)
    mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    x = (x - mean) * _uniform(batch, gen, contrast, x.device) + mean
    gray = _grayscale(x)
    x = (x - gray) * _uniform(batch, gen, saturation, x.device) + gray
    return x.clamp_(0.0, 1.0)


def _random_grayscale(x: torch.Tensor, gen: torch.Generator, *, p: float) -> torch.Tensor:
    pick = (torch.rand(x.shape[0], generator=gen) < p).to(x.device).view(-1, 1, 1, 1)
    return torch.where(pick, _grayscale(x).expand_as(x), x)


def _random_blur(x: torch.Tensor, gen: torch.Generator, *, p: float, sigma: tuple[float, float]) -> torch.Tensor:
    """Gaussian blur (5-tap separable kernel, reflect padding) of a random subset, one sigma per sample."""
    pick = (torch.rand(x.shape[0], generator=gen) < p).nonzero(as_tuple=True)[0]
    if pick.numel() == 0:
        return x
    sigmas = torch.empty(pick.numel()).uniform_(sigma[0], sigma[1], generator=gen)
    taps = torch.arange(-2, 3, dtype=torch.float32)
    kernel = torch.exp(-(taps[None, :] ** 2) / (2 * sigmas[:, None] ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).to(x.device)  # (P, 5)
    sub = x[pick.to(x.device)]  # (P, 3, H, W)
    count, channels, height, width = sub.shape
    flat = sub.reshape(1, count * channels, height, width)
    k = kernel.repeat_interleave(channels, dim=0)  # (P * 3, 5)
    flat = F.conv2d(F.pad(flat, (2, 2, 0, 0), mode="reflect"), k[:, None, None, :], groups=count * channels)
    flat = F.conv2d(F.pad(flat, (0, 0, 2, 2), mode="reflect"), k[:, None, :, None], groups=count * channels)
    out = x.clone()
    out[pick.to(x.device)] = flat.view(count, channels, height, width)
    return out


def _random_season(x: torch.Tensor, gen: torch.Generator, *, p: float, strength: tuple[float, float]) -> torch.Tensor:
    """A random subset shown in another season (summer, autumn or winter, uniformly), one strength per sample."""
    pick = torch.rand(x.shape[0], generator=gen) < p  # (B,)
    names = torch.randint(0, len(SEASON_NAMES), (x.shape[0],), generator=gen)  # (B,)
    amounts = torch.empty(x.shape[0]).uniform_(strength[0], strength[1], generator=gen)  # (B,)
    if not bool(pick.any()):
        return x
    out = x.clone()
    for index, name in enumerate(SEASON_NAMES):
        rows = (pick & (names == index)).nonzero(as_tuple=True)[0]  # (P,) on the CPU, as the draws
        if rows.numel():
            on_device = rows.to(x.device)
            sub = x[on_device].permute(0, 2, 3, 1)  # (P, H, W, 3): the season formula reads channels last
            amount = amounts[rows].to(x.device).view(-1, 1, 1, 1)  # (P, 1, 1, 1)
            out[on_device] = season_shift(sub, name, amount).permute(0, 3, 1, 2)
    return out


def _random_cutout(x: torch.Tensor, gen: torch.Generator, *, cutout: Cutout, fill: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) with holes filled with ``fill`` (1, 3, 1, 1) in a random subset: each image has holes with
    probability ``cutout.p``, their number uniform in ``cutout.holes``, each side a uniform fraction in
    ``cutout.size`` of that side, placed uniformly inside the image (holes may overlap)."""
    batch, most = x.shape[0], cutout.holes[1]
    chosen = torch.rand(batch, generator=gen) < cutout.p  # (B,)
    count = torch.randint(cutout.holes[0], most + 1, (batch,), generator=gen)  # (B,)
    used = chosen[:, None] & (torch.arange(most)[None, :] < count[:, None])  # (B, N)
    height, width = x.shape[-2:]
    in_rows = _hole_spans(batch, most, height, gen, size=cutout.size)  # (B, N, H)
    in_cols = _hole_spans(batch, most, width, gen, size=cutout.size)  # (B, N, W)
    pick = chosen.nonzero(as_tuple=True)[0]  # (P,)
    if pick.numel() == 0:
        return x
    inside = in_rows[pick, :, :, None] & in_cols[pick, :, None, :] & used[pick, :, None, None]  # (P, N, H, W)
    holes = inside.any(dim=1, keepdim=True).to(x.device)  # (P, 1, H, W)
    out = x.clone()
    on_device = pick.to(x.device)
    out[on_device] = torch.where(holes, fill, x[on_device])
    return out


def _hole_spans(batch: int, most: int, extent: int, gen: torch.Generator, *, size: list[float]) -> torch.Tensor:
    """(B, N, extent) bool: the rows (or columns) that each of N holes per image covers."""
    side = (torch.empty(batch, most).uniform_(size[0], size[1], generator=gen) * extent).round().clamp(min=1)  # (B, N)
    start = (torch.rand(batch, most, generator=gen) * (extent - side + 1)).floor()  # (B, N)
    line = torch.arange(extent, dtype=torch.float32)
    return (line >= start[..., None]) & (line < (start + side)[..., None])


def _random_downscale(
    x: torch.Tensor, gen: torch.Generator, *, p: float, factor: tuple[float, float]
) -> torch.Tensor:
    """A random subset shrunk by a factor in ``factor`` and resized back (a low-resolution capture)."""
    pick = (torch.rand(x.shape[0], generator=gen) < p).nonzero(as_tuple=True)[0]
    factors = torch.empty(pick.numel()).uniform_(factor[0], factor[1], generator=gen)
    out = x
    height, width = x.shape[-2:]
    for row, f in zip(pick.tolist(), factors.tolist(), strict=True):
        small = (max(1, round(height / f)), max(1, round(width / f)))
        image = F.interpolate(x[row : row + 1], size=small, mode="bilinear", align_corners=False, antialias=True)
        if out is x:
            out = x.clone()
        out[row] = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)[0]
    return out
