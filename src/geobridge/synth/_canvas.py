"""Painting helpers of the scene builder: the raster canvas, the place's palette, noise and seeded choices."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geobridge.synth.countries import ROOF_COLOURS, CountryStyle
from geobridge.synth.grid import CELL_M, GRID_CELLS, HALF_M, Material, cell_centres


def _rgb(colour: tuple[int, int, int]) -> np.ndarray:
    return np.asarray(colour, dtype=np.float32) / 255.0


def _weighted_choice(rng: np.random.Generator, pairs: tuple[tuple[str, float], ...] | list[tuple[str, float]]) -> str:
    names = [name for name, _ in pairs]
    weights = np.asarray([w for _, w in pairs], dtype=np.float64)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _noise2(rng: np.random.Generator, period: float) -> np.ndarray:
    """Smooth value noise in [-1, 1] over the grid, with features about ``period`` cells wide."""
    n = GRID_CELLS
    m = int(n / period) + 3
    knots = rng.uniform(-1.0, 1.0, (m, m)).astype(np.float32)
    t = (np.arange(n) + rng.uniform(0, period)) / period
    i0 = t.astype(np.int64)
    a = (t - i0).astype(np.float32)
    a = a * a * (3 - 2 * a)
    rows = knots[i0] * (1 - a)[:, None] + knots[i0 + 1] * a[:, None]  # (n, m)
    return rows[:, i0] * (1 - a)[None, :] + rows[:, i0 + 1] * a[None, :]  # (n, n)


def _noise1(rng: np.random.Generator, t: np.ndarray, scale: float, extent: float = 600.0) -> np.ndarray:
    """Smooth 1D value noise in [-1, 1] evaluated at ``t`` (metres), features about ``scale`` metres long."""
    return _noise1_at(_noise1_knots(rng, scale, extent), t, scale, extent)


def _noise1_knots(rng: np.random.Generator, scale: float, extent: float = 600.0) -> np.ndarray:
    n = int(2 * extent / scale) + 3
    return rng.uniform(-1.0, 1.0, n).astype(np.float32)


def _noise1_at(knots: np.ndarray, t: np.ndarray, scale: float, extent: float = 600.0) -> np.ndarray:
    """The noise of ``_noise1`` with its knots drawn already (a curve evaluated many times)."""
    n = knots.shape[0]
    f = (np.asarray(t, dtype=np.float32) + extent) / scale
    i = np.clip(f.astype(np.int64), 0, n - 2)
    a = np.clip(f - i, 0.0, 1.0)
    a = a * a * (3 - 2 * a)
    return knots[i] * (1 - a) + knots[i + 1] * a


def _jitter_rgb(rng: np.random.Generator, rgb: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(rgb * rng.uniform(1 - amount, 1 + amount, 3).astype(np.float32), 0.0, 1.0)


def _window(cx: float, cy: float, radius: float) -> tuple[slice, slice] | None:
    """Row and column slices of the cells within ``radius`` metres of (cx, cy), or None if off the grid."""
    j0 = max(0, int(math.floor((cx - radius + HALF_M) / CELL_M)))
    j1 = min(GRID_CELLS, int(math.ceil((cx + radius + HALF_M) / CELL_M)))
    i0 = max(0, int(math.floor((HALF_M - cy - radius) / CELL_M)))
    i1 = min(GRID_CELLS, int(math.ceil((HALF_M - cy + radius) / CELL_M)))
    if j0 >= j1 or i0 >= i1:
        return None
    return slice(i0, i1), slice(j0, j1)


class _Canvas:
    """Raster maps under construction, with the grid's coordinates."""

    def __init__(self) -> None:
        n = GRID_CELLS
        c = cell_centres()
        self.xs = c  # (N,) east coordinate of column j
        self.ys = -c  # (N,) north coordinate of row i
        self.X = np.broadcast_to(c[None, :], (n, n))
        self.Y = np.broadcast_to(-c[:, None], (n, n))
        self.ground = np.zeros((n, n), np.float32)
        self.height = np.zeros((n, n), np.float32)
        self.material = np.zeros((n, n), np.uint8)
        self.albedo = np.zeros((n, n, 3), np.float32)
        self.wall = np.zeros((n, n, 3), np.float32)
        self.blocked = np.zeros((n, n), bool)  # no new building or tree here (roads, water, landmark, buildings)
        self.zone = np.zeros((n, n), np.uint8)  # tree-density hints: ZONE_PARK, ZONE_HEDGE, ZONE_CLEARING

    def local(self, win: tuple[slice, slice], cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
        """East/north offsets of the window's cells from (cx, cy); shapes (h, 1) and (1, w) broadcastable."""
        rows, cols = win
        return (self.xs[cols] - cx)[None, :], (self.ys[rows] - cy)[:, None]

    def paint(self, mask: np.ndarray, material: Material, rgb: np.ndarray, *, win: tuple[slice, slice] | None = None):
        sl = win if win is not None else (slice(None), slice(None))
        self.material[sl][mask] = material
        self.albedo[sl][mask] = rgb


@dataclass
class _Palette:
    """Per-place colours (country colours jittered, so that places of a country differ)."""

    roof_names: list[str]
    roof_weights: np.ndarray
    roof_rgb: dict[str, np.ndarray]
    wall_tint: np.ndarray
    wall_mix: float
    ground: np.ndarray
    grass: np.ndarray
    vegetation: np.ndarray
    water: np.ndarray
    road: np.ndarray
    dirt: np.ndarray
    sand: np.ndarray
    pavement: np.ndarray


def _make_palette(style: CountryStyle, rng: np.random.Generator) -> _Palette:
    k = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
    names = [name for name, _ in style.roof_colours]
    weights = np.asarray([w for _, w in style.roof_colours], dtype=np.float64)
    picked = rng.choice(len(names), size=min(k, len(names)), replace=False, p=weights / weights.sum())
    roof_names = [names[int(i)] for i in picked]
    share = np.sort(rng.dirichlet(np.full(len(roof_names), 1.5)))[::-1]
    share = np.maximum(share, 0.12)
    share = share / share.sum()
    roof_rgb = {name: _jitter_rgb(rng, _rgb(ROOF_COLOURS[name]), 0.06) for name in roof_names}
    ground = _jitter_rgb(rng, _rgb(style.ground), 0.07)
    return _Palette(
        roof_names=roof_names,
        roof_weights=share,
        roof_rgb=roof_rgb,
        wall_tint=_rgb(style.wall_tint),
        wall_mix=style.wall_mix,
        ground=ground,
        grass=_jitter_rgb(rng, _rgb(style.grass), 0.08),
        vegetation=_jitter_rgb(rng, _rgb(style.vegetation), 0.08),
        water=_jitter_rgb(rng, _rgb(style.water), 0.08),
        road=_jitter_rgb(rng, _rgb(style.road), 0.05),
        dirt=np.clip(0.6 * ground + 0.4 * _rgb((150, 118, 86)), 0, 1),
        sand=_jitter_rgb(rng, _rgb(style.sand), 0.04),
        pavement=np.clip(0.55 * _rgb((168, 166, 160)) + 0.45 * ground, 0, 1),
    )
