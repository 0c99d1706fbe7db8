"""Geodesy on a sphere: great-circle distances, points on the unit sphere, chords and centroids.

One copy of the sphere maths for every layer (the batch sampler's GPS neighbours, evaluation's localisation
errors, the index's search within a prior, ``locate``'s consensus estimate). Distances use the haversine formula
on a sphere of radius :data:`EARTH_RADIUS_KM` (the IUGG mean Earth radius, 6371.0088 km), which differs from the
WGS84 ellipsoid by at most about 0.5 %. Coordinates are WGS84 degrees. NaN in, NaN out. Needs numpy only.
"""

from __future__ import annotations

import math

import numpy as np

EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Great-circle distance in km between (lat1, lon1) and (lat2, lon2), in degrees; arrays broadcast together.

    ``d = 2 R asin(sqrt(sin^2(dlat/2) + cos(lat1) cos(lat2) sin^2(dlon/2)))``, with the argument of asin clipped
    to [0, 1] against rounding (antipodes give exactly ``pi * R``). Returns float64.
    """
    phi1 = np.radians(np.asarray(lat1, dtype=np.float64))
    phi2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dphi = phi2 - phi1
    dlmb = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    h = np.sin(dphi / 2.0) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlmb / 2.0) ** 2
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def unit_xyz(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """(..., 3) float64 points on the unit sphere of ``lat``/``lon`` degrees (...); the chord between two points
    is monotone in their great-circle distance."""
    phi, lmb = np.radians(np.asarray(lat, dtype=np.float64)), np.radians(np.asarray(lon, dtype=np.float64))
    cos_phi = np.cos(phi)
    return np.stack([cos_phi * np.cos(lmb), cos_phi * np.sin(lmb), np.sin(phi)], axis=-1)


def chord_of_km(radius_km: float) -> float:
    """The unit-sphere chord of a great-circle distance of ``radius_km`` (2 at and beyond half the circumference)."""
    angle = min(math.pi, float(radius_km) / EARTH_RADIUS_KM)
    return 2.0 * math.sin(angle / 2.0)


def spherical_centroid(lat: np.ndarray, lon: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """The ``weights``-weighted mean direction of points (N,) on the sphere (safe across the antimeridian), in
    degrees; the heaviest point where the directions cancel (antipodes)."""
    mean = (np.asarray(weights, dtype=np.float64)[:, None] * unit_xyz(lat, lon)).sum(axis=0)  # (3,)
    norm = float(np.linalg.norm(mean))
    if norm < 1e-12:
        j = int(np.argmax(weights))
        return float(lat[j]), float(lon[j])
    x, y, z = mean / norm
    return float(np.degrees(np.arcsin(np.clip(z, -1.0, 1.0)))), float(np.degrees(np.arctan2(y, x)))
