"""Every-direction retrieval evaluation of embedded views: flat ``dict[str, float]`` results with prefixed keys.

A *direction* ``q->g`` retrieves gallery items of view ``g`` for each query item of view ``q``. Items are matched
by place: every gallery item of the query's place is a positive (a gallery may hold several items per place, e.g.
the drone images of an orbit, or several texts).

Keys of one direction (e.g. ``drone->satellite``), with their units:

* ``<dir>/R@1``, ``<dir>/R@5``, ``<dir>/R@10``: Recall@K in percent (0..100), a hit = any positive in the top K;
* ``<dir>/R@1%``: Recall@K with K = max(1, round-half-up(0.01 * gallery size)), percent; ``<dir>/R@1%_K``: that K;
* ``<dir>/AP``: mAP in percent, **University-1652's trapezoid AP** (comparable with published tables;
  ``ap_variant="standard"`` switches to the plain non-interpolated AP under the same key);
* ``<dir>/MRR``: mean reciprocal rank of the first positive, percent (100 = always first);
* ``<dir>/median_km``, ``<dir>/mean_km``: median and mean great-circle distance (km) from the query's true
  location to its top-1 gallery item's location;
* ``<dir>/acc@<t>km``: percent of queries whose top-1 item lies within t km, inclusive (t = 1, 25, 200, 750, 2500);
* ``<dir>/n_queries``: queries in the ranking metrics (those with at least one positive);
* ``<dir>/n_no_positive``: queries left out of the ranking metrics because the gallery holds no positive;
* ``<dir>/n_geo``: queries in the km metrics (query and top-1 coordinates known);
* ``<dir>/n_gallery``: the gallery size M.

Ranking metrics average over queries that have a positive; km metrics over queries whose true location and
top-1 item location are known (a query needs no positive to have a km error). Keys whose value is undefined
(no query qualifies) are omitted. Counts are floats so that the whole dict is ``dict[str, float]``.

These are the conventions of :func:`world_protocol`: the directions are scored and measured by the same code as
the benchmarks' protocols (:func:`geobridge.eval.retrieval.compute_retrieval`,
:func:`geobridge.eval.protocol_score.direction_metrics`).

:class:`RetrievalEvaluator` adds ``mean/<metric>`` (the unweighted mean over the evaluated directions of R@K, R@1%,
AP and MRR) and ``primary_metric`` (the *name* of the headline metric, a str; its value is under that name).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from geobridge.errors import DataError
from geobridge.eval.geo import DEFAULT_THRESHOLDS_KM, top1_errors_km
from geobridge.eval.metrics import AP_VARIANTS, APVariant
from geobridge.eval.protocol_score import direction_metrics
from geobridge.eval.retrieval import ChunkSize, RetrievalResult, compute_retrieval
from geobridge.protocols import Protocol
from geobridge.views import VIEWS, check_view, direction_key, parse_direction

logger = logging.getLogger(__name__)

MEAN_METRICS: tuple[str, ...] = ("R@1", "R@5", "R@10", "R@1%", "AP", "MRR")
GROUP_PREFIXES: tuple[str, str] = ("in_domain", "out_of_domain")


def world_protocol(*, ks: Sequence[int] = (1, 5, 10)) -> Protocol:
    """GeoBridge's own conventions (the generated world, GeoLoc-style data): every direction between the views,
    pessimistic ties, junk (place id None or -1) removed, queries without a positive left out, K of R@1% rounded
    half up, and the metrics of the module docstring."""
    return Protocol(
        name="geobridge",
        layout="geobridge",
        directions=tuple((q, g) for q in VIEWS for g in VIEWS if q != g),
        k_rule="round-half-up",
        ties="pessimistic",
        no_positive="exclude",
        distractors="junk",
        metrics=("recall", "R@1%", "AP", "MRR", "km"),
        recall_ks=tuple(ks),
        description="every direction of the generated world; queries without a positive are left out",
    )


@dataclass
class EmbeddingSet:
    """The embeddings of one view's items, with what evaluation needs to know about each item.

    ``embeddings`` (N, D) float32, L2-normalised. ``place_ids`` (N,): the place of each item, strings or ints; items
    of different views match when their place ids are equal. A place id of ``None`` or ``-1`` marks a junk item
    (ignored as a gallery item; a query without positives). ``lat``/``lon`` (N,) WGS84 degrees, NaN where unknown
    (``None`` = all unknown). ``paths`` (N,) image files for plots (``None`` entries allowed). ``countries`` (N,)
    country codes for :func:`evaluate_groups`. ``texts`` (N,) the sentence of each item of a text set, for plots.
    """

    view: str
    embeddings: np.ndarray
    place_ids: Sequence[Hashable] | np.ndarray
    lat: np.ndarray | None = None
    lon: np.ndarray | None = None
    paths: Sequence[str | None] | None = None
    countries: Sequence[str | None] | np.ndarray | None = None
    texts: Sequence[str | None] | None = None

    def __post_init__(self) -> None:
        check_view(self.view)
        emb = np.asarray(self.embeddings)
        if emb.ndim != 2:
            raise DataError(f"{self.view} embeddings must be a 2-D (items, dim) array, got shape {emb.shape}")
        self.embeddings = np.ascontiguousarray(emb, dtype=np.float32)
        n = emb.shape[0]
        if len(self.place_ids) != n:
            raise DataError(f"{self.view}: {n} embeddings but {len(self.place_ids)} place ids")
        for name in ("lat", "lon"):
            value = getattr(self, name)
            arr = np.full(n, np.nan) if value is None else np.asarray(value, dtype=np.float64).reshape(-1)
            if arr.shape != (n,):
                raise DataError(f"{self.view}: {n} embeddings but {arr.size} {name} values")
            setattr(self, name, arr)
        for name in ("paths", "countries", "texts"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise DataError(f"{self.view}: {n} embeddings but {len(value)} {name}")

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def subset(self, selection: np.ndarray) -> EmbeddingSet:
        """The items picked by a boolean mask (N,) or an index array, as a new set."""
        sel = np.asarray(selection)
        idx = np.flatnonzero(sel) if sel.dtype == bool else sel.astype(np.int64).reshape(-1)
        return EmbeddingSet(
            view=self.view,
            embeddings=self.embeddings[idx],
            place_ids=(
                self.place_ids[idx] if isinstance(self.place_ids, np.ndarray) else [self.place_ids[i] for i in idx]
            ),
            lat=self.lat[idx],
            lon=self.lon[idx],
            paths=None if self.paths is None else [self.paths[i] for i in idx],
            countries=None if self.countries is None else [self.countries[i] for i in idx],
            texts=None if self.texts is None else [self.texts[i] for i in idx],
        )


def place_labels(query: EmbeddingSet, gallery: EmbeddingSet) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels (N,) and (M,) of the two sets' place ids over their union; junk ids (None, -1) become -1."""
    q_ids, g_ids = np.asarray(query.place_ids), np.asarray(gallery.place_ids)
    if q_ids.dtype.kind in "iu" and g_ids.dtype.kind in "iu":  # integer ids: use them as they are
        return np.maximum(q_ids.astype(np.int64), -1), np.maximum(g_ids.astype(np.int64), -1)
    mapping: dict[Hashable, int] = {}
    out = []
    for ids in (q_ids, g_ids):
        labels = np.empty(ids.shape[0], dtype=np.int64)
        for i, pid in enumerate(ids.tolist()):
            if pid is None or (isinstance(pid, int) and pid < 0):
                labels[i] = -1
            else:
                labels[i] = mapping.setdefault(pid, len(mapping))
        out.append(labels)
    return out[0], out[1]


