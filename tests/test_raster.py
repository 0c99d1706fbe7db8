"""GeoTIFF reference maps: tiling in any CRS, footprints, nodata, bounded memory, search within a prior, EXIF GPS."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
pyproj = pytest.importorskip("pyproj")

from rasterio.transform import from_origin  # noqa: E402

from geobridge.cli.main import main  # noqa: E402
from geobridge.index.raster import build_raster_index  # noqa: E402

# (crs, origin x, origin y, pixel size in CRS units): ~1 ground metre per pixel around 50 N, 15 E in each CRS.
CRS_CASES = {
    "utm33n": ("EPSG:32633", 500_000.0, 5_540_000.0, 1.0),
    "webmercator": ("EPSG:3857", 1_669_792.0, 6_446_276.0, 1.0 / np.cos(np.radians(50.0))),
    "wgs84": ("EPSG:4326", 15.0, 50.0, 1.0 / 111_229.0),
}


def write_geotiff(path: Path, *, crs: str, x0: float, y0: float, pixel: float, size: int = 160, seed: int = 0,
                  nodata_cols: int = 0) -> Path:
    """A 3-band uint8 GeoTIFF of random texture, north-up; the first ``nodata_cols`` columns are nodata (0)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 255, (3, size, size), dtype=np.uint8)
    data[:, :, :nodata_cols] = 0
    with warnings.catch_warnings():  # affine's own '*' inside from_origin
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        transform = from_origin(x0, y0, pixel, pixel)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=crs,
                       transform=transform, nodata=0) as dst:
        dst.write(data)
    return path


@pytest.mark.parametrize("case", sorted(CRS_CASES))
def test_footprints_match_an_independent_pyproj_computation(tmp_path, world, case):
    crs, x0, y0, pixel = CRS_CASES[case]
    tif = write_geotiff(tmp_path / f"{case}.tif", crs=crs, x0=x0, y0=y0, pixel=pixel)
    tile_m = 40.0
    index = build_raster_index(world["model"], [tif], tile_m=tile_m, stride_m=30.0, show_progress_bar=False)
    to_wgs84 = pyproj.Transformer.from_crs(pyproj.CRS.from_user_input(crs), pyproj.CRS.from_epsg(4326),
                                           always_xy=True)
    geod = pyproj.Geod(ellps="WGS84")
    records = [r for _, r in index.records()]
    assert len(records) >= 9  # 160 px at ~1 m/px: rows and columns at 0, 30, 60, 90 (+120 where it fits)
    for r in records:
        c0, r0, w, h = r["window"]
        assert c0 + w <= 160 and r0 + h <= 160
        xs = np.array([x0 + c * pixel for c in (c0, c0, c0 + w, c0 + w)])
        ys = np.array([y0 - q * pixel for q in (r0, r0 + h, r0 + h, r0)])
        lon, lat = to_wgs84.transform(xs, ys)
        ring = np.asarray(r["footprint"])
        assert ring.shape == (5, 2) and np.array_equal(ring[0], ring[-1])
        np.testing.assert_allclose(ring[:4, 0], lon, atol=1e-9)
        np.testing.assert_allclose(ring[:4, 1], lat, atol=1e-9)
        assert r["native_bounds"] == pytest.approx([xs.min(), ys.min(), xs.max(), ys.max()], abs=1e-6)
        clon, clat = to_wgs84.transform(xs.mean(), ys.mean())
        assert (r["lon"], r["lat"]) == pytest.approx((clon, clat), abs=1e-9)
        # ground size: each edge's geodesic length is tile_m up to half a pixel of rounding
        _, _, top = geod.inv(lon[0], lat[0], lon[3], lat[3])
        _, _, left = geod.inv(lon[0], lat[0], lon[1], lat[1])
        assert top == pytest.approx(tile_m, rel=0.02) and left == pytest.approx(tile_m, rel=0.02)
        assert r["gsd_m"] == pytest.approx(tile_m / 64)  # gb-tiny embeds 64 px satellite tiles
        assert r["crs"] == crs and r["view"] == "satellite" and r["path"] == str(tif)
        # counter-clockwise exterior ring (GeoJSON): positive shoelace area in lon/lat
        area = 0.5 * np.sum(ring[:-1, 0] * ring[1:, 1] - ring[1:, 0] * ring[:-1, 1])
        assert area > 0
    origins = {(r["window"][0], r["window"][1]) for r in records}
    assert len(origins) == len(records)


