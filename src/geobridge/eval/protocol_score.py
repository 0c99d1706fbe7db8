"""Scoring one :class:`~geobridge.data.evalsplit.EvalSplit` under a :class:`~geobridge.protocols.Protocol`, and
the metrics of one direction under a protocol (the benchmarks' and the generated world's alike).

The split's conventions become labels and masks for :func:`geobridge.eval.retrieval.compute_retrieval`, the one
scoring path of :mod:`geobridge.eval`: gallery places are labels (equal = positive), junk (distractors when the
protocol removes them, semi-positives when it removes them) is taken out of the ranking, semi-positives that stay
are marked for the hit rate, and the protocol's tie rule orders tied scores. The result is a
:class:`~geobridge.eval.retrieval.RetrievalResult` with the top-1 errors and the direction's metrics filled in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from geobridge.data.evalsplit import EvalItem, EvalSplit
from geobridge.errors import DataError
from geobridge.eval.geo import DEFAULT_THRESHOLDS_KM, geodesic_metrics
from geobridge.eval.metrics import k_for_one_percent
from geobridge.eval.retrieval import JunkFn, RetrievalResult, auto_chunk_size, compute_retrieval
from geobridge.geodesy import EARTH_RADIUS_KM, haversine_km
from geobridge.protocols import Protocol

EARTH_RADIUS_M = 1000.0 * EARTH_RADIUS_KM
BLOCK_BYTES = 64 * 2**20  # one float32 (chunk, M) score block; a few same-sized masks and copies sit beside it


def merge_multi_query(split: EvalSplit, embeddings: np.ndarray) -> tuple[EvalSplit, np.ndarray]:
    """University-1652's multiple-query setting: every query group becomes one query.

    The group's embedding is the mean of its members' unit embeddings, re-normalised (University-1652's
    ``test.py`` sums the unit features of a building and re-normalises, which is the same vector). Items with
    ``group=None`` stay single queries. Returns the merged split (queries in order of first appearance, keyed
    by group) and its (N', D) embeddings.
    """
    emb = _unit_rows(np.asarray(embeddings, dtype=np.float64), "query")
    if emb.shape[0] != len(split.queries):
        raise DataError(f"{split.name}: {emb.shape[0]} query embeddings for {len(split.queries)} queries")
    if all(item.group is None for item in split.queries):
        raise DataError(f"{split.name}: multi-query needs query groups, but no query item has a group")
    members: dict[str, list[int]] = {}
    for i, item in enumerate(split.queries):
        members.setdefault(item.group if item.group is not None else item.key, []).append(i)
    merged_items, merged_emb, semi = [], [], {}
    for key, rows in members.items():
        places = {split.queries[r].place_id for r in rows}
        if len(places) != 1:
            raise DataError(f"{split.name}: query group {key!r} mixes places {sorted(map(str, places))}")
        first = split.queries[rows[0]]
        merged_items.append(dataclasses.replace(first, key=key, group=key))
        merged_emb.append(emb[rows].mean(axis=0))
        keys = [g for r in rows for g in split.semi_positives.get(split.queries[r].key, ())]
        if keys:
            semi[key] = tuple(dict.fromkeys(keys))
    out = _unit_rows(np.stack(merged_emb), "merged query")
    return dataclasses.replace(split, queries=tuple(merged_items), semi_positives=semi), out.astype(np.float32)


def score_split(
    protocol: Protocol,
    split: EvalSplit,
    query_embeddings: np.ndarray,
    gallery_embeddings: np.ndarray,
    *,
    chunk_size: int | None = None,
    show_progress_bar: bool | None = None,
) -> RetrievalResult:
    """Rank ``split.gallery`` for every query of ``split`` with ``protocol``'s conventions, and its metrics.

    ``query_embeddings`` (N, D) and ``gallery_embeddings`` (M, D) are in the order of ``split.queries`` and
    ``split.gallery``; rows are L2-normalised here, as every official script does. With ``protocol.multi_query``
    the queries are merged first (:func:`merge_multi_query`). The result's top-k lists hold the best
    ``max(protocol.recall_ks)`` non-junk gallery rows, ``errors_km`` the top-1 errors and ``metrics``
    :func:`direction_metrics`.
    """
    qemb = np.asarray(query_embeddings)
    if protocol.multi_query:
        split, qemb = merge_multi_query(split, qemb)
    query = _unit_rows(qemb, "query").astype(np.float32)
    gallery = _unit_rows(np.asarray(gallery_embeddings), "gallery").astype(np.float32)
    n_query, n_gallery = query.shape[0], gallery.shape[0]
    if n_query != len(split.queries) or n_gallery != len(split.gallery):
        raise DataError(
            f"{split.name}: {n_query} query / {n_gallery} gallery embeddings for "
            f"{len(split.queries)} queries / {len(split.gallery)} gallery items"
        )
    if query.shape[1] != gallery.shape[1]:
        raise DataError(f"{split.name}: query dimension {query.shape[1]} != gallery dimension {gallery.shape[1]}")
    qlabels, glabels = _labels(split, distractors_junk=protocol.distractors == "junk")
    semi = _semi_fn(split, qlabels, glabels)
    result = compute_retrieval(
        query,
        gallery,
        qlabels,
        glabels,
        k=max(protocol.recall_ks),
        chunk_size=chunk_size or auto_chunk_size(n_gallery, block_bytes=BLOCK_BYTES),
        junk_fn=semi if protocol.semi_positives == "junk" else None,
        semi_fn=semi if protocol.semi_positives == "negative" else None,
        ties=protocol.ties,
        ap_variant="university1652",
        show_progress_bar=show_progress_bar,
    )
    missing = ~result.has_positive
    if protocol.no_positive == "error" and missing.any():
        bad = split.queries[int(np.flatnonzero(missing)[0])]
        raise DataError(
            f"{split.name}: query {bad.key!r} has no positive in the gallery, which protocol {protocol.name!r} "
            f"requires of every query ({int(missing.sum())} such queries)"
        )
    result.errors_km = _errors_km(split, first_positive_col=_first_positive_cols(qlabels, glabels),
                                  top1=_argmax_top1(result))
    result.metrics = direction_metrics(protocol, result)
    return result


def direction_metrics(
    protocol: Protocol, result: RetrievalResult, *, thresholds_km: Sequence[float] = DEFAULT_THRESHOLDS_KM
) -> dict[str, float]:
    """The metrics of one direction that ``protocol`` reports, from its retrieval result.

    Percentages, except ``R@1%_K`` (the K), the km and metre errors and the counts. Rates divide by the queries the
    protocol counts (``n_queries``): every query (a query without a positive is a miss), or only those with a
    positive (``no_positive="exclude"``); undefined rates (no such query) are left out. ``n_no_positive``: queries
    without a positive in the gallery.
    """
    has = result.has_positive
    first = result.first_positive_rank
    counted = result.n_queries if protocol.no_positive in ("miss", "error") else int(np.count_nonzero(has))
    out: dict[str, float] = {}
    if counted:
        def rate(mask: np.ndarray) -> float:
            return 100.0 * float(np.count_nonzero(mask)) / counted

        if "recall" in protocol.metrics:
            for k in protocol.recall_ks:
                out[f"R@{k}"] = rate(has & (first < k))
        if "R@1%" in protocol.metrics:
            k = k_for_one_percent(result.n_gallery, rule=protocol.k_rule)
            out["R@1%"] = rate(has & (first < k))
            out["R@1%_K"] = float(k)
        if "AP" in protocol.metrics:
            out["AP"] = 100.0 * float(np.nansum(result.average_precision[has])) / counted
        if "MRR" in protocol.metrics:
            out["MRR"] = 100.0 * float(np.sum(1.0 / (first[has] + 1.0))) / counted
        if "hit_rate" in protocol.metrics:
            out["hit_rate"] = rate(result.hit)
    errors = np.full(result.n_queries, np.nan) if result.errors_km is None else result.errors_km
    if "localisation" in protocol.metrics:
        finite = 1000.0 * errors[np.isfinite(errors)]
        if finite.size:
            out["median_m"] = float(np.median(finite))
            out["mean_m"] = float(np.mean(finite))
    if "km" in protocol.metrics:
        out.update(geodesic_metrics(errors, thresholds_km=thresholds_km))
    out["n_queries"] = float(counted)
    out["n_no_positive"] = float(np.count_nonzero(~has))
    out["n_gallery"] = float(result.n_gallery)
    return out


def protocol_metrics(protocol: Protocol, results: Mapping[str, RetrievalResult]) -> dict[str, float | str]:
    """Flat ``<q>-><g>/<metric>`` keys of every direction, GeoText's ``r_mean`` and the ``primary_metric``."""
    out: dict[str, float | str] = {}
    for direction, result in results.items():
        out.update({f"{direction}/{name}": value for name, value in result.metrics.items()})
    if "r_mean" in protocol.metrics:
        means = {}
        for direction, result in results.items():
            recalls = [result.metrics[f"R@{k}"] for k in protocol.recall_ks]
            side = "txt_r_mean" if direction.endswith("->text") else "img_r_mean"  # GeoText's names
            means[side] = float(np.mean(recalls))
            out[side] = means[side]
        if len(means) == 2:
            out["r_mean"] = (means["txt_r_mean"] + means["img_r_mean"]) / 2.0
    first = next(iter(results))
    out["primary_metric"] = "r_mean" if "r_mean" in out else f"{first}/R@1"
    out["protocol"] = protocol.name
    return out


# ---------------------------------------------------------------------------------------------------------------------
# internals


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    if x.ndim != 2:
        raise DataError(f"{name} embeddings must be a 2-D (items, dim) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"{name} embeddings contain NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise DataError(f"{name} embeddings contain a zero vector, which has no direction")
    return x / norms


def _labels(split: EvalSplit, *, distractors_junk: bool) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels (N,), (M,): equal = positive, -1 = junk (gallery) or no place (query). Distractors (items of
    ``split.distractor_ids`` or without a place) are junk, or negatives under a label no query carries."""
    shown = split.distractor_ids & {q.place_id for q in split.queries}
    if shown:
        raise DataError(f"{split.name}: distractor ids {sorted(shown)[:3]} are places of queries ({split.source})")
    ids: dict[str, int] = {}
    for item in split.gallery:
        if item.place_id is not None and not (distractors_junk and item.place_id in split.distractor_ids):
            ids.setdefault(item.place_id, len(ids))
    unlabelled = -1 if distractors_junk else len(ids)  # a label of no query: negatives for everyone
    glabels = np.array([ids.get(g.place_id, unlabelled) if g.place_id is not None else unlabelled
                        for g in split.gallery], dtype=np.int64)
    qlabels = np.array([ids.get(q.place_id, -1) if q.place_id is not None else -1 for q in split.queries],
                       dtype=np.int64)
    return qlabels, glabels


def _semi_fn(split: EvalSplit, qlabels: np.ndarray, glabels: np.ndarray) -> JunkFn | None:
    """``fn(query_rows) -> (B, M)`` the semi-positives of those queries that are not positives, or ``None``."""
    if not split.semi_positives:
        return None
    gindex = {g.key: j for j, g in enumerate(split.gallery)}
    rows, cols = [], []
    for i, item in enumerate(split.queries):
        for key in split.semi_positives.get(item.key, ()):
            if key not in gindex:
                raise DataError(f"{split.name}: semi-positive {key!r} of query {item.key!r} is not in the gallery")
            rows.append(i)
            cols.append(gindex[key])
    semi_rows, semi_cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)

    def semi(query_rows: np.ndarray) -> np.ndarray:
        mask = np.zeros((query_rows.size, glabels.size), dtype=bool)  # (B, M)
        sel = np.isin(semi_rows, query_rows)
        mask[np.searchsorted(query_rows, semi_rows[sel]), semi_cols[sel]] = True
        return mask & ~((glabels[None, :] == qlabels[query_rows, None]) & (qlabels[query_rows, None] >= 0))

    return semi


def _first_positive_cols(qlabels: np.ndarray, glabels: np.ndarray) -> np.ndarray:
    """(N,) the first gallery column of each query's place, -1 if none (for VIGOR's offsets)."""
    first: dict[int, int] = {}
    for j, label in enumerate(glabels.tolist()):
        first.setdefault(label, j)
    return np.array([first.get(label, -1) if label >= 0 else -1 for label in qlabels.tolist()], dtype=np.int64)


def _argmax_top1(result: RetrievalResult) -> np.ndarray:
    """(N,) the top-1 gallery row as the scripts take it (``np.argmax`` of the scores: on a tie the lowest row,
    positive or not), from the top-k lists; -1 where nothing was retrieved."""
    scores, idx = result.topk_scores, result.topk_indices  # (N, k)
    if idx.shape[1] == 0:
        return np.full(idx.shape[0], -1, dtype=np.int64)
    none = np.iinfo(np.int64).max
    top1 = np.where((scores == scores[:, :1]) & (idx >= 0), idx, none).min(axis=1)  # (N,)
    top1[top1 == none] = -1
    return top1


def _position(item: EvalItem) -> tuple[float, float]:
    if item.lat is None or item.lon is None:
        return math.nan, math.nan
    return float(item.lat), float(item.lon)


def _errors_km(split: EvalSplit, *, first_positive_col: np.ndarray, top1: np.ndarray) -> np.ndarray:
    """Kilometres from each query's true position to its top-1 item's position (the tile centre); NaN when unknown.

    A query's position is its own lat/lon, else its positive tile's centre moved by ``offset_m`` (east, north).
    """
    gpos = np.array([_position(g) for g in split.gallery], dtype=np.float64).reshape(-1, 2)  # (M, 2)
    qpos = np.array([_position(q) for q in split.queries], dtype=np.float64).reshape(-1, 2)  # (N, 2)
    for i, item in enumerate(split.queries):
        col = int(first_positive_col[i])
        if np.isnan(qpos[i]).any() and item.offset_m is not None and col >= 0 and np.isfinite(gpos[col]).all():
            lat0, lon0 = gpos[col]
            east, north = item.offset_m
            qpos[i, 0] = lat0 + math.degrees(north / EARTH_RADIUS_M)
            qpos[i, 1] = lon0 + math.degrees(east / (EARTH_RADIUS_M * math.cos(math.radians(lat0))))
    pred = gpos[np.maximum(top1, 0)]
    errors = haversine_km(qpos[:, 0], qpos[:, 1], pred[:, 0], pred[:, 1])
    errors[top1 < 0] = np.nan
    return errors
