"""Operations on the faiss index inside a ``GeoIndex`` that faiss does not offer whole: removing from an IVF index
without breaking its id map, rebuilding without some vectors, and search settings on nested indexes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import faiss
import numpy as np

from geobridge.errors import GeoBridgeError, IndexFormatError


def remove_from_ivf(id_map: Any, ivf: Any, wanted: np.ndarray) -> int:
    """Remove the vectors with external ids ``wanted`` from ``ivf`` (the IVF index inside the ``IndexIDMap2``
    ``id_map``) and keep its inner ids equal to the id map's positions; returns how many were removed.

    faiss's ``IndexIDMap.remove_ids`` maps the inverted lists' inner ids through the id map, but an IVF index
    keeps the inner ids it gave at add time while the id map is compacted: a second removal then selects the
    wrong vectors and aborts the process on an assertion. Here the inner ids are renumbered to their rank
    (positions in the compacted id map) after each removal, which also repairs files saved after one removal.
    """
    invlists = ivf.invlists
    external = faiss.vector_to_array(id_map.id_map).astype(np.int64)  # (N,) position -> external id

    def list_ids(number: int) -> np.ndarray:  # a writable view of one inverted list's inner ids
        return faiss.rev_swig_ptr(invlists.get_ids(number), invlists.list_size(number))

    inner = np.sort(np.concatenate([list_ids(n) for n in range(ivf.nlist)] or [np.empty(0, np.int64)]))
    if inner.size != external.size:
        raise IndexFormatError(f"IVF index holds {inner.size} vectors but its id map {external.size}")
    drop = np.isin(external, wanted)  # (N,) positions to remove
    removed = int(ivf.remove_ids(faiss.IDSelectorBatch(inner[drop])))
    kept_inner = inner[~drop]  # sorted: rank = new position
    for number in range(ivf.nlist):
        if invlists.list_size(number):
            ids = list_ids(number)
            ids[:] = np.searchsorted(kept_inner, ids)
    faiss.copy_array_to_vector(np.ascontiguousarray(external[~drop]), id_map.id_map)
    id_map.ntotal = ivf.ntotal
    return removed


def rebuild_without(id_map: Any, base: Any, all_ids: np.ndarray, wanted: np.ndarray) -> tuple[Any, Any, int]:
    """A copy of ``id_map`` (with its training and search settings) holding every vector but ``wanted``:
    ``(new id map, its downcast inner index, how many were removed)``. ``all_ids`` (N,) in storage order."""
    keep = ~np.isin(all_ids, wanted)
    vectors = base.reconstruct_n(0, base.ntotal)  # (N, D), storage order = id_map order
    fresh = faiss.clone_index(id_map)  # keeps training (centroids, codebooks) and search settings
    fresh.reset()
    if keep.any():
        fresh.add_with_ids(np.ascontiguousarray(vectors[keep]), np.ascontiguousarray(all_ids[keep]))
    # clone_index returns an owning, already downcast proxy
    return fresh, faiss.downcast_index(fresh.index), int((~keep).sum())


def sub_indexes(base: Any) -> Iterator[Any]:
    """``base`` and every faiss index nested in it (refine and pre-transform wrappers), downcast."""
    stack = [base]
    while stack:
        index = faiss.downcast_index(stack.pop())
        yield index
        for attr in ("base_index", "index"):
            child = getattr(index, attr, None)
            if child is not None and isinstance(child, faiss.Index):
                stack.append(child)


def apply_search_params(
    base: Any, *, factory: str, nprobe: int | None = None, ef_search: int | None = None, k_factor: float | None = None
) -> dict[str, Any]:
    """Set the given search settings on the sub-indexes of ``base`` that have them; returns the previous values.
    A setting that no sub-index has, or that is not positive, is an error naming ``factory``."""
    previous: dict[str, Any] = {}
    wanted = {"nprobe": nprobe, "ef_search": ef_search, "k_factor": k_factor}
    kinds = {"nprobe": "IVF", "ef_search": "HNSW", "k_factor": "refine (e.g. ',RFlat')"}
    found = dict.fromkeys(wanted, False)
    for index in sub_indexes(base):
        if isinstance(index, faiss.IndexIVF):
            found["nprobe"] = True
            if nprobe is not None:
                previous["nprobe"] = int(index.nprobe)
                index.nprobe = int(nprobe)
        if isinstance(index, faiss.IndexHNSW):
            found["ef_search"] = True
            if ef_search is not None:
                previous["ef_search"] = int(index.hnsw.efSearch)
                index.hnsw.efSearch = int(ef_search)
        if isinstance(index, faiss.IndexRefine):
            found["k_factor"] = True
            if k_factor is not None:
                previous["k_factor"] = float(index.k_factor)
                index.k_factor = float(k_factor)
    for name, value in wanted.items():
        if value is not None and not found[name]:
            raise GeoBridgeError(f"{name} applies to {kinds[name]} indexes only; this index is {factory!r}")
        if value is not None and value <= 0:
            raise GeoBridgeError(f"{name} must be positive, got {value}")
    return previous
