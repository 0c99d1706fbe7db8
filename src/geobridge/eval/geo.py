"""Geodesic metrics: great-circle distances and the localisation error of the top-1 retrieved reference.

Distances are ``geobridge.geodesy.haversine_km`` (a sphere of the mean Earth radius). Coordinates are WGS84 degrees.
Missing coordinates are NaN and propagate to NaN distances, which the summaries skip.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from geobridge.geodesy import EARTH_RADIUS_KM, haversine_km

__all__ = [
    "DEFAULT_THRESHOLDS_KM",
    "EARTH_RADIUS_KM",
    "accuracy_within_km",
    "geodesic_metrics",
    "haversine_km",
    "threshold_key",
    "top1_errors_km",
]

DEFAULT_THRESHOLDS_KM: tuple[float, ...] = (1.0, 25.0, 200.0, 750.0, 2500.0)


def top1_errors_km(
    query_lat: np.ndarray,
    query_lon: np.ndarray,
    gallery_lat: np.ndarray,
    gallery_lon: np.ndarray,
    top1_indices: np.ndarray,
) -> np.ndarray:
    """Per query, the distance in km from its true location to the location of its top-1 gallery item.

    ``query_lat``/``query_lon`` (N,), ``gallery_lat``/``gallery_lon`` (M,), ``top1_indices`` (N,) gallery rows
    (``-1`` = nothing retrieved). Returns (N,) float64 with NaN where either location is missing or nothing was
    retrieved.
    """
    idx = np.asarray(top1_indices, dtype=np.int64).reshape(-1)
    qlat = np.asarray(query_lat, dtype=np.float64).reshape(-1)
    qlon = np.asarray(query_lon, dtype=np.float64).reshape(-1)
    glat = np.asarray(gallery_lat, dtype=np.float64).reshape(-1)
    glon = np.asarray(gallery_lon, dtype=np.float64).reshape(-1)
    if not idx.shape == qlat.shape == qlon.shape:
        raise ValueError("query coordinates and top1_indices must have the same length")
    valid = idx >= 0
    pred_lat = np.full(idx.shape, np.nan)
    pred_lon = np.full(idx.shape, np.nan)
    pred_lat[valid] = glat[idx[valid]]
    pred_lon[valid] = glon[idx[valid]]
    return haversine_km(qlat, qlon, pred_lat, pred_lon)


def accuracy_within_km(errors_km: np.ndarray, threshold_km: float) -> float:
    """The fraction of (non-NaN) errors ``<= threshold_km``; NaN when no error is known."""
    errors = np.asarray(errors_km, dtype=np.float64).reshape(-1)
    errors = errors[~np.isnan(errors)]
    if errors.size == 0:
        return float("nan")
    return float(np.count_nonzero(errors <= threshold_km) / errors.size)


def threshold_key(threshold_km: float) -> str:
    """The metric name of a distance threshold: ``acc@25km``, ``acc@0.5km``."""
    return f"acc@{threshold_km:g}km"


def geodesic_metrics(
    errors_km: np.ndarray, *, thresholds_km: Sequence[float] = DEFAULT_THRESHOLDS_KM
) -> dict[str, float]:
    """Summaries of localisation errors, skipping NaN (unknown) errors.

    Keys: ``median_km`` and ``mean_km`` (km), ``acc@<t>km`` for each threshold (percentage 0..100 of errors
    ``<= t`` km) and ``n_geo`` (how many errors were known). When no error is known, the dict is empty (the keys
    are omitted rather than set to NaN).
    """
    errors = np.asarray(errors_km, dtype=np.float64).reshape(-1)
    errors = errors[~np.isnan(errors)]
    if errors.size == 0:
        return {}
    out = {"median_km": float(np.median(errors)), "mean_km": float(np.mean(errors)), "n_geo": float(errors.size)}
    for threshold in thresholds_km:
        out[threshold_key(threshold)] = 100.0 * float(np.count_nonzero(errors <= threshold) / errors.size)
    return out