def retrieve(
    query: EmbeddingSet,
    gallery: EmbeddingSet,
    *,
    k: int = 10,
    chunk_size: ChunkSize = "auto",
    ap_variant: APVariant = "university1652",
    show_progress_bar: bool | None = None,
) -> RetrievalResult:
    """Rank ``gallery`` for every item of ``query`` (matching by place id); the details behind the metrics, with
    the top-1 errors in km (``errors_km``)."""
    qlabels, glabels = place_labels(query, gallery)
    result = compute_retrieval(
        query.embeddings,
        gallery.embeddings,
        qlabels,
        glabels,
        k=k,
        chunk_size=chunk_size,
        ap_variant=ap_variant,
        show_progress_bar=show_progress_bar,
    )
    result.errors_km = errors_km(query, gallery, result)
    return result


def errors_km(query: EmbeddingSet, gallery: EmbeddingSet, result: RetrievalResult) -> np.ndarray:
    """(N,) km from each query's true location to its top-1 gallery item's location; NaN where unknown."""
    top1 = result.topk_indices[:, 0] if result.topk_indices.shape[1] else np.full(len(query), -1)
    return top1_errors_km(query.lat, query.lon, gallery.lat, gallery.lon, top1)


def evaluate_direction(
    query: EmbeddingSet,
    gallery: EmbeddingSet,
    *,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: ChunkSize = "auto",
    ap_variant: APVariant = "university1652",
    thresholds_km: Sequence[float] = DEFAULT_THRESHOLDS_KM,
    show_progress_bar: bool | None = None,
) -> dict[str, float]:
    """Retrieval and km metrics of one direction ``query.view->gallery.view`` (keys as in the module doc)."""
    ks = _check_ks(ks)
    result = retrieve(
        query, gallery, k=max(ks), chunk_size=chunk_size, ap_variant=ap_variant, show_progress_bar=show_progress_bar
    )
    metrics = direction_metrics(world_protocol(ks=ks), result, thresholds_km=thresholds_km)
    return {f"{direction_key(query.view, gallery.view)}/{name}": value for name, value in metrics.items()}


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(k) for k in ks)
    if not out or min(out) < 1:
        raise ValueError(f"ks must be a non-empty list of integers >= 1, got {ks!r}")
    return out


