"""The 2.5D scene of one synthetic place: semantic objects plus raster maps on a square grid.

The grid has ``GRID_CELLS`` x ``GRID_CELLS`` cells of ``CELL_M`` metres (300 m across); the satellite tile shows
the central ``SAT_CELLS`` cells (200 m), the drone and street views see the whole grid and a flat far field
beyond it. Row 0 is the northern edge and column 0 the western edge; world coordinates are metres east (``x``)
and north (``y``) of the place's centre.

Every raster is built from the semantic objects (buildings, roads, water, trees, landmark), so all views of a
place share the same objects, colours and layout: the cues a model can use to match them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from geobridge.synth.countries import FIELD_COLOURS, LANDMARK_COLOURS, ROOF_COLOURS, TERRAINS, CountryStyle

GRID_CELLS = 192
CELL_M = 1.5625
SAT_CELLS = 128
HALF_M = GRID_CELLS * CELL_M / 2  # 150 m: half the grid's side
SAT_HALF_M = SAT_CELLS * CELL_M / 2  # 100 m: half the satellite tile's side
WATER_LEVEL_M = -0.8

ZONE_PARK, ZONE_HEDGE, ZONE_CLEARING = 1, 2, 3

LANDMARK_KINDS: tuple[str, ...] = ("tower", "stadium", "church", "bridge", "roundabout")


class Material(IntEnum):
    """What covers a grid cell."""

    GROUND = 0
    GRASS = 1
    ROAD = 2
    WATER = 3
    SAND = 4
    FIELD = 5
    BUILDING = 6
    TREE = 7
    LANDMARK = 8
    BRIDGE = 9
    PAVEMENT = 10
    POOL = 11


@dataclass
class Building:
    """A rectangular building; ``angle`` is the bearing of its long axis in degrees (0 = north)."""

    x: float
    y: float
    length: float
    width: float
    angle: float
    height: float  # wall height above the ground in metres
    roof: str  # colour name from ROOF_COLOURS
    roof_rgb: tuple[float, float, float]  # 0..1
    facade_rgb: tuple[float, float, float]  # 0..1
    gabled: bool

    @property
    def area(self) -> float:
        return self.length * self.width


@dataclass
class Landmark:
    """The place's landmark: a tower, stadium, church, bridge or roundabout in a named colour."""

    kind: str
    colour: str  # name from LANDMARK_COLOURS
    x: float
    y: float
    height: float  # metres above the ground (0 for a flat roundabout island)
    radius: float  # metres, half of its largest extent


@dataclass
class Water:
    """A river, lake or sea coast. ``bearing`` is the river's axis, the lake's or the sea's direction."""

    kind: str  # "river", "lake" or "coast"
    bearing: float  # degrees, 0 = north
    x: float  # a representative point of the water body (river: nearest to the centre; lake: its centre)
    y: float
    width: float  # river width, lake radius or beach width in metres
    winding: bool = False  # a river that meanders strongly


@dataclass
class Roads:
    """The road network: a street grid, a single road, a crossing, or none."""

    pattern: str  # "grid", "parallel", "single", "crossing" or "none"
    bearing: float  # degrees of the main road direction (0 = north), in [0, 180)
    spacing: float  # metres between parallel streets (0 if not a grid)
    width: float
    curvy: bool
    paved: bool


@dataclass
class Scene:
    """One place: semantic objects plus per-cell raster maps (all rasters are ``(GRID_CELLS, GRID_CELLS)``)."""

    country: str
    terrain: str
    height: np.ndarray  # (N, N) float32: surface height in metres (ground, roofs, tree crowns)
    ground: np.ndarray  # (N, N) float32: bare terrain height under everything
    material: np.ndarray  # (N, N) uint8: Material codes
    albedo: np.ndarray  # (N, N, 3) float32 in 0..1: colour of the top surface
    wall: np.ndarray  # (N, N, 3) float32 in 0..1: colour of vertical faces (facades, crowns, banks)
    buildings: list[Building]
    roads: Roads
    landmark: Landmark | None
    water: Water | None
    trees: np.ndarray  # (T, 3) float32: x, y, crown radius of every tree
    roof_palette: dict[str, float]  # roof colour name -> share of the place's buildings
    field_colours: list[str]
    pools: int
    sun_azimuth: float  # bearing the light comes from, degrees
    sun_elevation: float  # degrees above the horizon
    street_xy: tuple[float, float]  # where the street panorama is taken (on a road near the centre)
    far_rgb: tuple[float, float, float]  # colour of the ground beyond the grid
    cell_m: float = CELL_M
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.height.shape[0])


# --------------------------------------------------------------------------------------------- helpers


def cell_centres() -> np.ndarray:
    """Coordinates (metres) of cell centres along one axis, west->east (also south->north reversed)."""
    return ((np.arange(GRID_CELLS) + 0.5) * CELL_M - HALF_M).astype(np.float32)


def bearing_of(x: float, y: float) -> float:
    """Compass bearing (degrees, 0 = north, 90 = east) of the vector (x east, y north)."""
    return math.degrees(math.atan2(x, y)) % 360.0


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


