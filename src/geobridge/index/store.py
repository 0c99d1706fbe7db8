"""``GeoIndex``: a small wrapper around one faiss index with stable ids, per-vector metadata and safe files.

Vectors are L2-normalised float32, so inner product is cosine similarity. The faiss index is built by
``faiss.index_factory(dim, factory, METRIC_INNER_PRODUCT)`` and wrapped in an ``IndexIDMap2``: every vector gets
a stable int64 id that survives removals, saves and loads.

Files: one ``.gbx`` file (``index/single_file.py``) or an index folder (``index/folder.py``).
"""

from __future__ import annotations

import math
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from geobridge.errors import GeoBridgeError, IndexFormatError
from geobridge.index.arrays import (
    as_matrix,
    empty_ids,
    empty_scores,
    faiss_message,
    sorted_member,
)
from geobridge.index.checks import METRICS, REQUIRED_KEYS, check_faiss_header, check_meta, check_record  # noqa: F401
from geobridge.index.exact import process_chooser
from geobridge.index.factory import parse_factory
from geobridge.index.faiss_ops import apply_search_params, rebuild_without, remove_from_ivf
from geobridge.index.records import LazyRecords
from geobridge.index.results import HitRecords, SearchResult
from geobridge.index.selection import disc_ids, overfetch_search, selector_search, view_ids
from geobridge.index.single_file import FORMAT, FORMAT_VERSION, load_file, save_file
from geobridge.views import VIEWS