def all_directions(views: Collection[str]) -> list[str]:
    """Every ordered pair of distinct views among ``views``, in the fixed view order (drone, satellite, street,
    text): all image pairs, text->each image view and each image view->text."""
    return RetrievalEvaluator().directions_for(views)


class RetrievalEvaluator:
    """Evaluate every direction between the views given: ``evaluator(sets) -> dict`` with flat prefixed keys.

    ``directions``: e.g. ``["drone->satellite", "text->street"]``; ``None`` = every ordered pair of the views present
    (see :func:`all_directions`). ``ks``: the K of Recall@K. ``chunk_size``: see
    :func:`geobridge.eval.retrieval.compute_retrieval`. ``primary_metric``: the headline key; when that direction is
    not evaluated (e.g. a dataset without drone images), ``mean/R@1`` is used instead and named in the output.
    """

    def __init__(
        self,
        directions: Sequence[str] | None = None,
        *,
        ks: Sequence[int] = (1, 5, 10),
        chunk_size: ChunkSize = "auto",
        primary_metric: str = "drone->satellite/R@1",
        ap_variant: APVariant = "university1652",
        thresholds_km: Sequence[float] = DEFAULT_THRESHOLDS_KM,
        show_progress_bar: bool | None = None,
    ) -> None:
        self.directions = None if directions is None else [direction_key(*parse_direction(d)) for d in directions]
        self.ks = _check_ks(ks)
        if ap_variant not in AP_VARIANTS:
            raise ValueError(f"unknown ap_variant {ap_variant!r}; expected one of {', '.join(AP_VARIANTS)}")
        self.chunk_size = chunk_size
        self.primary_metric = primary_metric
        self.ap_variant = ap_variant
        self.thresholds_km = tuple(thresholds_km)
        self.show_progress_bar = show_progress_bar

    def directions_for(self, query_views: Collection[str], gallery_views: Collection[str] | None = None) -> list[str]:
        """The directions evaluated for these query and gallery views (``gallery_views`` defaults to
        ``query_views``). With explicit ``directions``, a direction whose view is missing raises DataError."""
        gallery_views = query_views if gallery_views is None else gallery_views
        if self.directions is None:
            return [
                direction_key(q, g)
                for q, g in itertools.product(VIEWS, VIEWS)
                if q != g and q in query_views and g in gallery_views
            ]
        for direction in self.directions:
            q_view, g_view = parse_direction(direction)
            for view, available, side in ((q_view, query_views, "query"), (g_view, gallery_views, "gallery")):
                if view not in available:
                    raise DataError(
                        f"direction {direction} needs {view} {side} embeddings, "
                        f"but only {', '.join(sorted(available)) or 'none'} were given"
                    )
        return list(self.directions)

    def __call__(self, sets: Mapping[str, EmbeddingSet]) -> dict[str, float | str]:
        """Metrics of every direction among ``sets`` (view name -> its :class:`EmbeddingSet`), plus ``mean/*`` and
        ``primary_metric``."""
        out: dict[str, float | str] = dict(self.evaluate(sets, sets))
        name = self.primary_metric if self.primary_metric in out else "mean/R@1"
        if name != self.primary_metric:
            logger.info("primary metric %s is not available; using %s", self.primary_metric, name)
        out["primary_metric"] = name
        return out

    def evaluate(self, queries: Mapping[str, EmbeddingSet], galleries: Mapping[str, EmbeddingSet]) -> dict[str, float]:
        """Like calling the evaluator, with separate query and gallery sets (e.g. a subset of the queries against
        the full galleries), and without ``primary_metric``. Directions whose query set is empty are skipped."""
        _check_keys(queries)
        _check_keys(galleries)
        out: dict[str, float] = {}
        for direction in self.directions_for(set(queries), set(galleries)):
            q_view, g_view = parse_direction(direction)
            if len(queries[q_view]) == 0:
                continue
            out.update(
                evaluate_direction(
                    queries[q_view],
                    galleries[g_view],
                    ks=self.ks,
                    chunk_size=self.chunk_size,
                    ap_variant=self.ap_variant,
                    thresholds_km=self.thresholds_km,
                    show_progress_bar=self.show_progress_bar,
                )
            )
        out.update(mean_summaries(out))
        return out

    def restricted_to(self, query_views: Collection[str]) -> RetrievalEvaluator:
        """A copy whose explicit directions keep only those with a query view in ``query_views``."""
        directions = None
        if self.directions is not None:
            directions = [d for d in self.directions if parse_direction(d)[0] in query_views]
        return RetrievalEvaluator(
            directions,
            ks=self.ks,
            chunk_size=self.chunk_size,
            primary_metric=self.primary_metric,
            ap_variant=self.ap_variant,
            thresholds_km=self.thresholds_km,
            show_progress_bar=self.show_progress_bar,
        )