# --------------------------------------------------------------------------------------------- water


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


# --------------------------------------------------------------------------------------------- roads


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


# --------------------------------------------------------------------------------------------- buildings


def _draw_building(canvas: _Canvas, b: Building, *, max_overlap: float = 0.05) -> bool:
    """Rasterise ``b`` unless it overlaps blocked cells; returns whether it was drawn."""
    radius = 0.5 * math.hypot(b.length, b.width) + CELL_M
    win = _window(b.x, b.y, radius)
    if win is None:
        return False
    dx, dy = canvas.local(win, b.x, b.y)
    a = math.radians(b.angle)
    ax, ay = math.sin(a), math.cos(a)
    s = dx * ax + dy * ay  # along the long axis
    t = dx * ay - dy * ax  # across it
    inside = (np.abs(s) <= b.length / 2) & (np.abs(t) <= b.width / 2)
    n_in = int(inside.sum())
    if n_in == 0:
        return False
    if int((inside & canvas.blocked[win]).sum()) > max_overlap * n_in:
        return False
    base = float(canvas.ground[win][inside].max())
    h = np.full(inside.shape, base + b.height, np.float32)
    roof = np.broadcast_to(np.asarray(b.roof_rgb, np.float32), inside.shape + (3,)).copy()
    if b.gabled:
        rise = 0.55 * b.width / 2
        h = h + rise * (1 - np.abs(t) / (b.width / 2))
    else:  # a parapet: slightly darker rim around flat roofs
        rim = (np.abs(s) > b.length / 2 - 1.3) | (np.abs(t) > b.width / 2 - 1.3)
        roof[rim] *= 0.82
    canvas.height[win][inside] = h[inside]
    canvas.material[win][inside] = Material.BUILDING
    canvas.albedo[win][inside] = roof[inside]
    canvas.wall[win][inside] = np.asarray(b.facade_rgb, np.float32)
    canvas.blocked[win] |= inside
    return True


def _new_building(rng: np.random.Generator, pal: _Palette, *, x: float, y: float, length: float, width: float,
                  angle: float, height: float, pitched: float) -> Building:
    name = pal.roof_names[int(rng.choice(len(pal.roof_names), p=pal.roof_weights))]
    roof = _jitter_rgb(rng, pal.roof_rgb[name], 0.05)
    facade = np.clip((1 - pal.wall_mix) * roof + pal.wall_mix * pal.wall_tint, 0, 1)
    facade = np.clip(facade * rng.uniform(1.0, 1.12), 0, 1)
    if length < width:
        length, width, angle = width, length, angle + 90.0
    gabled = bool(width < 16 and rng.random() < pitched)
    return Building(
        x=float(x), y=float(y), length=float(length), width=float(width), angle=float(angle % 180.0),
        height=float(height), roof=name, roof_rgb=tuple(float(c) for c in roof),
        facade_rgb=tuple(float(c) for c in facade), gabled=gabled,
    )


@dataclass
class _BlockPlan:
    """How the blocks of a street grid are used."""

    built: float
    park: float
    plaza: float
    parking: float
    field: float
    lot_m: tuple[float, float]  # (frontage, depth) of lots
    fill: tuple[float, float]  # fraction of the lot the building covers
    heights: tuple[float, float]
    setback: float
    sidewalk: float