class GeoIndex:
    """Embeddings of reference images (or texts) with their place, coordinates, view and file path.

    ``factory`` is a faiss factory string: ``"Flat"`` (exact), ``"HNSW32"``, ``"IVF1024,PQ32"`` or a re-ranked
    variant such as ``"IVF1024,PQ32,RFlat"``. Indexes that need training (IVF, PQ) are trained by ``train`` or,
    when still untrained, on the first ``add``.
    """

    def __init__(
        self,
        dim: int,
        *,
        factory: str = "Flat",
        metric: str = "ip",
        model_info: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
            raise GeoBridgeError(f"dim must be a positive integer, got {dim!r}")
        if metric not in METRICS:
            raise GeoBridgeError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
        self.dim = int(dim)
        parse_factory(factory, self.dim)  # bounded before faiss allocates anything
        self.factory = str(factory)
        self.metric = metric
        self.model_info: dict[str, Any] = dict(model_info or {})
        self._fusion_weights: dict[str, float] | None = None
        try:
            base = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise GeoBridgeError(f"bad faiss factory string {factory!r} for dim {dim}: {faiss_message(exc)}") from exc
        self._index = faiss.IndexIDMap2(base)
        self._base = base  # keep the Python proxy alive with the wrapper
        # id -> record; a LazyRecords (columns + memory-mapped lines) for a loaded index folder until it is changed
        self._records: dict[int, dict[str, Any]] | LazyRecords = {}
        self._next_id = 0
        self._id_cache: dict[str, Any] = {}  # id lists, view filters, the prior's kd-tree: cleared by add/remove
        self.exact_kernels = process_chooser()  # the exact kernel measured fastest on this machine (index/exact.py)
        # the hit records of results still alive, frozen before any change (entries vanish with their results)
        self._open_results: weakref.WeakValueDictionary[int, HitRecords] = weakref.WeakValueDictionary()
        self._mapped_from: Path | None = None  # the index.faiss of a folder this index is memory-mapped from

    # ------------------------------------------------------------------ size and state
    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __repr__(self) -> str:
        return f"GeoIndex(dim={self.dim}, factory={self.factory!r}, count={len(self)})"

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def ids(self) -> np.ndarray:
        """(N,) int64 ids of the stored vectors, in storage order."""
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    @property
    def fusion_weights(self) -> dict[str, float] | None:
        """Per-query-view weights for ``fusion="weighted"`` (fitted by ``calibrate_index``), or None."""
        return None if self._fusion_weights is None else dict(self._fusion_weights)

    @fusion_weights.setter
    def fusion_weights(self, weights: Mapping[str, float] | None) -> None:
        if weights is None:
            self._fusion_weights = None
            return
        checked = {}
        for view, weight in dict(weights).items():
            if view not in VIEWS:
                raise GeoBridgeError(f"fusion weight for unknown view {view!r}; expected some of {', '.join(VIEWS)}")
            if isinstance(weight, bool) or not isinstance(weight, (int, float, np.floating, np.integer)):
                raise GeoBridgeError(f"fusion weight of {view} must be a number, got {weight!r}")
            if not math.isfinite(float(weight)) or float(weight) < 0:
                raise GeoBridgeError(f"fusion weight of {view} must be finite and >= 0, got {weight}")
            checked[view] = float(weight)
        if not checked:
            raise GeoBridgeError("fusion weights must name at least one view")
        self._fusion_weights = checked

    def place_ids(self) -> frozenset[str]:
        """The distinct place_ids the index holds."""
        return frozenset(r["place_id"] for r in self._records.values())

    def n_places(self) -> int:
        """How many distinct place_ids the index holds."""
        if isinstance(self._records, LazyRecords):  # the summary saved with the folder's columns
            return self._records.n_places
        if "#places" not in self._id_cache:
            self._id_cache["#places"] = np.asarray([len({r["place_id"] for r in self._records.values()})])
        return int(self._id_cache["#places"][0])

    def n_places_among(self, ids: np.ndarray) -> int:
        """How many distinct place_ids the items ``ids`` hold (read in place, no record copies)."""
        records = self._records
        return len({records[int(i)]["place_id"] for i in np.asarray(ids).tolist()})

    def record(self, vector_id: int) -> dict[str, Any]:
        """A copy of the metadata record of one vector id."""
        try:
            return dict(self._records[int(vector_id)])
        except KeyError:
            raise GeoBridgeError(f"no vector with id {vector_id} in the index") from None

    def records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(id, record copy)`` for every stored vector, in id order."""
        if isinstance(self._records, LazyRecords):  # parsed line by line, in id order
            yield from self._records.iter_items()
            return
        for vector_id in sorted(self._records):
            yield vector_id, dict(self._records[vector_id])

    def reconstruct(self, ids: Iterable[int]) -> np.ndarray:
        """(N, D) stored vectors of ``ids`` (exact for Flat/HNSW/refined indexes, approximate for plain PQ)."""
        ids = [int(i) for i in ids]
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        for row, vector_id in enumerate(ids):
            if vector_id not in self._records:
                raise GeoBridgeError(f"no vector with id {vector_id} in the index")
            out[row] = self._index.reconstruct(vector_id)
        return out

    # ------------------------------------------------------------------ adding and removing
    def train(self, vectors: Any) -> None:
        """Train an IVF/PQ index on (N, D) vectors (normalised here); a no-op for indexes that need no training."""
        self._check_writable("train")
        x = as_matrix(vectors, self.dim, what="training vectors")
        if self._index.is_trained:
            return
        if len(x) == 0:
            raise GeoBridgeError(f"index {self.factory!r} needs training vectors; got none")
        try:
            self._index.train(x)
        except RuntimeError as exc:
            raise GeoBridgeError(
                f"could not train index {self.factory!r} on {len(x)} vectors (IVF<n> needs at least n vectors, "
                f"PQ needs at least 256 for 8-bit codes; use more vectors or a smaller index): {faiss_message(exc)}"
            ) from exc

    def add(self, vectors: Any, metadata: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Add (N, D) vectors with one metadata record each; returns the (N,) int64 ids given to them.

        A record holds at least ``place_id`` (str), ``lat`` and ``lon`` (float degrees), ``view`` and ``path``
        (str or None); other JSON-compatible keys (e.g. ``country``) are kept. An untrained index is trained on
        these vectors first.
        """
        self._check_writable("add to")
        x = as_matrix(vectors, self.dim, what="vectors")
        if isinstance(metadata, Mapping) or len(metadata) != len(x):
            n_meta = "a mapping" if isinstance(metadata, Mapping) else len(metadata)
            raise GeoBridgeError(f"got {len(x)} vectors but {n_meta} metadata records; pass one record per vector")
        records = [check_record(record, row) for row, record in enumerate(metadata)]
        if len(x) == 0:
            return np.zeros((0,), dtype=np.int64)
        stored = self._dict_records()  # a lazily loaded folder's records are parsed before anything changes
        self._freeze_results()
        if not self._index.is_trained:
            self.train(x)
        ids = np.arange(self._next_id, self._next_id + len(x), dtype=np.int64)
        self._index.add_with_ids(x, ids)
        for vector_id, record in zip(ids.tolist(), records, strict=True):
            stored[vector_id] = record
        self._next_id += len(x)
        self._id_cache.clear()
        return ids

    def remove(self, ids: Iterable[int]) -> int:
        """Remove vectors by id (unknown ids are ignored); returns how many were removed."""
        self._check_writable("remove from")
        wanted = np.unique(np.asarray([int(i) for i in ids], dtype=np.int64))
        wanted = np.asarray([i for i in wanted.tolist() if i in self._records], dtype=np.int64)
        if wanted.size == 0:
            return 0
        stored = self._dict_records()  # a lazily loaded folder's records are parsed before anything changes
        self._freeze_results()
        if isinstance(self._base, faiss.IndexIVF):
            removed = remove_from_ivf(self._index, self._base, wanted)
        else:
            try:
                removed = int(self._index.remove_ids(wanted))
            except RuntimeError:  # HNSW and refine indexes cannot remove: rebuild from the kept vectors
                self._index, self._base, removed = rebuild_without(self._index, self._base, self.ids, wanted)
        for vector_id in wanted.tolist():
            stored.pop(vector_id, None)
        self._id_cache.clear()
        return removed

    def remove_places(self, place_ids: Iterable[str]) -> int:
        """Remove every vector of the given places; returns how many vectors were removed."""
        self._check_writable("remove from")
        places = {str(p) for p in place_ids}
        return self.remove([i for i, r in self._dict_records().items() if r["place_id"] in places])

    def _dict_records(self) -> dict[int, dict[str, Any]]:
        """The records as a plain dict, parsing a loaded folder's lazy records first (before any change)."""
        if isinstance(self._records, LazyRecords):
            self._records = self._records.to_dict()
        return self._records

    # ------------------------------------------------------------------ search
    def set_search_params(
        self, *, nprobe: int | None = None, ef_search: int | None = None, k_factor: float | None = None
    ) -> None:
        """Set default search settings; they are saved with the index (faiss stores them)."""
        self._apply_params(nprobe=nprobe, ef_search=ef_search, k_factor=k_factor)

    def search(
        self,
        queries: Any,
        *,
        k: int = 10,
        nprobe: int | None = None,
        ef_search: int | None = None,
        k_factor: float | None = None,
        view: str | Sequence[str] | None = None,
        exclude_views: Sequence[str] | None = None,
        near: tuple[float, float] | None = None,
        radius_km: float | None = None,
    ) -> SearchResult:
        """The ``k`` most similar stored vectors of each of the (Q, D) queries.

        ``view`` keeps only gallery items of that view (or views); ``exclude_views`` drops items of those views.
        ``near=(lat, lon)`` with ``radius_km`` keeps only items whose ``lat``/``lon`` lie within ``radius_km``
        (great circle) of it: a search within a prior. The items in the disc come from a kd-tree (``ids_within``).
        On a Flat index where they (after any view filter) are at most ``FLAT_SUBSET_MAX_SHARE`` of its items
        (``index/selection.py``), only their stored vectors are scored, in place, with the top k kept in faiss's
        heap: the answer of faiss with an ID selector. Otherwise, and on IVF and HNSW indexes, the allowed ids go to
        faiss as an ID selector (``SearchParameters(sel=IDSelectorBatch)``) and faiss is asked for exactly ``k``.
        Without a prior (and for other index types) filters are applied by over-fetching and filtering, doubling the
        fetch until every query has ``k`` hits or the whole index was fetched (so a filtered Flat search stays
        exact). ``nprobe`` (IVF), ``ef_search`` (HNSW) and ``k_factor`` (refine indexes) override the index's
        settings for this call only.
        """
        x = as_matrix(queries, self.dim, what="queries")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise GeoBridgeError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        n_queries, total = len(x), len(self)
        allowed = self._allowed_ids(view, exclude_views)  # None = every id
        if (near is None) != (radius_km is None):
            raise GeoBridgeError("near=(lat, lon) and radius_km go together; pass both or neither")
        if near is not None:
            within = self.ids_within(near, radius_km=float(radius_km))  # (M,) sorted, from the kd-tree
            allowed = within if allowed is None else within[sorted_member(within, allowed)]
        n_allowed = total if allowed is None else len(allowed)
        if n_queries == 0 or total == 0 or n_allowed == 0:
            return SearchResult(empty_scores(n_queries, k), empty_ids(n_queries, k), {})
        if near is not None:
            selected = selector_search(self, x, k, allowed, nprobe=nprobe, ef_search=ef_search)
            if selected is not None:
                return self._result(*selected)
        if allowed is None:
            self._check_params(nprobe=nprobe, ef_search=ef_search, k_factor=k_factor)  # the exact path sets none
        exact = self._exact_search(x, k) if allowed is None else None
        if exact is not None:
            return self._result(*exact)
        saved = self._apply_params(nprobe=nprobe, ef_search=ef_search, k_factor=k_factor)
        try:
            return self._result(*overfetch_search(self._index, x, k, allowed))
        finally:
            self._apply_params(**saved)

    def ids_within(self, near: tuple[float, float], *, radius_km: float) -> np.ndarray:
        """(M,) sorted int64 ids of the items whose ``lat``/``lon`` lie within ``radius_km`` of ``near=(lat, lon)``.

        Great-circle (haversine) distance ``<= radius_km``. The candidates come from a kd-tree over the items'
        unit-sphere positions, built on the first call and kept until the next add or remove; the haversine is
        computed for the candidates only (``index/prior.py``), which gives the same ids as a scan of every item.
        """
        return disc_ids(self._records, self._id_cache, near, radius_km=radius_km)

    def _result(self, scores: np.ndarray, ids: np.ndarray) -> SearchResult:
        """Wrap (Q, k) scores and ids with the hits' metadata records, read when first asked for (a snapshot: an
        add or remove first freezes the records of every result still alive)."""
        lookup = HitRecords(self._records, ids)
        if not isinstance(self._records, LazyRecords):  # a lazy folder's records are never changed in place
            self._open_results[id(lookup)] = lookup
        return SearchResult(scores, ids, lookup)

    def _freeze_results(self) -> None:
        """Copy the records of the results still alive before the records change (``add``, ``remove``)."""
        for lookup in list(self._open_results.values()):
            lookup.freeze()
        self._open_results.clear()

    def _exact_search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Exact top-k of the (Q, D) queries against a ``Flat`` index, or None for other index types.

        The kernel (faiss's own search or torch matmul + topk) is the one measured faster on this machine for the
        search's shape class (``index/exact.py``); either reads faiss's storage in place, without a copy.
        """
        base = self._base  # already downcast (constructor, load and rebuild)
        if not isinstance(base, faiss.IndexFlat):
            return None
        gallery = self._id_cache.get("#xb")  # (N, D) storage rows in place; add and remove clear the cache
        if gallery is None:
            n = int(base.ntotal)
            gallery = self._id_cache["#xb"] = faiss.rev_swig_ptr(base.get_xb(), n * self.dim).reshape(n, self.dim)
        top_scores, top_rows = self.exact_kernels.search(gallery, x, k)  # (Q, k'), k' = min(k, N)
        return self._hits_from_rows(top_scores, top_rows, k)

    def _hits_from_rows(self, top_scores: np.ndarray, top_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k') scores and storage rows, best first -> (Q, k) float32 scores and vector ids, padded with score
        -inf and id -1 where k' < k."""
        if top_rows.shape[1] == k:
            return top_scores.astype(np.float32, copy=False), self._storage_ids()[top_rows]
        scores, ids = empty_scores(len(top_rows), k), empty_ids(len(top_rows), k)
        scores[:, : top_scores.shape[1]] = top_scores
        ids[:, : top_rows.shape[1]] = self._storage_ids()[top_rows]
        return scores, ids

    def _storage_ids(self) -> np.ndarray:
        """(N,) vector id of each storage row (cached until the next add or remove)."""
        if "#storage" not in self._id_cache:
            self._id_cache["#storage"] = self.ids
        return self._id_cache["#storage"]

    def _allowed_ids(self, view: str | Sequence[str] | None, exclude_views: Sequence[str] | None) -> np.ndarray | None:
        return view_ids(self._records, self._id_cache, view, exclude_views)

    def _apply_params(
        self, *, nprobe: int | None = None, ef_search: int | None = None, k_factor: float | None = None
    ) -> dict[str, Any]:
        """Set the given search settings on the sub-indexes that have them; returns the previous values."""
        return apply_search_params(self._base, factory=self.factory, nprobe=nprobe, ef_search=ef_search,
                                   k_factor=k_factor)

    def _check_params(
        self, *, nprobe: int | None = None, ef_search: int | None = None, k_factor: float | None = None
    ) -> None:
        """Raise if a search setting does not apply to this index type (or is out of range); changes nothing."""
        if (nprobe, ef_search, k_factor) != (None, None, None):
            self._apply_params(**self._apply_params(nprobe=nprobe, ef_search=ef_search, k_factor=k_factor))

    # ------------------------------------------------------------------ summary
    def info(self) -> dict[str, Any]:
        """A JSON-compatible summary: counts per view, places, countries, the index type and the model info."""
        records = self._records
        if isinstance(records, LazyRecords):  # the columns and the summary saved with them: nothing parsed
            views, n_places, countries = records.view_counts(), records.n_places, Counter(records.countries)
        else:
            views = Counter(r["view"] for r in records.values())
            places: dict[str, Any] = {}
            for record in records.values():
                places.setdefault(record["place_id"], record.get("country"))
            n_places, countries = len(places), Counter(c for c in places.values() if c)
        out: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "count": len(self),
            "dim": self.dim,
            "factory": self.factory,
            "metric": self.metric,
            "is_trained": self.is_trained,
            "views": dict(sorted(views.items())),
            "places": n_places,
        }
        if countries:
            out["countries"] = dict(sorted(countries.items()))
        out["model_info"] = dict(self.model_info)
        out["fusion_weights"] = self.fusion_weights
        return out

    # ------------------------------------------------------------------ persistence
    def _check_writable(self, action: str) -> None:
        if self._mapped_from is not None:  # faiss aborts the process on a write to memory-mapped inverted lists
            raise GeoBridgeError(f"cannot {action} an index memory-mapped from {self._mapped_from}; "
                                 "load it with GeoIndex.load(folder, mmap=False) to change it")

    def save_folder(self, folder: str | Path) -> Path:
        """Write the index as an index folder (faiss file, JSON-lines records, manifest with checksums), the
        format for large galleries whose IVF lists ``load`` memory-maps (``index/folder.py``)."""
        from geobridge.index.folder import save_folder

        return save_folder(self, folder)

    def save(self, path: str | Path) -> Path:
        """Write the index to the single file ``path`` atomically (``index/single_file.py``); returns the path.

        A save that is killed part-way leaves the previous file untouched; the hidden ``.tmp`` file it leaves
        next to it is removed by the next save of the same path (``geobridge._atomic``).
        """
        return save_file(self, path)

    def _meta(self) -> dict[str, Any]:
        """Everything but the vectors, as the files store it: the index's settings and each vector's record."""
        return {
            "dim": self.dim,
            "factory": self.factory,
            "metric": self.metric,
            "model_info": self.model_info,
            "fusion_weights": self._fusion_weights,
            "next_id": self._next_id,
            "records": [{"id": i, **r} for i, r in sorted(self._records.items())],
        }

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = True, verify: bool = True) -> GeoIndex:
        """Read an index written by ``save`` (one file) or ``save_folder``; IndexFormatError naming ``path`` on
        any problem. For a folder, ``mmap`` memory-maps IVF lists (read-only) and ``verify=False`` skips the
        faiss file's checksum (its size is still checked)."""
        path = Path(path)
        if not path.exists():
            raise IndexFormatError(f"index file not found: {path}")
        from geobridge.index.folder import is_index_folder, load_folder

        if is_index_folder(path):
            return load_folder(cls, path, mmap=mmap, verify=verify)
        return load_file(cls, path)

    @classmethod
    def _from_parts(cls, meta: dict[str, Any], index: Any, *, lazy: LazyRecords | None = None) -> GeoIndex:
        """An index from checked metadata and a faiss index; ``lazy`` (an index folder's columns) replaces
        ``meta["records"]`` as the metadata records."""
        out = cls(int(meta["dim"]), factory=str(meta["factory"]), metric=str(meta["metric"]),
                  model_info=meta.get("model_info") or {})
        if not isinstance(index, faiss.IndexIDMap2):
            raise ValueError(f"stored faiss index is {type(index).__name__}, expected IndexIDMap2")
        if index.d != out.dim:
            raise ValueError(f"faiss index has dim {index.d}, metadata says {out.dim}")
        stored = faiss.downcast_index(index.index)
        if not (isinstance(stored, type(out._base)) or isinstance(out._base, type(stored))):
            raise ValueError(f"stored faiss index is {type(stored).__name__}; factory {out.factory!r} builds "
                             f"{type(out._base).__name__}")
        out._index = index
        out._base = stored
        if lazy is not None:
            if not np.array_equal(lazy.ids, np.sort(out.ids)):
                raise ValueError(f"{len(lazy)} metadata records do not match the {len(out)} stored vector ids")
            out._records = lazy
        else:
            records = {}
            for row in meta["records"]:
                row = dict(row)
                records[int(row.pop("id"))] = check_record(row, len(records))
            if set(records) != set(out.ids.tolist()):
                raise ValueError(f"{len(records)} metadata records do not match the {len(out)} stored vector ids")
            out._records = records
        out._next_id = int(meta["next_id"])
        out.fusion_weights = meta.get("fusion_weights")  # absent in files written before fusion weights existed
        return out
