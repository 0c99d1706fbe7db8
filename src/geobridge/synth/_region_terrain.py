"""One contiguous terrain for a region: the blocks' scenes composed into one Scene, with regional roads.

Block ``(row, col)`` is a place of the region's style built from its own seed; its central ``SAT_CELLS`` cells
(200 m) are pasted at their place in a region-wide grid, and the blocks of the outer ring also lend the
``MARGIN_CELLS`` cells (50 m) of their scene beyond the region's edge, so that photos near the edge still see
terrain. The blocks' bare ground is blended across block edges (their scenes overlap by 100 m, and a partition
of unity of tent weights over the overlaps gives one continuous relief; every cell's column is shifted with its
ground, so roofs and crowns keep their heights above it). Then a regional road runs along every interior block
boundary, painted into material, colour and height, so that the blocks' own streets meet a network that
continues across block edges and covers the seams. One sun lights the whole region.

Coordinates are metres east (``x``) and north (``y``) of the region's north-west corner (``y`` is negative inside
the region); the Scene's ``origin`` is the north-west corner of its grid, ``MARGIN_M`` outside the region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from geobridge.synth._canvas import _make_palette, _noise1_at, _noise1_knots
from geobridge.synth.countries import CountryStyle
from geobridge.synth.grid import CELL_M, GRID_CELLS, SAT_CELLS, Landmark, Material, Roads, Scene
from geobridge.synth.render import Lighting
from geobridge.synth.scene import build_scene

MARGIN_CELLS = (GRID_CELLS - SAT_CELLS) // 2  # 32 cells: what a block's scene holds beyond its central tile
MARGIN_M = MARGIN_CELLS * CELL_M  # 50 m
BLOCK_M = SAT_CELLS * CELL_M  # 200 m
_OVERLAP = GRID_CELLS - SAT_CELLS  # 64 cells: neighbouring blocks' scenes overlap by this many
_SHOULDER_M = 1.5  # beside a regional road, buildings and trees are cleared this far
_TALL = (Material.BUILDING, Material.TREE, Material.LANDMARK)


@dataclass
class RegionBlock:
    """One block of a region: where it lies and what its scene drew (positions in region coordinates)."""

    row: int
    col: int
    centre: tuple[float, float]  # (x, y) of the block centre
    terrain: str
    street_xy: tuple[float, float]  # on a road of the composed terrain (the block's own or a regional one)
    view_seed: np.random.SeedSequence  # seeds the block's photos


@dataclass
class RegionTerrain:
    """The composed terrain: one Scene covering the region and its margin, and the blocks it was made of."""

    scene: Scene  # rasters (S, S) with S = blocks * SAT_CELLS + 2 * MARGIN_CELLS
    blocks: list[RegionBlock]  # row-major
    landmarks: list[Landmark]
    road_widths: tuple[tuple[float, ...], tuple[float, ...]]  # widths of the regional roads along x = k * BLOCK_M
    # (k = 1..blocks-1), then of those along y = -k * BLOCK_M

    @property
    def n(self) -> int:
        return len(self.road_widths[0]) + 1

    def block(self, row: int, col: int) -> RegionBlock:
        return self.blocks[row * self.n + col]

    def cell_of(self, x: float, y: float) -> tuple[int, int]:
        """(row, column) of the grid cell holding region point (x, y)."""
        west, north = self.scene.origin
        return int(math.floor((north - y) / CELL_M)), int(math.floor((x - west) / CELL_M))


def build_region_terrain(style: CountryStyle, *, blocks: int, seed: int) -> RegionTerrain:
    """Compose ``blocks x blocks`` places of ``style`` into one terrain; block ``(r, c)`` is built from
    ``SeedSequence(seed, spawn_key=(r, c))`` (its first child seeds the scene, the second the photos)."""
    n = blocks
    size = n * SAT_CELLS + 2 * MARGIN_CELLS
    height = np.zeros((size, size), np.float32)
    ground = np.zeros((size, size), np.float32)
    material = np.zeros((size, size), np.uint8)
    albedo = np.zeros((size, size, 3), np.float32)
    wall = np.zeros((size, size, 3), np.float32)
    blend = np.zeros((size, size), np.float64)  # sum over blocks of weight x ground
    weights = np.zeros((size, size), np.float64)
    t = np.arange(GRID_CELLS)
    tent = np.clip((np.minimum(t, GRID_CELLS - 1 - t) + 0.5) / _OVERLAP, 0, 1)  # (192,) partition of unity
    tent2 = tent[:, None] * tent[None, :]  # (192, 192)
    infos: list[RegionBlock] = []
    landmarks: list[Landmark] = []
    buildings, trees, far, suns = [], [], [], []
    for row in range(n):
        for col in range(n):
            scene_seed, view_seed = np.random.SeedSequence(seed, spawn_key=(row, col)).spawn(2)
            scene = build_scene(style, np.random.default_rng(scene_seed))
            centre = ((col + 0.5) * BLOCK_M, -(row + 0.5) * BLOCK_M)
            r0, c0 = row * SAT_CELLS, col * SAT_CELLS  # the scene's grid lies at rows r0.., columns c0..
            full = (slice(r0, r0 + GRID_CELLS), slice(c0, c0 + GRID_CELLS))
            blend[full] += tent2 * scene.ground
            weights[full] += tent2
            lo_i, hi_i = _owned(row, n)
            lo_j, hi_j = _owned(col, n)
            dst = (slice(r0 + lo_i, r0 + hi_i), slice(c0 + lo_j, c0 + hi_j))
            src = (slice(lo_i, hi_i), slice(lo_j, hi_j))
            height[dst] = scene.height[src]
            ground[dst] = scene.ground[src]
            material[dst] = scene.material[src]
            albedo[dst] = scene.albedo[src]
            wall[dst] = scene.wall[src]
            half = BLOCK_M / 2
            keep_x = (-half - MARGIN_M if col == 0 else -half, half + MARGIN_M if col == n - 1 else half)
            keep_y = (-half - MARGIN_M if row == n - 1 else -half, half + MARGIN_M if row == 0 else half)
            for b in scene.buildings:
                if keep_x[0] <= b.x < keep_x[1] and keep_y[0] <= b.y < keep_y[1]:
                    buildings.append(replace(b, x=b.x + centre[0], y=b.y + centre[1]))
            inside = ((scene.trees[:, 0] >= keep_x[0]) & (scene.trees[:, 0] < keep_x[1])
                      & (scene.trees[:, 1] >= keep_y[0]) & (scene.trees[:, 1] < keep_y[1]))
            trees.append(scene.trees[inside] + np.asarray([centre[0], centre[1], 0.0], np.float32))
            lm = scene.landmark
            if lm is not None and abs(lm.x) < half and abs(lm.y) < half:
                landmarks.append(replace(lm, x=lm.x + centre[0], y=lm.y + centre[1]))
            far.append(scene.far_rgb)
            suns.append((scene.sun_azimuth, scene.sun_elevation))
            street = (scene.street_xy[0] + centre[0], scene.street_xy[1] + centre[1])
            infos.append(RegionBlock(row=row, col=col, centre=centre, terrain=scene.terrain, street_xy=street,
                                     view_seed=view_seed))
    # One continuous relief: shift every cell's column by the blended ground minus its own block's ground.
    shift = (blend / weights).astype(np.float32) - ground
    ground += shift
    height += shift
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**32 - 1,)))  # the region's own draws
    origin = (-MARGIN_M, MARGIN_M)
    widths = _lay_roads(height=height, ground=ground, material=material, albedo=albedo, wall=wall, style=style,
                        infos=infos, n=n, origin=origin, rng=rng)
    scene = Scene(
        country=style.code, terrain="region", height=height, ground=ground, material=material, albedo=albedo,
        wall=wall, buildings=buildings, roads=Roads(pattern="grid", bearing=0.0, spacing=BLOCK_M,
                                                    width=float(np.mean(widths[0] + widths[1])), curvy=False,
                                                    paved=True),
        landmark=None, water=None, trees=np.concatenate(trees).astype(np.float32), roof_palette={},
        field_colours=[], pools=0, sun_azimuth=suns[0][0], sun_elevation=suns[0][1], street_xy=infos[0].street_xy,
        far_rgb=tuple(float(v) for v in np.mean(np.asarray(far), axis=0)), origin=origin,
    )
    terrain = RegionTerrain(scene=scene, blocks=infos, landmarks=landmarks, road_widths=widths)
    for info in infos:
        info.street_xy = _on_road(terrain, info)
    return terrain


def split_view(terrain: RegionTerrain, lighting: Lighting, cols: range) -> tuple[Scene, Lighting]:
    """The part of the terrain over block columns ``cols`` (with the outer margin where it touches the region's
    edge): photos of one split rendered from it see none of the other split's terrain."""
    n = terrain.n
    size = terrain.scene.height.shape[1]
    j0 = 0 if cols.start == 0 else MARGIN_CELLS + cols.start * SAT_CELLS
    j1 = size if cols.stop == n else MARGIN_CELLS + cols.stop * SAT_CELLS
    s = terrain.scene
    sl = (slice(None), slice(j0, j1))
    scene = replace(s, height=s.height[sl], ground=s.ground[sl], material=s.material[sl], albedo=s.albedo[sl],
                    wall=s.wall[sl], origin=(s.origin[0] + j0 * CELL_M, s.origin[1]))
    light = replace(lighting, lit=lighting.lit[sl], shadow=lighting.shadow[sl], wall_normal=lighting.wall_normal[sl])
    return scene, light