def _fill_blocks(canvas: _Canvas, grid: _Grid, plan: _BlockPlan, style: CountryStyle, pal: _Palette,
                 rng: np.random.Generator, *, extra: dict[str, float]) -> list[Building]:
    e1, e2 = grid.axes()
    buildings: list[Building] = []
    reach = HALF_M * 1.5
    ku = range(int(math.floor((-reach - grid.off_u) / grid.su)), int(math.ceil((reach - grid.off_u) / grid.su)))
    sv = grid.sv if grid.cross_streets else max(grid.sv, 60.0)
    kv = range(int(math.floor((-reach - grid.off_v) / sv)), int(math.ceil((reach - grid.off_v) / sv)))
    margin = grid.width / 2 + plan.sidewalk + plan.setback
    uses = ["built", "park", "plaza", "parking", "field"]
    p = np.asarray([plan.built, plan.park, plan.plaza, plan.parking, plan.field], np.float64)
    for bi in ku:
        for bj in kv:
            u0 = grid.off_u + bi * grid.su
            v0 = grid.off_v + bj * sv
            cu, cv = u0 + grid.su / 2, v0 + sv / 2
            cx, cy = grid.to_world(cu, cv)
            if abs(cx) > HALF_M + grid.su or abs(cy) > HALF_M + grid.su:
                continue
            use = uses[int(rng.choice(5, p=p / p.sum()))]
            inner_u = grid.su - 2 * margin
            inner_v = (sv - 2 * margin) if grid.cross_streets else sv
            if inner_u < 6 or inner_v < 6:
                continue
            if use != "built":
                _paint_block(canvas, use, grid, cu, cv, inner_u + 2 * plan.setback, inner_v + 2 * plan.setback,
                             pal, style, rng, extra=extra)
                continue
            lot_w = plan.lot_m[0] * rng.uniform(0.85, 1.2)
            lot_d = plan.lot_m[1] * rng.uniform(0.85, 1.2)
            nu = max(1, int(round(inner_u / lot_d)))  # lots are deep across u (they face the streets along e1)
            nv = max(1, int(round(inner_v / lot_w)))
            du, dv = inner_u / nu, inner_v / nv
            for a in range(nu):
                for c in range(nv):
                    if rng.random() > style.density * (1.0 if plan.lot_m[0] < 20 else 1.1):
                        continue
                    lu = cu - inner_u / 2 + (a + 0.5) * du
                    lv = cv - inner_v / 2 + (c + 0.5) * dv
                    # Follow the wobbly streets: shift the lot with the local displacement of the grid lines.
                    lu_w = lu - float(grid.wobble("u", lv))
                    lv_w = lv - (float(grid.wobble("v", lu)) if grid.cross_streets else 0.0)
                    depth = du * rng.uniform(*plan.fill)
                    front = dv * rng.uniform(*plan.fill)
                    slack_u = (du - depth) / 2
                    # Houses stand towards the street on their side of the block.
                    toward = -1.0 if a < nu / 2 else 1.0
                    lu_w += toward * slack_u * 0.6 if nu > 1 else 0.0
                    x, y = grid.to_world(lu_w, lv_w)
                    if abs(x) > HALF_M + 10 or abs(y) > HALF_M + 10:
                        continue
                    angle = grid.bearing + rng.normal(0, style.wobble_m * 0.5)
                    height = rng.uniform(*plan.heights) * extra.get("height_scale", 1.0)
                    b = _new_building(rng, pal, x=x, y=y, length=front, width=depth, angle=angle,
                                      height=height, pitched=style.pitched)
                    if _draw_building(canvas, b):
                        buildings.append(b)
                        if extra.get("pools", 0) > 0 and rng.random() < extra["pools"]:
                            back = -toward * (du / 2 - 3.0) * 0.8
                            px, py = grid.to_world(lu_w + back * 0.6, lv_w)
                            if _draw_pool(canvas, px, py, grid.bearing, rng):
                                extra["pool_count"] = extra.get("pool_count", 0) + 1
    return buildings


def _block_mask(canvas: _Canvas, grid: _Grid, cu: float, cv: float, size_u: float, size_v: float):
    cx, cy = grid.to_world(cu, cv)
    win = _window(cx, cy, 0.5 * math.hypot(size_u, size_v))
    if win is None:
        return None, None
    dx, dy = canvas.local(win, cx, cy)
    e1, e2 = grid.axes()
    u = dx * e2[0] + dy * e2[1]
    v = dx * e1[0] + dy * e1[1]
    mask = (np.abs(u) < size_u / 2) & (np.abs(v) < size_v / 2) & ~canvas.blocked[win]
    return win, mask


def _paint_block(canvas: _Canvas, use: str, grid: _Grid, cu: float, cv: float, size_u: float, size_v: float,
                 pal: _Palette, style: CountryStyle, rng: np.random.Generator, *, extra: dict[str, float]) -> None:
    win, mask = _block_mask(canvas, grid, cu, cv, size_u, size_v)
    if win is None or not mask.any():
        return
    if use == "park":
        canvas.paint(mask, Material.GRASS, pal.grass * 1.05, win=win)
        extra["parks"] = extra.get("parks", 0) + 1
        # Trees come later from the tree-density map; mark the park there.
        canvas.zone[win][mask] = ZONE_PARK
    elif use == "plaza":
        canvas.paint(mask, Material.PAVEMENT, pal.pavement * 1.08, win=win)
    elif use == "parking":
        canvas.paint(mask, Material.ROAD, pal.road * 1.1, win=win)
        cars = mask & (rng.random(mask.shape) < 0.25)
        n = int(cars.sum())
        if n:
            canvas.albedo[win][cars] = rng.uniform(0.1, 0.9, (n, 3)).astype(np.float32)
            canvas.height[win][cars] = canvas.ground[win][cars] + 1.4
    elif use == "field":
        name = style.fields[int(rng.integers(len(style.fields)))]
        canvas.paint(mask, Material.FIELD, _rgb(FIELD_COLOURS[name]), win=win)


def _draw_pool(canvas: _Canvas, x: float, y: float, bearing: float, rng: np.random.Generator) -> bool:
    length, width = rng.uniform(6, 10), rng.uniform(3, 5)
    win = _window(x, y, 6.0)
    if win is None:
        return False
    dx, dy = canvas.local(win, x, y)
    a = math.radians(bearing + 90)
    s = dx * math.sin(a) + dy * math.cos(a)
    t = dx * math.cos(a) - dy * math.sin(a)
    mask = (np.abs(s) < length / 2) & (np.abs(t) < width / 2)
    if not mask.any() or (mask & canvas.blocked[win]).any():
        return False
    canvas.paint(mask, Material.POOL, np.asarray([0.25, 0.72, 0.86], np.float32), win=win)
    canvas.blocked[win] |= mask
    return True