def mean_summaries(metrics: Mapping[str, float | str]) -> dict[str, float]:
    """``mean/<m>``: the unweighted mean over directions of each metric in :data:`MEAN_METRICS` found in ``metrics``
    (keys ``<q>-><g>/<m>`` without any further prefix)."""
    values: dict[str, list[float]] = {}
    for key, value in metrics.items():
        head, _, metric = key.rpartition("/")
        if "->" in head and "/" not in head and metric in MEAN_METRICS and isinstance(value, float):
            values.setdefault(metric, []).append(value)
    return {f"mean/{m}": float(np.mean(values[m])) for m in MEAN_METRICS if m in values}


def _check_keys(sets: Mapping[str, EmbeddingSet]) -> None:
    for view, emb_set in sets.items():
        check_view(view)
        if emb_set.view != view:
            raise DataError(f"the embedding set under {view!r} says its view is {emb_set.view!r}")


def evaluate_groups(
    sets: Mapping[str, EmbeddingSet],
    *,
    holdout_countries: Collection[str],
    evaluator: RetrievalEvaluator | None = None,
    countries: Mapping[str, Sequence[str | None]] | None = None,
) -> dict[str, float]:
    """Cross-domain evaluation: the same directions for in-domain and held-out-country queries.

    Queries whose country is in ``holdout_countries`` form the ``out_of_domain/`` group, the others (with a known
    country) the ``in_domain/`` group; keys are the evaluator's keys with that prefix, e.g.
    ``out_of_domain/drone->satellite/R@1`` (no ``primary_metric``). **The galleries stay the full galleries** for both
    groups, so the two groups' numbers are comparable and a held-out query can still be confused with an in-domain
    place. Countries come from ``countries[view]`` when given, else from each set's ``countries`` field; a view without
    countries contributes no queries. A group with no query in a view skips that view's directions.
    """
    evaluator = evaluator or RetrievalEvaluator()
    holdout = set(holdout_countries)
    out: dict[str, float] = {}
    for prefix in GROUP_PREFIXES:
        queries: dict[str, EmbeddingSet] = {}
        for view, emb_set in sets.items():
            view_countries = (countries or {}).get(view, emb_set.countries)
            if view_countries is None:
                continue
            if len(view_countries) != len(emb_set):
                raise DataError(f"{view}: {len(emb_set)} embeddings but {len(view_countries)} countries")
            in_holdout = np.array([c in holdout for c in view_countries], dtype=bool)
            known = np.array([c is not None for c in view_countries], dtype=bool)
            mask = in_holdout if prefix == "out_of_domain" else known & ~in_holdout
            queries[view] = emb_set.subset(mask)
        if not queries:
            continue
        group_eval = evaluator.restricted_to(set(queries))
        out.update({f"{prefix}/{k}": v for k, v in group_eval.evaluate(queries, sets).items()})
    return out
