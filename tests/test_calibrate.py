"""Fusion weights: the fit against known answers, weighted ``fuse`` by hand, storage with the index, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_locate import hit, two_queries

from geobridge.cli.main import main
from geobridge.errors import GeoBridgeError
from geobridge.index import (
    CalibrationSet,
    GeoIndex,
    build_index,
    calibrate_index,
    evaluate_fusion,
    fit_view_weights,
    fuse,
    locate,
)


def _mean_ce(scores: dict[str, np.ndarray], labels: np.ndarray, weights: dict[str, float]) -> float:
    logits = sum(w * scores[v] for v, w in weights.items())  # (N, P)
    return float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)))


def _simulated(n: int, p: int, true_w: dict[str, float], seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Scores whose true place is drawn from softmax(sum_v true_w[v] * scores[v]) (the model fit assumes)."""
    rng = np.random.default_rng(seed)
    scores = {v: rng.uniform(-1, 1, (n, p)) for v in true_w}
    logits = sum(w * scores[v] for v, w in true_w.items())
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    labels = np.array([rng.choice(p, p=row) for row in probs])
    return scores, labels


def test_fit_recovers_the_weights_of_the_generating_model():
    true_w = {"drone": 6.0, "street": 0.0, "text": 2.0}
    scores, labels = _simulated(3000, 20, true_w, seed=0)
    fitted = fit_view_weights(CalibrationSet.from_dense(scores, labels))
    assert set(fitted) == set(true_w)
    assert fitted["drone"] == pytest.approx(6.0, rel=0.1)
    assert fitted["text"] == pytest.approx(2.0, rel=0.15)
    assert fitted["street"] < 0.3  # a view without signal gets (almost) no weight
    # a minimum: moving any weight up or down raises the mean cross-entropy (up to the tiny ridge term)
    best = _mean_ce(scores, labels, fitted)
    for view in fitted:
        for factor in (0.9, 1.1):
            moved = {**fitted, view: fitted[view] * factor + (0.01 if factor > 1 else 0.0)}
            assert _mean_ce(scores, labels, moved) >= best - 1e-4


def test_fit_validates_its_input():
    scores = {"drone": np.zeros((4, 3)), "text": np.zeros((4, 3))}
    with pytest.raises(GeoBridgeError, match="labels must be 4 column indices"):
        CalibrationSet.from_dense(scores, np.array([0, 1, 2, 3]))
    with pytest.raises(GeoBridgeError, match="one shape"):
        CalibrationSet.from_dense({"drone": np.zeros((4, 3)), "text": np.zeros((4, 2))}, np.zeros(4, dtype=int))
    with pytest.raises(GeoBridgeError, match="unknown view 'aerial'"):
        CalibrationSet.from_dense({"aerial": np.zeros((4, 3))}, np.zeros(4, dtype=int))
    with pytest.raises(GeoBridgeError, match="NaN"):
        fit_view_weights(CalibrationSet.from_dense({"drone": np.full((4, 3), np.nan)}, np.zeros(4, dtype=int)))


def test_calibration_set_from_hits_by_hand():
    drone = [[hit("A", 0.9), hit("B", 0.7), hit("A", 0.6), hit("C", 0.5)], [hit("C", 0.4), hit("B", 0.2)]]
    text = [[hit("B", 0.8), hit("D", 0.6)], [hit("A", 0.3), hit("C", 0.25)]]
    data = CalibrationSet.from_hits([("drone", drone), ("text", text)], ["A", "E"], n_places=6)
    padded = CalibrationSet.from_hits([("drone", drone)], ["A", "B"], n_places=6)  # group 1: C, B only
    assert padded.valid.tolist() == [[True, True, True], [True, True, False]] and padded.target.tolist() == [0, 1]
    assert data.views == ("drone", "text")
    # group 0: candidates A, B, C (drone), D (text); drone floor 0.5, text floor 0.6
    np.testing.assert_allclose(data.scores[0, 0, :4], [0.9, 0.7, 0.5, 0.5])
    np.testing.assert_allclose(data.scores[1, 0, :4], [0.6, 0.8, 0.6, 0.6])
    assert data.valid.all() and data.scores.shape == (2, 2, 4) and data.rest_count[0] == 2
    # group 1: candidates C, B (drone), A (text), then the true place E, which no query returned
    np.testing.assert_allclose(data.scores[0, 1], [0.4, 0.2, 0.2, 0.2])
    np.testing.assert_allclose(data.scores[1, 1], [0.25, 0.25, 0.3, 0.25])
    assert data.target.tolist() == [0, 3] and data.rest_count[1] == 2
    np.testing.assert_allclose(data.rest_floor, [[0.5, 0.2], [0.6, 0.25]])
    # four drone photos of a place fill four slots of one view: their scores add up
    once = CalibrationSet.from_hits([("drone", drone)], ["A", "E"], n_places=6)
    twice = CalibrationSet.from_hits([("drone", drone), ("drone", drone)], ["A", "E"], n_places=6)
    np.testing.assert_allclose(twice.scores, 2 * once.scores)
    np.testing.assert_allclose(twice.rest_floor, 2 * once.rest_floor)
    with pytest.raises(GeoBridgeError, match="got no hits"):
        CalibrationSet.from_hits([("drone", [[], drone[1]])], ["A", "E"], n_places=6)
    with pytest.raises(GeoBridgeError, match="more places than the gallery"):
        CalibrationSet.from_hits([("drone", drone)], ["A", "E"], n_places=2)