# --------------------------------------------------------------------------------------------- trees


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


# --------------------------------------------------------------------------------------------- landmark


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


def _draw_landmark(canvas: _Canvas, lm: Landmark, rgb: np.ndarray, rng: np.random.Generator, *,
                   water: _WaterField | None, grid_bearing: float, pal: _Palette) -> None:
    win = _window(lm.x, lm.y, lm.radius + 2 * CELL_M)
    if win is None:
        return
    dx, dy = canvas.local(win, lm.x, lm.y)
    base = float(canvas.ground[win].max()) if lm.kind != "bridge" else WATER_LEVEL_M
    rho = np.broadcast_to(np.hypot(dx, dy), np.broadcast_shapes(dx.shape, dy.shape))
    H, M, A, W = canvas.height[win], canvas.material[win], canvas.albedo[win], canvas.wall[win]
    stone = np.asarray([0.86, 0.83, 0.76], np.float32)

    def put(mask: np.ndarray, h: np.ndarray | float, top: np.ndarray, side: np.ndarray,
            material: Material = Material.LANDMARK) -> None:
        H[mask] = np.broadcast_to(h, mask.shape)[mask] if isinstance(h, np.ndarray) else h
        M[mask] = material
        A[mask] = top[mask] if top.ndim == 3 else top  # per-cell colours (h, w, 3) or one colour (3,)
        W[mask] = side[mask] if side.ndim == 3 else side

    if lm.kind == "tower":
        half = lm.radius
        if rng.random() < 0.5:
            shaft = rho <= half
        else:
            shaft = (np.abs(dx) <= half) & (np.abs(dy) <= half)
        plinth = rho <= half + 5.0
        put(plinth, base + 3.0, pal.pavement, stone * 0.8)
        put(shaft, base + lm.height, rgb, rgb)
        tip = shaft & (rho <= half * 0.45)
        put(tip, base + lm.height + 6.0, rgb * 0.8, rgb * 0.8)
    elif lm.kind == "stadium":
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
        put(stands, h, rgb * (0.85 + 0.2 * frac[..., None]), rgb * 0.9)
        green = np.asarray([0.27, 0.56, 0.26], np.float32)
        put(pitch, base + 0.1, green, green)
        lines = pitch & ((np.abs(s) < 0.8) | (np.abs(q - ring_in * 0.35) < 0.04))
        A[lines] = 0.92
        track = pitch & (q > ring_in - 0.12)
        A[track] = np.asarray([0.72, 0.38, 0.28], np.float32)
    elif lm.kind == "church":
        a = math.radians(grid_bearing + (90 if rng.random() < 0.5 else 0))
        s = dx * math.sin(a) + dy * math.cos(a)
        t = dx * math.cos(a) - dy * math.sin(a)
        length, width = lm.radius * 1.6, lm.radius * 0.75
        nave = (np.abs(s) <= length / 2) & (np.abs(t) <= width / 2)
        wall_h = 10.0
        roof_h = base + wall_h + 0.7 * (width / 2) * (1 - np.abs(t) / (width / 2))
        facade = np.clip(0.75 * stone + 0.25 * rgb, 0, 1)
        put(nave, roof_h, rgb, facade)
        ts = s - (length / 2 - 3.5)
        tower = (np.abs(ts) <= 3.5) & (np.abs(t) <= 3.5)
        spire_q = np.maximum(np.abs(ts), np.abs(t)) / 3.5
        tower_h = base + lm.height - 12.0 + 12.0 * (1 - spire_q)
        put(tower, tower_h, rgb, facade)
    elif lm.kind == "bridge":
        assert water is not None
        # A road deck across the river, perpendicular to it, with two tall pylons.
        a = math.radians(water.water.bearing + 90)
        s = dx * math.sin(a) + dy * math.cos(a)
        t = dx * math.cos(a) - dy * math.sin(a)
        half_len = lm.radius
        deck = (np.abs(s) <= half_len) & (np.abs(t) <= 6.0)
        arch = 0.2 + 6.0 * np.sqrt(np.clip(1 - (s / half_len) ** 2, 0, 1))  # rises from the banks
        put(deck, arch, rgb * 0.9, rgb * 0.75, Material.BRIDGE)
        Gd = canvas.ground[win]
        Gd[deck] = np.broadcast_to(arch, deck.shape)[deck] - 0.01
        span = water.water.width / 2 + 3.0
        for side in (-1.0, 1.0):
            pylon = (np.abs(s - side * span) <= 1.8) & (np.abs(t) <= 7.5)
            put(pylon, 6.0 + lm.height, rgb, rgb)
    elif lm.kind == "roundabout":
        outer = lm.radius
        ring = (rho <= outer) & (rho > outer - 8.0)
        put(ring, canvas.ground[win], pal.road, pal.road * 0.8, Material.ROAD)
        island = rho <= outer - 8.0
        put(island, base + 0.3, pal.grass, pal.grass * 0.8, Material.GRASS)
        bed = rho <= outer - 10.0
        put(bed, base + 0.6, rgb * 0.95, rgb * 0.8)
        column = rho <= 2.2
        put(column, base + lm.height, rgb, rgb)
    canvas.blocked[win] |= rho <= lm.radius + 4


