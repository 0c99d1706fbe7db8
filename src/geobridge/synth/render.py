"""Renderers of a Scene: a north-up satellite tile, oblique drone views and a street-level 360° panorama.

All three are vectorised numpy:

* **satellite**: orthographic top-down view of the central 200 m, lit by the sun with cast shadows.
* **drone** and **street**: a column caster over the heightfield (of any size and origin: a place's grid, or a
  region's composed terrain). Every image column is a vertical plane
  through the camera at one bearing; samples along it give the elevation angle under which each surface is
  seen, and a running maximum of those angles tells, for every pixel row, which surface the ray meets first
  (one ``searchsorted`` for all pixels). Surfaces met from the side are facades (with windows), the others
  are tops (roofs, crowns, ground). Beyond the grid lies flat ground fading into haze, then the sky.

Drone images are pinhole-like crops (vertical lines stay vertical, as with a shift lens); street panoramas are
equirectangular, width 2H, with azimuth 0 = north at the left edge and azimuth growing clockwise
(east at W/4, south at W/2, west at 3W/4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from geobridge.synth.grid import CELL_M, GRID_CELLS, HALF_M, SAT_CELLS, Material, Scene


@dataclass
class Lighting:
    """Per-cell lighting of a scene, shared by every view."""

    lit: np.ndarray  # (N, N, 3) float32: albedo x (ambient + sun x (1 - shadow))
    shadow: np.ndarray  # (N, N) bool: cell in a cast shadow
    wall_normal: np.ndarray  # (N, N, 2) float32: outward horizontal normal (east, north) of facades
    sun: np.ndarray  # (3,) unit vector towards the sun (east, north, up)
    far_lit: np.ndarray  # (3,) lit colour of the far-field ground


@dataclass
class DroneCamera:
    """Where a drone image is taken from: looking along ``heading`` (bearing, degrees) at the centre."""

    heading: float
    distance: float = 75.0  # horizontal distance to the look-at point, metres
    altitude: float = 80.0  # metres above the ground
    target: tuple[float, float] = (0.0, 0.0)
    vfov: float = 70.0  # degrees
    horizon_row: float = 0.55  # where the look-at point sits, as a fraction of the image height


ORBIT_DISTANCE_M = 75.0
ORBIT_ALTITUDE_M = 80.0


def light_scene(scene: Scene) -> Lighting:
    """Sun shading and cast shadows of ``scene``."""
    az = math.radians(scene.sun_azimuth)
    el = math.radians(scene.sun_elevation)
    sun = np.asarray([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)], np.float32)
    h = scene.height
    # Slopes with a min-mod difference, so that a roof's edge cell is not tilted by its wall.
    gx = _minmod(h, axis=1) / CELL_M  # dh/d(east)
    gy = -_minmod(h, axis=0) / CELL_M  # dh/d(north): rows grow southwards
    norm = np.sqrt(gx * gx + gy * gy + 1.0)
    ndotl = (-gx * sun[0] - gy * sun[1] + sun[2]) / norm  # (N, N)
    shadow = _cast_shadows(h, az, el)
    direct = np.clip(ndotl, 0, 1) * np.where(shadow, 0.0, 1.0)
    shade = (0.42 + 0.78 * direct).astype(np.float32)
    water = scene.material == Material.WATER
    shade[water] = 0.55 + 0.45 * shade[water]  # water reflects the sky: flatter shading
    lit = scene.albedo * shade[..., None]  # (N, N, 3)
    # Facade normals: the steepest ascent points into a building, so the outward normal is its opposite.
    cy, cx = np.gradient(h)
    nx, ny = -cx, cy  # -(dh/deast), -(dh/dnorth); dh/dnorth = -dh/drow
    length = np.sqrt(nx * nx + ny * ny) + 1e-6
    wall_normal = np.stack([nx / length, ny / length], axis=-1).astype(np.float32)
    far = np.asarray(scene.far_rgb, np.float32) * (0.42 + 0.78 * max(sun[2], 0.0))
    return Lighting(lit=lit.astype(np.float32), shadow=shadow, wall_normal=wall_normal, sun=sun, far_lit=far)


def _minmod(h: np.ndarray, *, axis: int) -> np.ndarray:
    d = np.diff(h, axis=axis)
    pad = [(0, 0), (0, 0)]
    pad[axis] = (1, 0)
    back = np.pad(d, pad)
    pad[axis] = (0, 1)
    fwd = np.pad(d, pad)
    same = np.sign(back) == np.sign(fwd)
    return np.where(same, np.sign(fwd) * np.minimum(np.abs(back), np.abs(fwd)), 0.0).astype(np.float32)


def _cast_shadows(h: np.ndarray, az: float, el: float) -> np.ndarray:
    """Cells from which the sun is hidden: march towards the sun one cell at a time."""
    rows, cols = h.shape
    tan_el = math.tan(el)
    relief = float(h.max() - h.min())
    steps = min(int(math.ceil(relief / tan_el / CELL_M)) + 1, 2 * max(rows, cols))
    pad = steps + 1
    padded = np.pad(h, pad, mode="constant", constant_values=float(h.min()))
    shadow = np.zeros(h.shape, bool)
    sx, sy = math.sin(az), math.cos(az)
    for k in range(1, steps + 1):
        oj = int(round(k * sx))
        oi = int(round(-k * sy))
        dist = math.hypot(oi, oj) * CELL_M
        shifted = padded[pad + oi : pad + oi + rows, pad + oj : pad + oj + cols]
        shadow |= shifted > h + dist * tan_el + 0.1
    return shadow


# --------------------------------------------------------------------------------------------- satellite


def render_satellite(scene: Scene, lighting: Lighting, *, size: int, rng: np.random.Generator) -> np.ndarray:
    """A north-up orthographic tile of the central ``SAT_CELLS`` cells: (size, size, 3) uint8."""
    c0 = (GRID_CELLS - SAT_CELLS) // 2
    oi, oj = (int(v) for v in rng.integers(-2, 3, 2))  # tiles are never perfectly centred
    tile = lighting.lit[c0 + oi : c0 + oi + SAT_CELLS, c0 + oj : c0 + oj + SAT_CELLS]
    haze = rng.uniform(0.0, 0.08)
    tile = tile * (1 - haze) + haze * np.asarray([0.75, 0.78, 0.82], np.float32)
    img = _to_uint8(tile)
    if size != SAT_CELLS:
        resample = Image.Resampling.BOX if size < SAT_CELLS else Image.Resampling.BILINEAR
        img = np.asarray(Image.fromarray(img).resize((size, size), resample))
    return finish(img, rng)


# --------------------------------------------------------------------------------------------- column caster


def _sample_distances(r0: float, step_min: float, step_rel: float, r_max: float) -> np.ndarray:
    """Distances along a column: fixed steps near the camera, then growing with distance."""
    r_switch = step_min / step_rel
    near = np.arange(r0, min(r_switch, r_max), step_min)
    start = max(r_switch, r0)
    if start >= r_max:
        return near.astype(np.float64)
    n_far = int(math.ceil(math.log(r_max / start) / math.log1p(step_rel))) + 1
    far = start * (1 + step_rel) ** np.arange(n_far)
    return np.concatenate([near, far]).astype(np.float64)


@dataclass
class _Sky:
    horizon: np.ndarray  # (3,)
    zenith: np.ndarray  # (3,)
    haze_m: float


def _make_sky(rng: np.random.Generator) -> _Sky:
    horizon = np.asarray([0.80, 0.85, 0.90], np.float32) * rng.uniform(0.92, 1.06, 3).astype(np.float32)
    zenith = np.asarray([0.32, 0.52, 0.84], np.float32) * rng.uniform(0.85, 1.12, 3).astype(np.float32)
    return _Sky(horizon=np.clip(horizon, 0, 1), zenith=np.clip(zenith, 0, 1), haze_m=float(rng.uniform(900, 2200)))


def _cast(scene: Scene, lighting: Lighting, cam: tuple[float, float, float], bearings: np.ndarray,
          tan_el: np.ndarray, sky: _Sky, rng: np.random.Generator, *, r0: float, step_min: float,
          step_rel: float, r_max: float) -> np.ndarray:
    """Colour of every pixel (row = elevation tangent, column = bearing in radians): (V, U, 3) float32."""
    cx, cy, cz = cam
    west, north = scene.origin
    rows_n, cols_n = scene.height.shape
    r = _sample_distances(r0, step_min, step_rel, r_max)  # (K,)
    k_count = r.shape[0]
    u_count = bearings.shape[0]
    v_count = tan_el.shape[0]
    sb, cb = np.sin(bearings), np.cos(bearings)
    px = cx + sb[:, None] * r[None, :]  # (U, K) east
    py = cy + cb[:, None] * r[None, :]  # (U, K) north
    j = np.floor((px - west) / CELL_M).astype(np.int64)
    i = np.floor((north - py) / CELL_M).astype(np.int64)
    inside = (i >= 0) & (i < rows_n) & (j >= 0) & (j < cols_n)
    ic = np.clip(i, 0, rows_n - 1)
    jc = np.clip(j, 0, cols_n - 1)
    h = np.where(inside, scene.height[ic, jc], 0.0)  # (U, K)
    seen = np.maximum.accumulate((h - cz) / r[None, :], axis=1)  # (U, K) running max of elevation tangents

    # First sample whose running max reaches each pixel's tangent: one searchsorted over offset rows.
    bound = 50.0
    offsets = (4 * bound) * np.arange(u_count)
    flat = (np.clip(seen, -bound, bound) + offsets[:, None]).ravel()
    query = np.clip(tan_el, -bound + 1, bound - 1)[:, None] + offsets[None, :]  # (V, U)
    k = np.searchsorted(flat, query.ravel(), side="left").reshape(v_count, u_count) - (
        np.arange(u_count) * k_count
    )[None, :]
    hit = k < k_count
    kc = np.minimum(k, k_count - 1)
    cols = np.broadcast_to(np.arange(u_count)[None, :], kc.shape)
    hi, hj = ic[cols, kc], jc[cols, kc]
    on_grid = inside[cols, kc] & hit
    rk = r[kc]  # (V, U)
    t = tan_el[:, None]
    r_prev = np.where(kc > 0, r[np.maximum(kc - 1, 0)], 0.0)
    top_h = h[cols, kc]
    is_wall = hit & (cz + t * r_prev < top_h - 0.05)

    # Tops: the lit colour where the ray meets the surface (bilinear, so close ground is not blocky).
    r_top = np.where(t < 0, np.clip((cz - top_h) / np.maximum(-t, 1e-6), r_prev, rk), rk)
    bc = np.broadcast_to(sb[None, :], kc.shape), np.broadcast_to(cb[None, :], kc.shape)
    colour = _bilinear(lighting.lit, cx + bc[0] * r_top, cy + bc[1] * r_top, origin=scene.origin)
    colour = np.where(on_grid[..., None], colour, lighting.far_lit[None, None, :])

    # Facades: the cell's side colour, Lambert-shaded by its normal, with windows on buildings.
    wall_sel = is_wall & on_grid
    if wall_sel.any():
        colour[wall_sel] = _facades(scene, lighting, wall_sel, hi=hi, hj=hj, r_prev=r_prev, t=t, cz=cz,
                                    samples=(px, py, cols, kc))

    # Beyond the samples: flat far ground below the horizon, sky above.
    below = ~hit & (t < 0)
    r_far = np.where(below, (cz - 0.0) / np.maximum(-t, 1e-6), 0.0)
    dist = np.where(hit, rk, r_far)
    fog = 1 - np.exp(-dist / sky.haze_m)
    colour = colour * (1 - fog[..., None]) + sky.horizon * fog[..., None]
    sky_px = ~hit & ~below
    if sky_px.any():
        elev = np.arctan(np.broadcast_to(t, sky_px.shape)[sky_px])
        w = np.clip(elev / (math.pi / 2.6), 0, 1)[:, None] ** 0.6
        colour[sky_px] = sky.horizon * (1 - w) + sky.zenith * w
    return colour.astype(np.float32)


def _facades(scene: Scene, lighting: Lighting, wall_sel: np.ndarray, *, hi: np.ndarray, hj: np.ndarray,
             r_prev: np.ndarray, t: np.ndarray, cz: float,
             samples: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """(M, 3) colours of the M pixels whose ray meets a wall (``wall_sel`` (V, U)): the cell's side colour,
    Lambert-shaded by its normal, with leafy texture on trees and windows on buildings. ``hi``/``hj`` (V, U) the
    hit cells, ``r_prev`` (V, U) the distance where the ray entered them, ``t`` (V, 1) the rows' elevation
    tangents, ``samples`` the column samples' east and north (U, K) with each pixel's column and sample (V, U),
    read only where a window may be (building walls)."""
    wi, wj = hi[wall_sel], hj[wall_sel]
    normal = lighting.wall_normal[wi, wj]  # (M, 2)
    sun_h = lighting.sun[:2] / max(float(np.linalg.norm(lighting.sun[:2])), 1e-6)
    diffuse = np.clip(normal @ sun_h, 0, 1) * math.sqrt(max(1 - float(lighting.sun[2]) ** 2, 0.0))
    r_hit = r_prev[wall_sel]
    z_hit = cz + t[:, 0][np.nonzero(wall_sel)[0]] * r_hit
    z_rel = z_hit - scene.ground[wi, wj]
    top_rel = scene.height[wi, wj] - scene.ground[wi, wj]
    ao = 0.7 + 0.3 * np.clip(z_rel / 4.0, 0, 1)
    shade = (0.45 + 0.75 * diffuse) * ao
    wc = scene.wall[wi, wj] * shade[:, None]
    foliage = scene.material[wi, wj] == Material.TREE
    if foliage.any():  # leafy texture: a hash of the cell and of the height band
        band = np.floor(z_rel * 1.6).astype(np.int64)
        hashed = ((wi * 73856093) ^ (wj * 19349663) ^ (band * 83492791)) % 1000
        leaf = 0.78 + 0.44 * (hashed / 1000.0)
        wc = np.where(foliage[:, None], wc * leaf[:, None].astype(np.float32) * 1.15, wc)
    building = scene.material[wi, wj] == Material.BUILDING
    if building.any():
        px, py, cols, kc = samples
        hx, hy = px[cols[wall_sel], kc[wall_sel]], py[cols[wall_sel], kc[wall_sel]]  # (M,) hit points
        along = -normal[:, 1] * hx + normal[:, 0] * hy
        fw = np.mod(along / 2.8, 1.0)
        fz = np.mod(z_rel / 3.1, 1.0)
        window = (
            building & (fw > 0.25) & (fw < 0.72) & (fz > 0.35) & (fz < 0.8)
            & (z_rel > 1.0) & (z_rel < top_rel - 0.8)
        )
        amp = (0.6 * np.clip(1.7 - r_hit / 70.0, 0, 1))[:, None]
        glass = np.asarray([0.16, 0.2, 0.26], np.float32)
        wc = np.where(window[:, None], wc * (1 - amp) + glass * amp, wc)
    return wc


def render_drone(scene: Scene, lighting: Lighting, camera: DroneCamera, *, size: int, rng: np.random.Generator,
                 supersample: int = 2) -> np.ndarray:
    """An oblique view looking along ``camera.heading`` at the target: (size, size, 3) uint8."""
    s = size * supersample
    h = math.radians(camera.heading)
    cam_x = camera.target[0] - camera.distance * math.sin(h)
    cam_y = camera.target[1] - camera.distance * math.cos(h)
    cam_z = camera.altitude + float(_ground_at(scene, cam_x, cam_y))
    pitch = math.atan2(camera.altitude, camera.distance)
    f = (s / 2) / math.tan(math.radians(camera.vfov) / 2)
    centre_row = camera.horizon_row * s
    rows = np.arange(s) + 0.5
    elev = -pitch + np.arctan((centre_row - rows) / f)  # (V,)
    cols = np.arange(s) + 0.5
    bearings = h + np.arctan((cols - s / 2) / f)  # (U,)
    sky = _make_sky(rng)
    colour = _cast(scene, lighting, (cam_x, cam_y, cam_z), bearings, np.tan(elev), sky, rng,
                   r0=8.0, step_min=0.7, step_rel=0.0055, r_max=2 * HALF_M * 1.45)
    return finish(_to_uint8(_downsample(colour, supersample)), rng)


def render_street(scene: Scene, lighting: Lighting, *, size: int, rng: np.random.Generator,
                  supersample: int = 1, eye_height: float = 2.0, at: tuple[float, float] | None = None) -> np.ndarray:
    """An equirectangular 360° panorama from ``at`` (default the scene's street point): (size, 2*size, 3) uint8."""
    hgt, wid = size * supersample, 2 * size * supersample
    x, y = scene.street_xy if at is None else at
    cam_z = float(_ground_at(scene, x, y)) + eye_height * rng.uniform(0.9, 1.25)
    bearings = 2 * math.pi * (np.arange(wid) + 0.5) / wid
    elev = math.pi / 2 - math.pi * (np.arange(hgt) + 0.5) / hgt
    sky = _make_sky(rng)
    colour = _cast(scene, lighting, (x, y, cam_z), bearings, np.tan(np.clip(elev, -1.55, 1.55)), sky, rng,
                   r0=0.3, step_min=0.45, step_rel=0.008, r_max=2 * HALF_M * 1.45)
    colour = _add_clouds(colour, elev, rng)
    return finish(_to_uint8(_downsample(colour, supersample)), rng)


def _add_clouds(colour: np.ndarray, elev: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Soft clouds in the upper half of a panorama (they wrap around in azimuth)."""
    hgt, wid = colour.shape[:2]
    cover = rng.uniform(0.0, 0.6)
    if cover < 0.1:
        return colour
    knots = rng.uniform(0, 1, (6, 16)).astype(np.float32)
    yy = np.linspace(0, 4.999, hgt // 2)
    xx = np.linspace(0, 16, wid, endpoint=False)
    y0 = yy.astype(np.int64)
    x0 = xx.astype(np.int64)
    fy = (yy - y0)[:, None]
    fx = (xx - x0)[None, :]
    x1 = (x0 + 1) % 16
    field = (knots[y0][:, x0] * (1 - fx) + knots[y0][:, x1] * fx) * (1 - fy) + (
        knots[y0 + 1][:, x0] * (1 - fx) + knots[y0 + 1][:, x1] * fx
    ) * fy
    alpha = np.clip((field - (1 - cover)) * 3.0, 0, 0.85)
    alpha *= np.clip(elev[: hgt // 2, None] / 0.15, 0, 1)
    top = colour[: hgt // 2]
    is_sky = (top[..., 2] > top[..., 0] + 0.08)[..., None]  # only where the sky shows
    a = (alpha[..., None] * is_sky).astype(np.float32)
    colour[: hgt // 2] = top * (1 - a) + np.float32(0.93) * a
    return colour


# --------------------------------------------------------------------------------------------- helpers


def _bilinear(grid: np.ndarray, x: np.ndarray, y: np.ndarray, *, origin: tuple[float, float]) -> np.ndarray:
    """Bilinear lookup of a (rows, cols, C) cell map whose north-west corner is ``origin`` at world coordinates
    x (east), y (north)."""
    west, north = origin
    fi = np.clip((north - y) / CELL_M - 0.5, 0, grid.shape[0] - 1.001)
    fj = np.clip((x - west) / CELL_M - 0.5, 0, grid.shape[1] - 1.001)
    i0 = fi.astype(np.int64)
    j0 = fj.astype(np.int64)
    a = (fi - i0)[..., None].astype(np.float32)
    b = (fj - j0)[..., None].astype(np.float32)
    top = grid[i0, j0] * (1 - b) + grid[i0, j0 + 1] * b
    bottom = grid[i0 + 1, j0] * (1 - b) + grid[i0 + 1, j0 + 1] * b
    return top * (1 - a) + bottom * a


def _ground_at(scene: Scene, x: float, y: float) -> float:
    west, north = scene.origin
    i = min(max(int((north - y) / CELL_M), 0), scene.ground.shape[0] - 1)
    j = min(max(int((x - west) / CELL_M), 0), scene.ground.shape[1] - 1)
    return float(scene.ground[i, j])


def _downsample(colour: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return colour
    v, u = colour.shape[0] // factor, colour.shape[1] // factor
    return colour.reshape(v, factor, u, factor, 3).mean(axis=(1, 3))


def _to_uint8(colour: np.ndarray) -> np.ndarray:
    return (np.clip(colour, 0, 1) * 255 + 0.5).astype(np.uint8)


def finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-image nuisance: exposure, white balance, gamma and sensor noise. uint8 in, uint8 out."""
    x = img.astype(np.float32) / 255.0
    gain = rng.uniform(0.88, 1.12) * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    gamma = rng.uniform(0.88, 1.12)
    x = np.clip(x * gain, 0, 1) ** gamma
    x = x + rng.normal(0, rng.uniform(0.004, 0.018), x.shape).astype(np.float32)
    return _to_uint8(x)
