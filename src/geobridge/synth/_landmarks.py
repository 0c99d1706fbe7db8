"""The landmark of a scene (tower, stadium, church, bridge or roundabout): its site and its shape."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geobridge.synth._canvas import _Canvas, _Palette, _window
from geobridge.synth._landscape import _Grid, _WaterField
from geobridge.synth.grid import CELL_M, GRID_CELLS, HALF_M, SAT_HALF_M, WATER_LEVEL_M, Landmark, Material


def _place_landmark(canvas: _Canvas, kind: str, rng: np.random.Generator, *, water: _WaterField | None,
                    grid: _Grid | None, lines: list[tuple[float, float, float, float]]) -> tuple[float, float]:
    """Where the landmark goes: a compass direction from the centre (or the centre itself), on dry land."""
    if kind == "bridge" and water is not None:
        return water.water.x, water.water.y
    candidates = []
    for _ in range(12):
        if rng.random() < 0.2:
            dist = rng.uniform(0, 10)
        else:
            dist = rng.uniform(28, 70)
        ang = rng.uniform(0, 2 * math.pi)
        candidates.append((dist * math.sin(ang), dist * math.cos(ang)))
    if kind == "roundabout":
        snapped = []
        for x, y in candidates:
            if grid is not None:
                e1, e2 = grid.axes()
                u, v = x * e2[0] + y * e2[1], x * e1[0] + y * e1[1]
                ku = round((u - grid.off_u) / grid.su)
                kv = round((v - grid.off_v) / grid.sv) if grid.cross_streets else None
                u = grid.off_u + ku * grid.su - float(grid.wobble("u", v))
                if kv is not None:
                    v = grid.off_v + kv * grid.sv - float(grid.wobble("v", u))
                snapped.append(grid.to_world(u, v))
            elif lines:
                px, py, bearing, _ = lines[0]
                b = math.radians(bearing)
                s = (x - px) * math.sin(b) + (y - py) * math.cos(b)
                snapped.append((px + s * math.sin(b), py + s * math.cos(b)))
            else:
                snapped.append((x, y))
        candidates = snapped
    for x, y in candidates:
        if max(abs(x), abs(y)) > SAT_HALF_M - 22:
            continue
        if water is not None:
            i = int((HALF_M - y) / CELL_M)
            j = int((x + HALF_M) / CELL_M)
            if water.shore_dist[min(max(i, 0), GRID_CELLS - 1), min(max(j, 0), GRID_CELLS - 1)] > -22:
                continue
        return float(x), float(y)
    if water is None:
        return 0.0, 0.0
    # Everything near the centre is water: step away from the water body.
    away = math.atan2(-water.water.x, -water.water.y)
    return 60.0 * math.sin(away), 60.0 * math.cos(away)


@dataclass
class _Site:
    """The landmark's window of the canvas: offsets from its centre, the rasters to draw into, its base height."""

    canvas: _Canvas
    win: tuple[slice, slice]
    dx: np.ndarray
    dy: np.ndarray
    rho: np.ndarray
    base: float

    def __post_init__(self) -> None:
        win = self.win
        self.H, self.M = self.canvas.height[win], self.canvas.material[win]
        self.A, self.W = self.canvas.albedo[win], self.canvas.wall[win]

    def put(self, mask: np.ndarray, h: np.ndarray | float, top: np.ndarray, side: np.ndarray,
            material: Material = Material.LANDMARK) -> None:
        self.H[mask] = np.broadcast_to(h, mask.shape)[mask] if isinstance(h, np.ndarray) else h
        self.M[mask] = material
        self.A[mask] = top[mask] if top.ndim == 3 else top  # per-cell colours (h, w, 3) or one colour (3,)
        self.W[mask] = side[mask] if side.ndim == 3 else side


_STONE = np.asarray([0.86, 0.83, 0.76], np.float32)


def _draw_landmark(canvas: _Canvas, lm: Landmark, rgb: np.ndarray, rng: np.random.Generator, *,
                   water: _WaterField | None, grid_bearing: float, pal: _Palette) -> None:
    """Raster the landmark into the canvas (it overwrites whatever lies under it) and block its surroundings."""
    win = _window(lm.x, lm.y, lm.radius + 2 * CELL_M)
    if win is None:
        return
    dx, dy = canvas.local(win, lm.x, lm.y)
    base = float(canvas.ground[win].max()) if lm.kind != "bridge" else WATER_LEVEL_M
    rho = np.broadcast_to(np.hypot(dx, dy), np.broadcast_shapes(dx.shape, dy.shape))
    site = _Site(canvas=canvas, win=win, dx=dx, dy=dy, rho=rho, base=base)
    draw = {"tower": _draw_tower, "stadium": _draw_stadium, "church": _draw_church, "bridge": _draw_bridge,
            "roundabout": _draw_roundabout}.get(lm.kind)
    if draw is not None:
        draw(site, lm, rgb, rng, water=water, grid_bearing=grid_bearing, pal=pal)
    canvas.blocked[win] |= rho <= lm.radius + 4


