"""Buildings of a scene: placing them on the street blocks of a grid, pools among them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geobridge.synth._canvas import _Canvas, _jitter_rgb, _Palette, _rgb, _window
from geobridge.synth._landscape import _Grid
from geobridge.synth.countries import FIELD_COLOURS, CountryStyle
from geobridge.synth.grid import CELL_M, HALF_M, ZONE_PARK, Building, Material


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
