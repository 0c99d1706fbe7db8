"""The sphere maths shared by every layer (geobridge.geodesy) against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geobridge.geodesy import EARTH_RADIUS_KM, chord_of_km, haversine_km, spherical_centroid, unit_xyz


def test_haversine_quarter_circle_and_antipodes():
    assert haversine_km(0.0, 0.0, 0.0, 90.0) == pytest.approx(math.pi / 2 * EARTH_RADIUS_KM)
    assert haversine_km(10.0, 20.0, -10.0, -160.0) == pytest.approx(math.pi * EARTH_RADIUS_KM)
    assert np.isnan(haversine_km(np.nan, 0.0, 0.0, 0.0))


def test_chord_of_km_is_the_chord_between_points_that_far_apart():
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-80, 80, (2, 50)), rng.uniform(-180, 180, (2, 50))
    xyz = unit_xyz(lat, lon)  # (2, 50, 3)
    assert np.allclose(np.linalg.norm(xyz, axis=-1), 1.0)
    chords = np.linalg.norm(xyz[0] - xyz[1], axis=-1)
    distances = haversine_km(lat[0], lon[0], lat[1], lon[1])
    assert np.allclose([chord_of_km(d) for d in distances], chords, atol=1e-9)
    assert chord_of_km(1e9) == pytest.approx(2.0)


def test_spherical_centroid_across_the_antimeridian_and_on_cancellation():
    lat, lon = spherical_centroid(np.array([0.0, 0.0]), np.array([179.0, -179.0]), np.array([1.0, 1.0]))
    assert lat == pytest.approx(0.0, abs=1e-9) and abs(lon) == pytest.approx(180.0)
    lat, lon = spherical_centroid(np.array([0.0, 0.0]), np.array([0.0, 180.0]), np.array([1.0, 2.0]))
    assert lat == pytest.approx(0.0, abs=1e-9) and abs(lon) == pytest.approx(180.0)  # the heavier side wins
    lat, lon = spherical_centroid(np.array([0.0, 0.0]), np.array([0.0, 180.0]), np.array([1.0, 1.0]))
    assert (lat, lon) == (0.0, 0.0)  # antipodes of equal weight cancel: the first heaviest point