def _draw_tower(site: _Site, lm: Landmark, rgb: np.ndarray, rng: np.random.Generator, *,
                water: _WaterField | None, grid_bearing: float, pal: _Palette) -> None:
    """A round or square shaft on a plinth, with a tip."""
    dx, dy, rho, base = site.dx, site.dy, site.rho, site.base
    half = lm.radius
    if rng.random() < 0.5:
        shaft = rho <= half
    else:
        shaft = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    plinth = rho <= half + 5.0
    site.put(plinth, base + 3.0, pal.pavement, _STONE * 0.8)
    site.put(shaft, base + lm.height, rgb, rgb)
    tip = shaft & (rho <= half * 0.45)
    site.put(tip, base + lm.height + 6.0, rgb * 0.8, rgb * 0.8)


def _draw_stadium(site: _Site, lm: Landmark, rgb: np.ndarray, rng: np.random.Generator, *,
                water: _WaterField | None, grid_bearing: float, pal: _Palette) -> None:
    """An oval of stands rising outwards around a marked pitch and a running track."""
    dx, dy, base, A = site.dx, site.dy, site.base, site.A
    a = math.radians(grid_bearing)
    s = dx * math.sin(a) + dy * math.cos(a)
    t = dx * math.cos(a) - dy * math.sin(a)
    ra, rb = lm.radius, lm.radius * 0.72
    q = np.sqrt((s / ra) ** 2 + (t / rb) ** 2)  # 1 at the outer wall
    ring_in = 1 - 11.0 / lm.radius
    stands = (q <= 1) & (q > ring_in)
    pitch = q <= ring_in
    frac = np.clip((q - ring_in) / (1 - ring_in), 0, 1)
    h = base + 5.0 + (lm.height - 5.0) * frac
    site.put(stands, h, rgb * (0.85 + 0.2 * frac[..., None]), rgb * 0.9)
    green = np.asarray([0.27, 0.56, 0.26], np.float32)
    site.put(pitch, base + 0.1, green, green)
    lines = pitch & ((np.abs(s) < 0.8) | (np.abs(q - ring_in * 0.35) < 0.04))
    A[lines] = 0.92
    track = pitch & (q > ring_in - 0.12)
    A[track] = np.asarray([0.72, 0.38, 0.28], np.float32)


def _draw_church(site: _Site, lm: Landmark, rgb: np.ndarray, rng: np.random.Generator, *,
                water: _WaterField | None, grid_bearing: float, pal: _Palette) -> None:
    """A gabled nave along or across the street grid, with a spired tower at one end."""
    dx, dy, base = site.dx, site.dy, site.base
    a = math.radians(grid_bearing + (90 if rng.random() < 0.5 else 0))
    s = dx * math.sin(a) + dy * math.cos(a)
    t = dx * math.cos(a) - dy * math.sin(a)
    length, width = lm.radius * 1.6, lm.radius * 0.75
    nave = (np.abs(s) <= length / 2) & (np.abs(t) <= width / 2)
    wall_h = 10.0
    roof_h = base + wall_h + 0.7 * (width / 2) * (1 - np.abs(t) / (width / 2))
    facade = np.clip(0.75 * _STONE + 0.25 * rgb, 0, 1)
    site.put(nave, roof_h, rgb, facade)
    ts = s - (length / 2 - 3.5)
    tower = (np.abs(ts) <= 3.5) & (np.abs(t) <= 3.5)
    spire_q = np.maximum(np.abs(ts), np.abs(t)) / 3.5
    tower_h = base + lm.height - 12.0 + 12.0 * (1 - spire_q)
    site.put(tower, tower_h, rgb, facade)


def _draw_bridge(site: _Site, lm: Landmark, rgb: np.ndarray, rng: np.random.Generator, *,
                water: _WaterField | None, grid_bearing: float, pal: _Palette) -> None:
    """A road deck across the river, perpendicular to it, with two tall pylons."""
    dx, dy = site.dx, site.dy
    assert water is not None
    a = math.radians(water.water.bearing + 90)
    s = dx * math.sin(a) + dy * math.cos(a)
    t = dx * math.cos(a) - dy * math.sin(a)
    half_len = lm.radius
    deck = (np.abs(s) <= half_len) & (np.abs(t) <= 6.0)
    arch = 0.2 + 6.0 * np.sqrt(np.clip(1 - (s / half_len) ** 2, 0, 1))  # rises from the banks
    site.put(deck, arch, rgb * 0.9, rgb * 0.75, Material.BRIDGE)
    Gd = site.canvas.ground[site.win]
    Gd[deck] = np.broadcast_to(arch, deck.shape)[deck] - 0.01
    span = water.water.width / 2 + 3.0
    for side in (-1.0, 1.0):
        pylon = (np.abs(s - side * span) <= 1.8) & (np.abs(t) <= 7.5)
        site.put(pylon, 6.0 + lm.height, rgb, rgb)


def _draw_roundabout(site: _Site, lm: Landmark, rgb: np.ndarray, rng: np.random.Generator, *,
                water: _WaterField | None, grid_bearing: float, pal: _Palette) -> None:
    """A ring road around a planted island with a central column."""
    rho, base = site.rho, site.base
    outer = lm.radius
    ring = (rho <= outer) & (rho > outer - 8.0)
    site.put(ring, site.canvas.ground[site.win], pal.road, pal.road * 0.8, Material.ROAD)
    island = rho <= outer - 8.0
    site.put(island, base + 0.3, pal.grass, pal.grass * 0.8, Material.GRASS)
    bed = rho <= outer - 10.0
    site.put(bed, base + 0.6, rgb * 0.95, rgb * 0.8)
    column = rho <= 2.2
    site.put(column, base + lm.height, rgb, rgb)
