"""Which stored vectors a search may return, and the filtered search that over-fetches until it has them.

* ``view_ids``: the sorted ids of the items of some views;
* ``disc_ids``: the sorted ids of the items within ``radius_km`` of a point (a search within a prior), from a
  kd-tree over the items' unit-sphere positions (``index/prior.py``);
* ``overfetch_search``: faiss's search asked for more and more hits until every query has ``k`` allowed ones;
* ``selector_search``: the top k among allowed ids by scoring only their rows (a Flat index) or with a faiss ID
  selector (the search within a prior).

The id functions read an index's metadata records (a dict, or an index folder's lazy columns) and keep what they
derive in the index's id cache, which every add and remove clears: a repeated filter costs a lookup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from geobridge.errors import GeoBridgeError
from geobridge.index.arrays import check_near, empty_ids, empty_scores
from geobridge.index.records import LazyRecords
from geobridge.views import VIEWS

if TYPE_CHECKING:
    from geobridge.index.store import GeoIndex

# a prior on a Flat index scores only the allowed rows (index/prior.py) when they are at most this share of the
# index, else faiss searches with an ID selector. Measured, one query, 256-d (benchmarks/bench_prior.py): 100k,
# subset vs selector 2.2 vs 13.8 ms at 10 %, 12.1 vs 15.6 ms at 50 %, 16.3 vs 15.2 ms at 90 % (parity)
FLAT_SUBSET_MAX_SHARE = 0.5


def view_ids(records: Any, cache: dict[str, Any], view: str | Sequence[str] | None,
             exclude_views: Sequence[str] | None) -> np.ndarray | None:
    """(M,) sorted int64 ids of the items of ``view`` (a name or names; None: every view) minus ``exclude_views``;
    None when nothing is filtered."""
    if view is None and not exclude_views:
        return None
    include = set(VIEWS if view is None else ([view] if isinstance(view, str) else view))
    exclude = set([exclude_views] if isinstance(exclude_views, str) else (exclude_views or ()))
    for name in include | exclude:
        if name not in VIEWS:
            raise GeoBridgeError(f"unknown view {name!r}; expected one of {', '.join(VIEWS)}")
    key = ",".join(sorted(include - exclude))
    if key not in cache:
        wanted = include - exclude
        if isinstance(records, LazyRecords):  # the view column, ids already sorted
            cache[key] = np.asarray(records.ids[records.view_mask(wanted)], dtype=np.int64)
        else:
            cache[key] = np.asarray(sorted(i for i, r in records.items() if r["view"] in wanted), dtype=np.int64)
    return cache[key]


def disc_ids(records: Any, cache: dict[str, Any], near: tuple[float, float], *, radius_km: float) -> np.ndarray:
    """(M,) sorted int64 ids of the items whose ``lat``/``lon`` lie within ``radius_km`` (great circle, inclusive) of
    ``near=(lat, lon)``; the kd-tree is built on the first call, and the last disc's answer is kept."""
    from geobridge.index.prior import DiscLookup

    lat, lon = check_near(near)
    if isinstance(radius_km, bool) or not math.isfinite(radius_km) or radius_km <= 0:
        raise GeoBridgeError(f"radius_km must be a positive number of km, got {radius_km!r}")
    if "#centres" not in cache:
        if isinstance(records, LazyRecords):  # the columns, already in id order
            cache["#centres"] = np.asarray(records.ids, dtype=np.int64)
            cache["#disc"] = DiscLookup(records.lat, records.lon)
        else:
            order = np.asarray(sorted(records), dtype=np.int64)
            cache["#centres"] = order
            cache["#disc"] = DiscLookup(
                np.asarray([records[i]["lat"] for i in order.tolist()], dtype=np.float64),
                np.asarray([records[i]["lon"] for i in order.tolist()], dtype=np.float64),
            )
    key = (lat, lon, float(radius_km))  # locate asks for the disc, then search asks again: answer it once
    last = cache.get("#last_disc")
    if last is None or last[0] != key:
        ids = cache["#centres"][cache["#disc"].within(lat, lon, radius_km=float(radius_km))]
        ids.flags.writeable = False  # shared by the callers of the same disc
        last = cache["#last_disc"] = (key, ids)
    return last[1]


