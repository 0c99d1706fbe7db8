"""Water, roads and trees of a scene: where they go and how they are painted on the canvas."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geobridge.synth._canvas import _Canvas, _noise1, _noise1_at, _noise1_knots, _noise2, _Palette
from geobridge.synth.countries import CountryStyle
from geobridge.synth.grid import CELL_M, GRID_CELLS, HALF_M, WATER_LEVEL_M, Material, Water, bearing_of


@dataclass
class _WaterField:
    water: Water
    mask: np.ndarray  # (N, N) bool
    shore_dist: np.ndarray  # (N, N) metres from the shoreline (positive inside the water)


def _make_water(kind: str, canvas: _Canvas, rng: np.random.Generator, *, winding_bias: float = 0.5) -> _WaterField:
    X, Y = canvas.X, canvas.Y
    if kind == "river":
        bearing = float(rng.uniform(0, 180))
        b = math.radians(bearing)
        dx, dy = math.sin(b), math.cos(b)  # along the river
        nx, ny = math.cos(b), -math.sin(b)  # across it
        s = X * dx + Y * dy
        t = X * nx + Y * ny
        offset = float(rng.uniform(-55, 55))
        width = float(rng.uniform(12, 28))
        winding = bool(rng.random() < winding_bias)
        amp = float(rng.uniform(14, 30) if winding else rng.uniform(0, 8))
        wavelength = float(rng.uniform(140, 260))
        phase = float(rng.uniform(0, 2 * math.pi))
        centre = offset + amp * np.sin(2 * math.pi * s / wavelength + phase)
        half = width / 2 * (1 + 0.12 * _noise1(rng, s, 40.0))
        dist = half - np.abs(t - centre)
        # The river point nearest to the place's centre, for descriptions and bridges.
        s_line = np.linspace(-150, 150, 601)
        c_line = offset + amp * np.sin(2 * math.pi * s_line / wavelength + phase)
        k = int(np.argmin(s_line**2 + c_line**2))
        px, py = s_line[k] * dx + c_line[k] * nx, s_line[k] * dy + c_line[k] * ny
        water = Water(kind="river", bearing=bearing, x=float(px), y=float(py), width=width, winding=winding)
    elif kind == "lake":
        cx, cy = (float(v) for v in rng.uniform(-60, 60, 2))
        radius = float(rng.uniform(20, 42))
        ang = np.arctan2(X - cx, Y - cy)
        wob = 0.15 * np.sin(3 * ang + rng.uniform(0, 6.3)) + 0.1 * np.sin(5 * ang + rng.uniform(0, 6.3))
        dist = radius * (1 + wob) - np.hypot(X - cx, Y - cy)
        water = Water(kind="lake", bearing=bearing_of(cx, cy), x=cx, y=cy, width=radius)
    elif kind == "coast":
        bearing = float(rng.uniform(0, 360))
        b = math.radians(bearing)
        ux, uy = math.sin(b), math.cos(b)  # towards the sea
        shore = float(rng.uniform(20, 70))
        along = X * uy - Y * ux
        dist = (X * ux + Y * uy) - (shore + 7.0 * _noise1(rng, along, 50.0))
        water = Water(kind="coast", bearing=bearing, x=shore * ux, y=shore * uy, width=float(rng.uniform(5, 14)))
    else:  # pragma: no cover - internal
        raise ValueError(f"unknown water kind {kind!r}")
    return _WaterField(water=water, mask=dist > 0, shore_dist=dist.astype(np.float32))


def _paint_water(canvas: _Canvas, wf: _WaterField, pal: _Palette, rng: np.random.Generator) -> None:
    depth = np.clip(wf.shore_dist / 14.0, 0, 1)[..., None]  # (N, N, 1)
    ripple = 1 + 0.05 * _noise2(rng, 6.0)[..., None]
    colour = pal.water * (1.15 - 0.3 * depth) * ripple
    canvas.material[wf.mask] = Material.WATER
    canvas.albedo[wf.mask] = colour[wf.mask]
    canvas.ground[wf.mask] = WATER_LEVEL_M
    canvas.blocked |= wf.mask
    # Banks: a beach on coasts, a muddy or grassy strip along rivers and lakes.
    bank_w = wf.water.width if wf.water.kind == "coast" else 3.0
    bank = (wf.shore_dist <= 0) & (wf.shore_dist > -bank_w)
    bank_rgb = pal.sand if wf.water.kind == "coast" else 0.5 * pal.ground + 0.5 * pal.grass
    canvas.material[bank] = Material.SAND
    canvas.albedo[bank] = bank_rgb * (1 + 0.06 * rng.standard_normal((int(bank.sum()), 1)).astype(np.float32))



@dataclass
class _Grid:
    """A (possibly wobbly) street grid in a rotated frame: streets along e1 at u = off_u + k*su, etc."""

    bearing: float
    su: float
    sv: float
    off_u: float
    off_v: float
    width: float
    wob_u: float
    wob_v: float
    seed_u: int
    seed_v: int
    cross_streets: bool

    def axes(self) -> tuple[tuple[float, float], tuple[float, float]]:
        b = math.radians(self.bearing)
        e1 = (math.sin(b), math.cos(b))  # along the first street family
        e2 = (math.cos(b), -math.sin(b))  # across it
        return e1, e2

    def wobble(self, which: str, t: np.ndarray | float) -> np.ndarray:
        amp = self.wob_u if which == "u" else self.wob_v
        if amp == 0:
            return np.zeros_like(np.asarray(t, dtype=np.float32))
        return amp * _noise1_at(self._wobble_knots(which), np.asarray(t, dtype=np.float32), 90.0)

    def _wobble_knots(self, which: str) -> np.ndarray:
        """The knots of one street family's wobble curve, drawn once from its seed (wobble runs per building)."""
        cache = self.__dict__.setdefault("_knots", {})
        if which not in cache:
            cache[which] = _noise1_knots(np.random.default_rng(self.seed_u if which == "u" else self.seed_v), 90.0)
        return cache[which]

    def to_world(self, u: float, v: float) -> tuple[float, float]:
        e1, e2 = self.axes()
        return u * e2[0] + v * e1[0], u * e2[1] + v * e1[1]


