"""fuse() by hand, locate / evaluate_fusion with a tiny untrained model, and the index / locate CLI."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from geobridge.cli.main import main
from geobridge.errors import GeoBridgeError
from geobridge.index import GeoIndex, LocateResult, build_index, evaluate_fusion, fuse, locate


def hit(place_id: str, score: float, lat: float = 0.0, lon: float = 0.0, view: str = "satellite") -> dict:
    return {"place_id": place_id, "score": score, "lat": lat, "lon": lon, "view": view, "path": f"{place_id}.png"}


# ------------------------------------------------------------------------------------------------------------------
# fuse


def two_queries() -> list[list[dict]]:
    coords = {"A": (1.0, 1.0), "B": (2.0, 2.0), "C": (3.0, 3.0), "D": (4.0, 4.0), "E": (5.0, 5.0)}
    q1 = [hit("A", 0.9, *coords["A"]), hit("B", 0.7, *coords["B"]), hit("A", 0.6, *coords["A"], view="drone"),
          hit("C", 0.5, *coords["C"])]  # K-th score (floor) 0.5
    q2 = [hit("B", 0.8, *coords["B"]), hit("D", 0.6, *coords["D"]), hit("E", 0.3, *coords["E"])]  # floor 0.3
    return [q1, q2]


def test_fuse_score_uses_the_kth_score_as_floor():
    result = fuse(two_queries(), fusion="score", top_k=10, temperature=0.05)
    # A: (0.9 + 0.3) / 2, B: (0.7 + 0.8) / 2, C: (0.5 + 0.3) / 2, D: (0.5 + 0.6) / 2, E: (0.5 + 0.3) / 2
    expected = {"B": 0.75, "A": 0.6, "D": 0.55, "C": 0.4, "E": 0.4}
    assert [m.place_id for m in result.matches] == ["B", "A", "D", "C", "E"]  # the C/E tie goes by place_id
    for match in result.matches:
        assert match.score == pytest.approx(expected[match.place_id])
    assert [m.rank for m in result.matches] == [1, 2, 3, 4, 5]
    assert (result.lat, result.lon) == (2.0, 2.0) and result.matches[0].distance_km == 0.0
    assert result.matches[1].similarity == pytest.approx(0.9) and result.matches[1].view == "satellite"
    softmax = 1.0 / sum(math.exp((s - 0.75) / 0.05) for s in expected.values())
    assert result.confidence == pytest.approx(softmax)
    assert [m.place_id for m in fuse(two_queries(), fusion="score", top_k=2).matches] == ["B", "A"]


def test_fuse_max_and_single_query():
    result = fuse(two_queries(), fusion="max")
    assert [(m.place_id, round(m.score, 6)) for m in result.matches] == [
        ("A", 0.9), ("B", 0.8), ("D", 0.6), ("C", 0.5), ("E", 0.3)
    ]
    assert (result.lat, result.lon) == (1.0, 1.0)
    single = fuse(two_queries()[:1], fusion="score")  # one query: plain ranking by best similarity
    assert [m.place_id for m in single.matches] == ["A", "B", "C"]
    assert [m.score for m in single.matches] == pytest.approx([0.9, 0.7, 0.5])
    assert fuse([[], *two_queries()[:1]], fusion="score").matches[0].place_id == "A"  # a query with no hits is ignored


def test_weighted_scores_are_logits_and_say_so():
    weights = {"drone": 20.0, "text": 5.0}
    result = fuse(two_queries(), fusion="weighted", query_views=["drone", "text"], view_weights=weights)
    # logit = 20 * s_drone + 5 * s_text, floors 0.5 (drone) and 0.3 (text) as in score fusion
    expected = {"A": 20 * 0.9 + 5 * 0.3, "B": 20 * 0.7 + 5 * 0.8, "D": 20 * 0.5 + 5 * 0.6, "C": 20 * 0.5 + 5 * 0.3}
    for match in result.matches[:4]:
        assert match.score == pytest.approx(expected[match.place_id])
        assert abs(match.score) <= sum(weights.values())  # the stated bound
    logits = [m.score for m in result.matches]
    assert result.confidence == pytest.approx(1.0 / sum(math.exp(x - logits[0]) for x in logits))
    meaning = result.to_dict()["score_meaning"]
    assert meaning.startswith("weighted fusion: ") and "logit" in meaning and "exp(score_a - score_b)" in meaning
    for mode in ("score", "max", "consensus"):
        assert fuse(two_queries(), fusion=mode).to_dict()["score_meaning"].startswith(f"{mode} fusion: ")


def test_fuse_consensus_radius():
    # A and B lie 11.1 km apart; C, the single best match, is far from everything
    hits = [[hit("C", 0.92, -30.0, 100.0), hit("A", 0.90, 10.0, 20.0), hit("B", 0.88, 10.1, 20.0),
             hit("D", 0.50, 50.0, 0.0)]]
    assert fuse(hits, fusion="score").matches[0].place_id == "C"
    result = fuse(hits, fusion="consensus", radius_km=25.0, temperature=0.05)
    w = {p: math.exp((s - 0.92) / 0.05) for p, s in {"C": 0.92, "A": 0.90, "B": 0.88, "D": 0.50}.items()}
    total = sum(w.values())
    assert [m.place_id for m in result.matches] == ["A", "B", "C", "D"]  # A, B tie on the share: A scores higher
    assert result.matches[0].score == pytest.approx((w["A"] + w["B"]) / total)
    assert result.matches[2].score == pytest.approx(w["C"] / total)
    assert result.confidence == pytest.approx((w["A"] + w["B"]) / total)
    assert result.lat == pytest.approx((10.0 * w["A"] + 10.1 * w["B"]) / (w["A"] + w["B"]), abs=1e-4)
    assert result.lon == pytest.approx(20.0, abs=1e-6)
    assert 0 < result.matches[0].distance_km < 11.2 and result.fusion == "consensus"
    narrow = fuse(hits, fusion="consensus", radius_km=5.0)  # A and B no longer support each other
    assert narrow.matches[0].place_id == "C" and (narrow.lat, narrow.lon) == pytest.approx((-30.0, 100.0))


def test_fuse_errors_and_serialisation():
    with pytest.raises(GeoBridgeError, match="unknown fusion 'mean'"):
        fuse(two_queries(), fusion="mean")
    with pytest.raises(GeoBridgeError, match="no gallery item matched"):
        fuse([[], []])
    result = fuse(two_queries(), fusion="score", top_k=3)
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data) == {"lat", "lon", "confidence", "fusion", "score_meaning", "queries", "matches"}
    assert data["matches"][0]["place_id"] == "B" and "distance_km" in data["matches"][0]
    geo = json.loads(json.dumps(result.to_geojson()))
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == 4
    assert geo["features"][0]["properties"]["kind"] == "estimate"
    assert geo["features"][0]["properties"]["score_meaning"] == data["score_meaning"]
    assert geo["features"][0]["geometry"] == {"type": "Point", "coordinates": [2.0, 2.0]}
    assert [f["properties"]["rank"] for f in geo["features"][1:]] == [1, 2, 3]


# ------------------------------------------------------------------------------------------------------------------
# with a tiny model


def test_cli_build_info_and_locate(world, capsys):
    root, data = world["root"], world["data"]
    out = root / "sat.gbx"
    assert main(["index", "build", "--checkpoint", str(world["run"]), "--data", str(data), "--split", "test",
                 "--out", str(out), "--views", "satellite,drone", "--no-progress"]) == 0
    built = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert built["count"] == 12 and built["places"] == 6 and built["views"] == {"drone": 6, "satellite": 6}
    assert main(["index", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == 12 and info["countries"] == {"DE": 3, "NO": 3} and info["dim"] == 128
    assert info["model_info"]["checkpoint"] == str(world["run"].resolve())

    street = data / "street" / "p004" / "0.png"
    args = ["locate", "--index", str(out), "--image", str(street), "--image-view", "street",
            "--text", "a red tower", "--top-k", "4", "--fusion", "score"]  # --checkpoint from the index
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["matches"]) == 4 and 0.0 <= result["confidence"] <= 1.0
    scores = [m["score"] for m in result["matches"]]
    assert scores == sorted(scores, reverse=True)
    assert len({m["place_id"] for m in result["matches"]}) == 4
    top = result["matches"][0]
    assert (top["lat"], top["lon"]) == (result["lat"], result["lon"]) and top["distance_km"] == 0.0
    assert all(m["distance_km"] >= 0 for m in result["matches"])
    assert [q["view"] for q in result["queries"]] == ["street", "text"]
    assert result["score_meaning"].startswith("score fusion: ") and "in [-1, 1]" in result["score_meaning"]

    geo_out = root / "out.geojson"
    assert main(["locate", "--index", str(out), "--checkpoint", str(world["run"]), "--image", str(street),
                 "--view", "street", "--fusion", "consensus", "--top-k", "3", "--format", "geojson",
                 "--out", str(geo_out)]) == 0
    geo = json.loads(geo_out.read_text())
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == 4
    assert geo["features"][0]["properties"]["kind"] == "estimate"
    assert "in (0, 1]" in geo["features"][0]["properties"]["score_meaning"]  # consensus: a weight share
    for feature in geo["features"]:
        lon, lat = feature["geometry"]["coordinates"]
        assert -90 <= lat <= 90 and -180 <= lon <= 180

    assert main(["locate", "--index", str(out), "--image", str(root / "missing.png")]) == 2
    assert "argument --image: expected an existing file" in capsys.readouterr().err
    assert main(["index", "info", str(root / "nope.gbx")]) == 2
    assert "nope.gbx" in capsys.readouterr().err


def test_cli_build_from_image_folder(world, capsys):
    root, data = world["root"], world["data"]
    folder = root / "refs"
    folder.mkdir()
    rows = ["path,lat,lon,place_id,view"]
    for i in range(3):
        target = folder / f"tile{i}.png"
        target.write_bytes((data / "satellite" / f"p00{i}" / "0.png").read_bytes())
        rows.append(f"tile{i}.png,{40 + i},{-3 - i},site{i},satellite")
    (folder / "coords.csv").write_text("\n".join(rows) + "\n")
    out = root / "folder.gbx"
    assert main(["index", "build", "--checkpoint", str(world["run"]), "--images", str(folder), "--out", str(out),
                 "--no-progress"]) == 0
    capsys.readouterr()
    index = GeoIndex.load(out)
    assert len(index) == 3 and sorted(r["place_id"] for _, r in index.records()) == ["site0", "site1", "site2"]
    (folder / "tile1.png").write_bytes(b"not a png at all")
    assert main(["index", "build", "--checkpoint", str(world["run"]), "--images", str(folder), "--out",
                 str(root / "broken.gbx"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "tile1.png" in err and "unreadable" in err
    assert not (root / "broken.gbx").exists()
    (folder / "coords.csv").write_text("path,lat,lon\ntile0.png,95,0\n")
    assert main(["index", "build", "--checkpoint", str(world["run"]), "--images", str(folder), "--out",
                 str(root / "broken.gbx"), "--no-progress"]) == 2
    assert "coords.csv:2" in capsys.readouterr().err


def test_locate_self_match_and_default_view_exclusion(world):
    model, places = world["model"], world["places"]
    index = build_index(model, places, views=("satellite", "drone"), show_progress_bar=False)
    assert index.model_info["embed_dim"] == 128 and len(index) == 12
    target = places[3]
    image = target.images["satellite"][0]
    own = locate(model, index, images=[("satellite", Image.open(image))], exclude_views=(), top_k=5)
    assert isinstance(own, LocateResult)
    assert own.matches[0].place_id == target.place_id and own.matches[0].similarity == pytest.approx(1.0, abs=1e-4)
    assert own.matches[0].path == str(image) and own.queries[0]["image"] == "<image 32x32>"
    cross = locate(model, index, images=[("satellite", image)], top_k=5)  # default: only the other views
    assert {m.view for m in cross.matches} == {"drone"} and cross.queries[0]["excluded_views"] == ["satellite"]
    fused = locate(model, index, images=[("drone", target.images["drone"][0]), ("street", target.images["street"][0])],
                   texts=[target.texts[0]], fusion="consensus", top_k=3)
    assert len(fused.matches) == 3 and len(fused.queries) == 3
    with pytest.raises(GeoBridgeError, match="nothing to locate"):
        locate(model, index)
    with pytest.raises(GeoBridgeError, match="unknown image view"):
        locate(model, index, images=[("aerial", image)])


def test_evaluate_fusion_keys_and_ranges(world):
    model, places = world["model"], world["places"]
    index = build_index(model, places, views=("satellite",), show_progress_bar=False)
    metrics = evaluate_fusion(model, index, places, top_k=5, show_progress_bar=False)
    for single in ("drone", "street", "text"):
        assert f"{single}/R@1" in metrics and metrics[f"{single}/n"] == 6.0
    assert "satellite/R@1" not in metrics  # a satellite query cannot reach a satellite-only gallery
    for combo in ("drone+street", "drone+street+text"):
        for mode in ("score", "consensus", "max"):
            assert f"{combo}/{mode}/R@1" in metrics and f"{combo}/{mode}/median_km" in metrics
    for key, value in metrics.items():
        assert math.isfinite(value)
        if key.endswith(("/R@1", "/acc@25km")):
            assert 0.0 <= value <= 100.0
        if key.endswith("/median_km"):
            assert value >= 0.0
    same = evaluate_fusion(model, index, places, combos=("satellite",), exclude_same_view=False)
    assert same == {"satellite/R@1": 100.0, "satellite/acc@25km": 100.0, "satellite/median_km": 0.0,
                    "satellite/n": 6.0}
    with pytest.raises(GeoBridgeError, match="unknown view 'aerial'"):
        evaluate_fusion(model, index, places, combos=("drone+aerial",))


def test_combinations_with_several_items_of_one_view(world):
    from geobridge.index.fusion_eval import _parse_combo

    assert _parse_combo("drone*2+text") == (("drone", 0), ("drone", 1), ("text", 0))
    assert _parse_combo("drone+drone") == (("drone", 0), ("drone", 1))
    with pytest.raises(GeoBridgeError, match="positive count"):
        _parse_combo("drone*0")
    model, places = world["model"], world["places"]
    index = build_index(model, places, views=("satellite",), show_progress_bar=False)
    metrics = evaluate_fusion(model, index, places, combos=("drone", "text*1", "drone*2"), show_progress_bar=False)
    assert "text*1/R@1" in metrics and metrics["text*1/n"] == 6.0
    assert not any(k.startswith("drone*2") for k in metrics)  # one drone photo per place: nothing to fuse


def test_cli_locate_decodes_16_bit_rotated_and_bad_images_like_every_reader(world, capsys, tmp_path):
    from _image_files import encode, expected8, gradient16, gradient16_png, png_claiming, rotated_jpeg

    out = tmp_path / "sat.gbx"
    assert main(["index", "build", "--checkpoint", str(world["run"]), "--data", str(world["data"]), "--split", "test",
                 "--out", str(out), "--views", "satellite", "--no-progress"]) == 0
    capsys.readouterr()

    def located(path) -> list[tuple[str, float]]:
        assert main(["locate", "--index", str(out), "--image", str(path), "--top-k", "6"]) == 0
        return [(m["place_id"], m["score"]) for m in json.loads(capsys.readouterr().out)["matches"]]

    files = {
        "g16.png": gradient16_png(48, 48),
        "g8.png": encode(Image.fromarray(expected8(gradient16(48, 48)))),
        "r.jpg": rotated_jpeg(6)[0],
        "u.png": encode(Image.fromarray(rotated_jpeg(6)[1])),
        "cut.png": gradient16_png(48, 48)[:-60],
        "over.png": png_claiming(7000, 7000),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert located(tmp_path / "g16.png") == located(tmp_path / "g8.png")
    assert located(tmp_path / "r.jpg") == located(tmp_path / "u.png")
    for name, message in (("cut.png", "truncated"), ("over.png", "too large")):
        assert main(["locate", "--index", str(out), "--image", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert message in err and str(tmp_path / name) in err and "Traceback" not in err
