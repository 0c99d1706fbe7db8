"""Array checks and shapes shared by the index's search and mutation paths: unit-row query matrices, the padding
of missing hits, membership in a sorted id set, a prior's centre, faiss's error messages."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from geobridge.errors import GeoBridgeError


def as_matrix(vectors: Any, dim: int, *, what: str) -> np.ndarray:
    """Any (N, D) array-like (or one (D,) vector) -> C-contiguous float32 (N, D) with unit rows."""
    try:
        x = np.array(vectors, dtype=np.float32, order="C")  # a copy: normalised in place below
    except (TypeError, ValueError) as exc:
        raise GeoBridgeError(f"{what} must be a numeric (N, {dim}) array: {exc}") from exc
    if x.ndim == 1 and x.shape[0] == dim:
        x = x[None, :]
    if x.ndim == 2 and x.shape[0] == 0:
        x = x.reshape(0, dim)
    if x.ndim != 2 or x.shape[1] != dim:
        raise GeoBridgeError(f"{what} must have shape (N, {dim}), got {x.shape}")
    squares = np.einsum("ij,ij->i", x, x, dtype=np.float64)  # (N,) in float64: no overflow of large floats
    if len(squares) and not (np.minimum.reduce(squares) > 0 and np.maximum.reduce(squares) < np.inf):
        # NaN or inf anywhere in a row makes its sum NaN or inf (and NaN fails both comparisons)
        if not np.isfinite(squares).all():
            bad = int(np.argwhere(~np.isfinite(x))[0, 0])
            raise GeoBridgeError(f"{what} row {bad} holds NaN or inf")
        raise GeoBridgeError(f"{what} row {int(np.argmin(squares))} is all zeros and cannot be normalised")
    x /= np.sqrt(squares).astype(np.float32)[:, None]
    return x


def empty_scores(n_queries: int, k: int) -> np.ndarray:
    return np.full((n_queries, k), -np.inf, dtype=np.float32)  # (Q, k) the padding of missing hits


def empty_ids(n_queries: int, k: int) -> np.ndarray:
    return np.full((n_queries, k), -1, dtype=np.int64)  # (Q, k)


def sorted_member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """(M,) bool: which of ``values`` occur in the sorted 1-D ``sorted_set``, in O(M log N) (no sort of the set)."""
    if sorted_set.size == 0:
        return np.zeros(values.shape, dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), sorted_set.size - 1)
    return sorted_set[at] == values


def check_near(near: Any, *, name: str = "near") -> tuple[float, float]:
    """A point ``(lat, lon)`` (a prior's centre, a true position: ``name`` in the message) as floats within
    [-90, 90] x [-180, 180]."""
    try:
        lat, lon = (float(v) for v in near)
    except (TypeError, ValueError):
        raise GeoBridgeError(f"{name} must be (lat, lon) in degrees, got {near!r}") from None
    if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        raise GeoBridgeError(f"{name}=({lat}, {lon}) is outside [-90, 90] x [-180, 180]")
    return lat, lon


def faiss_message(exc: BaseException) -> str:
    """The useful last line of a faiss C++ exception."""
    text = str(exc).strip()
    return text.split("Error: ")[-1].splitlines()[0] if "Error: " in text else text.splitlines()[-1] if text else ""
