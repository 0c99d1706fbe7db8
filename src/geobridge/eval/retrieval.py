"""Exact retrieval over a gallery, in query chunks: top-k lists and the rank of every positive.

The score of a (query, gallery item) pair is the dot product of their embeddings (the cosine for unit vectors).
:func:`compute_retrieval` never holds the N x M score matrix: it scores ``chunk_size`` queries at a time (a
``(chunk_size, M)`` float32 block, about 256 MB by default) and keeps, per query, only

* its top-k gallery items (indices, scores, whether each is a positive), and
* the 0-based rank of each of its positives, stored compactly (CSR: ``positive_ranks`` + ``positive_offsets``).

Positives are the gallery items whose label equals the query's label. Junk gallery items are removed from the
ranking (they are neither positives nor negatives, and never appear in the top-k lists):

* gallery label ``< 0`` (University-1652 uses ``-1``) is junk for every query; a query with a label ``< 0`` has no
  positives;
* with ``query_groups`` / ``gallery_groups`` (e.g. camera or capture-session ids), a gallery item with the query's
  label **and** the query's group is junk (the "same camera" rule of person re-identification benchmarks);
* ``junk_fn(query_rows) -> (B, M) bool`` marks any further junk for the queries ``query_rows`` (absolute indices).

Ties follow ``ties``: ``"pessimistic"`` (the rule of :mod:`geobridge.eval.metrics`: a negative tied with a
positive is ranked first, ``rank_i = #{negatives >= s_i} + i``) or ``"optimistic"`` (ranked after it,
``rank_i = #{negatives > s_i} + i``: what the CVUSA, CVACT and VIGOR scripts compute when they count the gallery
items that score strictly better). The top-k lists use the same order -- score decreasing, then on ties negatives
before positives (pessimistic) or after them (optimistic), then gallery index increasing -- so
``topk_is_positive[:, 0]`` is exactly "rank of the first positive == 0".

``semi_fn(query_rows) -> (B, M) bool`` marks semi-positives (VIGOR's neighbouring tiles): negatives for the
ranks, but not counted against the query's ``hit`` (its best positive outranks every other gallery item that is
neither a positive nor a semi-positive; without ``semi_fn`` a hit is exactly a first positive at rank 0).

``chunk_size=None`` selects a dense reference path (full score matrix, one explicit sort per query). It returns
the same numbers as the chunked path whenever the dot products come out the same; BLAS may round a block's
products differently from the full matrix's in the last bit, so on real-valued embeddings two items whose scores
differ by about one float32 ulp may swap places between the two paths (with integer-valued embeddings the
arithmetic is exact and the results are identical).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from geobridge.errors import DataError
from geobridge.eval.metrics import (
    APVariant,
    average_precision_batch,
    cmc_curve,
    mean_average_precision,
    mean_reciprocal_rank,
    recall_at_k,
)
from geobridge.protocols import Ties

logger = logging.getLogger(__name__)

DEFAULT_BLOCK_BYTES = 256 * 2**20
ChunkSize = int | Literal["auto"] | None
JunkFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class RetrievalResult:
    """What one query set retrieved from one gallery (N queries, gallery of M items, top-k lists of length k).

    ``topk_indices`` (N, k) int64 gallery rows, best first; ``-1`` pads rows when fewer than k non-junk items exist.
    ``topk_scores`` (N, k) float32 scores of those items (``-inf`` on pads). ``topk_is_positive`` (N, k) bool.
    ``positive_ranks`` (P,) int64 and ``positive_offsets`` (N + 1,) int64: query q's positives have the increasing
    0-based ranks ``positive_ranks[positive_offsets[q]:positive_offsets[q + 1]]`` (junk removed, pessimistic ties).
    ``first_positive_rank`` (N,) int64, ``-1`` when the query has no positive.
    ``average_precision`` (N,) float64 per-query AP of the ``ap_variant`` kind, NaN when the query has no positive.
    ``hit`` (N,) bool: the best positive outranks every gallery item that is neither a positive nor a semi-positive
    (see the module docstring). ``errors_km`` (N,) float64: km from each query's true location to its top-1 item's,
    NaN where unknown; ``None`` until a caller that knows the locations sets it. ``metrics``: the direction's
    metrics (:func:`geobridge.eval.protocol_score.direction_metrics`) once a caller has computed them.
    """

    topk_indices: np.ndarray
    topk_scores: np.ndarray
    topk_is_positive: np.ndarray
    positive_ranks: np.ndarray
    positive_offsets: np.ndarray
    first_positive_rank: np.ndarray
    average_precision: np.ndarray
    n_gallery: int
    hit: np.ndarray
    ap_variant: str = "university1652"
    ties: str = "pessimistic"
    errors_km: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def n_queries(self) -> int:
        return int(self.first_positive_rank.shape[0])

    @property
    def n_positives(self) -> np.ndarray:
        """(N,) int64: positives of each query (after junk removal)."""
        return np.diff(self.positive_offsets)

    @property
    def has_positive(self) -> np.ndarray:
        """(N,) bool: queries that have at least one positive (the ones the ranking metrics average over)."""
        return self.first_positive_rank >= 0

    def ranks_of(self, query: int) -> np.ndarray:
        """The increasing 0-based ranks of query ``query``'s positives."""
        return self.positive_ranks[self.positive_offsets[query] : self.positive_offsets[query + 1]]

    def recall_at_k(self, k: int) -> float:
        """Fraction of queries (with a positive) that have a positive in their top ``k``."""
        return recall_at_k(self.first_positive_rank, k)

    def cmc(self, max_rank: int) -> np.ndarray:
        """(max_rank,) recall at K = 1 .. max_rank (fractions)."""
        return cmc_curve(self.first_positive_rank, max_rank)

    def mean_average_precision(self, *, variant: APVariant | None = None) -> float:
        """mAP with this result's AP variant, or another one computed from the stored ranks."""
        if variant is None or variant == self.ap_variant:
            return mean_average_precision(self.average_precision)
        return mean_average_precision(
            average_precision_batch(self.positive_ranks, self.positive_offsets, variant=variant)
        )

    def mean_reciprocal_rank(self) -> float:
        return mean_reciprocal_rank(self.first_positive_rank)


