"""Scoring one :class:`~geobridge.data.evalsplit.EvalSplit` under a :class:`~geobridge.protocols.Protocol`.

The score of a (query, gallery item) pair is the dot product of their unit embeddings. For each query this module
keeps the 0-based rank of every positive after junk removal, with the protocol's tie rule:

* ``"pessimistic"``: ``rank_i = #{negatives with score >= s_i} + i`` (the rule of :mod:`geobridge.eval.metrics`
  and :func:`geobridge.eval.retrieval.compute_retrieval`, which give the same ranks);
* ``"optimistic"``: ``rank_i = #{negatives with score > s_i} + i`` -- what the CVUSA, CVACT and VIGOR scripts
  compute when they count the gallery items scoring strictly better than the positive.

(``s_0 >= s_1 >= ...`` are the query's positive scores.) The pessimistic-only core is not reused for the ranks
because of the second rule; the metrics themselves come from :mod:`geobridge.eval.metrics`.
Scores are computed ``chunk_size`` queries at a time, so the N x M matrix is never held.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from geobridge.data.evalsplit import EvalItem, EvalSplit
from geobridge.errors import DataError
from geobridge.eval.geo import EARTH_RADIUS_KM, haversine_km
from geobridge.eval.metrics import average_precision_batch, k_for_one_percent
from geobridge.eval.retrieval import auto_chunk_size, block_scores, positive_offsets, positive_ranks
from geobridge.protocols import Protocol

logger = logging.getLogger(__name__)
EARTH_RADIUS_M = 1000.0 * EARTH_RADIUS_KM
BLOCK_BYTES = 64 * 2**20  # one float32 (chunk, M) score block; a few same-sized masks and copies sit beside it


@dataclass
class DirectionResult:
    """What one direction of a protocol produced (N queries after multi-query merging, gallery of M items).

    ``positive_ranks`` (P,) / ``positive_offsets`` (N + 1,): CSR ranks of each query's positives (protocol ties,
    junk removed). ``first_rank`` (N,): rank of the best positive, ``-1`` without one. ``hit`` (N,) bool: no
    gallery item other than positives and semi-positives scores above the best positive (VIGOR's hit rate).
    ``top1`` (N,): the best-scoring non-junk gallery row. ``errors_m`` (N,): metres from the query's position to
    its top-1 item's position (NaN where unknown). ``metrics``: the direction's flat metrics (percentages).
    """

    direction: str
    n_gallery: int
    k_percent: int
    positive_ranks: np.ndarray
    positive_offsets: np.ndarray
    first_rank: np.ndarray
    hit: np.ndarray
    top1: np.ndarray
    errors_m: np.ndarray
    metrics: dict[str, float]

    @property
    def n_queries(self) -> int:
        return int(self.first_rank.shape[0])


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
) -> DirectionResult:
    """Rank ``split.gallery`` for every query of ``split`` with ``protocol``'s conventions, and its metrics.

    ``query_embeddings`` (N, D) and ``gallery_embeddings`` (M, D) are in the order of ``split.queries`` and
    ``split.gallery``; rows are L2-normalised here, as every official script does. With ``protocol.multi_query``
    the queries are merged first (:func:`merge_multi_query`).
    """
    from tqdm.auto import tqdm

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
    qlabels, glabels = _labels(split)
    semi_rows, semi_cols = _semi_pairs(split)
    distractor = _distractor_mask(split)  # (M,)
    size = chunk_size or auto_chunk_size(n_gallery, block_bytes=BLOCK_BYTES)
    if show_progress_bar is None:
        show_progress_bar = logger.getEffectiveLevel() <= logging.INFO
    ranks, counts = [], np.zeros(n_query, dtype=np.int64)
    hit = np.zeros(n_query, dtype=bool)
    top1 = np.full(n_query, -1, dtype=np.int64)
    strict = protocol.ties == "optimistic"
    starts = range(0, n_query, size)
    for start in tqdm(starts, desc=f"scoring {split.name}", unit="chunk", disable=not show_progress_bar):
        rows = np.arange(start, min(start + size, n_query))
        positive = (glabels[None, :] == qlabels[rows, None]) & (qlabels[rows, None] >= 0)  # (B, M)
        semi = np.zeros_like(positive)
        sel = (semi_rows >= rows[0]) & (semi_rows <= rows[-1])
        semi[semi_rows[sel] - rows[0], semi_cols[sel]] = True
        block_ranks, counts[rows], top1[rows], hit[rows] = _score_block(
            protocol, block_scores(query[rows], gallery), positive, semi & ~positive, distractor, strict=strict
        )
        ranks.append(block_ranks)
    flat = np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)
    offsets, first = positive_offsets(flat, counts)
    if protocol.no_positive == "error" and (counts == 0).any():
        bad = split.queries[int(np.flatnonzero(counts == 0)[0])]
        raise DataError(
            f"{split.name}: query {bad.key!r} has no positive in the gallery, which protocol {protocol.name!r} "
            f"requires of every query ({int((counts == 0).sum())} such queries)"
        )
    errors = _errors_m(split, first_positive_col=_first_positive_cols(qlabels, glabels), top1=top1)
    k_percent = k_for_one_percent(n_gallery, rule=protocol.k_rule)
    result = DirectionResult(
        direction=f"{split.query_view}->{split.gallery_view}",
        n_gallery=n_gallery,
        k_percent=k_percent,
        positive_ranks=flat,
        positive_offsets=offsets,
        first_rank=first,
        hit=hit,
        top1=top1,
        errors_m=errors,
        metrics={},
    )
    result.metrics = direction_metrics(protocol, result)
    return result


def _score_block(
    protocol: Protocol,
    block: np.ndarray,
    positive: np.ndarray,
    semi: np.ndarray,
    distractor: np.ndarray,
    *,
    strict: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One chunk of B queries against the M gallery items: ``block`` (B, M) scores, ``positive`` and ``semi``
    (B, M) masks (semi-positives that are not positives), ``distractor`` (M,). Returns the positives' ranks
    (flat, row by row) and their count per query, each query's top-1 column and whether its best positive
    outranks every negative (B,)."""
    junk = np.broadcast_to(distractor if protocol.distractors == "junk" else np.zeros_like(distractor),
                           positive.shape).copy()
    if protocol.semi_positives == "junk":
        junk |= semi
    positive = positive & ~junk
    candidates = np.where(junk, -np.inf, block)
    top1 = np.argmax(candidates, axis=1)
    negatives = np.where(positive, -np.inf, candidates)  # (B, M): junk and positives can never outrank
    block_ranks, block_counts = positive_ranks(candidates, *np.nonzero(positive), strict=strict)  # -inf'd
    best = np.where(positive, block, -np.inf).max(axis=1)  # (B,) best positive score (-inf: none)
    others = np.where(semi, -np.inf, negatives)
    above = np.count_nonzero(others > best[:, None] if strict else others >= best[:, None], axis=1)
    return block_ranks, block_counts, top1, np.isfinite(best) & (above == 0)


def direction_metrics(protocol: Protocol, result: DirectionResult) -> dict[str, float]:
    """The protocol's metrics of one direction: percentages, except ``R@1%_K``, counts and metres."""
    has = result.first_rank >= 0
    denominator = result.n_queries if protocol.no_positive in ("miss", "error") else int(has.sum())
    out: dict[str, float] = {}

    def rate(mask: np.ndarray) -> float:
        return 100.0 * float(np.count_nonzero(mask)) / denominator if denominator else float("nan")

    if "recall" in protocol.metrics:
        for k in protocol.recall_ks:
            out[f"R@{k}"] = rate(has & (result.first_rank < k))
    if "R@1%" in protocol.metrics:
        k = result.k_percent
        out["R@1%"] = rate(has & (result.first_rank < k)) if k > 0 else 0.0
        out["R@1%_K"] = float(k)
    if "AP" in protocol.metrics:
        ap = average_precision_batch(result.positive_ranks, result.positive_offsets, variant="university1652")
        out["AP"] = 100.0 * float(np.nansum(ap[has])) / denominator if denominator else float("nan")
    if "hit_rate" in protocol.metrics:
        out["hit_rate"] = rate(result.hit)
    if "localisation" in protocol.metrics:
        finite = result.errors_m[np.isfinite(result.errors_m)]
        if finite.size:
            out["median_m"] = float(np.median(finite))
            out["mean_m"] = float(np.mean(finite))
    out["n_queries"] = float(result.n_queries)
    out["n_gallery"] = float(result.n_gallery)
    out["n_without_positive"] = float(np.count_nonzero(~has))
    return out


def protocol_metrics(protocol: Protocol, results: Mapping[str, DirectionResult]) -> dict[str, float | str]:
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


def _labels(split: EvalSplit) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels: equal = positive; unlabelled gallery items (place None) -1; queries without a place -2."""
    ids: dict[str, int] = {}
    glabels = np.array([-1 if g.place_id is None else ids.setdefault(g.place_id, len(ids)) for g in split.gallery],
                       dtype=np.int64)
    qlabels = np.array([ids.get(q.place_id, -2) if q.place_id is not None else -2 for q in split.queries],
                       dtype=np.int64)
    return qlabels, glabels


def _distractor_mask(split: EvalSplit) -> np.ndarray:
    """(M,) bool: gallery items of ``split.distractor_ids`` or without a place. A distractor id that a query
    carries would make one item both a positive and junk: a DataError naming the split."""
    shown = split.distractor_ids & {q.place_id for q in split.queries}
    if shown:
        raise DataError(f"{split.name}: distractor ids {sorted(shown)[:3]} are places of queries ({split.source})")
    return np.array([g.place_id is None or g.place_id in split.distractor_ids for g in split.gallery], dtype=bool)


def _semi_pairs(split: EvalSplit) -> tuple[np.ndarray, np.ndarray]:
    """(query row, gallery column) of every semi-positive pair."""
    if not split.semi_positives:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    gindex = {g.key: j for j, g in enumerate(split.gallery)}
    rows, cols = [], []
    for i, item in enumerate(split.queries):
        for key in split.semi_positives.get(item.key, ()):
            if key not in gindex:
                raise DataError(f"{split.name}: semi-positive {key!r} of query {item.key!r} is not in the gallery")
            rows.append(i)
            cols.append(gindex[key])
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)


def _first_positive_cols(qlabels: np.ndarray, glabels: np.ndarray) -> np.ndarray:
    """(N,) the first gallery column of each query's place, -1 if none (for VIGOR's offsets)."""
    first: dict[int, int] = {}
    for j, label in enumerate(glabels.tolist()):
        first.setdefault(label, j)
    return np.array([first.get(label, -1) if label >= 0 else -1 for label in qlabels.tolist()], dtype=np.int64)


def _position(item: EvalItem) -> tuple[float, float]:
    if item.lat is None or item.lon is None:
        return math.nan, math.nan
    return float(item.lat), float(item.lon)


def _errors_m(split: EvalSplit, *, first_positive_col: np.ndarray, top1: np.ndarray) -> np.ndarray:
    """Metres from each query's true position to its top-1 item's position (the tile centre); NaN when unknown.

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
    errors = 1000.0 * haversine_km(qpos[:, 0], qpos[:, 1], pred[:, 0], pred[:, 1])
    errors[top1 < 0] = np.nan
    return errors
