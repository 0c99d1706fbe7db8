"""Region mode of the generator: one contiguous terrain that the photos and the orthomosaic share."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from geobridge.synth import DroneCamera, light_scene, render_drone
from geobridge.synth._region_terrain import MARGIN_CELLS, build_region_terrain, split_view
from geobridge.synth.countries import get_country
from geobridge.synth.grid import CELL_M, SAT_CELLS, Material
from geobridge.synth.scene import build_scene

SEED = 5


@pytest.fixture(scope="module")
def region():
    """A 2 x 2 block region (seed 5): its terrain, lighting and orthomosaic as an (H, W) grey image."""
    terrain = build_region_terrain(get_country("DE"), blocks=2, seed=SEED)
    lighting = light_scene(terrain.scene)
    m = MARGIN_CELLS
    mosaic = lighting.lit[m : m + 2 * SAT_CELLS, m : m + 2 * SAT_CELLS].mean(axis=2)  # (256, 256)
    return terrain, lighting, mosaic


def _mosaic_view(mosaic: np.ndarray, camera: DroneCamera, *, size: int, shift: tuple[float, float] = (0.0, 0.0)):
    """The orthomosaic seen by ``camera`` as if the ground were flat (the drone renderer's pixel rays, each cut
    with the ground plane), optionally sampled ``shift`` metres away: ((size, size) grey, (size, size) valid)."""
    h = math.radians(camera.heading)
    cx = camera.target[0] - camera.distance * math.sin(h) + shift[0]
    cy = camera.target[1] - camera.distance * math.cos(h) + shift[1]
    pitch = math.atan2(camera.altitude, camera.distance)
    f = (size / 2) / math.tan(math.radians(camera.vfov) / 2)
    rows = np.arange(size) + 0.5
    t = np.tan(-pitch + np.arctan((camera.horizon_row * size - rows) / f))[:, None]  # (V, 1) elevation tangents
    b = (h + np.arctan((np.arange(size) + 0.5 - size / 2) / f))[None, :]  # (1, U) bearings
    r = np.where(t < 0, camera.altitude / np.maximum(-t, 1e-6), np.inf)  # (V, 1) distance to the ground
    i = np.floor(-(cy + r * np.cos(b)) / CELL_M).astype(np.int64)  # (V, U) mosaic rows (north edge at y = 0)
    j = np.floor((cx + r * np.sin(b)) / CELL_M).astype(np.int64)
    ok = (r < 200) & (i >= 0) & (i < mosaic.shape[0]) & (j >= 0) & (j < mosaic.shape[1])
    return mosaic[np.clip(i, 0, mosaic.shape[0] - 1), np.clip(j, 0, mosaic.shape[1] - 1)], ok, (j >= 128)


def _corr(a: np.ndarray, b: np.ndarray, ok: np.ndarray, *, factor: int = 4) -> float:
    """Correlation of two (S, S) grey images block-averaged by ``factor``, over the blocks wholly within ``ok``."""
    n = a.shape[0] // factor

    def down(x: np.ndarray) -> np.ndarray:
        return x.astype(np.float64).reshape(n, factor, n, factor).mean(axis=(1, 3))  # (n, n)

    keep = down(ok) == 1
    return float(np.corrcoef(down(a)[keep], down(b)[keep])[0, 1])


def test_a_photo_across_a_block_edge_shows_what_the_mosaic_shows_there(region):
    terrain, lighting, mosaic = region
    size = 64
    true, elsewhere, old, new = [], [], [], []
    for k, y in enumerate((-60.0, -140.0, -260.0, -340.0)):  # points on the seam x = 200 m, one per block row
        row = int(-y // 200)
        camera = DroneCamera(heading=90.0, distance=60.0, altitude=90.0, target=(200.0, y), vfov=60.0)
        photo = render_drone(terrain.scene, lighting, camera, size=size, rng=np.random.default_rng(k))
        grey = photo.mean(axis=2) / 255.0
        view, ok, east = _mosaic_view(mosaic, camera, size=size)
        true.append(_corr(grey, view, ok))
        for shift in ((0.0, 110.0), (0.0, -110.0), (-90.0, 0.0)):
            other, ok2, _ = _mosaic_view(mosaic, camera, size=size, shift=shift)
            elsewhere.append(_corr(grey, other, ok & ok2))
        # the first form of the region: the photo rendered from the western block's own scene
        scene_seed, _ = np.random.SeedSequence(SEED, spawn_key=(row, 0)).spawn(2)
        own = build_scene(get_country("DE"), np.random.default_rng(scene_seed))
        centre = (100.0, -(row + 0.5) * 200.0)
        local = DroneCamera(heading=90.0, distance=60.0, altitude=90.0, vfov=60.0,
                            target=(200.0 - centre[0], y - centre[1]))
        before = render_drone(own, light_scene(own), local, size=size, rng=np.random.default_rng(k)).mean(axis=2)
        assert (ok & east).sum() > 0.3 * ok.sum()  # much of the view lies in the eastern block
        old.append(_corr(before / 255.0, view, ok & east))
        new.append(_corr(grey, view, ok & east))
    assert np.mean(true) > 0.55 and min(true) > 0.4  # seed 5: 0.66 (0.53 to 0.84)
    assert np.mean(true) > np.mean(elsewhere) + 0.4  # seed 5: -0.08 elsewhere
    # across the edge the composed terrain matches the mosaic (seed 5: 0.55); the block's own scene did not (0.14)
    assert np.mean(new) > 0.4 and np.mean(old) < 0.25 and np.mean(new) > np.mean(old) + 0.25


def test_regional_roads_continue_across_block_edges(region):
    terrain, _, _ = region
    material = terrain.scene.material
    m, s = MARGIN_CELLS, SAT_CELLS
    road = np.isin(material, (Material.ROAD, Material.BRIDGE))
    inner = slice(m, m + 2 * s)
    # on both sides of the seam x = 200 m (columns m + s - 1 | m + s) and y = -200 m, every cell is road
    assert road[inner, m + s - 1].all() and road[inner, m + s].all()
    assert road[m + s - 1, inner].all() and road[m + s, inner].all()
    # the blocks' own streets join that network: most road cells of the region are one connected network
    net = np.zeros_like(road)
    net[m + s, m + s] = True
    while True:  # flood fill over 4-neighbours
        grown = net.copy()
        grown[1:] |= net[:-1]
        grown[:-1] |= net[1:]
        grown[:, 1:] |= net[:, :-1]
        grown[:, :-1] |= net[:, 1:]
        grown &= road
        if (grown == net).all():
            break
        net = grown
    own = road.copy()
    own[m + s - 8 : m + s + 8] = False  # leave the regional roads out
    own[:, m + s - 8 : m + s + 8] = False
    assert (net & own)[inner, inner].sum() > 0.8 * own[inner, inner].sum()
    for row in range(2):
        for col in range(2):
            block = (slice(m + row * s, m + (row + 1) * s), slice(m + col * s, m + (col + 1) * s))
            if own[block].sum() > 50:
                assert (net & own)[block].sum() > 0.5 * own[block].sum(), (row, col)


def test_training_photos_see_none_of_the_test_terrain(region):
    terrain, lighting, _ = region
    train, train_light = split_view(terrain, lighting, range(0, 1))
    assert train.height.shape == (terrain.scene.height.shape[0], MARGIN_CELLS + SAT_CELLS)
    camera = DroneCamera(heading=90.0, distance=70.0, altitude=80.0, target=(190.0, -100.0), vfov=62.0)
    image = render_drone(train, train_light, camera, size=48, rng=np.random.default_rng(0))
    lit = lighting.lit.copy()
    lit[:, MARGIN_CELLS + SAT_CELLS :] = 1.0  # paint the test columns white
    altered = type(lighting)(lit=lit, shadow=lighting.shadow, wall_normal=lighting.wall_normal, sun=lighting.sun,
                             far_lit=lighting.far_lit)
    same = render_drone(*split_view(terrain, altered, range(0, 1)), camera, size=48, rng=np.random.default_rng(0))
    assert np.array_equal(image, same)
    whole = render_drone(terrain.scene, altered, camera, size=48, rng=np.random.default_rng(0))
    assert not np.array_equal(image, whole)  # the camera does look across the split line


def _hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_region_files_are_the_lit_terrain_deterministic_and_streets_stand_on_roads(tmp_path, region):
    rasterio = pytest.importorskip("rasterio")
    pytest.importorskip("pyproj")
    from geobridge.synth.region import RegionConfig, generate_region

    terrain, lighting, _ = region
    config = RegionConfig(blocks=2, drones_per_block=1, drone_size=32, street_size=32, seed=SEED)
    manifest = generate_region(tmp_path / "a", config)
    mosaic = np.concatenate([rasterio.open(tmp_path / "a" / split / "ortho.tif").read() for split in ("train", "test")],
                            axis=2).transpose(1, 2, 0)  # (256, 256, 3)
    m = MARGIN_CELLS
    expected = np.rint(np.clip(lighting.lit[m : m + 2 * SAT_CELLS, m : m + 2 * SAT_CELLS] * 255, 0, 255))
    assert np.array_equal(mosaic, expected.astype(np.uint8))
    assert manifest["regional_roads"]["x_m"] == [config.origin[0] + 200.0]
    x0, y0 = config.origin
    streets = 0
    for split in ("train", "test"):
        for line in (tmp_path / "a" / split / "queries.jsonl").read_text().splitlines():
            q = json.loads(line)
            if q["view"] == "street":
                streets += 1
                i, j = terrain.cell_of(q["x"] - x0, q["y"] - y0)
                assert terrain.scene.material[i, j] == Material.ROAD, q
    assert streets == 4
    generate_region(tmp_path / "b", config)
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")
    generate_region(tmp_path / "c", RegionConfig(blocks=2, drones_per_block=1, drone_size=32, street=False,
                                                 seed=SEED + 1))
    assert _hashes(tmp_path / "c")["train/ortho.tif"] != _hashes(tmp_path / "a")["train/ortho.tif"]


def test_look_at_points_must_lie_inside_their_block():
    from geobridge.errors import GeoBridgeError
    from geobridge.synth.region import RegionConfig

    RegionConfig(blocks=2, target_m=100.0).validate()
    with pytest.raises(GeoBridgeError, match="target_m"):
        RegionConfig(blocks=2, target_m=101.0).validate()