def auto_chunk_size(n_gallery: int, *, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Queries per chunk so that one float32 (chunk, n_gallery) score block takes about ``block_bytes``."""
    return max(1, int(block_bytes) // (4 * max(1, int(n_gallery))))


def compute_retrieval(
    query_embeddings: np.ndarray,
    gallery_embeddings: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    k: int = 10,
    chunk_size: ChunkSize = "auto",
    query_groups: np.ndarray | None = None,
    gallery_groups: np.ndarray | None = None,
    junk_fn: JunkFn | None = None,
    semi_fn: JunkFn | None = None,
    ties: Ties = "pessimistic",
    ap_variant: APVariant = "university1652",
    show_progress_bar: bool | None = None,
) -> RetrievalResult:
    """Rank the gallery for every query and keep the top-k lists and every positive's rank.

    ``query_embeddings`` (N, D) and ``gallery_embeddings`` (M, D): float32 (other float types are converted), normally
    L2-normalised so that the dot product is the cosine. ``query_labels`` (N,) and ``gallery_labels`` (M,): integer
    place labels; equal labels are positives, negative labels mark junk (see the module docstring, also for
    ``query_groups``/``gallery_groups``/``junk_fn``, ``semi_fn`` and ``ties``). ``k`` is clipped to M.
    ``chunk_size``: queries scored per block, ``"auto"`` for about 256 MB per block, ``None`` for the dense
    reference path. ``ap_variant`` selects the AP stored in the result (``"university1652"`` or ``"standard"``,
    see :func:`geobridge.eval.metrics.average_precision`).
    """
    query = _as_matrix(query_embeddings, "query")
    gallery = _as_matrix(gallery_embeddings, "gallery")
    n_query, n_gallery = query.shape[0], gallery.shape[0]
    if query.shape[1] != gallery.shape[1]:
        raise DataError(
            f"query embeddings have dimension {query.shape[1]} but gallery embeddings have {gallery.shape[1]}"
        )
    if n_gallery == 0:
        raise DataError("the gallery is empty: there is nothing to retrieve")
    qlabels = _as_labels(query_labels, n_query, "query_labels")
    glabels = _as_labels(gallery_labels, n_gallery, "gallery_labels")
    if (query_groups is None) != (gallery_groups is None):
        raise ValueError("give both query_groups and gallery_groups, or neither")
    qgroups = None if query_groups is None else _as_labels(query_groups, n_query, "query_groups")
    ggroups = None if gallery_groups is None else _as_labels(gallery_groups, n_gallery, "gallery_groups")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not (chunk_size is None or chunk_size == "auto" or (isinstance(chunk_size, int) and chunk_size >= 1)):
        raise ValueError(f"chunk_size must be a positive int, 'auto' or None, got {chunk_size!r}")
    if ap_variant not in ("university1652", "standard"):
        raise ValueError(f"unknown ap_variant {ap_variant!r}; expected one of university1652, standard")
    if ties not in ("pessimistic", "optimistic"):
        raise ValueError(f"unknown ties {ties!r}; expected pessimistic or optimistic")
    if show_progress_bar is None:
        show_progress_bar = logger.getEffectiveLevel() <= logging.INFO
    k_eff = min(int(k), n_gallery)
    context = _Context(query, gallery, qlabels, glabels, qgroups, ggroups, junk_fn, semi_fn, k_eff,
                       strict=ties == "optimistic")
    if chunk_size is None:
        parts = _dense(context)
    else:
        size = auto_chunk_size(n_gallery) if chunk_size == "auto" else int(chunk_size)
        parts = _chunked(context, size, show_progress_bar=bool(show_progress_bar))
    return _assemble(parts, n_query=n_query, n_gallery=n_gallery, k=k_eff, ap_variant=ap_variant, ties=ties)


# ---------------------------------------------------------------------------------------------------------------------
# internals


@dataclass
class _Context:
    query: np.ndarray  # (N, D) float32
    gallery: np.ndarray  # (M, D) float32
    qlabels: np.ndarray  # (N,) int64
    glabels: np.ndarray  # (M,) int64
    qgroups: np.ndarray | None  # (N,) int64
    ggroups: np.ndarray | None  # (M,) int64
    junk_fn: JunkFn | None
    semi_fn: JunkFn | None
    k: int
    strict: bool  # optimistic ties: only negatives scoring strictly above a positive outrank it


@dataclass
class _Part:
    """One block of queries: top-k lists and ranks of positives (in row order, increasing within a row)."""

    topk_indices: np.ndarray  # (B, k)
    topk_scores: np.ndarray  # (B, k)
    topk_is_positive: np.ndarray  # (B, k)
    ranks: np.ndarray  # (P_block,)
    counts: np.ndarray  # (B,)
    hit: np.ndarray | None  # (B,); None: a first positive at rank 0 (no semi-positives)


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise DataError(f"{name} embeddings must be a 2-D (items, dim) array, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not arr.flags.writeable:  # e.g. a read-only memmap: torch.from_numpy wants a writable buffer
        arr = arr.copy()
    if not np.isfinite(arr).all():
        raise DataError(f"{name} embeddings contain NaN or infinite values")
    return arr


def _as_labels(x: np.ndarray, n: int, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"{name} must have shape ({n},), got {arr.shape}")
    if arr.size and arr.dtype.kind not in "iub":
        raise DataError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def positive_offsets(ranks: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (N + 1,) CSR offsets of flat positive ranks with ``counts[q]`` per query, and the (N,) first
    positive rank of each query (-1: none)."""
    n_query = counts.shape[0]
    offsets = np.zeros(n_query + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    first = np.full(n_query, -1, dtype=np.int64)
    has = counts > 0
    first[has] = ranks[offsets[:-1][has]]
    return offsets, first


def block_scores(query_rows: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """(B, M) float32 dot products, computed by torch (multi-threaded GEMM) into a fresh writable array."""
    import torch

    q = torch.from_numpy(query_rows)  # (B, D)
    g = torch.from_numpy(gallery)  # (M, D)
    return torch.mm(q, g.T).numpy()  # (B, M)


def _row_mask(fn: JunkFn | None, rows: np.ndarray, n_gallery: int, name: str) -> np.ndarray | None:
    if fn is None:
        return None
    mask = np.asarray(fn(rows), dtype=bool)
    if mask.shape != (rows.size, n_gallery):
        raise ValueError(f"{name} must return a ({rows.size}, {n_gallery}) bool array, got {mask.shape}")
    return mask


def _hits(negatives: np.ndarray, best: np.ndarray, semi: np.ndarray, *, strict: bool) -> np.ndarray:
    """(B,) whether each row's best positive score ``best`` (-inf: none) outranks every negative of ``negatives``
    (B, M; junk and positives -inf) that is not a semi-positive."""
    negatives = np.where(semi, -np.inf, negatives)
    above = np.greater if strict else np.greater_equal
    return np.isfinite(best) & ~above(negatives, best[:, None]).any(axis=1)


def _chunked(ctx: _Context, chunk_size: int, *, show_progress_bar: bool) -> list[_Part]:
    from tqdm.auto import tqdm

    n_query = ctx.query.shape[0]
    gorder = np.argsort(ctx.glabels, kind="stable")  # gallery rows grouped by label
    gsorted = ctx.glabels[gorder]
    pos_start = np.searchsorted(gsorted, ctx.qlabels, side="left")  # (N,)
    pos_end = np.searchsorted(gsorted, ctx.qlabels, side="right")  # (N,)
    pos_end[ctx.qlabels < 0] = pos_start[ctx.qlabels < 0]
    junk_cols = np.flatnonzero(ctx.glabels < 0)
    parts = []
    starts = range(0, n_query, chunk_size)
    for start in tqdm(starts, desc="retrieval", unit="chunk", disable=not show_progress_bar):
        rows = np.arange(start, min(start + chunk_size, n_query))
        block = block_scores(ctx.query[rows[0] : rows[-1] + 1], ctx.gallery)  # (B, M), ours to modify
        if junk_cols.size:
            block[:, junk_cols] = -np.inf
        # positives of the block as (row-in-block, gallery column) pairs
        counts = pos_end[rows] - pos_start[rows]  # (B,)
        prow = np.repeat(np.arange(rows.size), counts)  # (P,)
        first = np.cumsum(counts) - counts
        pcol = gorder[np.arange(prow.size) - first[prow] + pos_start[rows][prow]]  # (P,)
        keep = np.ones(prow.size, dtype=bool)
        if ctx.qgroups is not None:
            keep &= ctx.ggroups[pcol] != ctx.qgroups[rows][prow]
        junk = _row_mask(ctx.junk_fn, rows, ctx.glabels.size, "junk_fn")
        if junk is not None:
            block[junk] = -np.inf
            keep &= ~junk[prow, pcol]
        block[prow[~keep], pcol[~keep]] = -np.inf
        prow, pcol = prow[keep], pcol[keep]
        topk = _block_topk(ctx, block, rows)
        semi = _row_mask(ctx.semi_fn, rows, ctx.glabels.size, "semi_fn")
        if semi is not None:
            best = np.full(rows.size, -np.inf, dtype=block.dtype)  # (B,) best positive score
            np.maximum.at(best, prow, block[prow, pcol])
        ranks, counts = positive_ranks(block, prow, pcol, strict=ctx.strict)  # leaves only negatives finite
        # without semi-positives a hit is a first positive at rank 0 (_assemble): no second pass over the block
        hit = None if semi is None else _hits(block, best, semi, strict=ctx.strict)
        parts.append(_Part(*topk, ranks=ranks, counts=counts, hit=hit))
    return parts


def _block_topk(ctx: _Context, block: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k of a (B, M) block whose junk is -inf, in the documented order (ties by the tie rule, then index)."""
    import torch

    k = ctx.k
    values, indices = torch.topk(torch.from_numpy(block), k, dim=1, largest=True, sorted=True)
    scores = values.numpy().copy()  # (B, k)
    idx = indices.numpy().astype(np.int64)  # (B, k)
    qlab = ctx.qlabels[rows]  # (B,)
    positive = (ctx.glabels[idx] == qlab[:, None]) & (qlab[:, None] >= 0) & np.isfinite(scores)
    # torch.topk breaks ties at the k-th score arbitrarily: where more items tie with it than fit, redo the row
    kth = scores[:, -1]
    n_ge = np.count_nonzero(block >= kth[:, None], axis=1)  # (B,)
    for r in np.flatnonzero(np.isfinite(kth) & (n_ge > k)):
        cand = np.flatnonzero(block[r] >= kth[r])
        cand_scores = block[r, cand]
        cand_pos = (ctx.glabels[cand] == qlab[r]) & (qlab[r] >= 0)
        take = np.lexsort((cand, cand_pos ^ ctx.strict, -cand_scores))[:k]
        idx[r], scores[r], positive[r] = cand[take], cand_scores[take], cand_pos[take]
    order = np.lexsort((idx, positive ^ ctx.strict, -scores), axis=-1)  # (B, k)
    idx = np.take_along_axis(idx, order, axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    positive = np.take_along_axis(positive, order, axis=1)
    idx[~np.isfinite(scores)] = -1
    return idx, scores, positive


def positive_ranks(
    block: np.ndarray, prow: np.ndarray, pcol: np.ndarray, *, strict: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of the positives (prow, pcol) of a (B, M) block whose junk is -inf, row by row, each row's in
    increasing order, and the (B,) count of positives per row: rank_i = #(negatives >= s_i) + i (``>`` with
    ``strict``, ties counted in the query's favour).

    Destroys ``block`` (the positives are set to -inf so that only negatives remain finite).
    """
    n_rows = block.shape[0]
    pscores = block[prow, pcol]  # (P,)
    block[prow, pcol] = -np.inf
    order = np.lexsort((-pscores, prow))  # by row, then score decreasing
    prow, pscores = prow[order], pscores[order]
    counts = np.bincount(prow, minlength=n_rows)  # (B,)
    slot = np.arange(prow.size) - (np.cumsum(counts) - counts)[prow]  # i: position among the row's positives
    ranks = np.empty(prow.size, dtype=np.int64)
    for i in range(int(counts.max()) if prow.size else 0):
        sel = np.flatnonzero(slot == i)
        rows_i, thresholds = prow[sel], pscores[sel]
        above = np.greater if strict else np.greater_equal
        if 4 * rows_i.size < n_rows:
            n_ge = np.count_nonzero(above(block[rows_i], thresholds[:, None]), axis=1)
        else:
            full = np.full(n_rows, np.inf, dtype=block.dtype)  # +inf: no negative is above it
            full[rows_i] = thresholds
            n_ge = np.count_nonzero(above(block, full[:, None]), axis=1)[rows_i]
        ranks[sel] = n_ge + i
    return ranks, counts


def _dense(ctx: _Context) -> list[_Part]:
    """Reference path: full (N, M) score matrix and one explicit sort per query."""
    n_query = ctx.query.shape[0]
    scores = block_scores(ctx.query, ctx.gallery)  # (N, M)
    all_rows = np.arange(n_query)
    junk = _row_mask(ctx.junk_fn, all_rows, ctx.glabels.size, "junk_fn")
    semi = _row_mask(ctx.semi_fn, all_rows, ctx.glabels.size, "semi_fn")
    k = ctx.k
    topk_idx = np.full((n_query, k), -1, dtype=np.int64)
    topk_scores = np.full((n_query, k), -np.inf, dtype=np.float32)
    topk_pos = np.zeros((n_query, k), dtype=bool)
    ranks, counts = [], np.zeros(n_query, dtype=np.int64)
    hit = np.zeros(n_query, dtype=bool)
    for q in range(n_query):
        valid = ctx.glabels >= 0  # (M,)
        positive = (ctx.glabels == ctx.qlabels[q]) & (ctx.qlabels[q] >= 0)
        if ctx.qgroups is not None:
            valid &= ~(positive & (ctx.ggroups == ctx.qgroups[q]))
        if junk is not None:
            valid &= ~junk[q]
        positive &= valid
        cand = np.flatnonzero(valid)
        order = cand[np.lexsort((cand, positive[cand] ^ ctx.strict, -scores[q, cand]))]  # the ranking, best first
        q_ranks = np.flatnonzero(positive[order])
        if q_ranks.size:
            others = valid & ~positive
            if semi is not None:
                others &= ~semi[q]
            best = scores[q, positive].max()
            hit[q] = not (scores[q, others] > best if ctx.strict else scores[q, others] >= best).any()
        ranks.append(q_ranks)
        counts[q] = q_ranks.size
        top = order[:k]
        topk_idx[q, : top.size] = top
        topk_scores[q, : top.size] = scores[q, top]
        topk_pos[q, : top.size] = positive[top]
    flat = np.concatenate(ranks).astype(np.int64) if ranks else np.zeros(0, dtype=np.int64)
    return [_Part(topk_idx, topk_scores, topk_pos, ranks=flat, counts=counts, hit=hit)]


def _assemble(
    parts: list[_Part], *, n_query: int, n_gallery: int, k: int, ap_variant: APVariant, ties: Ties
) -> RetrievalResult:
    if parts:
        topk_idx = np.concatenate([p.topk_indices for p in parts])
        topk_scores = np.concatenate([p.topk_scores for p in parts]).astype(np.float32, copy=False)
        topk_pos = np.concatenate([p.topk_is_positive for p in parts])
        ranks = np.concatenate([p.ranks for p in parts])
        counts = np.concatenate([p.counts for p in parts])
        hit = None if any(p.hit is None for p in parts) else np.concatenate([p.hit for p in parts])
    else:
        topk_idx = np.full((n_query, k), -1, dtype=np.int64)
        topk_scores = np.full((n_query, k), -np.inf, dtype=np.float32)
        topk_pos = np.zeros((n_query, k), dtype=bool)
        ranks = np.zeros(0, dtype=np.int64)
        counts = np.zeros(n_query, dtype=np.int64)
        hit = np.zeros(n_query, dtype=bool)
    offsets, first = positive_offsets(ranks, counts)
    if hit is None:
        hit = first == 0
    ap = average_precision_batch(ranks, offsets, variant=ap_variant)
    return RetrievalResult(
        topk_indices=topk_idx,
        topk_scores=topk_scores,
        topk_is_positive=topk_pos,
        positive_ranks=ranks,
        positive_offsets=offsets,
        first_positive_rank=first,
        average_precision=ap,
        n_gallery=n_gallery,
        hit=hit,
        ap_variant=ap_variant,
        ties=ties,
    )
