"""Ranking metrics of retrieval: Recall@K, Recall@1%, AP / mAP (two variants), MRR and the CMC curve.

Everything here works on *ranks*, which makes the metrics independent of how the scores were computed.

Conventions (used by the whole of :mod:`geobridge.eval`):

* A query is compared with a gallery of ``M`` items. Some gallery items are *positives* (the same place as the
  query; there may be several), some are *junk* (removed from the ranking as if they were not in the gallery,
  e.g. University-1652's label ``-1``), the rest are *negatives*.
* **Ranks are 0-based positions in the ranking after junk removal**: rank 0 is the best-scoring item.
* **Ties are broken pessimistically**: a negative whose score equals a positive's score is ranked before that
  positive. Among tied positives, or among tied negatives, the order does not change any metric (the displayed
  top-k lists order them by gallery index). Hence, with the positives' scores sorted in decreasing order
  ``s_0 >= s_1 >= ...``, the rank of the i-th positive is ``#{negatives with score >= s_i} + i``.
* A query with no positive (after junk removal) has an undefined rank, written ``-1``; such queries are left out
  of every average here (their count is reported separately by the evaluator). University-1652's script instead
  divides by the number of all queries, i.e. counts them as misses; with their data every query has a positive,
  so the numbers agree.
* Functions that return one number return a **fraction in [0, 1]** (or NaN when no query has a positive); the
  evaluator's dictionaries turn rates into percentages.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from geobridge.protocols import K_RULES, KRule

APVariant = Literal["university1652", "standard"]
AP_VARIANTS: tuple[str, ...] = ("university1652", "standard")


def recall_k_for_percent(n_gallery: int, *, percent: float = 1.0) -> int:
    """The K of Recall@``percent``%: ``max(1, floor(n_gallery * percent / 100 + 0.5))``.

    The product is rounded half up (so 1% of 950 is 10, of 949 is 9, of 50 is 1), and K is at least 1.
    Note: University-1652's script prints ``CMC[round(0.01 * M)]``, which is the recall at
    ``round(0.01 * M) + 1`` because its CMC index is 0-based; we use K = round(0.01 * M) as the name says.
    The named protocols use each benchmark's own K instead: :func:`k_for_one_percent`.
    """
    if n_gallery < 0:
        raise ValueError(f"n_gallery must be >= 0, got {n_gallery}")
    if not percent > 0:
        raise ValueError(f"percent must be > 0, got {percent}")
    return max(1, math.floor(n_gallery * percent / 100.0 + 0.5))




def k_for_one_percent(n_gallery: int, *, rule: KRule) -> int:
    """The K at which a benchmark's script reports "Recall@1%" (or "Recall@top1%") for a gallery of ``n_gallery``.

    * ``"round-half-up"``: :func:`recall_k_for_percent` (GeoBridge's own evaluator), at least 1;
    * ``"round-plus-one"``: ``round(M / 100) + 1`` with Python's round-half-to-even -- University-1652's
      ``evaluate_gpu.py`` and Sample4Geo's university script print ``CMC[round(M * 0.01)]``, and ``CMC[i]`` is the
      recall at ``i + 1``;
    * ``"floor-plus-one"``: ``M // 100 + 1`` -- VIGOR's ``validate_top`` (``prediction < int(M * 0.01) + 1``);
    * ``"floor"``: ``M // 100`` -- Sample4Geo's CVUSA, CVACT and VIGOR scripts (``topk.append(R // 100)``) and
      SAFA's ``test_cvusa.py`` (its last printed column); 0 when M < 100, where those scripts report 0.

    Exact integer arithmetic; it equals the scripts' float expressions for every M below 200,000 (checked).
    """
    if n_gallery < 0:
        raise ValueError(f"n_gallery must be >= 0, got {n_gallery}")
    hundreds, rest = divmod(int(n_gallery), 100)
    if rule == "round-half-up":
        return recall_k_for_percent(n_gallery)
    if rule == "round-plus-one":
        rounded = hundreds + (1 if rest > 50 or (rest == 50 and hundreds % 2 == 1) else 0)
        return rounded + 1
    if rule == "floor-plus-one":
        return hundreds + 1
    if rule == "floor":
        return hundreds
    raise ValueError(f"unknown K rule {rule!r}; expected one of {', '.join(K_RULES)}")


def _valid_first_ranks(first_ranks: np.ndarray) -> np.ndarray:
    ranks = np.asarray(first_ranks, dtype=np.int64).reshape(-1)
    return ranks[ranks >= 0]


def recall_at_k(first_ranks: np.ndarray, k: int) -> float:
    """Recall@K: the fraction of queries whose best-ranked positive has rank < ``k`` (a hit = any positive in the
    top K). ``first_ranks`` (N,) holds each query's first positive rank, ``-1`` for queries without a positive
    (left out). Returns NaN when no query has a positive."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ranks = _valid_first_ranks(first_ranks)
    if ranks.size == 0:
        return float("nan")
    return float(np.count_nonzero(ranks < k) / ranks.size)


def cmc_curve(first_ranks: np.ndarray, max_rank: int) -> np.ndarray:
    """The cumulative match characteristic: ``cmc[r]`` (r = 0 .. max_rank - 1) is the fraction of queries whose first
    positive has rank <= r, i.e. ``cmc[r] == recall_at_k(first_ranks, r + 1)``. Shape (max_rank,), float64; NaN
    everywhere when no query has a positive. University-1652 calls the same per-query step function ``CMC``: 1 from
    the first good match on."""
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    ranks = _valid_first_ranks(first_ranks)
    if ranks.size == 0:
        return np.full(max_rank, np.nan)
    hits = np.bincount(ranks[ranks < max_rank], minlength=max_rank)[:max_rank]
    return np.cumsum(hits) / ranks.size


def reciprocal_ranks(first_ranks: np.ndarray) -> np.ndarray:
    """Per query ``1 / (first_rank + 1)``; NaN for queries without a positive (rank -1). Shape (N,), float64."""
    ranks = np.asarray(first_ranks, dtype=np.int64).reshape(-1)
    out = np.full(ranks.shape, np.nan)
    valid = ranks >= 0
    out[valid] = 1.0 / (ranks[valid] + 1.0)
    return out


def mean_reciprocal_rank(first_ranks: np.ndarray) -> float:
    """MRR: the mean of ``1 / (first_rank + 1)`` over queries that have a positive (NaN when none has)."""
    ranks = _valid_first_ranks(first_ranks)
    if ranks.size == 0:
        return float("nan")
    return float(np.mean(1.0 / (ranks + 1.0)))


def _check_variant(variant: str) -> str:
    if variant not in AP_VARIANTS:
        raise ValueError(f"unknown AP variant {variant!r}; expected one of {', '.join(AP_VARIANTS)}")
    return variant


def average_precision(positive_ranks: np.ndarray, *, variant: APVariant = "university1652") -> float:
    """AP of one query from the ranks of **all** its positives (0-based, after junk removal, distinct).

    With the ranks sorted increasingly ``r_0 < r_1 < ... < r_{n-1}`` and ``p_i = (i + 1) / (r_i + 1)`` the
    precision at the i-th positive:

    * ``variant="standard"``: ``AP = (1/n) * sum_i p_i`` -- the usual non-interpolated AP, equal to
      scikit-learn's ``average_precision_score`` when there are no ties;
    * ``variant="university1652"`` (the number published University-1652 tables report): a trapezoid rule,
      ``AP = sum_i (1/n) * (q_i + p_i) / 2`` with ``q_i = i / r_i`` the precision just before the i-th positive,
      and ``q_i = 1`` when ``r_i == 0``.

    Returns NaN when there is no positive.
    """
    _check_variant(variant)
    ranks = np.sort(np.asarray(positive_ranks, dtype=np.int64).reshape(-1))
    if ranks.size == 0:
        return float("nan")
    if ranks[0] < 0 or np.any(np.diff(ranks) <= 0):
        raise ValueError("positive ranks must be distinct and >= 0")
    offsets = np.array([0, ranks.size], dtype=np.int64)
    return float(average_precision_batch(ranks, offsets, variant=variant)[0])


def average_precision_batch(
    positive_ranks: np.ndarray, offsets: np.ndarray, *, variant: APVariant = "university1652"
) -> np.ndarray:
    """Per-query AP for many queries at once, from ranks in CSR form.

    ``positive_ranks`` (P,) holds every query's positive ranks, query ``q``'s at
    ``positive_ranks[offsets[q]:offsets[q + 1]]`` in increasing order; ``offsets`` is (N + 1,). Same definitions
    as :func:`average_precision`. Returns (N,) float64, NaN for queries without a positive.
    """
    _check_variant(variant)
    ranks = np.asarray(positive_ranks, dtype=np.int64).reshape(-1)
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
    counts = np.diff(offsets)  # (N,)
    n_queries = counts.size
    out = np.full(n_queries, np.nan)
    if ranks.size == 0:
        return out
    query_of = np.repeat(np.arange(n_queries), counts)  # (P,)
    i = np.arange(ranks.size) - offsets[query_of]  # position of each positive within its query
    precision = (i + 1.0) / (ranks + 1.0)
    if variant == "standard":
        term = precision
    else:
        old_precision = np.ones(ranks.size)
        nonzero = ranks != 0
        old_precision[nonzero] = i[nonzero] / ranks[nonzero]
        term = (old_precision + precision) / 2.0
    sums = np.bincount(query_of, weights=term, minlength=n_queries)
    has = counts > 0
    out[has] = sums[has] / counts[has]
    return out


def mean_average_precision(ap_per_query: np.ndarray) -> float:
    """mAP: the mean of per-query AP over queries that have a positive (NaN entries are left out; NaN when none)."""
    ap = np.asarray(ap_per_query, dtype=np.float64).reshape(-1)
    ap = ap[~np.isnan(ap)]
    return float(ap.mean()) if ap.size else float("nan")


def positive_ranks_from_scores(
    scores: np.ndarray, is_positive: np.ndarray, *, is_junk: np.ndarray | None = None
) -> np.ndarray:
    """The sorted 0-based ranks of one query's positives (pessimistic ties, junk removed) from its raw scores.

    ``scores`` (M,) are similarities (higher = better), ``is_positive`` and ``is_junk`` (M,) booleans; an item that
    is both is junk. This is the definition used everywhere: with the kept positives' scores sorted
    ``s_0 >= s_1 >= ...``, rank_i = ``#{kept negatives with score >= s_i} + i``. Returns (n_positives,) int64.
    """
    scores = np.asarray(scores).reshape(-1)
    positive = np.asarray(is_positive, dtype=bool).reshape(-1)
    junk = np.zeros_like(positive) if is_junk is None else np.asarray(is_junk, dtype=bool).reshape(-1)
    if not scores.shape == positive.shape == junk.shape:
        raise ValueError("scores, is_positive and is_junk must have the same length")
    positive = positive & ~junk
    negative_scores = np.sort(scores[~positive & ~junk])  # increasing
    positive_scores = np.sort(scores[positive])[::-1]  # decreasing
    n_ge = negative_scores.size - np.searchsorted(negative_scores, positive_scores, side="left")
    return (n_ge + np.arange(positive_scores.size)).astype(np.int64)
