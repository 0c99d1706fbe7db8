"""Named protocols against independent brute-force versions of each benchmark's official evaluation.

The ``_official_*`` functions below follow the published scripts' logic step by step with plain numpy loops:

* ``_official_u1652``: University-1652 ``evaluate_gpu.py`` (``evaluate`` + ``compute_mAP``); Sample4Geo's
  ``sample4geo/evaluate/university.py`` is the same code, fed with label -1 for gallery buildings no query shows;
* ``_official_sample4geo_cvusa`` / ``_official_sample4geo_vigor``: Sample4Geo's ``calculate_scores``;
* ``_official_safa``: SAFA's ``test_cvusa.py`` (``validate`` on a distance matrix, top-1% column);
* ``_official_vigor``: VIGOR's ``train_SAFA.py`` ``validate_top`` (with R@10 added the same way) and
  ``evaluate_from_npy.py`` ``generate_distances`` with zero offsets;
* ``_official_geotext``: GeoText-1652's ``itm_eval`` (building-level matching via ``img2building``), fed with the
  true building of every image (the published ``re_eval_dataset`` shifts the first image of each building to the
  previous building's number; docs/protocols.md).

Where the scripts rank with ``np.argsort(score)[::-1]`` the order of tied scores is whatever numpy's unstable sort
leaves; the references fix it pessimistically (a tied negative first), as the protocols do. Embeddings are unit
vectors with four entries of +-0.5, so every dot product is an exact multiple of 0.25 in float32 and float64 alike:
many exact ties, and no rounding difference between the protocol's float32 GEMM and the references' float64.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest

from geobridge.data import load_eval_split
from geobridge.data.evalsplit import EvalItem, EvalSplit
from geobridge.errors import DataError
from geobridge.eval.metrics import k_for_one_percent, recall_k_for_percent
from geobridge.eval.protocol_run import protocol_splits, run_protocol
from geobridge.eval.protocol_score import merge_multi_query, protocol_metrics, score_split
from geobridge.eval.retrieval import compute_retrieval
from geobridge.protocols import PROTOCOLS, get_protocol, list_protocols

DIM = 16


def _dyadic(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, DIM) unit vectors with four entries +-0.5: exact dot products, many ties."""
    out = np.zeros((n, DIM))
    for row in out:
        cols = rng.choice(DIM, size=4, replace=False)
        row[cols] = rng.choice([-0.5, 0.5], size=4)
    return out


def _near(rng: np.random.Generator, base: np.ndarray, flips: int = 1) -> np.ndarray:
    """A dyadic unit vector that shares most entries with ``base`` (to make positives score high)."""
    v = base.copy()
    for _ in range(flips):
        on = np.flatnonzero(v)
        off = np.flatnonzero(v == 0)
        i, j = rng.choice(on), rng.choice(off)
        v[j], v[i] = rng.choice([-0.5, 0.5]), 0.0
    return v


def _image(key: str, view: str, place: str | None, **kw: object) -> EvalItem:
    return EvalItem(key=key, view=view, place_id=place, path=Path(key), **kw)


def _text(key: str, place: str | None) -> EvalItem:
    return EvalItem(key=key, view="text", place_id=place, text=f"caption {key}")


# ---------------------------------------------------------------------------------------------------------------------
# independent references of the official scripts


