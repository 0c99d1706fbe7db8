"""Geo-localisation index and ``locate``: reference embeddings in faiss with their places, and query fusion.

``import geobridge`` does not import this package; importing ``geobridge.index`` loads faiss.

>>> from geobridge.index import GeoIndex, build_index, calibrate_index, locate  # doctest: +SKIP
>>> index = build_index(model, places, views=("satellite",))  # doctest: +SKIP
>>> index.save("runs/sat.gbx")  # doctest: +SKIP
>>> index = GeoIndex.load("runs/sat.gbx")  # doctest: +SKIP
>>> index.fusion_weights = calibrate_index(model, index, calibration_places)  # doctest: +SKIP
>>> result = locate(model, index, images=[("drone", "q.png")], texts=["a church"])  # doctest: +SKIP
>>> result.lat, result.lon, result.matches[0].place_id  # doctest: +SKIP
"""

from __future__ import annotations

from geobridge.index.build import build_index, model_info_of, read_image_table
from geobridge.index.calibrate import CALIBRATION_VIEWS, CalibrationSet, calibrate_index, fit_view_weights
from geobridge.index.fusion_eval import DEFAULT_COMBOS, evaluate_fusion
from geobridge.index.locate import (
    FUSIONS,
    LOCATE_FUSIONS,
    LocateResult,
    Match,
    Prior,
    SearchSettings,
    fuse,
    locate,
)
from geobridge.index.raster import build_raster_index  # rasterio and pyproj load only when a raster is read
from geobridge.index.search import search_depth
from geobridge.index.store import FORMAT_VERSION, GeoIndex, SearchResult

__all__ = [
    "CALIBRATION_VIEWS",
    "CalibrationSet",
    "DEFAULT_COMBOS",
    "FORMAT_VERSION",
    "FUSIONS",
    "GeoIndex",
    "LOCATE_FUSIONS",
    "LocateResult",
    "Match",
    "Prior",
    "SearchResult",
    "SearchSettings",
    "build_index",
    "build_raster_index",
    "calibrate_index",
    "evaluate_fusion",
    "fit_view_weights",
    "fuse",
    "locate",
    "model_info_of",
    "read_image_table",
    "search_depth",
]