# --------------------------------------------------------------------------------------------- the scene


_LANDMARK_WEIGHTS: dict[str, tuple[tuple[str, float], ...]] = {
    "urban": (("tower", 0.35), ("stadium", 0.2), ("church", 0.2), ("roundabout", 0.15), ("bridge", 0.1)),
    "suburban": (("church", 0.3), ("stadium", 0.2), ("roundabout", 0.25), ("tower", 0.15), ("bridge", 0.1)),
    "rural": (("church", 0.35), ("tower", 0.3), ("bridge", 0.2), ("roundabout", 0.15)),
    "coastal": (("tower", 0.4), ("church", 0.25), ("bridge", 0.1), ("roundabout", 0.1), ("stadium", 0.15)),
    "forest": (("tower", 0.5), ("bridge", 0.25), ("church", 0.25)),
}


def build_scene(style: CountryStyle, rng: np.random.Generator, *, terrain: str | None = None,
                landmark: str | None = None) -> Scene:
    """Generate one place of country ``style`` from ``rng``.

    ``terrain`` (one of TERRAINS) and ``landmark`` (one of LANDMARK_KINDS, or ``"none"``) force those choices;
    by default they are drawn from the country's terrain mix and the terrain's landmark weights.
    """
    if terrain is None:
        terrain = _weighted_choice(rng, style.terrain_mix)
    if terrain not in TERRAINS:
        raise ValueError(f"unknown terrain {terrain!r}; expected one of {', '.join(TERRAINS)}")
    pal = _make_palette(style, rng)
    canvas = _Canvas()
    extra: dict[str, float] = {"height_scale": float(rng.uniform(0.8, 1.25))}

    # -- landmark kind first: a bridge needs a river
    if landmark is None:
        landmark = _weighted_choice(rng, _LANDMARK_WEIGHTS[terrain]) if rng.random() < 0.8 else "none"
    if landmark not in LANDMARK_KINDS and landmark != "none":
        raise ValueError(f"unknown landmark {landmark!r}; expected one of {', '.join(LANDMARK_KINDS)} or 'none'")

    # -- terrain relief and base ground colour
    hills = {"rural": 2.5, "forest": 3.0, "suburban": 1.0, "coastal": 1.2, "urban": 0.3}[terrain]
    canvas.ground[:] = hills * _noise2(rng, 48.0)
    tex = 1 + 0.07 * _noise2(rng, 5.0)[..., None] + 0.05 * _noise2(rng, 18.0)[..., None]
    base_rgb = {
        "urban": pal.pavement,
        "suburban": pal.grass,
        "rural": pal.grass,
        "coastal": 0.7 * pal.grass + 0.3 * pal.ground,
        "forest": 0.55 * pal.vegetation + 0.45 * pal.ground,
    }[terrain]
    patches = np.clip(_noise2(rng, 22.0), 0, 1)[..., None]
    canvas.albedo[:] = (base_rgb * (1 - 0.45 * patches) + pal.ground * 0.45 * patches) * tex
    canvas.material[:] = Material.GRASS if terrain in ("suburban", "rural", "coastal") else Material.GROUND

    # -- water
    water_kind: str | None = None
    if terrain == "coastal":
        water_kind = "coast"
    else:
        odds = {"urban": (0.25, 0.05), "suburban": (0.2, 0.15), "rural": (0.3, 0.2), "forest": (0.2, 0.3)}[terrain]
        r = rng.random()
        water_kind = "river" if r < odds[0] else "lake" if r < odds[0] + odds[1] else None
    if landmark == "bridge" and water_kind != "river":
        if water_kind == "coast":
            landmark = "tower"
        else:
            water_kind = "river"
    wf = _make_water(water_kind, canvas, rng, winding_bias=0.5) if water_kind else None
    if wf is not None:
        # Flatten the relief near water so that rivers and lakes lie in a valley, then paint the water.
        near = np.clip(-wf.shore_dist / 30.0, 0, 1)
        canvas.ground *= near
        _paint_water(canvas, wf, pal, rng)

    # -- fields (rural) before roads
    field_names: list[str] = []
    if terrain == "rural":
        field_names = _paint_fields(canvas, style, rng)

    # -- roads
    grid: _Grid | None = None
    lines: list[tuple[float, float, float, float]] = []
    paved = True
    sidewalk = 0.0
    bearing = style.grid_angle if style.grid_angle is not None else float(rng.uniform(0, 90))
    bearing = (bearing + (rng.normal(0, 3) if style.grid_angle is not None and style.wobble_m > 0 else 0)) % 180
    if terrain in ("urban", "suburban") or (terrain == "coastal" and rng.random() < 0.75):
        lo, hi = style.block_m
        if terrain == "urban":
            su, sv = rng.uniform(lo, (lo + hi) / 2), rng.uniform(lo, hi)
            width = style.road_width_m * rng.uniform(1.1, 1.5)
            sidewalk = 2.0
        else:
            su, sv = rng.uniform((lo + hi) / 2, hi), rng.uniform(hi, hi * 1.6)
            width = style.road_width_m
        grid = _Grid(
            bearing=bearing, su=su, sv=sv, off_u=float(rng.uniform(0, su)), off_v=float(rng.uniform(0, sv)),
            width=width, wob_u=style.wobble_m * rng.uniform(0.3, 1.0), wob_v=style.wobble_m * rng.uniform(0.3, 1.0),
            seed_u=int(rng.integers(2**31)), seed_v=int(rng.integers(2**31)),
            cross_streets=terrain == "urban" or rng.random() < 0.7,
        )
        mask, dist = _road_mask_grid(canvas, grid)
        roads = Roads(pattern="grid" if grid.cross_streets else "parallel", bearing=bearing % 180, spacing=su,
                      width=width, curvy=style.wobble_m >= 5, paved=True)
    elif terrain in ("rural", "coastal") or (terrain == "forest" and rng.random() < 0.8):
        width = style.road_width_m * rng.uniform(0.8, 1.0)
        paved = bool(rng.random() >= style.dirt_roads)
        amp = float(rng.uniform(0, 12)) if terrain != "forest" else float(rng.uniform(6, 18))
        px, py = (float(v) for v in rng.uniform(-35, 35, 2))
        lines.append((px, py, bearing % 180, amp))
        crossing = terrain == "rural" and rng.random() < 0.5
        if crossing:
            lines.append((px, py, (bearing + 90 + rng.normal(0, 15)) % 180, amp))
        mask, dist = _road_mask_lines(canvas, lines, width, rng)
        roads = Roads(pattern="crossing" if crossing else "single", bearing=bearing % 180, spacing=0.0,
                      width=width, curvy=amp > 6, paved=paved)
    else:
        mask, dist = np.zeros_like(canvas.blocked), np.full(canvas.X.shape, 1e9, np.float32)
        roads = Roads(pattern="none", bearing=0.0, spacing=0.0, width=0.0, curvy=False, paved=False)

    # -- landmark position (before buildings, which must keep clear of it)
    lm: Landmark | None = None
    lm_rgb = None
    if landmark != "none":
        colour = list(LANDMARK_COLOURS)[int(rng.integers(len(LANDMARK_COLOURS)))]
        lm_rgb = _rgb(LANDMARK_COLOURS[colour])
        x, y = _place_landmark(canvas, landmark, rng, water=wf, grid=grid, lines=lines)
        size = {
            "tower": (rng.uniform(3.5, 6.0), rng.uniform(40, 85)),
            "stadium": (rng.uniform(34, 46), rng.uniform(14, 22)),
            "church": (rng.uniform(14, 20), rng.uniform(30, 45)),
            "bridge": ((wf.water.width / 2 + 14) if wf else 20.0, rng.uniform(16, 30)),
            "roundabout": (rng.uniform(15, 20), rng.uniform(7, 12)),
        }[landmark]
        lm = Landmark(kind=landmark, colour=colour, x=x, y=y, radius=float(size[0]), height=float(size[1]))
        if landmark == "bridge" and wf is not None:
            # The bridge carries a road across the river.
            b = wf.water.bearing + 90
            extra_mask, extra_dist = _road_mask_lines(canvas, [(x, y, b % 180, 0.0)], 10.0, rng)
            reach = np.hypot(canvas.X - x, canvas.Y - y) < 75
            mask = mask | (extra_mask & reach)
            dist = np.where(extra_mask & reach, np.minimum(dist, extra_dist), dist)
        if landmark == "roundabout" and roads.pattern in ("single", "parallel", "none"):
            cross, cross_dist = _road_mask_lines(canvas, [(x, y, (roads.bearing + 90) % 180, 0.0)],
                                                 max(roads.width, 6.0), rng)
            reach = np.hypot(canvas.X - x, canvas.Y - y) < 60
            mask = mask | (cross & reach)
            dist = np.where(cross & reach, np.minimum(dist, cross_dist), dist)
        # Keep buildings and trees clear of the landmark's footprint.
        clear = np.hypot(canvas.X - x, canvas.Y - y) < lm.radius + 5
        canvas.blocked |= clear
    _paint_roads(canvas, mask, dist, roads.width, pal, paved=paved, sidewalk=sidewalk, rng=rng)
    canvas.height[:] = canvas.ground
    if lm is not None:
        canvas.blocked |= np.hypot(canvas.X - lm.x, canvas.Y - lm.y) < lm.radius + 5

    # -- buildings
    buildings: list[Building] = []
    if style.pools > 0 and terrain in ("suburban", "coastal"):
        extra["pools"] = style.pools
    if grid is not None:
        if terrain == "urban":
            plan = _BlockPlan(built=0.84, park=0.08, plaza=0.04, parking=0.04, field=0.0,
                              lot_m=(style.lot_m * 1.3, style.lot_m * 1.3), fill=(0.85, 1.0),
                              heights=style.urban_height, setback=0.5, sidewalk=sidewalk)
        else:
            plan = _BlockPlan(built=0.85, park=0.08, plaza=0.0, parking=0.02, field=0.05,
                              lot_m=(style.lot_m, style.lot_m * 1.4), fill=(0.45, 0.7),
                              heights=style.house_height, setback=2.0, sidewalk=0.0)
        buildings = _fill_blocks(canvas, grid, plan, style, pal, rng, extra=extra)
    elif roads.pattern != "none" or terrain == "forest":
        buildings = _scatter_farms(canvas, lines, style, pal, rng, terrain=terrain)

    # -- trees
    density = _tree_density(canvas, terrain, style, rng)
    trees = _plant_trees(canvas, density, style, pal, rng)

    # -- landmark raster last (it overwrites whatever lies under it)
    if lm is not None and lm_rgb is not None:
        _draw_landmark(canvas, lm, lm_rgb, rng, water=wf, grid_bearing=bearing, pal=pal)

    # Fine texture on every surface, and walls of bare terrain.
    canvas.albedo *= 1 + 0.035 * rng.standard_normal((GRID_CELLS, GRID_CELLS, 1)).astype(np.float32)
    np.clip(canvas.albedo, 0, 1, out=canvas.albedo)
    bare = np.isin(canvas.material, (Material.GROUND, Material.GRASS, Material.FIELD, Material.SAND,
                                      Material.ROAD, Material.PAVEMENT, Material.WATER, Material.POOL))
    canvas.wall[bare] = canvas.albedo[bare] * 0.75

    north = style.bbox[0] + style.bbox[1] >= 0
    sun_az = float(rng.uniform(120, 240) if north else rng.uniform(-60, 60) % 360)
    far = base_rgb if terrain != "urban" else 0.5 * pal.pavement + 0.5 * pal.grass
    palette = {name: float(w) for name, w in zip(pal.roof_names, pal.roof_weights, strict=True)}
    return Scene(
        country=style.code,
        terrain=terrain,
        height=canvas.height,
        ground=canvas.ground,
        material=canvas.material,
        albedo=canvas.albedo,
        wall=canvas.wall,
        buildings=buildings,
        roads=roads,
        landmark=lm,
        water=wf.water if wf is not None else None,
        trees=trees,
        roof_palette=palette,
        field_colours=field_names,
        pools=int(extra.get("pool_count", 0)),
        sun_azimuth=sun_az,
        sun_elevation=float(rng.uniform(32, 65)),
        street_xy=_street_point(canvas, rng, lm),
        far_rgb=tuple(float(c) for c in far),
        extra={"height_scale": extra["height_scale"], "parks": float(extra.get("parks", 0))},
    )


