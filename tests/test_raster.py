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
    import json, sys
    import faiss, pyproj, rasterio  # imported before the baseline: libraries are not what is measured
    from geobridge.index.raster import build_raster_index
    from geobridge.models import GeoBridge, get_model_config

    def status_kb(key):
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))

    path = sys.argv[1]  # written by another process, so that its writing never counts in this one's peak
    config = get_model_config("gb-tiny")
    config.text.kind = "hashing"
    model = GeoBridge(config).eval()
    before_kb = status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:  # reset the peak (VmHWM) to the current RSS
        fh.write("5")
    index = build_raster_index(model, [path], tile_m=2000.0, show_progress_bar=False)
    peak_kb = status_kb("VmHWM")
    windows = sorted(tuple(r["window"]) for _, r in index.records())
    print(json.dumps({"before_kb": before_kb, "peak_kb": peak_kb, "count": len(index), "windows": windows}))
''')
RSS_BUDGET_MB = 200  # growth allowed while indexing; the decoded raster alone is 20000 * 20000 * 3 B = 1200 MB


def _write_sparse_raster(path: Path, size: int) -> None:
    """A size x size RGB GeoTIFF in UTM 33N, tiled and deflated: mostly constant, a textured block every 2048 px."""
    from rasterio.windows import Window

    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(500000.0, 5540000.0, 1.0, 1.0), tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", sparse_ok=True)
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for k in range(size // 2048):
            dst.write(rng.integers(0, 255, (3, 512, 512), dtype=np.uint8), window=Window(k * 2048, k * 2048, 512, 512))


@pytest.mark.slow  # ~20 s: a fresh interpreter imports torch, then 100 windows of 2000 x 2000 px
def test_a_raster_larger_than_its_memory_budget_is_indexed_within_it(tmp_path):
    size = 20_000
    _write_sparse_raster(tmp_path / "big.tif", size)
    script = tmp_path / "big.py"
    script.write_text(BIG_RASTER_SCRIPT)
    src = str(Path(__file__).resolve().parents[1] / "src")
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "big.tif")], capture_output=True,
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


# ---------------------------------------------------------------------------------------------------------------------
# search within a prior


def _scattered_index(factory: str, *, n: int = 400, dim: int = 16, seed: int = 0):
    from geobridge.index import GeoIndex

    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    lat = 50.0 + rng.uniform(-1.0, 1.0, n)
    lon = 15.0 + rng.uniform(-1.5, 1.5, n)
    views = np.where(np.arange(n) % 3 == 0, "street", "satellite")
    records = [{"place_id": f"p{i}", "lat": float(lat[i]), "lon": float(lon[i]), "view": str(views[i]),
                "path": None} for i in range(n)]
    index = GeoIndex(dim, factory=factory)
    index.add(vectors, records)
    return index, vectors, lat, lon, views


def _geodesic_km(lat0: float, lon0: float, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Independent of geobridge: pyproj's ellipsoidal distance (within 0.5 % of the index's haversine)."""
    _, _, metres = pyproj.Geod(ellps="WGS84").inv(np.full_like(lon, lon0), np.full_like(lat, lat0), lon, lat)
    return np.asarray(metres) / 1000.0


def test_prior_search_equals_brute_force_within_the_radius(monkeypatch):

    index, vectors, lat, lon, views = _scattered_index("Flat")
    from geobridge.index import store

    calls = []
    original = store.selector_search
    monkeypatch.setattr(store, "selector_search",
                        lambda geo, x, k, allowed, **kw: calls.append((k, len(allowed))) or original(
                            geo, x, k, allowed, **kw))
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(5, vectors.shape[1])).astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    qunit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    centre, radius = (50.2, 14.8), 40.0
    within = index.ids_within(centre, radius_km=radius)
    distances = _geodesic_km(*centre, lat, lon)  # the selection agrees with pyproj up to the sphere's 0.5 %
    assert set(np.flatnonzero(distances <= radius * 0.995).tolist()) <= set(within.tolist())
    assert set(within.tolist()) <= set(np.flatnonzero(distances <= radius * 1.005).tolist())
    for view in (None, "satellite"):
        result = index.search(queries, k=10, near=centre, radius_km=radius, view=view)
        candidates = within if view is None else within[views[within] == view]
        sims = qunit @ unit[candidates].T  # (Q, M) brute force over the entries inside the prior
        expected = candidates[np.argsort(-sims, axis=1, kind="stable")[:, :10]]  # (Q, 10)
        np.testing.assert_array_equal(result.ids, expected)
        np.testing.assert_allclose(result.scores, np.take_along_axis(sims, np.argsort(-sims, axis=1)[:, :10], 1),
                                   atol=1e-5)
    assert [k for k, _ in calls] == [10, 10]  # faiss was asked for k hits, not an over-fetched multiple
    assert 0 < calls[0][1] < len(index)  # and searched only the entries within the radius


def test_prior_search_is_exact_on_flat_and_stays_inside_on_ivf_and_hnsw():
    for factory in ("Flat", "IVF8,Flat", "HNSW16"):
        index, vectors, lat, lon, _ = _scattered_index(factory, seed=2)
        centre, radius = (49.7, 15.6), 30.0
        allowed = set(index.ids_within(centre, radius_km=radius).tolist())
        distances = _geodesic_km(*centre, lat, lon)
        assert {i for i in range(len(lat)) if distances[i] <= radius - 0.5} <= allowed
        assert allowed <= {i for i in range(len(lat)) if distances[i] <= radius + 0.5}
        query = np.random.default_rng(3).normal(size=(1, vectors.shape[1]))
        kwargs = {"nprobe": 8} if factory.startswith("IVF") else {}
        result = index.search(query, k=5, near=centre, radius_km=radius, **kwargs)
        got = result.ids[0][result.ids[0] >= 0].tolist()
        assert got and set(got) <= allowed
        if factory != "HNSW16":  # Flat, and IVF probing every list, are exact among the allowed ids
            ids = np.asarray(sorted(allowed))
            sims = (vectors[ids] / np.linalg.norm(vectors[ids], axis=1, keepdims=True)) @ (
                query[0] / np.linalg.norm(query[0]))
            assert got == ids[np.argsort(-sims)][:5].tolist()
    with pytest.raises(Exception, match="radius_km"):
        index.search(query, k=5, near=centre)


def test_locate_within_a_prior_returns_positions_in_the_raster_crs_and_footprints(tmp_path, world):
    from geobridge.index import Prior, locate

    crs, x0, y0, pixel = CRS_CASES["utm33n"]
    near_tif = write_geotiff(tmp_path / "near.tif", crs=crs, x0=x0, y0=y0, pixel=pixel, seed=1)
    far_tif = write_geotiff(tmp_path / "far.tif", crs=crs, x0=x0 + 50_000.0, y0=y0, pixel=pixel, seed=2)
    index = build_raster_index(world["model"], [near_tif, far_tif], tile_m=40.0, show_progress_bar=False)
    query = tmp_path / "q.png"
    from PIL import Image

    with rasterio.open(far_tif) as src:  # a crop of the far raster: without a prior it could match there
        Image.fromarray(src.read(window=((0, 64), (0, 64))).transpose(1, 2, 0)).save(query)
    centre = next(r for _, r in index.records() if r["path"] == str(near_tif))
    result = locate(world["model"], index, images=[("drone", query)], top_k=5,
                    prior=Prior(centre["lat"], centre["lon"], radius_km=2.0))
    assert result.matches and all(m.path == str(near_tif) for m in result.matches)
    assert result.prior == {"lat": centre["lat"], "lon": centre["lon"], "radius_km": 2.0, "source": "near",
                            "entries": sum(1 for _, r in index.records() if r["path"] == str(near_tif))}
    to_utm = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    x, y = to_utm.transform(result.lon, result.lat)
    assert result.native["crs"] == crs and (result.native["x"], result.native["y"]) == pytest.approx((x, y), abs=1e-3)
    top = index.record(next(i for i, r in index.records() if r["place_id"] == result.matches[0].place_id))
    assert (result.native["x"], result.native["y"]) == pytest.approx(tuple(top["native_center"]), abs=1e-3)
    geo = result.to_geojson()
    polygons = [f for f in geo["features"] if f["properties"]["kind"] == "footprint"]
    assert len(polygons) == len(result.matches)
    for feature, match in zip(polygons, result.matches, strict=True):
        assert feature["geometry"]["type"] == "Polygon" and feature["properties"]["rank"] == match.rank
        assert feature["geometry"]["coordinates"][0] == match.footprint
    with pytest.raises(Exception, match="no index entry lies within"):
        locate(world["model"], index, images=[("drone", query)], prior=Prior(0.0, 0.0, radius_km=1.0))


def _jpeg_with_gps(path: Path, lat: float, lon: float) -> Path:
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(5).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    for tag, value, ref in ((2, lat, "NS"), (4, lon, "EW")):
        magnitude = abs(value)
        degrees, rest = int(magnitude), (magnitude - int(magnitude)) * 60
        gps[tag] = (float(degrees), float(int(rest)), round((rest - int(rest)) * 60, 4))
        gps[tag - 1] = ref[0] if value >= 0 else ref[1]
    image.save(path, exif=exif)
    return path


def test_exif_gps_prior_reads_the_photo_position_and_fails_cleanly_without_one(tmp_path, world):
    from geobridge.images import exif_gps

    crs, x0, y0, pixel = CRS_CASES["wgs84"]
    tif = write_geotiff(tmp_path / "geo.tif", crs=crs, x0=x0, y0=y0, pixel=pixel)
    index = tmp_path / "geo.gbx"
    assert main(["index", "build", "--checkpoint", str(world["run"]), "--raster", str(tif), "--tile-m", "40",
                 "--out", str(index), "--no-progress"]) == 0
    lat, lon = 49.9995, 15.0007  # inside the raster (50 N, 15 E is its north-west corner)
    photo = _jpeg_with_gps(tmp_path / "gps.jpg", lat, lon)
    assert exif_gps(photo) == pytest.approx((lat, lon), abs=1e-6)
    assert exif_gps(_jpeg_with_gps(tmp_path / "sw.jpg", -33.5, -70.25)) == pytest.approx((-33.5, -70.25), abs=1e-6)
    out = tmp_path / "out.json"
    assert main(["locate", "--index", str(index), "--image", str(photo), "--prior", "exif", "--radius-km", "0.05",
                 "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["prior"]["source"] == "exif" and payload["prior"]["lat"] == pytest.approx(lat, abs=1e-6)
    assert payload["matches"] and all(_geodesic_km(lat, lon, np.array([m["lat"]]), np.array([m["lon"]]))[0] <= 0.05
                                      for m in payload["matches"])
    assert payload["native"]["crs"] == "EPSG:4326"
    assert main(["locate", "--index", str(index), "--image", str(photo), "--near", f"{lat},{lon}", "--radius-km",
                 "0.05", "--truth", f"{lat},{lon}", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    estimate = _geodesic_km(lat, lon, np.array([payload["lat"]]), np.array([payload["lon"]]))[0] * 1000
    assert payload["truth"]["error_m"] == pytest.approx(estimate, rel=0.005, abs=1e-6)
    plain = tmp_path / "plain.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (10, 20, 30)).save(plain)
    assert exif_gps(plain) is None
    assert main(["locate", "--index", str(index), "--image", str(plain), "--prior", "exif",
                 "--radius-km", "1"]) == 2
    assert main(["locate", "--index", str(index), "--image", str(photo), "--near", "50,15"]) == 2  # no radius


def test_post_locate_searches_within_the_prior(tmp_path, world):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from geobridge.serve.app import create_app

    crs, x0, y0, pixel = CRS_CASES["utm33n"]
    tifs = [write_geotiff(tmp_path / f"r{i}.tif", crs=crs, x0=x0 + i * 30_000.0, y0=y0, pixel=pixel, size=120,
                          seed=i) for i in range(2)]
    index = build_raster_index(world["model"], tifs, tile_m=40.0, show_progress_bar=False)
    second = [r for _, r in index.records() if r["path"] == str(tifs[1])]
    image = _jpeg_with_gps(tmp_path / "q.jpg", 50.0, 15.0).read_bytes()
    with TestClient(create_app(model=world["model"], index=index)) as client:
        near = f"{second[0]['lat']},{second[0]['lon']}"
        response = client.post("/locate?format=geojson", files=[("images", ("q.jpg", image, "image/jpeg"))],
                               data={"near": near, "radius_km": "1.5", "top_k": "20"})
        assert response.status_code == 200, response.text
        features = response.json()["features"]
        matches = [f["properties"] for f in features if f["properties"]["kind"] == "match"]
        assert {m["place_id"] for m in matches} == {r["place_id"] for r in second}  # all 9 tiles, only those
        assert features[0]["properties"]["prior"]["entries"] == len(second)
        assert sum(f["properties"]["kind"] == "footprint" for f in features) == len(matches)
        response = client.post("/locate", json={"text": "a field", "near": near, "radius_km": 1.5})
        assert response.status_code == 200 and response.json()["prior"]["radius_km"] == 1.5
        for bad in ({"near": near}, {"near": "50", "radius_km": "1"}, {"near": near, "radius_km": "-1"}):
            response = client.post("/locate", data={"text": "a field", **bad})
            assert response.status_code == 422 and response.json()["error"] == "bad_prior"


# ---------------------------------------------------------------------------------------------------------------------
# region mode of the generator


def test_region_is_georeferenced_split_disjointly_and_locatable(tmp_path, world):
    from geobridge.images import exif_gps
    from geobridge.index import Prior, locate

    root = tmp_path / "region"
    assert main(["synth", "--out", str(root), "--region", "2", "--drone-views", "1", "--image-size", "48",
                 "--countries", "DE", "--quiet"]) == 0
    manifest = json.loads((root / "region.json").read_text())
    to_wgs84 = pyproj.Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    bounds = {}
    for split in ("train", "test"):
        with rasterio.open(root / split / "ortho.tif") as src:
            assert src.crs.to_epsg() == 32633 and src.res == pytest.approx((1.5625, 1.5625))
            assert (src.width, src.height) == (128, 256)  # one column of two 200 m blocks
            bounds[split] = src.bounds
        queries = [json.loads(line) for line in (root / split / "queries.jsonl").read_text().splitlines()]
        assert sorted(q["view"] for q in queries) == ["drone", "drone", "street", "street"]
        for q in queries:
            b = bounds[split]
            assert b.left <= q["x"] <= b.right and b.bottom <= q["y"] <= b.top
            assert (q["lon"], q["lat"]) == pytest.approx(to_wgs84.transform(q["x"], q["y"]), abs=1e-9)
            assert exif_gps(root / split / q["path"]) == pytest.approx((q["lat"], q["lon"]), abs=1e-7)
    assert bounds["train"].right == bounds["test"].left  # adjacent and disjoint
    assert manifest["splits"]["test"]["columns"] == [1, 2]
    # the whole path: index the test orthomosaic, locate a test drone photo within a 300 m prior
    index = build_raster_index(world["model"], [root / "test" / "ortho.tif"], tile_m=100.0, stride_m=50.0,
                               show_progress_bar=False)
    drone = next(q for q in (json.loads(line) for line in (root / "test" / "queries.jsonl").read_text().splitlines())
                 if q["view"] == "drone")
    result = locate(world["model"], index, images=[("drone", root / "test" / drone["path"])],
                    prior=Prior(drone["lat"], drone["lon"], radius_km=0.3), truth=(drone["lat"], drone["lon"]))
    error_m = 1000 * _geodesic_km(drone["lat"], drone["lon"], np.array([result.lat]), np.array([result.lon]))[0]
    assert error_m <= 300 + 1  # the estimate is a tile centre within the prior
    assert result.truth["error_m"] == pytest.approx(error_m, rel=0.005)  # haversine vs the ellipsoid
    assert result.native["crs"] == "EPSG:32633"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["synth", "--out", str(tmp_path / "mine"), "--region", "2", "--quiet"]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_coarse_scales_are_read_from_the_overviews(tmp_path):
    from rasterio.enums import Resampling

    from geobridge.index.raster import read_tile, tile_windows

    path = write_geotiff(tmp_path / "ov.tif", crs="EPSG:32633", x0=500_000.0, y0=5_540_000.0, pixel=1.0, size=256)
    with rasterio.open(path, "r+") as dst:
        dst.write(np.full((3, 256, 256), 200, np.uint8))
        dst.build_overviews([2, 4, 8], Resampling.average)
    with rasterio.open(path, "r+") as dst:  # change the full-resolution pixels only; the overviews keep 200
        dst.write(np.full((3, 256, 256), 50, np.uint8))
    with rasterio.open(path) as src:
        (window,) = tile_windows(src, tile_m=255.9, stride_m=255.9)  # one 256 px tile
        assert (window.width, window.height) == (256, 256)
        coarse, _ = read_tile(src, window, tile_px=32)  # 8x decimation: the 8x overview
        full, _ = read_tile(src, window, tile_px=256)
    assert np.all(coarse == 200) and np.all(full == 50)


def test_importing_the_index_does_not_load_rasterio_or_pyproj():
    code = ("import sys, geobridge.index, geobridge.cli.main; "
            "assert not {'rasterio', 'pyproj'} & set(sys.modules), 'geo modules imported'")
    src = str(Path(__file__).resolve().parents[1] / "src")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": src})
    assert done.returncode == 0, done.stderr[-1000:]
