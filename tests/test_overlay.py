"""Raster quicklooks for the map page: WGS84 bounds, transparent nodata, a bounded size, the service endpoints."""

from __future__ import annotations

import io

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
pyproj = pytest.importorskip("pyproj")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from test_raster import CRS_CASES, write_geotiff  # noqa: E402

from geobridge.index.raster import build_raster_index  # noqa: E402
from geobridge.serve.app import create_app  # noqa: E402
from geobridge.serve.overlay import quicklook, raster_sources  # noqa: E402


@pytest.mark.parametrize("case", ["utm33n", "wgs84"])
def test_quicklook_is_a_lon_lat_grid_over_the_raster_bounds_with_nodata_transparent(tmp_path, case):
    crs, x0, y0, pixel = CRS_CASES[case]
    tif = write_geotiff(tmp_path / "a.tif", crs=crs, x0=x0, y0=y0, pixel=pixel, size=300, nodata_cols=100)
    png, bounds = quicklook(tif, max_px=64)
    to_wgs84 = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    expected = to_wgs84.transform_bounds(x0, y0 - 300 * pixel, x0 + 300 * pixel, y0)
    assert bounds == pytest.approx(list(expected), abs=1e-9)
    image = np.asarray(Image.open(io.BytesIO(png)))
    assert image.shape[2] == 4 and max(image.shape[:2]) == 64
    alpha = image[:, :, 3]
    # the western third is nodata: transparent; the eastern part is opaque texture
    assert (alpha[:, : image.shape[1] // 4] == 0).mean() > 0.95
    assert (alpha[:, image.shape[1] // 2 :] == 255).mean() > 0.95
    assert image[:, image.shape[1] // 2 :, :3].std() > 10  # averaged-down noise, not a flat fill


def test_service_lists_and_serves_the_index_rasters(tmp_path, world):
    crs, x0, y0, pixel = CRS_CASES["webmercator"]
    tif = write_geotiff(tmp_path / "m.tif", crs=crs, x0=x0, y0=y0, pixel=pixel)
    index = build_raster_index(world["model"], [tif], tile_m=40.0, show_progress_bar=False)
    assert raster_sources(r for _, r in index.records()) == [tif]
    with TestClient(create_app(model=world["model"], index=index)) as client:
        listed = client.get("/overlays.json").json()["overlays"]
        assert [o["id"] for o in listed] == [0] and listed[0]["name"] == "m.tif"
        assert listed[0]["bounds"] == pytest.approx(quicklook(tif)[1])
        response = client.get(listed[0]["url"])
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(response.content)).mode == "RGBA"
        assert client.get("/overlay/7.png").status_code == 404
    from geobridge.index import build_index

    plain = build_index(world["model"], world["places"], views=("satellite",), show_progress_bar=False)
    with TestClient(create_app(model=world["model"], index=plain)) as client:
        assert client.get("/overlays.json").json() == {"overlays": []}
