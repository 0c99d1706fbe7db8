"""Ranking and geodesic metrics against brute-force references, hand-worked values and University-1652's algorithm."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geobridge.eval.geo import (
    EARTH_RADIUS_KM,
    accuracy_within_km,
    geodesic_metrics,
    haversine_km,
    threshold_key,
    top1_errors_km,
)
from geobridge.eval.metrics import (
    average_precision,
    average_precision_batch,
    cmc_curve,
    mean_average_precision,
    mean_reciprocal_rank,
    positive_ranks_from_scores,
    recall_at_k,
    recall_k_for_percent,
    reciprocal_ranks,
)
from geobridge.eval.retrieval import compute_retrieval

# ------------------------------------------------------------------------------------------------------------------
# brute-force references (plain Python, written from the definitions)


def brute_ranking(scores, is_positive, is_junk):
    """The full ranking (gallery indices, best first) under the documented rule: junk removed, score decreasing,
    negatives before positives on ties, then index increasing."""
    items = [j for j in range(len(scores)) if not is_junk[j]]
    return sorted(items, key=lambda j: (-float(scores[j]), bool(is_positive[j]), j))


def brute_positive_ranks(scores, is_positive, is_junk):
    ranking = brute_ranking(scores, is_positive, is_junk)
    return [pos for pos, j in enumerate(ranking) if is_positive[j]]


def brute_ap_standard(ranks):
    # mean over positives of precision at that positive: hits so far / items so far
    return sum((i + 1) / (r + 1) for i, r in enumerate(sorted(ranks))) / len(ranks)


def random_query(rng, n_gallery, *, n_levels=6):
    """Integer-valued scores (many ties), a few positives and some junk items."""
    scores = rng.integers(0, n_levels, n_gallery).astype(np.float32)
    is_positive = rng.random(n_gallery) < 0.15
    is_junk = rng.random(n_gallery) < 0.1
    return scores, is_positive & ~is_junk, is_junk


def university1652_reference(scores, gallery_labels, query_label):
    """University-1652's per-query evaluation, re-implemented with loops from its description:
    sort the gallery by decreasing score, drop junk items (label -1), find the positions of the good items
    (same label); CMC is 1 from the first good position on; AP adds, for the i-th good item at position r,
    (1/ngood) * (old_precision + precision) / 2 with precision = (i+1)/(r+1) and old_precision = i/r (1 when r == 0).
    Returns (ap, cmc) or (None, None) when there is no good item."""
    order = sorted(range(len(scores)), key=lambda j: -float(scores[j]))
    kept = [j for j in order if gallery_labels[j] != -1]
    good_positions = [pos for pos, j in enumerate(kept) if gallery_labels[j] == query_label]
    if not good_positions:
        return None, None
    cmc = [0] * len(scores)
    for pos in range(good_positions[0], len(scores)):
        cmc[pos] = 1
    ngood = len(good_positions)
    ap = 0.0
    for i, r in enumerate(good_positions):
        precision = (i + 1) / (r + 1)
        old_precision = i / r if r != 0 else 1.0
        ap += (1.0 / ngood) * (old_precision + precision) / 2
    return ap, cmc


# ------------------------------------------------------------------------------------------------------------------
# ranks and ties


def test_positive_ranks_match_brute_force_with_ties_and_junk():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scores, positive, junk = random_query(rng, int(rng.integers(1, 40)))
        expected = brute_positive_ranks(scores, positive, junk)
        got = positive_ranks_from_scores(scores, positive, is_junk=junk)
        assert got.tolist() == expected


def test_ties_are_pessimistic():
    # items: 0 neg 0.9, 1 pos 0.9, 2 neg 0.5, 3 pos 0.5, 4 pos 0.5, 5 neg 0.5
    # order: [0 (neg 0.9), 1 (pos 0.9), 2, 5 (negs at 0.5), 3, 4 (pos at 0.5)] -> positive ranks 1, 4, 5
    scores = np.array([0.9, 0.9, 0.5, 0.5, 0.5, 0.5], dtype=np.float32)
    positive = np.array([False, True, False, True, True, False])
    assert positive_ranks_from_scores(scores, positive).tolist() == [1, 4, 5]
    # the tied negative at 0.9 being junk moves everything up by one
    junk = np.array([True, False, False, False, False, False])
    assert positive_ranks_from_scores(scores, positive, is_junk=junk).tolist() == [0, 3, 4]
    # an item that is both positive and junk is junk
    both = positive.copy()
    junk2 = np.array([False, True, False, False, False, False])
    assert positive_ranks_from_scores(scores, both, is_junk=junk2).tolist() == [3, 4]


# ------------------------------------------------------------------------------------------------------------------
# recall, CMC, MRR


def test_recall_k_for_percent_rounds_half_up():
    assert recall_k_for_percent(950) == 10  # 9.5 -> 10
    assert recall_k_for_percent(949) == 9  # 9.49 -> 9
    assert recall_k_for_percent(951) == 10
    assert recall_k_for_percent(150) == 2  # 1.5 -> 2 (Python's round would give 2 as well; 250 -> 3 below)
    assert recall_k_for_percent(250) == 3  # 2.5 -> 3 (Python's round(2.5) == 2)
    assert recall_k_for_percent(49) == 1  # at least 1
    assert recall_k_for_percent(0) == 1
    assert recall_k_for_percent(100_000) == 1000
    assert recall_k_for_percent(1000, percent=5.0) == 50
    with pytest.raises(ValueError):
        recall_k_for_percent(10, percent=0)


def test_recall_and_mrr_against_brute_force():
    rng = np.random.default_rng(1)
    first_ranks, hits_at = [], {k: [] for k in (1, 3, 5, 10)}
    rr = []
    for _ in range(300):
        scores, positive, junk = random_query(rng, 30)
        ranking = brute_ranking(scores, positive, junk)
        if not any(positive[j] for j in ranking):
            first_ranks.append(-1)
            continue
        first_ranks.append(positive_ranks_from_scores(scores, positive, is_junk=junk)[0])
        for k in hits_at:  # a hit = any positive within the top k of the ranking
            hits_at[k].append(any(positive[j] for j in ranking[:k]))
        rr.append(1.0 / (1 + next(pos for pos, j in enumerate(ranking) if positive[j])))
    first_ranks = np.array(first_ranks)
    assert (first_ranks == -1).any()  # queries without positives are present and left out
    for k, hits in hits_at.items():
        assert recall_at_k(first_ranks, k) == pytest.approx(np.mean(hits), abs=1e-12)
    assert mean_reciprocal_rank(first_ranks) == pytest.approx(np.mean(rr), abs=1e-12)
    cmc = cmc_curve(first_ranks, 12)
    for r in range(12):
        assert cmc[r] == pytest.approx(recall_at_k(first_ranks, r + 1), abs=1e-12)
    assert np.isnan(reciprocal_ranks(first_ranks)[first_ranks == -1]).all()


def test_recall_hand_example_and_empty():
    first = np.array([0, 3, -1, 9, 1])  # 4 queries with positives
    assert recall_at_k(first, 1) == 0.25
    assert recall_at_k(first, 2) == 0.5
    assert recall_at_k(first, 10) == 1.0
    # MRR = (1 + 1/4 + 1/10 + 1/2) / 4
    assert mean_reciprocal_rank(first) == pytest.approx((1 + 0.25 + 0.1 + 0.5) / 4)
    assert math.isnan(recall_at_k(np.array([-1, -1]), 1))
    assert math.isnan(mean_reciprocal_rank(np.array([], dtype=np.int64)))
    assert np.isnan(cmc_curve(np.array([-1]), 3)).all()


# ------------------------------------------------------------------------------------------------------------------
# average precision


def test_ap_hand_worked_example():
    # 3 positives at ranks 0, 2, 5 (0-based). Precisions at the positives: 1/1, 2/3, 3/6.
    # standard AP = (1 + 2/3 + 1/2) / 3 = (13/6) / 3 = 13/18 = 0.7222...
    # University-1652: terms (1/3) * (old + p) / 2 with old = i / r (1 when r == 0):
    #   i=0, r=0: old = 1,   p = 1   -> (1/3) * 1          = 1/3
    #   i=1, r=2: old = 1/2, p = 2/3 -> (1/3) * (7/6) / 2  = 7/36
    #   i=2, r=5: old = 2/5, p = 1/2 -> (1/3) * (9/10) / 2 = 3/20
    #   AP = 1/3 + 7/36 + 3/20 = (60 + 35 + 27) / 180 = 122/180 = 0.6777...
    ranks = np.array([5, 0, 2])  # order does not matter
    assert average_precision(ranks, variant="standard") == pytest.approx(13 / 18)
    assert average_precision(ranks, variant="university1652") == pytest.approx(122 / 180)
    assert average_precision(ranks) == pytest.approx(122 / 180)  # the default variant
    # a single positive at rank 3: standard p = 1/4; University-1652: old = 0/3 = 0, p = 1/4 -> (0 + 1/4) / 2 = 1/8
    assert average_precision(np.array([3]), variant="standard") == pytest.approx(0.25)
    assert average_precision(np.array([3]), variant="university1652") == pytest.approx(0.125)
    # perfect ranking gives 1 in both variants
    assert average_precision(np.arange(4), variant="standard") == pytest.approx(1.0)
    assert average_precision(np.arange(4), variant="university1652") == pytest.approx(1.0)
    assert math.isnan(average_precision(np.array([], dtype=np.int64)))
    with pytest.raises(ValueError):
        average_precision(np.array([1, 1]))
    with pytest.raises(ValueError):
        average_precision(np.array([0]), variant="interpolated")


def test_ap_standard_against_brute_force_and_batch():
    rng = np.random.default_rng(2)
    all_ranks, counts, expected_std, expected_u = [], [], [], []
    for _ in range(100):
        scores, positive, junk = random_query(rng, 25)
        ranks = brute_positive_ranks(scores, positive, junk)
        all_ranks.extend(ranks)
        counts.append(len(ranks))
        if ranks:
            expected_std.append(brute_ap_standard(ranks))
            expected_u.append(university1652_reference_from_ranks(ranks))
            assert average_precision(np.array(ranks), variant="standard") == pytest.approx(expected_std[-1])
        else:
            expected_std.append(float("nan"))
            expected_u.append(float("nan"))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    got_std = average_precision_batch(np.array(all_ranks), offsets, variant="standard")
    got_u = average_precision_batch(np.array(all_ranks), offsets, variant="university1652")
    np.testing.assert_allclose(got_std, expected_std, rtol=1e-12)
    np.testing.assert_allclose(got_u, expected_u, rtol=1e-12)
    assert mean_average_precision(got_std) == pytest.approx(np.nanmean(expected_std))


def university1652_reference_from_ranks(ranks):
    total = 0.0
    for i, r in enumerate(sorted(ranks)):
        old = i / r if r != 0 else 1.0
        total += (1 / len(ranks)) * (old + (i + 1) / (r + 1)) / 2
    return total


def test_standard_ap_equals_sklearn_without_ties():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    for _ in range(50):
        scores = rng.random(40)  # continuous: no ties
        positive = rng.random(40) < 0.2
        if not positive.any():
            continue
        ranks = positive_ranks_from_scores(scores, positive)
        expected = sklearn_metrics.average_precision_score(positive, scores)
        assert average_precision(ranks, variant="standard") == pytest.approx(expected, rel=1e-12)


def test_matches_university1652_algorithm_on_embeddings():
    """Our chunked retrieval + University-1652 AP vs the loop re-implementation of their evaluate/compute_mAP,
    on random embeddings (no ties), several positives per query, junk gallery items (label -1) and queries without
    any positive."""
    rng = np.random.default_rng(4)
    n_query, n_gallery, dim = 60, 300, 16
    query = rng.standard_normal((n_query, dim)).astype(np.float32)
    gallery = rng.standard_normal((n_gallery, dim)).astype(np.float32)
    query_labels = rng.integers(0, 50, n_query)  # labels 40..49 have no gallery item
    gallery_labels = rng.integers(0, 40, n_gallery)
    gallery_labels[rng.random(n_gallery) < 0.1] = -1
    result = compute_retrieval(query, gallery, query_labels, gallery_labels, k=10, chunk_size=7)
    scores = query @ gallery.T  # (N, M)
    cmc_sum = np.zeros(n_gallery)
    ap_sum, n_valid = 0.0, 0
    for q in range(n_query):
        ap, cmc = university1652_reference(scores[q], gallery_labels, query_labels[q])
        if ap is None:
            assert result.first_positive_rank[q] == -1 and np.isnan(result.average_precision[q])
            continue
        n_valid += 1
        ap_sum += ap
        cmc_sum += cmc
        assert result.average_precision[q] == pytest.approx(ap, rel=1e-12)
        assert result.first_positive_rank[q] == cmc.index(1)
    assert 0 < n_valid < n_query
    # their script divides by all queries; we average over queries with a positive
    assert mean_average_precision(result.average_precision) * n_valid / n_query == pytest.approx(ap_sum / n_query)
    for k in (1, 5, 10):
        assert recall_at_k(result.first_positive_rank, k) == pytest.approx(cmc_sum[k - 1] / n_valid)


# ------------------------------------------------------------------------------------------------------------------
# geodesic metrics


def test_haversine_known_distances():
    paris, london = (48.8566, 2.3522), (51.5074, -0.1278)
    assert haversine_km(*paris, *london) == pytest.approx(343.5, abs=0.5)
    assert haversine_km(*london, *paris) == pytest.approx(haversine_km(*paris, *london))  # symmetric
    assert haversine_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(math.pi * EARTH_RADIUS_KM)  # antipodes
    assert haversine_km(90.0, 0.0, -90.0, 0.0) == pytest.approx(math.pi * EARTH_RADIUS_KM)  # pole to pole
    assert haversine_km(10.0, 20.0, 10.0, 20.0) == 0.0
    assert haversine_km(0.0, 0.0, 1.0, 0.0) == pytest.approx(EARTH_RADIUS_KM * math.pi / 180)  # one degree
    assert haversine_km(0.0, 179.5, 0.0, -179.5) == pytest.approx(EARTH_RADIUS_KM * math.pi / 180)  # across 180
    # vectorised with broadcasting and NaN propagation
    lat2 = np.array([51.5074, np.nan, 48.8566])
    lon2 = np.array([-0.1278, 0.0, 2.3522])
    d = haversine_km(paris[0], paris[1], lat2, lon2)
    assert d.shape == (3,) and np.isnan(d[1]) and d[2] == 0.0 and d[0] == pytest.approx(343.5, abs=0.5)


def test_geodesic_metrics_hand_values_and_missing():
    errors = np.array([0.5, 10.0, 100.0, 500.0, 1000.0, np.nan, 25.0])
    # known: 0.5, 10, 25, 100, 500, 1000 -> median (25 + 100) / 2, mean 1635.5 / 6
    out = geodesic_metrics(errors)
    assert out["median_km"] == pytest.approx(62.5)
    assert out["mean_km"] == pytest.approx(1635.5 / 6)
    assert out["n_geo"] == 6.0
    assert out["acc@1km"] == pytest.approx(100 / 6)  # 0.5
    assert out["acc@25km"] == pytest.approx(300 / 6)  # 0.5, 10, 25 (inclusive)
    assert out["acc@200km"] == pytest.approx(400 / 6)
    assert out["acc@750km"] == pytest.approx(500 / 6)
    assert out["acc@2500km"] == pytest.approx(100.0)
    assert geodesic_metrics(np.array([np.nan, np.nan])) == {}
    assert geodesic_metrics(np.array([])) == {}
    assert set(geodesic_metrics(errors, thresholds_km=(0.5,))) == {"median_km", "mean_km", "n_geo", "acc@0.5km"}
    assert accuracy_within_km(errors, 100.0) == pytest.approx(4 / 6)
    assert math.isnan(accuracy_within_km(np.array([np.nan]), 1.0))
    assert threshold_key(25.0) == "acc@25km" and threshold_key(0.5) == "acc@0.5km"


def test_top1_errors_km():
    query_lat = np.array([48.8566, 0.0, np.nan, 10.0])
    query_lon = np.array([2.3522, 0.0, 0.0, 10.0])
    gallery_lat = np.array([51.5074, 0.0, np.nan])
    gallery_lon = np.array([-0.1278, 180.0, 0.0])
    top1 = np.array([0, 1, 0, -1])
    errors = top1_errors_km(query_lat, query_lon, gallery_lat, gallery_lon, top1)
    assert errors[0] == pytest.approx(343.5, abs=0.5)
    assert errors[1] == pytest.approx(math.pi * EARTH_RADIUS_KM)
    assert np.isnan(errors[2]) and np.isnan(errors[3])  # missing query coordinates; nothing retrieved
    errors2 = top1_errors_km(query_lat[:2], query_lon[:2], gallery_lat, gallery_lon, np.array([2, 2]))
    assert np.isnan(errors2).all()  # missing gallery coordinates
