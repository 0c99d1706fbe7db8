"""Search within a prior: which items lie in a disc, and the top-k of a Flat index over a subset of its rows.

``DiscLookup`` answers "which items lie within ``r`` km of (lat, lon)" without a distance to every item: a
``scipy.spatial.cKDTree`` over the items' unit-sphere xyz returns the candidates within the chord of a slightly
enlarged radius, and the same haversine as before (``geobridge.geodesy.haversine_km``, ``<= r``) then decides on
the candidates only, so the answer equals the full haversine scan element for element, boundary included.

``flat_subset_search`` scores only the given rows of a faiss ``IndexFlat`` (faiss's ``knn_inner_products_by_idx``
reads them in place from the index's storage, no copy) and keeps the top k in faiss's own heap, so scores, order
and ties are those of a faiss search with an ``IDSelectorBatch`` over the same rows, without the membership test
of every stored vector that such a search makes.
"""

from __future__ import annotations

import faiss
import numpy as np

from geobridge.geodesy import chord_of_km, haversine_km, unit_xyz

CHORD_SLACK = 1e-9  # relative and absolute (unit-sphere) widening of the tree's radius; the haversine decides
FULL_SCAN_SHARE = 0.25  # a disc with more of the items than this is found by a haversine over all of them


class DiscLookup:
    """The positions (0..N-1) of items within a great-circle radius of a point, from a kd-tree built once.

    ``lat``/``lon`` (N,) degrees. Positions come back sorted, so with items given in id order they map to sorted ids.
    """

    def __init__(self, lat: np.ndarray, lon: np.ndarray) -> None:
        from scipy.spatial import cKDTree

        self.lat = np.ascontiguousarray(lat, dtype=np.float64)  # (N,)
        self.lon = np.ascontiguousarray(lon, dtype=np.float64)  # (N,)
        self._tree = cKDTree(unit_xyz(self.lat, self.lon)) if len(self.lat) else None

    def __len__(self) -> int:
        return int(self.lat.shape[0])

    def candidates(self, lat: float, lon: float, *, radius_km: float) -> np.ndarray:
        """(C,) sorted int64 positions of a superset of the items within ``radius_km`` (the tree's answer)."""
        if self._tree is None:
            return np.zeros((0,), dtype=np.int64)
        found = self._tree.query_ball_point(unit_xyz(lat, lon), self._chord(radius_km), return_sorted=True)
        return np.sort(np.fromiter(found, dtype=np.int64, count=len(found)))  # sorted already: a cheap pass

    def within(self, lat: float, lon: float, *, radius_km: float) -> np.ndarray:
        """(M,) sorted int64 positions of the items whose haversine distance to (lat, lon) is ``<= radius_km``.

        The tree first counts its candidates (cheap: no list is built). A disc holding more than
        ``FULL_SCAN_SHARE`` of the items is answered by one vectorised haversine over all of them instead, which
        is then faster than listing the tree's candidates (about 40 ns per item against 160 ns per candidate).
        """
        if self._tree is not None:
            count = int(self._tree.query_ball_point(unit_xyz(lat, lon), self._chord(radius_km), return_length=True))
            if count > FULL_SCAN_SHARE * len(self):
                return np.flatnonzero(haversine_km(lat, lon, self.lat, self.lon) <= radius_km).astype(np.int64)
        rows = self.candidates(lat, lon, radius_km=radius_km)
        distances = haversine_km(lat, lon, self.lat[rows], self.lon[rows])  # (C,)
        return rows[distances <= radius_km]

    @staticmethod
    def _chord(radius_km: float) -> float:
        return chord_of_km(radius_km) * (1.0 + CHORD_SLACK) + CHORD_SLACK


def flat_subset_search(base: faiss.IndexFlat, x: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner products of the (Q, D) queries ``x`` against the storage ``rows`` (M,) of a Flat index.

    Returns (Q, min(k, M)) float32 scores, best first, and the (Q, min(k, M)) int64 storage rows they belong to.
    ``rows`` should be sorted: faiss keeps the first of equal scores it meets, as its own search does in storage
    order. Every query shares the one subset (``ld_ids=0``); faiss runs the queries in parallel above 100 of them.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    n_queries, k_eff = len(x), min(int(k), len(rows))
    scores = np.empty((n_queries, k_eff), dtype=np.float32)
    found = np.empty((n_queries, k_eff), dtype=np.int64)
    if n_queries and k_eff:
        faiss.knn_inner_products_by_idx(
            faiss.swig_ptr(x), base.get_xb(), faiss.swig_ptr(rows), base.d, n_queries, int(base.ntotal),
            len(rows), k_eff, faiss.swig_ptr(scores), faiss.swig_ptr(found), 0,
        )
    return scores, found