def _road_mask_grid(canvas: _Canvas, grid: _Grid) -> tuple[np.ndarray, np.ndarray]:
    """(road mask, distance to the nearest street centre line) of a street grid."""
    e1, e2 = grid.axes()
    u = canvas.X * e2[0] + canvas.Y * e2[1]
    v = canvas.X * e1[0] + canvas.Y * e1[1]
    uw = u + grid.wobble("u", v) - grid.off_u
    du = np.abs((uw + grid.su / 2) % grid.su - grid.su / 2)
    dist = du
    if grid.cross_streets:
        vw = v + grid.wobble("v", u) - grid.off_v
        dv = np.abs((vw + grid.sv / 2) % grid.sv - grid.sv / 2)
        dist = np.minimum(du, dv)
    return dist < grid.width / 2, dist


def _road_mask_lines(canvas: _Canvas, lines: list[tuple[float, float, float, float]], width: float, rng):
    """Roads through points (px, py) with bearings, each meandering by a wobble amplitude (metres)."""
    dist = np.full(canvas.X.shape, 1e9, np.float32)
    for px, py, bearing, amp in lines:
        b = math.radians(bearing)
        dx, dy = math.sin(b), math.cos(b)
        s = (canvas.X - px) * dx + (canvas.Y - py) * dy
        t = (canvas.X - px) * dy - (canvas.Y - py) * dx
        if amp > 0:
            t = t + amp * _noise1(rng, s, 110.0)
        dist = np.minimum(dist, np.abs(t))
    return dist < width / 2, dist


def _paint_roads(canvas: _Canvas, mask: np.ndarray, dist: np.ndarray, width: float, pal: _Palette, *,
                 paved: bool, sidewalk: float, rng: np.random.Generator) -> None:
    water = canvas.material == Material.WATER
    base = pal.road if paved else pal.dirt
    road = mask & ~water
    colour = base * (1 + 0.05 * rng.standard_normal((int(road.sum()), 1)).astype(np.float32))
    canvas.material[road] = Material.ROAD
    canvas.albedo[road] = colour
    if paved and width >= 7.5:  # dashed centre line
        line = road & (dist < CELL_M * 0.5) & (_noise2(rng, 3.0) > -0.2)
        canvas.albedo[line] = 0.55 * canvas.albedo[line] + 0.45 * np.float32(0.95)
    if sidewalk > 0:
        walk = ~mask & (dist < width / 2 + sidewalk) & ~water & (canvas.material != Material.SAND)
        canvas.material[walk] = Material.PAVEMENT
        canvas.albedo[walk] = pal.pavement
    bridge = mask & water
    canvas.material[bridge] = Material.BRIDGE
    canvas.albedo[bridge] = np.asarray([0.55, 0.55, 0.54], np.float32)
    canvas.ground[bridge] = 0.2  # level with the banks, which are flattened near water
    canvas.wall[bridge] = np.asarray([0.45, 0.45, 0.44], np.float32)
    canvas.blocked |= mask



