"""The 2.5D scene of one synthetic place: semantic objects plus raster maps on a square grid.

The grid has ``GRID_CELLS`` x ``GRID_CELLS`` cells of ``CELL_M`` metres (300 m across); the satellite tile shows
the central ``SAT_CELLS`` cells (200 m), the drone and street views see the whole grid and a flat far field
beyond it. Row 0 is the northern edge and column 0 the western edge; world coordinates are metres east (``x``)
and north (``y``) of the place's centre.

Every raster is built from the semantic objects (buildings, roads, water, trees, landmark), so all views of a
place share the same objects, colours and layout: the cues a model can use to match them.

``build_scene`` composes the pieces: the grid and the objects (``grid``), the canvas and palette (``_canvas``),
water, roads and trees (``_landscape``), buildings (``_buildings``) and the landmark (``_landmarks``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from geobridge.synth._buildings import _BlockPlan, _draw_building, _fill_blocks, _new_building
from geobridge.synth._canvas import _Canvas, _make_palette, _noise2, _Palette, _rgb, _weighted_choice
from geobridge.synth._landmarks import _draw_landmark, _place_landmark
from geobridge.synth._landscape import (
    _Grid,
    _make_water,
    _paint_roads,
    _paint_water,
    _plant_trees,
    _road_mask_grid,
    _road_mask_lines,
)
from geobridge.synth._street_points import more_street_points, street_point
from geobridge.synth.countries import FIELD_COLOURS, LANDMARK_COLOURS, TERRAINS, CountryStyle
from geobridge.synth.grid import (
    CELL_M,
    GRID_CELLS,
    HALF_M,
    LANDMARK_KINDS,
    SAT_CELLS,
    SAT_HALF_M,
    WATER_LEVEL_M,
    ZONE_CLEARING,
    ZONE_HEDGE,
    ZONE_PARK,
    Building,
    Landmark,
    Material,
    Roads,
    Scene,
    Water,
    bearing_of,
    cell_centres,
)

# the grid's names stay importable from here, where the renderers and users import them
__all__ = [
    "CELL_M",
    "GRID_CELLS",
    "HALF_M",
    "LANDMARK_KINDS",
    "SAT_CELLS",
    "SAT_HALF_M",
    "WATER_LEVEL_M",
    "Building",
    "Landmark",
    "Material",
    "Roads",
    "Scene",
    "Water",
    "bearing_of",
    "build_scene",
    "cell_centres",
    "more_street_points",
]

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

    base_rgb = _paint_ground(canvas, terrain, pal, rng)
    water_kind, landmark = _choose_water(terrain, landmark, rng)
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
    bearing = style.grid_angle if style.grid_angle is not None else float(rng.uniform(0, 90))
    bearing = (bearing + (rng.normal(0, 3) if style.grid_angle is not None and style.wobble_m > 0 else 0)) % 180
    grid, lines, mask, dist, roads, paved, sidewalk = _lay_roads(canvas, terrain, style, bearing, rng)

    # -- landmark position (before buildings, which must keep clear of it)
    lm, lm_rgb, mask, dist = _site_landmark(canvas, landmark, rng, water=wf, grid=grid, lines=lines, roads=roads,
                                            mask=mask, dist=dist)
    _paint_roads(canvas, mask, dist, roads.width, pal, paved=paved, sidewalk=sidewalk, rng=rng)
    canvas.height[:] = canvas.ground
    if lm is not None:
        canvas.blocked |= np.hypot(canvas.X - lm.x, canvas.Y - lm.y) < lm.radius + 5

    # -- buildings
    buildings = _raise_buildings(canvas, terrain, style, pal, rng, grid=grid, lines=lines, roads=roads,
                                 sidewalk=sidewalk, extra=extra)

    # -- trees
    density = _tree_density(canvas, terrain, style, rng)
    trees = _plant_trees(canvas, density, style, pal, rng)

    # -- landmark raster last (it overwrites whatever lies under it)
    if lm is not None and lm_rgb is not None:
        _draw_landmark(canvas, lm, lm_rgb, rng, water=wf, grid_bearing=bearing, pal=pal)

    _finish_surfaces(canvas, rng)  # fine texture on every surface, and walls of bare terrain

    return _scene(canvas, style, terrain, pal, rng, base_rgb=base_rgb, buildings=buildings, roads=roads, landmark=lm,
                  water=wf, trees=trees, field_names=field_names, extra=extra)


def _scene(
    canvas: _Canvas,
    style: CountryStyle,
    terrain: str,
    pal: _Palette,
    rng: np.random.Generator,
    *,
    base_rgb: np.ndarray,
    buildings: list[Building],
    roads: Roads,
    landmark: Landmark | None,
    water: Any,
    trees: Any,
    field_names: list[str],
    extra: dict[str, float],
) -> Scene:
    """The finished ``Scene``: the canvas's rasters and what was built, with the sun (from the hemisphere's side
    of the sky), the street panorama's point and the horizon colour."""
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
        landmark=landmark,
        water=water.water if water is not None else None,
        trees=trees,
        roof_palette=palette,
        field_colours=field_names,
        pools=int(extra.get("pool_count", 0)),
        sun_azimuth=sun_az,
        sun_elevation=float(rng.uniform(32, 65)),
        street_xy=street_point(canvas, rng, landmark),
        far_rgb=tuple(float(c) for c in far),
        extra={"height_scale": extra["height_scale"], "parks": float(extra.get("parks", 0))},
    )