def test_compact_and_dense_calibration_fit_the_same_weights():
    """Candidates plus 'rest' places at the floor is the dense gallery softmax, exactly, in far less memory."""
    rng = np.random.default_rng(3)
    n, p, k = 200, 400, 8
    labels = rng.integers(0, p, n)
    true = {"drone": 5.0, "text": 1.5}
    dense, slots = {}, []
    for view, strength in (("drone", 0.4), ("text", 0.15)):
        raw = strength * np.eye(p)[labels] + rng.normal(0, 0.1, (n, p))  # (n, p)
        top = np.argsort(-raw, axis=1)[:, :k]  # the k best places, as a search would return
        floor = raw[np.arange(n)[:, None], top].min(1)
        dense[view] = np.maximum(np.where(np.isin(np.arange(p)[None], top), raw, -np.inf), floor[:, None])
        slots.append((view, [[hit(str(j), raw[i, j]) for j in top[i]] for i in range(n)]))
    compact = CalibrationSet.from_hits(slots, [str(j) for j in labels], n_places=p)
    assert compact.scores.shape[2] <= 2 * k + 1 < p
    a = fit_view_weights(CalibrationSet.from_dense(dense, labels))
    b = fit_view_weights(compact)
    assert a == pytest.approx(b, rel=1e-4) and set(a) == set(true)


def test_weighted_fuse_by_hand():
    weights = {"drone": 2.0, "text": 0.5}
    result = fuse(two_queries(), fusion="weighted", query_views=["drone", "text"], view_weights=weights)
    # filled (query 1 floor 0.5, query 2 floor 0.3): A (0.9, 0.3), B (0.7, 0.8), C (0.5, 0.3), D (0.5, 0.6),
    # E (0.5, 0.3); logit = 2 * s1 + 0.5 * s2
    expected = {"A": 1.95, "B": 1.8, "D": 1.3, "C": 1.15, "E": 1.15}
    assert [m.place_id for m in result.matches] == ["A", "B", "D", "C", "E"]
    for match in result.matches:
        assert match.score == pytest.approx(expected[match.place_id])
    assert result.confidence == pytest.approx(1.0 / sum(math.exp(v - 1.95) for v in expected.values()))
    assert result.fusion == "weighted" and (result.lat, result.lon) == (1.0, 1.0)
    # in a gallery of 8 places, 3 were returned by no query: each sits at the floor logit 2 * 0.5 + 0.5 * 0.3
    in_gallery = fuse(two_queries(), fusion="weighted", query_views=["drone", "text"], view_weights=weights,
                      gallery_places=8)
    total = sum(math.exp(v - 1.95) for v in expected.values()) + 3 * math.exp(1.15 - 1.95)
    assert in_gallery.confidence == pytest.approx(1.0 / total) and in_gallery.confidence < result.confidence
    # the weights decide: trust the second query more and B wins
    flipped = fuse(two_queries(), fusion="weighted", query_views=["drone", "text"],
                   view_weights={"drone": 0.5, "text": 2.0})
    assert flipped.matches[0].place_id == "B"
    with pytest.raises(GeoBridgeError, match="needs query_views and view_weights"):
        fuse(two_queries(), fusion="weighted")
    with pytest.raises(GeoBridgeError, match=r"no fusion weight for query view\(s\) \['street'\]"):
        fuse(two_queries(), fusion="weighted", query_views=["drone", "street"], view_weights=weights)