def test_nodata_tiles_are_skipped_by_threshold(tmp_path, world):
    crs, x0, y0, pixel = CRS_CASES["utm33n"]
    tif = write_geotiff(tmp_path / "holes.tif", crs=crs, x0=x0, y0=y0, pixel=pixel, size=120, nodata_cols=50)
    # 40 m tiles, no overlap: columns 0-39 all nodata, 40-79 a quarter nodata (cols 40-49), 80-119 valid
    strict = build_raster_index(world["model"], [tif], tile_m=40.0, max_nodata=0.1, show_progress_bar=False)
    loose = build_raster_index(world["model"], [tif], tile_m=40.0, max_nodata=0.5, show_progress_bar=False)
    keep_all = build_raster_index(world["model"], [tif], tile_m=40.0, max_nodata=1.0, show_progress_bar=False)
    cols = {name: sorted({r["window"][0] for _, r in ix.records()})
            for name, ix in (("strict", strict), ("loose", loose), ("all", keep_all))}
    assert cols == {"strict": [80], "loose": [40, 80], "all": [0, 40, 80]}
    fractions = {r["window"][0]: r["nodata_fraction"] for _, r in keep_all.records()}
    assert fractions[0] == pytest.approx(1.0) and fractions[80] == pytest.approx(0.0)
    assert fractions[40] == pytest.approx(10 / 40, abs=0.03)


def test_cli_builds_a_raster_index_at_two_scales(tmp_path, world):
    crs, x0, y0, pixel = CRS_CASES["webmercator"]
    tif = write_geotiff(tmp_path / "merc.tif", crs=crs, x0=x0, y0=y0, pixel=pixel)
    out = tmp_path / "ortho.gbx"
    assert main(["index", "build", "--checkpoint", str(world["run"]), "--raster", str(tif), "--tile-m", "40",
                 "--stride-m", "40", "--scales", "1,2", "--out", str(out), "--no-progress"]) == 0
    from geobridge.index import GeoIndex

    index = GeoIndex.load(out)
    by_scale: dict[float, int] = {}
    for _, r in index.records():
        by_scale[r["scale"]] = by_scale.get(r["scale"], 0) + 1
        assert r["tile_m"] == pytest.approx(40.0 * r["scale"])
    assert by_scale == {1.0: 16, 2.0: 4}  # ~155 px of ~1.0 m: 4 x 4 tiles of 40 m, 2 x 2 of 80 m
    assert index.model_info["tiling"]["scales"] == [1.0, 2.0]
    assert main(["index", "build", "--checkpoint", str(world["run"]), "--raster", str(tif),
                 "--out", str(out)]) == 2  # --tile-m is required with --raster


BIG_RASTER_SCRIPT = textwrap.dedent('''
    import json, resource, sys
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window
    from geobridge.index.raster import build_raster_index
    from geobridge.models import GeoBridge, get_model_config

    path, size = sys.argv[1], int(sys.argv[2])
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(500000.0, 5540000.0, 1.0, 1.0), tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", sparse_ok=True)
    with rasterio.open(path, "w", **profile) as dst:  # mostly constant: a textured block every 2048 px
        rng = np.random.default_rng(0)
        for k in range(size // 2048):
            dst.write(rng.integers(0, 255, (3, 512, 512), dtype=np.uint8), window=Window(k * 2048, k * 2048, 512, 512))
    config = get_model_config("gb-tiny")
    config.text.kind = "hashing"
    model = GeoBridge(config).eval()
    before_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS"))
    index = build_raster_index(model, [path], tile_m=2000.0, show_progress_bar=False)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    windows = sorted(tuple(r["window"]) for _, r in index.records())
    print(json.dumps({"before_kb": before_kb, "peak_kb": peak_kb, "count": len(index), "windows": windows}))
''')
RSS_BUDGET_MB = 200  # growth allowed while indexing; the decoded raster alone is 20000 * 20000 * 3 B = 1200 MB


@pytest.mark.slow  # ~20 s: a fresh interpreter imports torch, then 100 windows of 2000 x 2000 px
def test_a_raster_larger_than_its_memory_budget_is_indexed_within_it(tmp_path):
    size = 20_000
    script = tmp_path / "big.py"
    script.write_text(BIG_RASTER_SCRIPT)
    src = str(Path(__file__).resolve().parents[1] / "src")
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "big.tif"), str(size)], capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # 2000 ground-m tiles, no overlap; at UTM's central meridian a grid metre is 1 / 0.9996 ground metres, so a
    # tile is round(2000 * 0.9996) = 1999 px: a 10 x 10 grid of 1999 px windows, each read straight at 64 px
    px = round(2000 * 0.9996)
    assert out["count"] == 100
    assert out["windows"] == sorted([c, r, px, px] for r in range(0, 10 * px, px) for c in range(0, 10 * px, px))
    grown_mb = (out["peak_kb"] - out["before_kb"]) / 1024
    assert grown_mb < RSS_BUDGET_MB, f"indexing grew the peak RSS by {grown_mb:.0f} MB"
    assert (tmp_path / "big.tif").stat().st_size < 50e6  # the test raster itself is small on disk