def _raise_buildings(
    canvas: _Canvas,
    terrain: str,
    style: CountryStyle,
    pal: _Palette,
    rng: np.random.Generator,
    *,
    grid: _Grid | None,
    lines: list[tuple[float, float, float, float]],
    roads: Roads,
    sidewalk: float,
    extra: dict[str, float],
) -> list[Building]:
    """Blocks of buildings along a street grid (urban: dense and tall, else houses with gardens), or farms and
    cabins along country roads; none where there is neither."""
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
    return buildings


def _finish_surfaces(canvas: _Canvas, rng: np.random.Generator) -> None:
    """Fine texture on every surface, and walls of bare terrain."""
    canvas.albedo *= 1 + 0.035 * rng.standard_normal((GRID_CELLS, GRID_CELLS, 1)).astype(np.float32)
    np.clip(canvas.albedo, 0, 1, out=canvas.albedo)
    bare = np.isin(canvas.material, (Material.GROUND, Material.GRASS, Material.FIELD, Material.SAND,
                                      Material.ROAD, Material.PAVEMENT, Material.WATER, Material.POOL))
    canvas.wall[bare] = canvas.albedo[bare] * 0.75


def _site_landmark(
    canvas: _Canvas,
    landmark: str,
    rng: np.random.Generator,
    *,
    water: Any,
    grid: _Grid | None,
    lines: list[tuple[float, float, float, float]],
    roads: Roads,
    mask: np.ndarray,
    dist: np.ndarray,
) -> tuple[Landmark | None, np.ndarray | None, np.ndarray, np.ndarray]:
    """Place the landmark (``"none"``: no landmark), add the road a bridge carries or a roundabout's cross street
    to the road ``mask``/``dist``, and keep buildings and trees clear of its footprint. Returns the landmark, its
    RGB and the updated road mask and distance."""
    lm: Landmark | None = None
    lm_rgb = None
    if landmark != "none":
        colour = list(LANDMARK_COLOURS)[int(rng.integers(len(LANDMARK_COLOURS)))]
        lm_rgb = _rgb(LANDMARK_COLOURS[colour])
        x, y = _place_landmark(canvas, landmark, rng, water=water, grid=grid, lines=lines)
        size = {
            "tower": (rng.uniform(3.5, 6.0), rng.uniform(40, 85)),
            "stadium": (rng.uniform(34, 46), rng.uniform(14, 22)),
            "church": (rng.uniform(14, 20), rng.uniform(30, 45)),
            "bridge": ((water.water.width / 2 + 14) if water else 20.0, rng.uniform(16, 30)),
            "roundabout": (rng.uniform(15, 20), rng.uniform(7, 12)),
        }[landmark]
        lm = Landmark(kind=landmark, colour=colour, x=x, y=y, radius=float(size[0]), height=float(size[1]))
        if landmark == "bridge" and water is not None:
            # The bridge carries a road across the river.
            b = water.water.bearing + 90
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
    return lm, lm_rgb, mask, dist


def _paint_ground(canvas: _Canvas, terrain: str, pal: _Palette, rng: np.random.Generator) -> np.ndarray:
    """Terrain relief and the base ground colour and material; returns the terrain's base RGB."""
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
    return base_rgb


def _choose_water(terrain: str, landmark: str, rng: np.random.Generator) -> tuple[str | None, str]:
    """The place's water (``coast``, ``river``, ``lake`` or None) and its landmark, changed where a bridge needs
    a river (a coast's bridge becomes a tower)."""
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
    return water_kind, landmark


def _lay_roads(
    canvas: _Canvas, terrain: str, style: CountryStyle, bearing: float, rng: np.random.Generator
) -> tuple[_Grid | None, list[tuple[float, float, float, float]], np.ndarray, np.ndarray, Roads, bool, float]:
    """The place's road network: a street grid (urban, suburban, most coastal places), one or two country roads
    (rural, coastal, most forests) or none. Returns the grid (or None), the country roads' lines, the road mask
    and distance to it, the ``Roads`` summary, whether the roads are paved and the sidewalk width."""
    grid: _Grid | None = None
    lines: list[tuple[float, float, float, float]] = []
    paved = True
    sidewalk = 0.0
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
    return grid, lines, mask, dist, roads, paved, sidewalk


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