def test_weighted_fusion_beats_the_best_single_view_where_equal_weights_lose():
    """A strong view, a weak one and one without signal: fitted weights keep the strong view's lead."""
    rng = np.random.default_rng(1)
    n, p = 600, 50
    labels = rng.integers(0, p, n)
    onehot = np.eye(p)[labels]  # (n, p)
    scores = {
        "drone": 0.6 * onehot + rng.normal(0, 0.25, (n, p)),
        "text": 0.3 * onehot + rng.normal(0, 0.25, (n, p)),
        "street": rng.normal(0, 0.25, (n, p)),
    }
    fit, test = slice(0, n // 2), slice(n // 2, n)
    weights = fit_view_weights(CalibrationSet.from_dense({v: s[fit] for v, s in scores.items()}, labels[fit]))

    def r1(logits: np.ndarray) -> float:
        return float((logits.argmax(1) == labels[test]).mean())

    drone = r1(scores["drone"][test])
    equal = r1(sum(s[test] for s in scores.values()))
    weighted = r1(sum(weights[v] * s[test] for v, s in scores.items()))
    assert weights["street"] < 0.1 * weights["drone"] and weights["text"] > 0.2 * weights["drone"]
    assert weighted > drone + 0.03 > equal


def test_index_stores_validates_and_round_trips_fusion_weights(tmp_path):
    index = GeoIndex(4)
    index.add(np.eye(4), [{"place_id": f"p{i}", "lat": 0.0, "lon": float(i), "view": "satellite", "path": None}
                          for i in range(4)])
    assert index.fusion_weights is None and index.info()["fusion_weights"] is None
    index.save(tmp_path / "plain.gbx")
    assert GeoIndex.load(tmp_path / "plain.gbx").fusion_weights is None
    index.fusion_weights = {"drone": 12.5, "text": 3}
    index.save(tmp_path / "calibrated.gbx")
    loaded = GeoIndex.load(tmp_path / "calibrated.gbx")
    assert loaded.fusion_weights == {"drone": 12.5, "text": 3.0} and loaded.info()["fusion_weights"]["text"] == 3.0
    assert loaded.place_ids() == {"p0", "p1", "p2", "p3"}
    for bad, message in (({"aerial": 1.0}, "unknown view 'aerial'"), ({"drone": -1.0}, "finite and >= 0"),
                         ({"drone": "high"}, "must be a number"), ({}, "at least one view")):
        with pytest.raises(GeoBridgeError, match=message):
            index.fusion_weights = bad
    assert index.fusion_weights == {"drone": 12.5, "text": 3.0}  # a refused update changes nothing


def test_calibrate_locate_auto_and_cli(world, tmp_path, capsys):
    model, places, data = world["model"], world["places"], world["data"]
    index = build_index(model, places, views=("satellite",), show_progress_bar=False)
    target = places[2]
    queries = {"images": [("drone", target.images["drone"][0]), ("street", target.images["street"][0])],
               "texts": [target.texts[0]], "top_k": 3}
    assert locate(model, index, **queries).fusion == "score"  # auto, uncalibrated
    with pytest.raises(GeoBridgeError, match="no fusion weights"):
        locate(model, index, fusion="weighted", **queries)
    weights = calibrate_index(model, index, places)
    assert set(weights) == {"drone", "street", "text"} and all(w >= 0 for w in weights.values())
    index.fusion_weights = weights
    result = locate(model, index, **queries)  # auto -> weighted
    assert result.fusion == "weighted" and 0.0 < result.confidence <= 1.0
    scores = [m.score for m in result.matches]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(GeoBridgeError, match="at least 2 places"):
        calibrate_index(model, index, places[:1])
    with pytest.raises(GeoBridgeError, match="cannot calibrate satellite queries: the index holds only satellite"):
        calibrate_index(model, index, places, views=("drone", "satellite"))

    path = tmp_path / "sat.gbx"
    index.fusion_weights = None
    index.save(path)
    assert main(["index", "calibrate", str(path), "--checkpoint", str(world["run"]), "--data", str(data),
                 "--views", "drone,text", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(printed["fusion_weights"]) == {"drone", "text"}
    assert GeoIndex.load(path).fusion_weights == pytest.approx(printed["fusion_weights"])
    assert main(["locate", "--index", str(path), "--checkpoint", str(world["run"]), "--image",
                 str(target.images["drone"][0]), "--text", target.texts[0], "--top-k", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["fusion"] == "weighted"
    street = ["locate", "--index", str(path), "--checkpoint", str(world["run"]), "--image",
              str(target.images["street"][0]), "--image-view", "street"]
    assert main(street) == 0  # auto: no weight for street, so the queries are fused by score
    assert json.loads(capsys.readouterr().out)["fusion"] == "score"
    assert main([*street, "--fusion", "weighted"]) == 2
    assert "no fusion weight for query view(s) ['street']" in capsys.readouterr().err


def test_evaluate_fusion_cross_fits_weighted(world):
    model, places = world["model"], world["places"]
    index = build_index(model, places, views=("satellite",), show_progress_bar=False)
    metrics = evaluate_fusion(model, index, places, combos=("drone", "drone+text", "drone*1+street"),
                              fusions=("score", "weighted"), show_progress_bar=False)
    for combo in ("drone+text", "drone*1+street"):
        assert 0.0 <= metrics[f"{combo}/weighted/R@1"] <= 100.0 and metrics[f"{combo}/weighted/n"] == 6.0
    assert metrics["drone+text/weighted/w_drone"] >= 0 and "drone+text/weighted/w_text" in metrics
    with pytest.raises(GeoBridgeError, match="folds must be >= 2"):
        evaluate_fusion(model, index, places, combos=("drone+text",), folds=1)