def _paint_fields(canvas: _Canvas, style: CountryStyle, rng: np.random.Generator) -> list[str]:
    """A patchwork of crop fields in a rotated frame; returns the colour names in the satellite footprint."""
    angle = math.radians(rng.uniform(0, 90))
    fu = rng.uniform(35, 70)
    fv = rng.uniform(45, 110)
    u = canvas.X * math.cos(angle) - canvas.Y * math.sin(angle) + rng.uniform(0, fu)
    v = canvas.X * math.sin(angle) + canvas.Y * math.cos(angle) + rng.uniform(0, fv)
    iu = np.floor(u / fu).astype(np.int64)
    iv = np.floor(v / fv).astype(np.int64)
    cell_id = (iu - iu.min()) * 1000 + (iv - iv.min())
    ids, inverse = np.unique(cell_id, return_inverse=True)
    inverse = inverse.reshape(cell_id.shape)
    options = list(style.fields) + ["meadow"]
    choice = rng.integers(len(options), size=len(ids))
    rgbs = np.stack([_rgb(FIELD_COLOURS[o]) if o != "meadow" else canvas.albedo.mean(axis=(0, 1)) for o in options])
    rgbs = rgbs[choice] * rng.uniform(0.9, 1.1, (len(ids), 1)).astype(np.float32)
    # Crop rows: stripes along v within each field.
    stripes = 1 + 0.06 * np.sin(v * (2 * math.pi / 3.0))[..., None]
    colour = rgbs[inverse] * stripes
    water = canvas.material == Material.WATER
    sand = canvas.material == Material.SAND
    crop = np.asarray(options)[choice][inverse]  # (N, N) crop name of each cell
    fieldmask = ~water & ~sand & (crop != "meadow")
    canvas.albedo[fieldmask] = colour[fieldmask]
    canvas.material[fieldmask] = Material.FIELD
    # Hedgerows along field borders, read by _tree_density.
    border = (np.abs(u - np.round(u / fu) * fu) < 1.6) | (np.abs(v - np.round(v / fv) * fv) < 1.6)
    canvas.zone[border & ~water] = ZONE_HEDGE
    sat = (np.abs(canvas.X) < SAT_HALF_M) & (np.abs(canvas.Y) < SAT_HALF_M) & fieldmask
    names, counts = np.unique(crop[sat], return_counts=True)
    order = np.argsort(-counts)
    return [str(names[k]) for k in order if counts[k] > 0.05 * sat.size]