def overfetch_search(index: Any, x: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k) float32 scores and int64 ids of faiss ``index``'s top ``k`` among the ``allowed`` ids (None: any).

    Asks faiss for ``k`` hits scaled by the share of allowed ids, doubling until every query has ``k`` allowed ones
    or the whole index was fetched, so a filtered Flat search stays exact. Rows with fewer hits are padded with id
    -1 and score -inf.
    """
    n_queries, total = len(x), int(index.ntotal)
    n_allowed = total if allowed is None else len(allowed)
    fetch = min(total, k if allowed is None else k * math.ceil(total / n_allowed) + k)
    while True:
        raw_scores, raw_ids = index.search(x, fetch)  # (Q, fetch)
        keep = raw_ids >= 0
        if allowed is not None:
            keep &= np.isin(raw_ids, allowed)
        if fetch >= total or bool((keep.sum(axis=1) >= k).all()):
            break
        fetch = min(total, fetch * 2)
    if allowed is None and fetch == k:  # the common case: faiss's answer is the answer
        return np.where(keep, raw_scores, -np.inf).astype(np.float32, copy=False), raw_ids.astype(np.int64, copy=False)
    scores, ids = empty_scores(n_queries, k), empty_ids(n_queries, k)
    for q in range(n_queries):
        row_ids, row_scores = raw_ids[q][keep[q]][:k], raw_scores[q][keep[q]][:k]
        ids[q, : len(row_ids)] = row_ids
        scores[q, : len(row_ids)] = row_scores
    return scores, ids


def selector_search(geo: GeoIndex, x: np.ndarray, k: int, allowed: np.ndarray, *, nprobe: int | None,
                    ef_search: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(Q, k) scores and ids of the top k among the sorted ``allowed`` ids of ``geo``: on a Flat index where they
    are at most ``FLAT_SUBSET_MAX_SHARE`` of it, by scoring only their rows (``index/prior.py``); else with a faiss
    ID selector; None when the index type takes no selector. Rows with fewer hits are padded with id -1 and
    score -inf."""
    base = geo._base
    geo._check_params(nprobe=nprobe, ef_search=ef_search)
    if isinstance(base, faiss.IndexFlat) and len(allowed) <= FLAT_SUBSET_MAX_SHARE * len(geo):
        return _flat_subset_search(geo, x, k, allowed)
    selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
    if isinstance(base, faiss.IndexFlat):
        params = faiss.SearchParameters(sel=selector)
    elif isinstance(base, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(sel=selector, nprobe=int(nprobe or base.nprobe))
    elif isinstance(base, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=int(ef_search or base.hnsw.efSearch))
    else:
        return None
    fetch = min(k, len(allowed))
    raw_scores, raw_ids = geo._index.search(x, fetch, params=params)  # (Q, fetch)
    scores, ids = empty_scores(len(x), k), empty_ids(len(x), k)
    keep = raw_ids >= 0
    scores[:, :fetch] = np.where(keep, raw_scores, -np.inf)
    ids[:, :fetch] = np.where(keep, raw_ids, -1)
    return scores, ids


def _flat_subset_search(geo: GeoIndex, x: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k) scores and ids of the top k among ``allowed`` ids of a Flat index, scored in place by faiss."""
    from geobridge.index.prior import flat_subset_search

    cache = geo._id_cache
    if "#rows" not in cache:  # storage rows in id order, and those ids, for an id -> row lookup
        storage_ids = geo._storage_ids()
        rows = np.argsort(storage_ids, kind="stable")
        cache["#rows"] = (rows, storage_ids[rows])
    by_id, sorted_ids = cache["#rows"]
    rows = np.sort(by_id[np.searchsorted(sorted_ids, allowed)])  # (M,) storage order, as faiss scans
    top_scores, top_rows = flat_subset_search(geo._base, x, rows, k)  # (Q, min(k, M))
    return geo._hits_from_rows(top_scores, top_rows, k)