def _owned(k: int, n: int) -> tuple[int, int]:
    """The local grid rows (or columns) that block index ``k`` of ``n`` contributes: its central tile, plus the
    margin on the region's outer edges."""
    return (0 if k == 0 else MARGIN_CELLS), (GRID_CELLS if k == n - 1 else MARGIN_CELLS + SAT_CELLS)


def _lay_roads(*, height: np.ndarray, ground: np.ndarray, material: np.ndarray, albedo: np.ndarray,
               wall: np.ndarray, style: CountryStyle, infos: list[RegionBlock], n: int,
               origin: tuple[float, float], rng: np.random.Generator) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Paint a gently wobbling road along every interior block boundary; returns the roads' widths."""
    size = height.shape[0]
    pal = _make_palette(style, rng)
    centres = (np.arange(size) + 0.5) * CELL_M
    xs = origin[0] + centres  # (S,) east of each column
    ys = origin[1] - centres  # (S,) north of each row
    extent = size * CELL_M + 100.0
    widths: list[tuple[float, ...]] = []
    dists, halves = [], []
    for across, along in ((xs, ys), (-ys, xs)):  # lines x = k * BLOCK_M, then lines y = -k * BLOCK_M
        w = tuple(float(v) for v in style.road_width_m * rng.uniform(1.0, 1.4, n - 1))
        widths.append(w)
        wobble = np.stack([2.5 * _noise1_at(_noise1_knots(rng, 120.0, extent), along, 120.0, extent)
                           for _ in range(n - 1)])  # (n-1, S)
        k = np.clip(np.rint(across / BLOCK_M).astype(np.int64), 1, n - 1)  # (S,) nearest line
        off = across - k * BLOCK_M  # (S,) signed distance to that line's straight axis
        d = np.abs(off[None, :] - wobble[k - 1].T)  # (S along, S across)
        half = (np.asarray(w)[k - 1] / 2)[None, :]  # (1, S)
        if across is xs:
            dists.append(d)  # rows = along (y), columns = across (x)
            halves.append(np.broadcast_to(half, d.shape))
        else:
            dists.append(d.T)  # back to (rows, columns)
            halves.append(np.broadcast_to(half, d.shape).T)
    (dv, dh), (hv, hh) = dists, halves
    road = (dv < hv) | (dh < hh)  # (S, S)
    shoulder = ~road & ((dv < hv + _SHOULDER_M) | (dh < hh + _SHOULDER_M))
    water = (material == Material.WATER) | (material == Material.POOL)
    # urban and suburban blocks get a pavement beside the regional road, the others a grass verge over cleared cells
    town = np.zeros((n, n), bool)
    for info in infos:
        town[info.row, info.col] = info.terrain in ("urban", "suburban")
    bi = np.clip(((origin[1] - ys) / BLOCK_M - MARGIN_M / BLOCK_M).astype(np.int64), 0, n - 1)
    bj = np.clip(((xs - origin[0]) / BLOCK_M - MARGIN_M / BLOCK_M).astype(np.int64), 0, n - 1)
    in_town = town[bi[:, None], bj[None, :]]  # (S, S)
    walk = shoulder & ~water & (in_town | np.isin(material, _TALL))
    material[walk] = np.where(in_town[walk], Material.PAVEMENT, Material.GRASS)
    albedo[walk] = np.where(in_town[walk][:, None], pal.pavement[None, :], pal.grass[None, :])
    height[walk] = ground[walk]
    paved = road & ~water
    albedo[paved] = pal.road * (1 + 0.05 * rng.standard_normal((int(paved.sum()), 1))).astype(np.float32)
    material[paved] = Material.ROAD
    # dashed centre lines (3 m on, 3 m off), not inside crossings
    dash_v = (dv < CELL_M * 0.5) & ~(dh < hh) & (np.mod(ys, 6.0) < 3.0)[:, None]
    dash_h = (dh < CELL_M * 0.5) & ~(dv < hv) & (np.mod(xs, 6.0) < 3.0)[None, :]
    line = paved & (dash_v | dash_h)
    albedo[line] = 0.55 * albedo[line] + 0.45 * np.float32(0.95)
    bridge = road & water
    material[bridge] = Material.BRIDGE
    albedo[bridge] = np.asarray([0.55, 0.55, 0.54], np.float32)
    ground[bridge] += 1.0  # a deck above the water
    height[road] = ground[road]
    wall[road | walk] = albedo[road | walk] * 0.75
    wall[bridge] = np.asarray([0.45, 0.45, 0.44], np.float32)
    return widths[0], widths[1]


def _on_road(terrain: RegionTerrain, info: RegionBlock) -> tuple[float, float]:
    """The block's street point if it still lies on a road, else the road cell of the block nearest to it."""
    material = terrain.scene.material
    i, j = terrain.cell_of(*info.street_xy)
    if material[i, j] == Material.ROAD:
        return info.street_xy
    r0, c0 = MARGIN_CELLS + info.row * SAT_CELLS, MARGIN_CELLS + info.col * SAT_CELLS
    tile = material[r0 : r0 + SAT_CELLS, c0 : c0 + SAT_CELLS] == Material.ROAD  # (128, 128)
    rows, cols = np.nonzero(tile)
    if rows.size == 0:  # pragma: no cover - every block borders at least one regional road
        return info.street_xy
    k = int(np.argmin((rows + r0 - i) ** 2 + (cols + c0 - j) ** 2))
    west, north = terrain.scene.origin
    return west + (cols[k] + c0 + 0.5) * CELL_M, north - (rows[k] + r0 + 0.5) * CELL_M