def _pessimistic_order(score: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Indices by score decreasing; among equal scores, non-good items first (the scripts leave this to argsort)."""
    return np.lexsort((good, -score))


def _official_u1652(qf: np.ndarray, ql: np.ndarray, gf: np.ndarray, gl: np.ndarray) -> dict[str, float]:
    """University-1652 evaluate_gpu.py: per-query compute_mAP with good = gl == ql, junk = gl == -1; CMC summed over
    queries that have a good index, divided by all queries; R@1% printed as CMC[round(M * 0.01)]."""
    n_gallery = len(gl)
    cmc_sum = np.zeros(n_gallery)
    ap_sum = 0.0
    for i in range(len(ql)):
        score = gf @ qf[i]
        good_index = np.argwhere(gl == ql[i]).flatten()
        junk_index = np.argwhere(gl == -1).flatten()
        index = _pessimistic_order(score, gl == ql[i])
        if good_index.size == 0:
            continue
        index = index[np.isin(index, junk_index, invert=True)]
        rows_good = np.argwhere(np.isin(index, good_index)).flatten()
        cmc = np.zeros(n_gallery)
        cmc[rows_good[0]:] = 1
        ap = 0.0
        ngood = len(good_index)
        for j in range(ngood):
            d_recall = 1.0 / ngood
            precision = (j + 1) * 1.0 / (rows_good[j] + 1)
            old_precision = j * 1.0 / rows_good[j] if rows_good[j] != 0 else 1.0
            ap += d_recall * (old_precision + precision) / 2
        cmc_sum += cmc
        ap_sum += ap
    cmc = cmc_sum / len(ql)
    top1 = round(n_gallery * 0.01)
    out = {"R@1%": cmc[top1] * 100, "AP": ap_sum / len(ql) * 100, "K": top1 + 1}
    out.update({f"R@{k}": cmc[k - 1] * 100 for k in (1, 5, 10) if k <= n_gallery})  # the script needs M >= 10
    return out


def _official_sample4geo_cvusa(sim: np.ndarray, query_labels: np.ndarray, reference_labels: np.ndarray) -> list:
    """Sample4Geo calculate_scores: ranking = #references with similarity > the ground truth's; topk + [R // 100]."""
    n_query, n_ref = sim.shape
    ref2index = {}
    for i, idx in enumerate(reference_labels):
        ref2index[idx] = i
    topk = [1, 5, 10, n_ref // 100]
    results = np.zeros(len(topk))
    for i in range(n_query):
        gt_sim = sim[i, ref2index[query_labels[i]]]
        ranking = (sim[i, :] > gt_sim).sum()
        for j, k in enumerate(topk):
            if ranking < k:
                results[j] += 1.0
    return list(results / n_query * 100.0)


def _official_sample4geo_vigor(sim: np.ndarray, query_labels: list, reference_labels: np.ndarray) -> list:
    """Sample4Geo's VIGOR calculate_scores: query_labels[i] = [positive, semi-positives...]; plus the hit rate."""
    n_query, n_ref = sim.shape
    ref2index = {idx: i for i, idx in enumerate(reference_labels)}
    topk = [1, 5, 10, n_ref // 100]
    results = np.zeros(len(topk))
    hit_rate = 0.0
    for i in range(n_query):
        gt_sim = sim[i, ref2index[query_labels[i][0]]]
        higher_sim = sim[i, :] > gt_sim
        ranking = higher_sim.sum()
        for j, k in enumerate(topk):
            if ranking < k:
                results[j] += 1.0
        mask = np.ones(n_ref)
        for near_pos in query_labels[i][1:]:
            mask[ref2index[near_pos]] = 0
        if (higher_sim * mask).sum() < 1:
            hit_rate += 1.0
    return [*list(results / n_query * 100.0), hit_rate / n_query * 100]


def _official_safa(dist_array: np.ndarray) -> dict[str, float]:
    """SAFA test_cvusa.py: dist_array is (sat, grd) with the match on the diagonal; val_accuracy[0, i] is
    validate(dist, i); it prints columns 1, 5, 10 and -1 (the last, i = int(M * 0.01))."""

    def validate(top_k: int) -> float:
        accuracy = 0.0
        for i in range(dist_array.shape[0]):
            prediction = np.sum(dist_array[:, i] < dist_array[i, i])
            if prediction < top_k:
                accuracy += 1.0
        return accuracy / dist_array.shape[0]

    top1_percent = int(dist_array.shape[0] * 0.01) + 1
    val_accuracy = [validate(i) for i in range(max(top1_percent, 11))]
    return {"R@1": 100 * val_accuracy[1], "R@5": 100 * val_accuracy[5], "R@10": 100 * val_accuracy[10],
            "R@1%": 100 * val_accuracy[top1_percent - 1]}


def _official_vigor(sim: np.ndarray, test_label: list) -> dict[str, float]:
    """VIGOR validate_top on dist = 2 - 2 sim; test_label[i] = [positive column, semi-positive columns...]."""
    dist_array = 2 - 2 * sim
    top1_percent = int(dist_array.shape[1] * 0.01) + 1
    counts = {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "R@1%": 0.0, "hit_rate": 0.0}
    for i in range(dist_array.shape[0]):
        gt_dist = dist_array[i, test_label[i][0]]
        prediction = np.sum(dist_array[i, :] < gt_dist)
        dist_temp = np.ones(dist_array[i, :].shape[0])
        dist_temp[test_label[i][1:]] = 0
        prediction_hit = np.sum((dist_array[i, :] < gt_dist) * dist_temp)
        counts["R@1%"] += prediction < top1_percent
        counts["R@1"] += prediction < 1
        counts["R@5"] += prediction < 5
        counts["R@10"] += prediction < 10
        counts["hit_rate"] += prediction_hit < 1
    return {k: 100.0 * v / dist_array.shape[0] for k, v in counts.items()}


def _haversine_m(lat1: float, lon1: float, lat2: float, lon2: float, radius: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * radius * math.asin(math.sqrt(min(1.0, h)))


def _vigor_gps2distance(lat_a: float, lng_a: float, lat_b: float, lng_b: float) -> float:
    """VIGOR evaluate_from_npy.py gps2distance (spherical law of cosines, R = 6371004 m)."""
    la, lb = lat_a * np.pi / 180.0, lat_b * np.pi / 180.0
    ga, gb = lng_a * np.pi / 180.0, lng_b * np.pi / 180.0
    c = np.sin(la) * np.sin(lb) + np.cos(la) * np.cos(lb) * np.cos(ga - gb)
    return float(6371004.0 * np.arccos(min(1.0, c)))


def _official_geotext(scores_i2t: np.ndarray, txt2img: list, img2building: list) -> dict[str, float]:
    """GeoText-1652 itm_eval: building-level ranks of both directions, txt_r_mean, img_r_mean and r_mean."""
    text_building = np.array([img2building[txt2img[t]] for t in range(scores_i2t.shape[1])])
    image_building = np.array(img2building)
    ranks = np.zeros(scores_i2t.shape[0])
    for index, score in enumerate(scores_i2t):
        inds = _pessimistic_order(score, text_building == img2building[index])
        ranks[index] = np.where(text_building[inds] == img2building[index])[0][0]
    tr = [100.0 * len(np.where(ranks < k)[0]) / len(ranks) for k in (1, 5, 10)]
    scores_t2i = scores_i2t.T
    ranks = np.zeros(scores_t2i.shape[0])
    for index, score in enumerate(scores_t2i):
        building = img2building[txt2img[index]]
        inds = _pessimistic_order(score, image_building == building)
        ranks[index] = np.where(image_building[inds] == building)[0][0]
    ir = [100.0 * len(np.where(ranks < k)[0]) / len(ranks) for k in (1, 5, 10)]
    tr_mean, ir_mean = sum(tr) / 3, sum(ir) / 3
    return {"txt": tr, "img": ir, "txt_r_mean": tr_mean, "img_r_mean": ir_mean, "r_mean": (tr_mean + ir_mean) / 2}


# ---------------------------------------------------------------------------------------------------------------------
# hand-built worlds


def _u1652_world(rng: np.random.Generator, *, n_buildings: int = 14, n_distractors: int = 6, per_query: int = 3,
                 per_gallery: int = 1, missing: int = 2):
    """Query drone photos of ``n_buildings`` buildings (the last ``missing`` of them absent from the gallery) against
    a gallery of ``per_gallery`` images per present building plus distractor buildings."""
    centers = _dyadic(rng, n_buildings + n_distractors)
    queries, qf, gallery, gf = [], [], [], []
    for b in range(n_buildings):
        for j in range(per_query):
            queries.append(_image(f"q/{b:04d}/{j}", "drone", f"{b:04d}", group=f"{b:04d}"))
            qf.append(_near(rng, centers[b], flips=int(rng.integers(0, 3))))
        if b < n_buildings - missing:
            for j in range(per_gallery):
                gallery.append(_image(f"g/{b:04d}/{j}", "satellite", f"{b:04d}"))
                gf.append(_near(rng, centers[b], flips=int(rng.integers(0, 2))))
    for d in range(n_distractors):
        gallery.append(_image(f"g/d{d:03d}/0", "satellite", None))
        gf.append(centers[n_buildings + d])
    split = EvalSplit(name="query_drone->gallery_satellite", queries=tuple(queries), gallery=tuple(gallery))
    return split, np.array(qf), np.array(gf)


def _u1652_labels(split: EvalSplit, *, distractors_junk: bool) -> tuple[np.ndarray, np.ndarray]:
    """Integer folder labels as the scripts read them; distractors (``distractor_ids`` or no place): their own
    building ids (a fresh number when unlabelled), or -1 (Sample4Geo)."""
    ql = np.array([int(q.place_id) for q in split.queries])

    def label(i: int, item: EvalItem) -> int:
        if item.place_id is None or item.place_id in split.distractor_ids:
            if distractors_junk:
                return -1
            return 9000 + i if item.place_id is None else int(item.place_id)
        return int(item.place_id)

    gl = np.array([label(i, g) for i, g in enumerate(split.gallery)])
    return ql, gl


@pytest.mark.parametrize("name", ["university1652", "sample4geo-university"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_university_protocols_match_evaluate_gpu(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    split, qf, gf = _u1652_world(rng, per_gallery=1 + seed)  # seed 1, 2: several positives per query
    protocol = get_protocol(name)
    result = score_split(protocol, split, qf, gf, chunk_size=5, show_progress_bar=False)
    ql, gl = _u1652_labels(split, distractors_junk=protocol.distractors == "junk")
    ref = _official_u1652(qf, ql, gf, gl)
    for key in ("R@1", "R@5", "R@10", "R@1%", "AP"):
        assert result.metrics[key] == pytest.approx(ref[key], abs=1e-9), key
    assert result.metrics["R@1%_K"] == ref["K"]
    assert result.metrics["n_no_positive"] == 2 * 3  # two buildings missing from the gallery, 3 photos each
    assert result.metrics["n_queries"] == len(split.queries)
    scores = qf @ gf.T
    assert any(np.unique(row).size < row.size for row in scores)  # ties do occur


def _labelled_distractors(split: EvalSplit) -> EvalSplit:
    """The loaders' convention: a distractor building keeps its own id and is listed in ``distractor_ids``."""
    gallery = tuple(dataclasses.replace(g, place_id=f"9{g.key.split('/')[1][1:]}") if g.place_id is None else g
                    for g in split.gallery)
    ids = frozenset(g.place_id for g, old in zip(gallery, split.gallery, strict=True) if old.place_id is None)
    return dataclasses.replace(split, gallery=gallery, distractor_ids=ids)


@pytest.mark.parametrize("name", ["university1652", "sample4geo-university"])
def test_distractor_ids_are_the_distractors(name: str) -> None:
    rng = np.random.default_rng(12)
    split, qf, gf = _u1652_world(rng, n_distractors=8, per_gallery=2)
    gf[-8:] = np.repeat(qf[:1], 8, axis=0)  # distractors that outrank: the two conventions must differ here
    labelled = _labelled_distractors(split)
    assert len(labelled.distractor_ids) == 8 and all(g.place_id is not None for g in labelled.gallery)
    protocol = get_protocol(name)
    got = score_split(protocol, labelled, qf, gf, show_progress_bar=False)
    ql, gl = _u1652_labels(labelled, distractors_junk=protocol.distractors == "junk")
    assert (gl == -1).sum() == (8 if protocol.distractors == "junk" else 0)
    ref = _official_u1652(qf, ql, gf, gl)
    for key in ("R@1", "R@5", "R@10", "R@1%", "AP"):
        assert got.metrics[key] == pytest.approx(ref[key], abs=1e-9), key
    unlabelled = score_split(protocol, split, qf, gf, show_progress_bar=False)
    assert np.array_equal(got.positive_ranks, unlabelled.positive_ranks)
    wrong = dataclasses.replace(labelled, distractor_ids=labelled.distractor_ids | {split.queries[0].place_id})
    with pytest.raises(DataError, match="are places of queries"):
        score_split(protocol, wrong, qf, gf, show_progress_bar=False)


def test_distractor_conventions_differ_where_distractors_outrank() -> None:
    rng = np.random.default_rng(5)
    split, qf, gf = _u1652_world(rng, n_distractors=10)
    gf[-10:] = np.repeat(qf[:1], 10, axis=0)  # distractors identical to the first query: they outrank its building
    official = score_split(get_protocol("university1652"), split, qf, gf, show_progress_bar=False)
    dropped = score_split(get_protocol("sample4geo-university"), split, qf, gf, show_progress_bar=False)
    assert official.first_positive_rank[0] >= 10 and dropped.first_positive_rank[0] < official.first_positive_rank[0]
    assert official.metrics["n_gallery"] == dropped.metrics["n_gallery"] == len(split.gallery)


def test_u1652_at_published_gallery_size_uses_k_11() -> None:
    rng = np.random.default_rng(3)
    split, qf, gf = _u1652_world(rng, n_buildings=30, n_distractors=951 - 28, per_query=1, missing=2)
    assert len(split.gallery) == 951
    for name in ("university1652", "sample4geo-university"):
        result = score_split(get_protocol(name), split, qf, gf, show_progress_bar=False)
        ql, gl = _u1652_labels(split, distractors_junk=name.startswith("sample4geo"))
        ref = _official_u1652(qf, ql, gf, gl)
        assert int(result.metrics["R@1%_K"]) == 11 == ref["K"]
        assert result.metrics["R@1%"] == pytest.approx(ref["R@1%"], abs=1e-9)


def test_pessimistic_ranks_agree_with_compute_retrieval() -> None:
    rng = np.random.default_rng(7)
    split, qf, gf = _u1652_world(rng, per_gallery=2)
    result = score_split(get_protocol("sample4geo-university"), split, qf, gf, chunk_size=4, show_progress_bar=False)
    ql, gl = _u1652_labels(split, distractors_junk=True)
    core = compute_retrieval(qf, gf, ql, gl, chunk_size=None, show_progress_bar=False)
    assert np.array_equal(result.positive_ranks, core.positive_ranks)
    assert np.array_equal(result.positive_offsets, core.positive_offsets)


def test_multi_query_is_the_renormalised_mean_of_unit_embeddings() -> None:
    rng = np.random.default_rng(11)
    split, _, gf = _u1652_world(rng, per_query=4)
    qf = rng.normal(size=(len(split.queries), DIM)) * 3.0  # not unit: the protocol normalises each photo first
    protocol = get_protocol("university1652").with_options(multi_query=True)
    result = score_split(protocol, split, qf, gf, show_progress_bar=False)
    unit = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    groups = sorted({q.group for q in split.queries})
    merged = np.stack([unit[[q.group == g for q in split.queries]].mean(axis=0) for g in groups])
    merged /= np.linalg.norm(merged, axis=1, keepdims=True)
    ql = np.array([int(g) for g in groups])
    _, gl = _u1652_labels(split, distractors_junk=False)
    ref = _official_u1652(merged, ql, gf, gl)
    assert result.n_queries == len(groups) == 14
    for key in ("R@1", "R@5", "R@10", "R@1%", "AP"):
        assert result.metrics[key] == pytest.approx(ref[key], abs=1e-9), key
    merged_split, emb = merge_multi_query(split, qf)
    assert [q.key for q in merged_split.queries] == groups
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)


def test_no_positive_policies_change_the_denominator() -> None:
    rng = np.random.default_rng(8)
    split, qf, gf = _u1652_world(rng, n_buildings=6, missing=2, per_query=1)
    miss = score_split(get_protocol("university1652"), split, qf, gf, show_progress_bar=False)
    exclude = score_split(dataclasses.replace(get_protocol("university1652"), no_positive="exclude"), split, qf, gf,
                          show_progress_bar=False)
    hits = np.count_nonzero((miss.first_positive_rank >= 0) & (miss.first_positive_rank < 1))
    assert miss.metrics["R@1"] == pytest.approx(100 * hits / 6)
    assert exclude.metrics["R@1"] == pytest.approx(100 * hits / 4)


def test_multi_query_needs_groups() -> None:
    split = EvalSplit(name="s", queries=(_image("a", "drone", "1"),), gallery=(_image("b", "satellite", "1"),))
    with pytest.raises(DataError, match="no query item has a group"):
        score_split(get_protocol("university1652").with_options(multi_query=True), split,
                    np.ones((1, 4)), np.ones((1, 4)), show_progress_bar=False)


# ---------------------------------------------------------------------------------------------------------------------
# CVUSA / CVACT / SAFA


def _one_to_one(rng: np.random.Generator, n: int) -> tuple[EvalSplit, np.ndarray, np.ndarray]:
    sat = _dyadic(rng, n)
    grd = np.stack([_near(rng, s, flips=int(rng.integers(0, 4))) for s in sat])
    order = rng.permutation(n)  # the gallery is not in query order
    queries = tuple(_image(f"streetview/{i:05d}.jpg", "street", f"{i:05d}") for i in range(n))
    gallery = tuple(_image(f"bingmap/{i:05d}.jpg", "satellite", f"{i:05d}") for i in order)
    return EvalSplit(name="street->satellite", queries=queries, gallery=gallery), grd, sat[order]


@pytest.mark.parametrize("name", ["cvusa", "cvact"])
@pytest.mark.parametrize("n", [99, 150, 250])
def test_cvusa_cvact_match_sample4geo_and_safa(name: str, n: int) -> None:
    rng = np.random.default_rng(n)
    split, grd, sat = _one_to_one(rng, n)
    result = score_split(get_protocol(name), split, grd, sat, chunk_size=37, show_progress_bar=False)
    sim = grd @ sat.T
    qlab = np.array([int(q.place_id) for q in split.queries])
    rlab = np.array([int(g.place_id) for g in split.gallery])
    r1, r5, r10, r1p = _official_sample4geo_cvusa(sim, qlab, rlab)
    m = result.metrics
    assert (m["R@1"], m["R@5"], m["R@10"], m["R@1%"]) == pytest.approx((r1, r5, r10, r1p), abs=1e-9)
    assert m["R@1%_K"] == n // 100
    # SAFA: distances (sat x grd) with the match on the diagonal
    inverse = np.argsort([int(g.place_id) for g in split.gallery])
    safa = _official_safa(2 - 2 * (sat[inverse] @ grd.T))
    assert (m["R@1"], m["R@5"], m["R@10"], m["R@1%"]) == pytest.approx(
        (safa["R@1"], safa["R@5"], safa["R@10"], safa["R@1%"]), abs=1e-9
    )
    ties = (sim == sim[np.arange(n), inverse][:, None]).sum(axis=1) > 1
    assert ties.any()  # some positives tie with a negative: the optimistic rule matters here


def test_optimistic_and_pessimistic_ties_differ() -> None:
    split = EvalSplit(name="s", queries=(_image("q", "street", "a"),),
                      gallery=(_image("n", "satellite", "b"), _image("p", "satellite", "a")))
    emb_q, emb_g = np.array([[1.0, 0.0]]), np.array([[1.0, 0.0], [1.0, 0.0]])  # the negative ties with the positive
    for name, rank in (("cvusa", 0), ("university1652", 1)):
        result = score_split(get_protocol(name), split, emb_q, emb_g, show_progress_bar=False)
        assert result.first_positive_rank[0] == rank


def test_cvusa_rejects_a_query_without_positive() -> None:
    split = EvalSplit(name="cvusa-test", queries=(_image("q1", "street", "a"), _image("q2", "street", "zz")),
                      gallery=(_image("g1", "satellite", "a"),))
    with pytest.raises(DataError, match="'q2' has no positive"):
        score_split(get_protocol("cvusa"), split, np.eye(2, 4), np.eye(1, 4), show_progress_bar=False)


# ---------------------------------------------------------------------------------------------------------------------
# VIGOR


def _vigor_world(rng: np.random.Generator, *, n_tiles: int = 120, n_queries: int = 70):
    """Tiles on a grid (about 70 m apart); each query has a positive tile and up to three semi-positive neighbours;
    half the queries know their lat/lon, the other half only their offset in metres from the positive's centre."""
    side = int(math.ceil(math.sqrt(n_tiles)))
    lat0, lon0, step = 40.7, -74.0, 0.00063
    tiles = []
    for t in range(n_tiles):
        r, c = divmod(t, side)
        tiles.append(_image(f"sat/{t:04d}.png", "satellite", f"t{t:04d}", lat=lat0 + r * step, lon=lon0 + c * step))
    tf = _dyadic(rng, n_tiles)
    queries, qf, semi, test_label = [], [], {}, []
    for i in range(n_queries):
        pos = int(rng.integers(n_tiles))
        r, c = divmod(pos, side)
        neighbours = [t for t in (pos + 1, pos + side, pos + side + 1) if t < n_tiles and (t % side) >= c]
        neighbours = neighbours[: int(rng.integers(0, 4))]
        east, north = rng.uniform(-15, 15, size=2)
        key = f"pano/{i:04d}.jpg"
        if i % 2:
            lat = tiles[pos].lat + math.degrees(north / 6371008.8)
            lon = tiles[pos].lon + math.degrees(east / (6371008.8 * math.cos(math.radians(tiles[pos].lat))))
            queries.append(_image(key, "street", f"t{pos:04d}", lat=lat, lon=lon))
        else:
            queries.append(_image(key, "street", f"t{pos:04d}", offset_m=(float(east), float(north))))
        semi[key] = tuple(f"sat/{t:04d}.png" for t in neighbours)
        test_label.append([pos, *neighbours])
        if neighbours and i % 3 == 0:  # a semi-positive tile looks like the query, the positive nearly: a hit, not R@1
            tf[neighbours[0]] = _near(rng, tf[pos], flips=1)
            qf.append(tf[neighbours[0]].copy())
        else:
            qf.append(_near(rng, tf[pos], flips=int(rng.integers(0, 4))))
    split = EvalSplit(name="vigor-same", queries=tuple(queries), gallery=tuple(tiles), semi_positives=semi)
    return split, np.array(qf), tf, test_label


@pytest.mark.parametrize("seed", [0, 1])
def test_vigor_matches_validate_top_and_sample4geo(seed: int) -> None:
    rng = np.random.default_rng(seed)
    split, qf, tf, test_label = _vigor_world(rng)
    sim = qf @ tf.T
    official = _official_vigor(sim, test_label)
    for name in ("vigor-same", "vigor-cross"):
        m = score_split(get_protocol(name), split, qf, tf, chunk_size=16, show_progress_bar=False).metrics
        for key in ("R@1", "R@5", "R@10", "R@1%", "hit_rate"):
            assert m[key] == pytest.approx(official[key], abs=1e-9), (name, key)
        assert m["R@1%_K"] == int(len(split.gallery) * 0.01) + 1 == 2
    labels = [[f"t{t:04d}" for t in row] for row in test_label]
    s4g = _official_sample4geo_vigor(sim, labels, np.array([g.place_id for g in split.gallery]))
    m = score_split(get_protocol("sample4geo-vigor-same"), split, qf, tf, show_progress_bar=False).metrics
    assert [m["R@1"], m["R@5"], m["R@10"], m["R@1%"], m["hit_rate"]] == pytest.approx(s4g, abs=1e-9)
    assert m["R@1%_K"] == 1
    assert official["hit_rate"] > official["R@1"]  # semi-positives are hits for the hit rate only


def test_vigor_metre_error_of_the_top1_tile_centre() -> None:
    rng = np.random.default_rng(4)
    split, qf, tf, test_label = _vigor_world(rng)
    result = score_split(get_protocol("vigor-same"), split, qf, tf, show_progress_bar=False)
    order_list = np.argmax(qf @ tf.T, axis=1)  # VIGOR: np.argmax of the similarity, delta = 0 (the tile centre)
    radius = 6371008.8
    ours, vigor = [], []
    for i, query in enumerate(split.queries):
        pos = split.gallery[test_label[i][0]]
        if query.lat is not None:
            lat, lon = query.lat, query.lon
        else:
            east, north = query.offset_m
            lat = pos.lat + math.degrees(north / radius)
            lon = pos.lon + math.degrees(east / (radius * math.cos(math.radians(pos.lat))))
        pred = split.gallery[int(order_list[i])]
        ours.append(_haversine_m(lat, lon, pred.lat, pred.lon, radius))
        vigor.append(_vigor_gps2distance(lat, lon, pred.lat, pred.lon))
    np.testing.assert_allclose(1000 * result.errors_km, ours, rtol=1e-9)  # the top-1 of np.argmax, ties included
    assert result.metrics["median_m"] == pytest.approx(float(np.median(ours)), rel=1e-9)
    assert result.metrics["mean_m"] == pytest.approx(float(np.mean(ours)), rel=1e-9)
    # VIGOR's arccos formula (R = 6371004 m) loses about 0.1 m to rounding near zero distance
    assert result.metrics["mean_m"] == pytest.approx(float(np.mean(vigor)), abs=0.5)


def test_semi_positive_outside_the_gallery_is_an_error() -> None:
    split = EvalSplit(name="vigor", queries=(_image("q", "street", "a"),), gallery=(_image("g", "satellite", "a"),),
                      semi_positives={"q": ("missing.png",)})
    with pytest.raises(DataError, match="'missing.png' of query 'q' is not in the gallery"):
        score_split(get_protocol("vigor-same"), split, np.eye(1, 4), np.eye(1, 4), show_progress_bar=False)


# ---------------------------------------------------------------------------------------------------------------------
# GeoText-1652


def test_geotext_matches_itm_eval() -> None:
    rng = np.random.default_rng(9)
    n_buildings, per_building, per_image = 12, 3, 2
    centers = _dyadic(rng, n_buildings)
    images, img_f, texts, txt_f, txt2img, img2building = [], [], [], [], [], []
    for b in range(n_buildings):
        for j in range(per_building):
            images.append(_image(f"{b:04d}/image-{j:02d}.jpeg", "drone", f"{b:04d}"))
            img2building.append(b)
            img_f.append(_near(rng, centers[b], flips=int(rng.integers(0, 3))))
            for t in range(per_image):
                texts.append(_text(f"{b:04d}/image-{j:02d}.jpeg#{t}", f"{b:04d}"))
                txt2img.append(len(images) - 1)
                txt_f.append(_near(rng, img_f[-1], flips=int(rng.integers(1, 4))))
    img_f, txt_f = np.array(img_f), np.array(txt_f)
    protocol = get_protocol("geotext1652")
    splits = {
        "text->drone": EvalSplit(name="text->drone", queries=tuple(texts), gallery=tuple(images)),
        "drone->text": EvalSplit(name="drone->text", queries=tuple(images), gallery=tuple(texts)),
    }
    embeddings = {"text->drone": (txt_f, img_f), "drone->text": (img_f, txt_f)}
    results = {d: score_split(protocol, s, *embeddings[d], show_progress_bar=False) for d, s in splits.items()}
    metrics = protocol_metrics(protocol, results)
    ref = _official_geotext(img_f @ txt_f.T, txt2img, img2building)
    got_txt = [metrics[f"drone->text/R@{k}"] for k in (1, 5, 10)]
    got_img = [metrics[f"text->drone/R@{k}"] for k in (1, 5, 10)]
    assert got_txt == pytest.approx(ref["txt"], abs=1e-9)
    assert got_img == pytest.approx(ref["img"], abs=1e-9)
    for key in ("txt_r_mean", "img_r_mean", "r_mean"):
        assert metrics[key] == pytest.approx(ref[key], abs=1e-9), key
    assert metrics["primary_metric"] == "r_mean"


# ---------------------------------------------------------------------------------------------------------------------
# K rules and the registry


@pytest.mark.parametrize("m", [0, 1, 49, 50, 99, 100, 150, 250, 350, 951, 1652, 8884, 37855, 51355, 92802])
def test_k_of_one_percent_follows_each_official_formula(m: int) -> None:
    assert k_for_one_percent(m, rule="round-plus-one") == round(m * 0.01) + 1  # U-1652 / Sample4Geo university
    assert k_for_one_percent(m, rule="floor-plus-one") == int(m * 0.01) + 1  # VIGOR validate_top
    assert k_for_one_percent(m, rule="floor") == m // 100  # Sample4Geo CVUSA, CVACT, VIGOR
    assert k_for_one_percent(m, rule="floor") == (int(m * 0.01) + 1) - 1  # SAFA test_cvusa.py's last column
    assert k_for_one_percent(m, rule="round-half-up") == recall_k_for_percent(m)


def test_k_rules_on_a_range_of_gallery_sizes() -> None:
    sizes = range(0, 20001, 7)
    assert all(k_for_one_percent(m, rule="round-plus-one") == round(m * 0.01) + 1 for m in sizes)
    assert all(k_for_one_percent(m, rule="floor-plus-one") == int(m * 0.01) + 1 for m in sizes)
    with pytest.raises(ValueError, match="unknown K rule"):
        k_for_one_percent(100, rule="nearest")  # type: ignore[arg-type]


def test_registry() -> None:
    names = list_protocols()
    for required in ("university1652", "sample4geo-university", "cvusa", "cvact", "vigor-same", "vigor-cross",
                     "geotext1652"):
        assert required in names
    assert len(set(names)) == len(PROTOCOLS)
    expected = {"university1652": "round-plus-one", "sample4geo-university": "round-plus-one", "cvusa": "floor",
                "cvact": "floor", "vigor-same": "floor-plus-one", "vigor-cross": "floor-plus-one",
                "sample4geo-vigor-same": "floor"}
    assert {n: get_protocol(n).k_rule for n in expected} == expected
    with pytest.raises(ValueError, match="expected one of university1652"):
        get_protocol("university-1652")


# ---------------------------------------------------------------------------------------------------------------------
# the University-1652 layout end to end


def _png(path: Path, seed: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _u1652_folder(root: Path) -> Path:
    """3 query buildings (2 drone photos each, 1 satellite) and 2 distractor buildings in the galleries."""
    seed = 0
    for b in ("0001", "0002", "0003"):
        for j in range(2):
            _png(root / "test" / "query_drone" / b / f"image-{j:02d}.jpeg", seed := seed + 1)
        _png(root / "test" / "query_satellite" / b / f"{b}.jpg", seed := seed + 1)
    for b in ("0001", "0002", "0003", "0901", "0902"):
        _png(root / "test" / "gallery_satellite" / b / f"{b}.jpg", seed := seed + 1)
        for j in range(2):
            _png(root / "test" / "gallery_drone" / b / f"image-{j:02d}.jpeg", seed := seed + 1)
    return root


class _FakeModel:
    """A model whose embedding of an image depends on its building folder and file name only (dyadic vectors)."""

    def encode(self, items, *, view, batch_size=64, show_progress_bar=None):  # noqa: ANN001, ANN201
        out = []
        for item in items:
            building = int(Path(item).parent.name)
            rng = np.random.default_rng(building % 900 * 7 + (0 if view == "satellite" else 1))
            base = _dyadic(rng, 1)[0]
            flips = sum(map(ord, Path(item).name)) % 3
            out.append(_near(np.random.default_rng(zlib.crc32(Path(item).name.encode())), base, flips=flips))
        return np.array(out, dtype=np.float32)


def test_u1652_layout_counts_follow_the_roles(tmp_path: Path) -> None:
    root = _u1652_folder(tmp_path / "u1652")
    splits = protocol_splits(get_protocol("university1652"), root)
    assert list(splits) == ["drone->satellite", "satellite->drone"]
    d2s, s2d = splits["drone->satellite"], splits["satellite->drone"]
    assert (len(d2s.queries), len(d2s.gallery)) == (6, 5)  # query_drone photos vs gallery_satellite buildings
    assert d2s.distractor_ids == {"0901", "0902"}  # the gallery-only buildings keep their ids
    assert {q.group for q in d2s.queries} == {"0001", "0002", "0003"}
    assert all(q.path.parent.parent.name == "query_drone" for q in d2s.queries)
    assert (len(s2d.queries), len(s2d.gallery)) == (3, 10)
    assert all(g.path.parent.parent.name == "gallery_drone" for g in s2d.gallery)


def test_protocol_splits_call_the_loader_with_its_options(tmp_path: Path) -> None:
    calls = []

    def loader(root: Path, **options: str) -> EvalSplit:
        calls.append(options)
        return EvalSplit(name="x", queries=(_image("q", options["query_view"], "a"),),
                         gallery=(_image("g", options["gallery_view"], "a"),))

    got = protocol_splits(get_protocol("vigor-cross"), tmp_path, loader=loader)
    assert calls == [{"fmt": "vigor", "query_view": "street", "gallery_view": "satellite", "mode": "cross"}]
    assert list(got) == ["street->satellite"]
    protocol_splits(get_protocol("cvact"), tmp_path, loader=loader)
    assert calls[-1] == {"fmt": "cvact", "query_view": "street", "gallery_view": "satellite", "split": "val"}
    root = _u1652_folder(tmp_path / "u1652")
    d2s = load_eval_split(root, fmt="university1652", query_view="drone", gallery_view="satellite")
    with pytest.raises(DataError, match="expected street->satellite"):
        protocol_splits(get_protocol("cvusa"), tmp_path, loader=lambda root, **kw: d2s)


def test_run_protocol_writes_report_with_k_and_matches_reference(tmp_path: Path) -> None:
    root = _u1652_folder(tmp_path / "u1652")
    model = _FakeModel()
    out = tmp_path / "report"
    metrics = run_protocol(model, get_protocol("sample4geo-university"), root, out, show_progress_bar=False)
    split = load_eval_split(root, fmt="university1652", query_view="drone", gallery_view="satellite")
    qf = model.encode([q.path for q in split.queries], view="drone")
    gf = model.encode([g.path for g in split.gallery], view="satellite")
    ql, gl = _u1652_labels(split, distractors_junk=True)
    ref = _official_u1652(qf.astype(np.float64), ql, gf.astype(np.float64), gl)
    assert metrics["drone->satellite/R@1"] == pytest.approx(ref["R@1"], abs=1e-9)
    assert metrics["drone->satellite/AP"] == pytest.approx(ref["AP"], abs=1e-9)
    assert metrics["drone->satellite/n_queries"] == 6 and metrics["drone->satellite/n_gallery"] == 5
    assert metrics["satellite->drone/n_queries"] == 3 and metrics["satellite->drone/n_gallery"] == 10
    assert metrics["drone->satellite/R@1%_K"] == 1  # round(5 / 100) + 1
    report = (out / "report.md").read_text()
    assert "K of R@1%" in report and "| `drone->satellite` | 6 | 5 | 1 |" in report
    assert (out / "recall_curves.png").stat().st_size > 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["protocol"] == "sample4geo-university" and saved["primary_metric"] == "drone->satellite/R@1"
    multi = run_protocol(model, get_protocol("university1652").with_options(multi_query=True), root,
                         tmp_path / "multi", show_progress_bar=False)
    assert multi["drone->satellite/n_queries"] == 3


def test_missing_layout_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="val-19zl.csv"):
        protocol_splits(get_protocol("cvusa"), tmp_path)
    with pytest.raises(DataError, match="no direction drone->satellite"):
        protocol_splits(dataclasses.replace(get_protocol("university1652"), layout="cvusa"), tmp_path)


def test_cli_eval_protocol(tmp_path: Path, tiny_model_config, capsys) -> None:  # noqa: ANN001
    import torch

    from geobridge.cli.main import main
    from geobridge.models import GeoBridge

    torch.manual_seed(0)
    GeoBridge(tiny_model_config).save_pretrained(tmp_path / "model")
    root = _u1652_folder(tmp_path / "u1652")
    code = main(["eval", "--checkpoint", str(tmp_path / "model"), "--data", str(root), "--out", str(tmp_path / "r"),
                 "--protocol", "university1652"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "drone->satellite: R@1 = " in printed and "R@1% (K = 1)" in printed
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["drone->satellite/n_queries"] == 6 and saved["satellite->drone/n_gallery"] == 10
    assert main(["eval", "--checkpoint", str(tmp_path / "model"), "--data", str(root), "--out", str(tmp_path / "x"),
                 "--protocol", "nope"]) == 2
    err = capsys.readouterr().err
    assert "argument --protocol: expected one protocol of university1652," in err and "got 'nope'" in err