def _plant_trees(canvas: _Canvas, density: np.ndarray, style: CountryStyle, pal: _Palette,
                 rng: np.random.Generator) -> np.ndarray:
    """Trees on a jittered lattice, kept where ``density`` allows; returns (T, 3) x, y, radius."""
    spacing = 5.0
    g = int(math.ceil(2 * HALF_M / spacing)) + 2
    gx = (np.arange(g) - 1) * spacing - HALF_M  # lattice origins (metres, west/south edge)
    tx = gx[None, :] + rng.uniform(0.15, 0.85, (g, g)) * spacing  # (g, g) east
    ty = gx[:, None] + rng.uniform(0.15, 0.85, (g, g)) * spacing  # (g, g) north
    shape = style.tree_shape
    if shape == "cone":
        radius = rng.uniform(1.8, 3.4, (g, g))
        top = rng.uniform(9, 20, (g, g))
    elif shape == "palm":
        radius = rng.uniform(2.0, 3.0, (g, g))
        top = rng.uniform(8, 13, (g, g))
    else:
        radius = rng.uniform(2.4, 4.5, (g, g))
        top = radius * rng.uniform(1.6, 2.6, (g, g)) + rng.uniform(1, 3, (g, g))
    radius = np.minimum(radius, 0.95 * spacing)
    # Presence: density at the tree's cell, and that cell must be open ground.
    ci = np.clip(((HALF_M - ty) / CELL_M).astype(np.int64), 0, GRID_CELLS - 1)
    cj = np.clip(((tx + HALF_M) / CELL_M).astype(np.int64), 0, GRID_CELLS - 1)
    present = (rng.random((g, g)) < density[ci, cj]) & ~canvas.blocked[ci, cj]
    tint = rng.uniform(0.78, 1.18, (g, g, 1)).astype(np.float32) * rng.uniform(0.94, 1.06, (g, g, 3))
    colour = np.clip(pal.vegetation[None, None, :] * tint, 0, 1).astype(np.float32)

    # For each cell, the tallest crown among the 3x3 lattice neighbours.
    x = canvas.xs
    y = canvas.ys
    li = ((y + HALF_M) / spacing + 1).astype(np.int64)  # (N,) lattice row of each grid row
    lj = ((x + HALF_M) / spacing + 1).astype(np.int64)  # (N,)
    best_h = np.zeros((GRID_CELLS, GRID_CELLS), np.float32)
    best = np.full((GRID_CELLS, GRID_CELLS, 2), -1, np.int64)
    for di in (-1, 0, 1):
        ri = np.clip(li + di, 0, g - 1)[:, None]
        for dj in (-1, 0, 1):
            rj = np.clip(lj + dj, 0, g - 1)[None, :]
            d = np.hypot(x[None, :] - tx[ri, rj], y[:, None] - ty[ri, rj])  # (N, N)
            r = radius[ri, rj]
            ok = present[ri, rj] & (d < r)
            q = np.clip(d / r, 0, 1)
            if shape == "cone":
                h = top[ri, rj] * (1 - 0.85 * q)
            elif shape == "palm":
                h = top[ri, rj] * (1 - 0.15 * q * q)
            else:
                crown = np.minimum(r * 1.1, top[ri, rj] * 0.6)
                h = top[ri, rj] - crown * (1 - np.sqrt(np.clip(1 - q * q, 0, 1)))
            h = np.where(ok, h, 0).astype(np.float32)
            better = h > best_h
            best_h = np.where(better, h, best_h)
            best[..., 0] = np.where(better, ri, best[..., 0])
            best[..., 1] = np.where(better, rj, best[..., 1])
    crown_top = canvas.ground + best_h
    tree = (best_h > 0) & (crown_top > canvas.height) & (canvas.material != Material.LANDMARK)
    bi, bj = best[..., 0][tree], best[..., 1][tree]
    canvas.height[tree] = crown_top[tree]
    canvas.material[tree] = Material.TREE
    canvas.albedo[tree] = colour[bi, bj]
    canvas.wall[tree] = colour[bi, bj] * 0.8
    keep = present & (np.abs(tx) < HALF_M) & (np.abs(ty) < HALF_M)
    return np.stack([tx[keep], ty[keep], radius[keep]], axis=1).astype(np.float32)