def _scatter_farms(canvas: _Canvas, lines: list[tuple[float, float, float, float]], style: CountryStyle,
                   pal: _Palette, rng: np.random.Generator, *, terrain: str) -> list[Building]:
    """Farmsteads or cabins: small clusters of buildings beside the roads."""
    buildings: list[Building] = []
    n_clusters = int(rng.integers(1, 4)) if terrain != "forest" else int(rng.integers(0, 3))
    for _ in range(n_clusters):
        if lines:
            px, py, bearing, _ = lines[int(rng.integers(len(lines)))]
            b = math.radians(bearing)
            s = rng.uniform(-80, 80)
            side = rng.choice([-1.0, 1.0]) * rng.uniform(16, 30)
            cx = px + s * math.sin(b) + side * math.cos(b)
            cy = py + s * math.cos(b) - side * math.sin(b)
        else:
            bearing = float(rng.uniform(0, 180))
            cx, cy = (float(v) for v in rng.uniform(-60, 60, 2))
        if terrain == "forest":  # a clearing
            clear = np.hypot(canvas.X - cx, canvas.Y - cy) < rng.uniform(22, 34)
            clear &= ~canvas.blocked
            canvas.material[clear] = Material.GRASS
            canvas.albedo[clear] = pal.grass
            canvas.zone[clear] = ZONE_CLEARING
        for k in range(int(rng.integers(2, 6))):
            big = k == 0 and rng.random() < 0.6 and terrain == "rural"
            length = rng.uniform(20, 32) if big else rng.uniform(8, 14)
            width = rng.uniform(10, 15) if big else rng.uniform(6, 9)
            ox, oy = rng.normal(0, 12, 2)
            bld = _new_building(rng, pal, x=cx + ox, y=cy + oy, length=length, width=width,
                                angle=bearing + rng.choice([0.0, 90.0]) + rng.normal(0, 4),
                                height=rng.uniform(*style.house_height) * (1.3 if big else 1.0),
                                pitched=max(style.pitched, 0.5 if big else 0.0))
            if _draw_building(canvas, bld):
                buildings.append(bld)
    return buildings


