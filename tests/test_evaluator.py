"""Chunked retrieval vs the dense reference and brute force, the every-direction evaluator, plots and reports."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from geobridge.errors import DataError
from geobridge.eval import (
    EmbeddingSet,
    RetrievalEvaluator,
    all_directions,
    compute_retrieval,
    errors_km,
    evaluate_direction,
    evaluate_groups,
    haversine_km,
    plot_error_histogram,
    plot_error_map,
    plot_fusion,
    plot_recall_curves,
    plot_retrieval_grid,
    positive_ranks_from_scores,
    retrieve,
    write_report,
)
from geobridge.eval.retrieval import auto_chunk_size

RESULT_FIELDS = (
    "topk_indices",
    "topk_scores",
    "topk_is_positive",
    "positive_ranks",
    "positive_offsets",
    "first_positive_rank",
    "hit",
)


def assert_same_result(a, b):
    for field in RESULT_FIELDS:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    np.testing.assert_array_equal(a.average_precision, b.average_precision)  # NaN == NaN here
    assert a.n_gallery == b.n_gallery and a.ap_variant == b.ap_variant and a.ties == b.ties


def integer_problem(seed, n_query=41, n_gallery=97, dim=5):
    """Integer-valued embeddings: every dot product is exact, so ties are frequent and reproducible."""
    rng = np.random.default_rng(seed)
    query = rng.integers(-2, 3, (n_query, dim)).astype(np.float32)
    gallery = rng.integers(-2, 3, (n_gallery, dim)).astype(np.float32)
    gallery[::9] = gallery[1]  # duplicated gallery vectors: exact ties
    query_labels = rng.integers(0, 25, n_query)
    gallery_labels = rng.integers(-1, 22, n_gallery)  # -1 = junk; labels 22..24 have no positive
    return query, gallery, query_labels, gallery_labels


# ------------------------------------------------------------------------------------------------------------------
# retrieval


@pytest.mark.parametrize("seed", [0, 1])
def test_chunked_equals_dense_with_ties_junk_and_groups(seed):
    query, gallery, ql, gl = integer_problem(seed)
    rng = np.random.default_rng(seed + 10)
    options = [
        {},
        {"query_groups": rng.integers(0, 2, len(ql)), "gallery_groups": rng.integers(0, 2, len(gl))},
        {"junk_fn": lambda rows: (rows[:, None] + np.arange(len(gl))[None, :]) % 5 == 0},
        {"ties": "optimistic"},
        {"ties": "optimistic", "semi_fn": lambda rows: (rows[:, None] * 3 + np.arange(len(gl))[None, :]) % 4 == 0,
         "junk_fn": lambda rows: (rows[:, None] + np.arange(len(gl))[None, :]) % 7 == 0},
        {"semi_fn": lambda rows: (rows[:, None] * 3 + np.arange(len(gl))[None, :]) % 4 == 0},
    ]
    for opts in options:
        for k in (1, 7, 200):  # 200 > gallery size: clipped
            dense = compute_retrieval(query, gallery, ql, gl, k=k, chunk_size=None, **opts)
            assert dense.topk_indices.shape == (len(ql), min(k, len(gl)))
            for chunk in (1, 2, 3, 8, 40, 41, 500, "auto"):
                assert_same_result(compute_retrieval(query, gallery, ql, gl, k=k, chunk_size=chunk, **opts), dense)


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_retrieval_against_brute_force_per_query(ties):
    query, gallery, ql, gl = integer_problem(3)
    qg = np.arange(len(ql)) % 3
    gg = np.arange(len(gl)) % 3
    semi_all = np.random.default_rng(8).random((len(ql), len(gl))) < 0.2  # (N, M) semi-positives

    def semi_fn(rows):
        return semi_all[rows]

    result = compute_retrieval(query, gallery, ql, gl, k=6, chunk_size=5, query_groups=qg, gallery_groups=gg,
                               ties=ties, semi_fn=semi_fn)
    scores = query @ gallery.T  # exact for integers
    optimistic = ties == "optimistic"
    for q in range(len(ql)):
        positive = (gl == ql[q]) & (gl >= 0)
        junk = (gl < 0) | (positive & (gg == qg[q]))  # the same-label-same-group rule
        positive &= ~junk
        items = [j for j in range(len(gl)) if not junk[j]]
        ranking = sorted(items, key=lambda j: (-scores[q, j], bool(positive[j]) != optimistic, j))
        ranks = [pos for pos, j in enumerate(ranking) if positive[j]]
        assert result.ranks_of(q).tolist() == ranks
        if not optimistic:
            assert result.ranks_of(q).tolist() == positive_ranks_from_scores(scores[q], positive,
                                                                             is_junk=junk).tolist()
        # a hit: the best positive is beaten by no gallery item that is neither junk, positive nor semi-positive
        others = [scores[q, j] for j in items if not positive[j] and not semi_all[q, j]]
        best = max((scores[q, j] for j in items if positive[j]), default=None)
        beaten = best is None or any(o > best if optimistic else o >= best for o in others)
        assert result.hit[q] == (not beaten)
        assert result.topk_indices[q].tolist() == ranking[:6]
        assert result.topk_is_positive[q].tolist() == [bool(positive[j]) for j in ranking[:6]]
        np.testing.assert_array_equal(result.topk_scores[q], scores[q, ranking[:6]])
        assert result.first_positive_rank[q] == (ranks[0] if ranks else -1)
    # the top-k lists agree with the ranks: a positive in the top K <=> first positive rank < K
    has = result.has_positive
    for k in range(1, 7):
        from_lists = result.topk_is_positive[has, :k].any(axis=1)
        np.testing.assert_array_equal(from_lists, result.first_positive_rank[has] < k)


def test_chunked_equals_dense_on_float_embeddings():
    rng = np.random.default_rng(5)
    query = rng.standard_normal((53, 32)).astype(np.float32)
    gallery = rng.standard_normal((211, 32)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    ql, gl = rng.integers(0, 30, 53), rng.integers(0, 30, 211)
    dense = compute_retrieval(query, gallery, ql, gl, k=10, chunk_size=None)
    for chunk in (1, 4, 17, 100):
        chunked = compute_retrieval(query, gallery, ql, gl, k=10, chunk_size=chunk)
        for field in ("topk_indices", "topk_is_positive", "positive_ranks", "first_positive_rank"):
            np.testing.assert_array_equal(getattr(chunked, field), getattr(dense, field))
        np.testing.assert_array_equal(chunked.average_precision, dense.average_precision)
        np.testing.assert_allclose(chunked.topk_scores, dense.topk_scores, atol=1e-6)


def test_retrieval_pads_when_few_items_remain_and_validates():
    query = np.eye(3, dtype=np.float32)
    gallery = np.eye(3, dtype=np.float32)
    result = compute_retrieval(query, gallery, np.array([0, 1, 2]), np.array([0, -1, -1]), k=3, chunk_size=2)
    # only gallery item 0 is not junk
    assert result.topk_indices.tolist() == [[0, -1, -1]] * 3
    assert np.isneginf(result.topk_scores[:, 1:]).all()
    assert result.first_positive_rank.tolist() == [0, -1, -1]
    assert result.n_positives.tolist() == [1, 0, 0]
    with pytest.raises(DataError):
        compute_retrieval(query, gallery[:, :2], np.zeros(3, int), np.zeros(3, int))
    with pytest.raises(DataError):
        compute_retrieval(query * np.nan, gallery, np.zeros(3, int), np.zeros(3, int))
    with pytest.raises(ValueError):
        compute_retrieval(query, gallery, np.zeros(3, int), np.zeros(3, int), chunk_size=0)
    assert auto_chunk_size(100_000) == 671  # 256 MiB / (4 bytes * 100k)
    assert auto_chunk_size(10**12) == 1


# ------------------------------------------------------------------------------------------------------------------
# a small four-view world


def make_world(n_places=30, dim=24, seed=0, noise=0.9):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_places, dim)).astype(np.float32)
    lat = rng.uniform(35, 70, n_places)
    lon = rng.uniform(-10, 30, n_places)
    countries = np.array(["NO", "FR", "IT"])[np.arange(n_places) % 3]

    def view_set(view, per_place):
        places = np.repeat(np.arange(n_places), per_place)
        emb = centres[places] + noise * rng.standard_normal((places.size, dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        return EmbeddingSet(
            view=view,
            embeddings=emb,
            place_ids=[f"p{p:03d}" for p in places],
            lat=lat[places],
            lon=lon[places],
            countries=countries[places].tolist(),
        )

    return {
        "drone": view_set("drone", 3),
        "satellite": view_set("satellite", 1),
        "street": view_set("street", 1),
        "text": view_set("text", 2),
    }


def test_evaluator_keys_values_and_units():
    sets = make_world()
    metrics = RetrievalEvaluator(chunk_size=16)(sets)
    directions = all_directions(sets)
    assert len(directions) == 12
    assert directions[:3] == ["drone->satellite", "drone->street", "drone->text"]
    assert {"text->drone", "satellite->text", "street->satellite"} <= set(directions)
    per_direction = [
        "R@1",
        "R@5",
        "R@10",
        "R@1%",
        "R@1%_K",
        "AP",
        "MRR",
        "median_km",
        "mean_km",
        "acc@1km",
        "acc@25km",
        "acc@200km",
        "acc@750km",
        "acc@2500km",
        "n_queries",
        "n_no_positive",
        "n_geo",
        "n_gallery",
    ]
    expected = {f"{d}/{m}" for d in directions for m in per_direction}
    expected |= {f"mean/{m}" for m in ("R@1", "R@5", "R@10", "R@1%", "AP", "MRR")} | {"primary_metric"}
    assert set(metrics) == expected
    assert metrics["primary_metric"] == "drone->satellite/R@1"
    for key, value in metrics.items():
        if key != "primary_metric":
            assert isinstance(value, float), key
    # counts: drone has 3 items per place, text 2
    assert metrics["drone->satellite/n_queries"] == 90.0 and metrics["drone->satellite/n_gallery"] == 30.0
    assert metrics["satellite->drone/n_gallery"] == 90.0 and metrics["text->street/n_queries"] == 60.0
    # values against a direct computation: drone -> satellite, percent
    drone, sat = sets["drone"], sets["satellite"]
    scores = drone.embeddings @ sat.embeddings.T  # (90, 30)
    true = np.repeat(np.arange(30), 3)
    best = scores.argmax(axis=1)
    assert metrics["drone->satellite/R@1"] == pytest.approx(100 * np.mean(best == true))
    rank = (scores > scores[np.arange(90), true][:, None]).sum(axis=1)  # one positive per query, no ties
    assert metrics["drone->satellite/R@5"] == pytest.approx(100 * np.mean(rank < 5))
    assert metrics["drone->satellite/R@1%"] == pytest.approx(100 * np.mean(rank < 1))  # K = max(1, 0.3) = 1
    assert metrics["drone->satellite/MRR"] == pytest.approx(100 * np.mean(1 / (rank + 1)))
    # one positive: University-1652 AP = (old + p) / 2 with p = 1/(r+1), old = 0 (r > 0) or 1 (r == 0)
    ap = np.where(rank == 0, 1.0, 0.5 / (rank + 1))
    assert metrics["drone->satellite/AP"] == pytest.approx(100 * ap.mean())
    km = haversine_km(drone.lat, drone.lon, sat.lat[best], sat.lon[best])
    assert metrics["drone->satellite/median_km"] == pytest.approx(np.median(km))
    assert metrics["drone->satellite/acc@1km"] == pytest.approx(100 * np.mean(km <= 1))
    # satellite -> drone: three positives per query, a hit is any of them
    s2d = sets["satellite"].embeddings @ sets["drone"].embeddings.T  # (30, 90)
    top1_place = s2d.argmax(axis=1) // 3
    assert metrics["satellite->drone/R@1"] == pytest.approx(100 * np.mean(top1_place == np.arange(30)))
    # the means are over the 12 directions
    assert metrics["mean/R@1"] == pytest.approx(np.mean([metrics[f"{d}/R@1"] for d in directions]))
    assert 0.0 <= metrics["mean/AP"] <= 100.0


def test_evaluate_direction_matches_retrieve_and_int_ids():
    sets = make_world(seed=1)
    drone, street = sets["drone"], sets["street"]
    out = evaluate_direction(drone, street, ks=(1, 3), chunk_size=7)
    assert "drone->street/R@3" in out and "drone->street/R@5" not in out
    result = retrieve(drone, street, k=3, chunk_size=None)
    assert out["drone->street/R@1"] == pytest.approx(100 * result.recall_at_k(1))
    assert out["drone->street/AP"] == pytest.approx(100 * result.mean_average_precision())
    std = evaluate_direction(drone, street, ap_variant="standard")["drone->street/AP"]
    assert std == pytest.approx(100 * result.mean_average_precision(variant="standard"))
    assert std >= out["drone->street/AP"]  # trapezoid AP <= standard AP (old precision <= precision)
    errors = errors_km(drone, street, result)
    assert out["drone->street/median_km"] == pytest.approx(np.median(errors))
    # the same places given as integers give the same numbers
    as_int = [int(p[1:]) for p in drone.place_ids]
    drone_int = EmbeddingSet("drone", drone.embeddings, np.array(as_int), lat=drone.lat, lon=drone.lon)
    street_int = EmbeddingSet(
        "street", street.embeddings, [int(p[1:]) for p in street.place_ids], lat=street.lat, lon=street.lon
    )
    assert evaluate_direction(drone_int, street_int, ks=(1, 3), chunk_size=7) == out


def test_missing_coordinates_and_places():
    sets = make_world(seed=2)
    sat = sets["satellite"]
    no_coords = EmbeddingSet("satellite", sat.embeddings, sat.place_ids)  # lat/lon unknown
    out = evaluate_direction(sets["drone"], no_coords)
    assert not any("km" in key for key in out) and "drone->satellite/n_geo" not in out
    assert "drone->satellite/R@1" in out
    # some query coordinates missing: skipped in the km metrics only
    drone = sets["drone"]
    lat = drone.lat.copy()
    lat[:30] = np.nan
    partial = EmbeddingSet("drone", drone.embeddings, drone.place_ids, lat=lat, lon=drone.lon)
    out = evaluate_direction(partial, sat)
    assert out["drone->satellite/n_geo"] == 60.0 and out["drone->satellite/n_queries"] == 90.0
    # a gallery without some places: those queries are counted apart, and junk ids (None) are ignored
    gallery = sat.subset(np.arange(10, 30))
    ids = list(gallery.place_ids)
    ids[0] = None
    gallery = EmbeddingSet("satellite", gallery.embeddings, ids, lat=gallery.lat, lon=gallery.lon)
    out = evaluate_direction(drone, gallery)
    assert out["drone->satellite/n_queries"] == 57.0 and out["drone->satellite/n_no_positive"] == 33.0
    assert out["drone->satellite/n_gallery"] == 20.0


def test_explicit_directions_primary_fallback_and_errors():
    sets = make_world(seed=3)
    evaluator = RetrievalEvaluator(["street->satellite", "text -> drone"], ks=(1,))
    metrics = evaluator(sets)
    assert {k.split("/")[0] for k in metrics if "->" in k} == {"street->satellite", "text->drone"}
    assert metrics["primary_metric"] == "mean/R@1"  # drone->satellite was not evaluated
    assert metrics["mean/R@1"] == pytest.approx((metrics["street->satellite/R@1"] + metrics["text->drone/R@1"]) / 2)
    with pytest.raises(DataError, match="street"):
        evaluator({"satellite": sets["satellite"], "text": sets["text"], "drone": sets["drone"]})
    with pytest.raises(ValueError):
        RetrievalEvaluator(["drone=>satellite"])
    with pytest.raises(DataError):
        RetrievalEvaluator()({"drone": sets["satellite"], "satellite": sets["satellite"]})
    two_views = RetrievalEvaluator()({"drone": sets["drone"], "satellite": sets["satellite"]})
    assert {k.split("/")[0] for k in two_views if "->" in k} == {"drone->satellite", "satellite->drone"}


def test_evaluate_groups_splits_queries_and_keeps_full_gallery():
    sets = make_world(seed=4)
    evaluator = RetrievalEvaluator(["drone->satellite", "satellite->street"], chunk_size=8)
    out = evaluate_groups(sets, holdout_countries={"IT"}, evaluator=evaluator)
    # places alternate NO, FR, IT: 10 IT places -> 30 held-out drone queries, 60 in-domain
    assert out["out_of_domain/drone->satellite/n_queries"] == 30.0
    assert out["in_domain/drone->satellite/n_queries"] == 60.0
    assert out["out_of_domain/drone->satellite/n_gallery"] == 30.0  # the full gallery for both groups
    assert out["in_domain/satellite->street/n_gallery"] == 30.0
    assert "primary_metric" not in out and "out_of_domain/mean/R@1" in out
    held_out = np.array([c == "IT" for c in sets["drone"].countries])
    direct = evaluate_direction(sets["drone"].subset(held_out), sets["satellite"], chunk_size=8)
    for key, value in direct.items():
        assert out[f"out_of_domain/{key}"] == pytest.approx(value)
    # countries given separately override the sets' own
    override = {"drone": ["IT"] * 90}
    out2 = evaluate_groups(
        sets, holdout_countries={"IT"}, evaluator=RetrievalEvaluator(["drone->satellite"]), countries=override
    )
    assert out2["out_of_domain/drone->satellite/n_queries"] == 90.0
    assert not any(k.startswith("in_domain/drone") for k in out2)


# ------------------------------------------------------------------------------------------------------------------
# plots and report


def _write_images(folder, sets):
    """Real image files: drone/satellite squares, street panoramas 2:1, coloured by place."""
    folder.mkdir(parents=True, exist_ok=True)
    for view in ("drone", "satellite", "street"):
        emb_set = sets[view]
        paths = []
        for i, pid in enumerate(emb_set.place_ids):
            size = (128, 64) if view == "street" else (64, 64)
            shade = int(pid[1:]) * 8 % 256
            path = folder / f"{view}_{i}.png"
            Image.new("RGB", size, (shade, 255 - shade, (shade * 3) % 256)).save(path)
            paths.append(str(path))
        emb_set.paths = paths


def _png_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_plots_write_readable_pngs(tmp_path):
    sets = make_world(seed=5, noise=1.4)
    _write_images(tmp_path / "images", sets)
    results = {
        d: retrieve(sets[d.split("->")[0]], sets[d.split("->")[1]], k=5)
        for d in ("drone->satellite", "satellite->drone", "street->satellite")
    }
    curve = plot_recall_curves(results, tmp_path / "plots" / "recall.png")
    assert curve.exists() and _png_size(curve)[0] > 300

    result = results["street->satellite"]
    grid = plot_retrieval_grid(
        sets["street"], sets["satellite"], result, tmp_path / "plots" / "grid.png", n_queries=4, top=5
    )
    width, height = _png_size(grid)
    assert width > height > 200
    pixels = np.asarray(Image.open(grid).convert("RGB")).reshape(-1, 3).astype(int)
    greens = np.all(np.abs(pixels - [46, 160, 67]) < 12, axis=1).sum()
    reds = np.all(np.abs(pixels - [214, 39, 40]) < 12, axis=1).sum()
    shown = result.topk_is_positive[np.sort(np.random.default_rng(0).choice(30, 4, replace=False)), :5]
    assert (greens > 100) == shown.any() and (reds > 100) == (~shown).any()

    drone, sat = sets["drone"], sets["satellite"]
    top1 = results["drone->satellite"].topk_indices[:, 0]
    mapped = plot_error_map(drone.lat, drone.lon, sat.lat[top1], sat.lon[top1], tmp_path / "plots" / "map.png")
    assert _png_size(mapped)[0] > 300
    errors = errors_km(drone, sat, results["drone->satellite"])
    hist = plot_error_histogram(np.append(errors, [0.0, np.nan]), tmp_path / "plots" / "hist.png")
    assert _png_size(hist)[0] > 300
    empty = plot_error_histogram(np.array([np.nan]), tmp_path / "plots" / "empty.png")
    assert empty.exists()
    fusion = {"drone/R@1": 35.0, "text/R@1": 7.0, "drone+text/score/R@1": 27.0, "drone+text/weighted/R@1": 36.5,
              "drone+text/weighted/w_drone": 23.0, "drone/n": 200.0}
    two = plot_fusion({k: v for k, v in fusion.items() if k.startswith("drone/")}, tmp_path / "plots" / "f1.png")
    four = plot_fusion(fusion, tmp_path / "plots" / "f4.png")
    assert _png_size(four)[1] > _png_size(two)[1]  # one bar per R@1 row; other keys are ignored
    assert plot_fusion({}, tmp_path / "plots" / "f0.png").exists()
    assert not list((tmp_path / "plots").glob(".*.tmp"))  # atomic writes leave no temp files


def test_report_tables_json_and_links(tmp_path):
    sets = make_world(seed=6)
    evaluator = RetrievalEvaluator(["drone->satellite", "satellite->drone", "text->satellite"])
    metrics = dict(evaluator(sets))
    metrics.update(evaluate_groups(sets, holdout_countries={"IT"}, evaluator=evaluator))
    metrics["robust/blur/drone->satellite/R@1"] = 12.5
    metrics["robust/night/drone->satellite/R@1"] = 7.25
    metrics["robust/night/satellite->drone/R@1"] = 3.0
    metrics["extra/nan_value"] = float("nan")
    metrics["missing/satellite/mean/R@1"] = 4.5
    plot = plot_error_histogram(np.array([1.0, 10.0]), tmp_path / "out" / "plots" / "hist.png")
    report = write_report(
        tmp_path / "out", metrics, title="Test run", plots={"km errors": plot}, sections={"Setup": "model: tiny\n"}
    )
    text = report.read_text()
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert list(saved) == sorted(saved) and saved["extra/nan_value"] is None
    assert saved["drone->satellite/R@1"] == pytest.approx(metrics["drone->satellite/R@1"])
    assert text.startswith("# Test run\n")
    r1 = metrics["drone->satellite/R@1"]
    assert f"Primary metric: **drone->satellite/R@1 = {r1:.2f}**" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| direction | R@1 |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[:7] == ["direction", "R@1", "R@5", "R@10", "R@1%", "AP", "MRR"] and "median km" in columns
    row = next(line for line in lines if line.startswith("| `drone->satellite` |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == f"{r1:.2f}"
    assert cells[columns.index("median km")] == f"{metrics['drone->satellite/median_km']:.1f}"
    assert cells[columns.index("queries")] == "90"
    assert any(line.startswith("| **mean** |") for line in lines)
    # direction order follows the view order, mean last
    order = [line.split("|")[1].strip() for line in lines if line.startswith("| `")][:3]
    assert order == ["`drone->satellite`", "`satellite->drone`", "`text->satellite`"]
    assert "## In-domain vs out-of-domain" in text
    assert any(line.startswith("| `drone->satellite` | out-of-domain |") for line in lines)
    assert "## Robustness" in text
    assert "| clean | " + f"{r1:.2f}" in text and "| night | 7.25 | 3.00 |" in text and "| blur | 12.50 | - |" in text
    assert "## Missing views" in text and "| satellite | 4.50 |" in text
    assert "## Setup\n\nmodel: tiny" in text
    assert "![km errors](plots/hist.png)" in text
    # rewriting replaces both files
    write_report(tmp_path / "out", {"drone->satellite/R@1": 50.0})
    assert "50.00" in (tmp_path / "out" / "report.md").read_text()
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == {"drone->satellite/R@1": 50.0}
    assert not math.isnan(saved["mean/R@1"])


def test_report_states_the_run_date_commit_seed_epochs_and_training_time(tmp_path):
    from geobridge.eval.run_info import describe_run
    from geobridge.train import load_config, to_yaml

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "config.yaml").write_text(to_yaml(load_config(None, ["train.seed=7", "optim.epochs=4"])))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "elapsed_s": 61.5 * (e + 1)}) + "\n"
                                               for e in range(3)))
    info = describe_run(run / "model")
    assert info["seed"] == "7" and info["epochs"] == "3 of 4"
    assert info["training time"] == "184 s (3.1 min)"  # no run.json (an older run): the log's last elapsed_s
    assert info["training commit"] == "unknown" and info["training finished"] == "unknown"
    (run / "run.json").write_text(json.dumps({"commit": "v0.1-3-gabc1234", "finished": "2026-11-30T10:00:00Z",
                                              "train_s": 95.25, "epochs": 4}))
    info = describe_run(run)
    assert info["epochs"] == "4 of 4" and info["training time"] == "95.2 s"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["report written"])
    text = write_report(tmp_path / "out", {"drone->satellite/R@1": 50.0}, run=info).read_text()
    assert "## Run" in text and text.index("## Run") < text.index("## Results")
    for line in ("- training commit: v0.1-3-gabc1234", "- training finished: 2026-11-30T10:00:00Z", "- seed: 7",
                 "- epochs: 4 of 4", "- training time: 95.2 s", f"- report commit: {info['report commit']}"):
        assert line in text, line
    bare = describe_run(tmp_path / "elsewhere")
    assert bare["seed"] == bare["epochs"] == bare["training time"] == bare["image normalisation"] == "unknown"
    # how the image views were normalised: a config without image.norm predates per-view statistics
    (run / "model" / "config.json").write_text(json.dumps({"model": {"image": {"share_backbone": True}}}))
    assert describe_run(run)["image normalisation"].startswith("batch (one set")
    (run / "model" / "config.json").write_text(json.dumps({"model": {"image": {"norm": "view_batch"}}}))
    assert describe_run(run)["image normalisation"].startswith("view_batch")


def test_caption_lines_wrap_and_truncate():
    from geobridge.eval.plots import caption_lines

    sentence = "A dense city district with a red church in the east and streets on a tilted grid. " * 3
    lines = caption_lines(sentence, width=24, max_lines=4)
    assert len(lines) == 4 and all(len(line) <= 24 for line in lines) and lines[-1].endswith("...")
    assert " ".join(lines)[:-3].split()[:-1] == sentence.split()[: len(" ".join(lines).split()) - 1]
    assert caption_lines("a red church", width=24, max_lines=4) == ["a red church"]


def test_text_retrieval_grid_shows_the_sentence(tmp_path):
    sets = make_world(seed=3)
    text = sets["text"]
    sentences = [f"sentence {i}: a dense city district with a red church in the east" for i in range(len(text))]
    with_texts = EmbeddingSet(view="text", embeddings=text.embeddings, place_ids=text.place_ids, lat=text.lat,
                              lon=text.lon, texts=sentences)
    assert with_texts.subset(np.array([2, 0])).texts == [sentences[2], sentences[0]]
    result = retrieve(text, sets["satellite"], k=5, show_progress_bar=False)
    kw = dict(query_indices=[0, 5], top=3, tile_px=160)
    plain = plot_retrieval_grid(text, sets["satellite"], result, tmp_path / "plain.png", **kw)
    shown = plot_retrieval_grid(with_texts, sets["satellite"], result, tmp_path / "shown.png", **kw)

    def dark_in_query_column(path):
        pixels = np.asarray(Image.open(path).convert("L")).astype(int)
        return int((pixels[:, : pixels.shape[1] // 4] < 80).sum())  # the first of 4 columns holds the queries

    assert dark_in_query_column(shown) > dark_in_query_column(plain) + 100  # two sentences drawn in the tiles
    with pytest.raises(DataError, match="texts"):
        EmbeddingSet(view="text", embeddings=text.embeddings, place_ids=text.place_ids, texts=["one"])