def _tree_density(canvas: _Canvas, terrain: str, style: CountryStyle, rng: np.random.Generator) -> np.ndarray:
    scale = float(np.clip(style.tree_density / 0.35, 0.35, 2.0))
    base = {"urban": 0.03, "suburban": 0.2, "rural": 0.02, "coastal": 0.12, "forest": 0.0}[terrain] * scale
    density = np.full(canvas.X.shape, base, np.float32)
    woods = np.clip(_noise2(rng, 30.0) * 2.5 - 0.9, 0, 1)  # patches of woodland
    if terrain == "forest":
        density = 0.55 + 0.4 * np.clip(style.tree_density / 0.5, 0, 1) + 0.0 * woods
    elif terrain in ("rural", "suburban", "coastal"):
        density = np.maximum(density, 0.8 * woods * min(scale, 1.2))
    zone = canvas.zone
    density = np.where(zone == ZONE_PARK, 0.6, density)
    density = np.where(zone == ZONE_CLEARING, 0.04, density)
    density = np.where(canvas.material == Material.FIELD, np.minimum(density, 0.01), density)
    density = np.where(zone == ZONE_HEDGE, 0.55 * min(scale, 1.4), density)
    return np.clip(density, 0, 0.95).astype(np.float32)


def _street_point(canvas: _Canvas, rng: np.random.Generator, landmark: Landmark | None) -> tuple[float, float]:
    """A point on a road near the centre (or on open ground when there is no road) for the panorama."""
    r = np.hypot(canvas.X, canvas.Y)
    # Keep a few metres from trees and walls, so that the panorama is not filled by one crown or facade.
    tall = (canvas.height - canvas.ground) > 0.3
    near = tall.copy()
    reach_cells = 3
    for di in range(-reach_cells, reach_cells + 1):
        for dj in range(-reach_cells, reach_cells + 1):
            if di * di + dj * dj <= reach_cells * reach_cells:
                near |= np.roll(tall, (di, dj), axis=(0, 1))
    clear = ~near
    if landmark is not None:  # far enough to see the landmark whole
        clear &= np.hypot(canvas.X - landmark.x, canvas.Y - landmark.y) > landmark.radius + 12
    for materials, reach in (((Material.ROAD,), 45.0), ((Material.ROAD, Material.PAVEMENT), 70.0),
                             ((Material.GRASS, Material.GROUND, Material.FIELD, Material.SAND), 90.0)):
        ok = np.isin(canvas.material, materials) & clear & (r < reach)
        if ok.any():
            score = np.where(ok, r + rng.uniform(0, 6, r.shape), np.inf)
            k = int(np.argmin(score))
            i, j = divmod(k, GRID_CELLS)
            return float(canvas.xs[j]), float(canvas.ys[i])
    return 0.0, 0.0
