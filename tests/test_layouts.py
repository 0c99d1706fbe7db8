"""The benchmark layouts end to end: the generator writes a tiny world in each layout, the loaders read it back with
the counts per role that the generator planned, and ``data check`` passes on it and names the problem in broken
copies (missing split file, missing image, wrong folder, unreadable .mat)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from geobridge.cli.main import main
from geobridge.data import (
    CVACTDataset,
    CVUSADataset,
    GeoText1652Dataset,
    University1652Dataset,
    VIGORDataset,
    check_dataset,
    load_eval_split,
    load_places,
)
from geobridge.data.cvact import utm_to_latlon
from geobridge.data.university1652 import read_kml_point
from geobridge.data.vigor import pano_latlon, tile_latlon
from geobridge.errors import DataError
from geobridge.synth import WorldConfig, generate_world, plan_places
from geobridge.synth.layouts import assign_roles

SIZE = 24


def _config(fmt: str, *, places: int, test: int, fraction: float = 0.25) -> WorldConfig:
    return WorldConfig(places=places, test_places=test, image_size=SIZE, drone_views=2, texts_per_place=2,
                       seed=3, countries=("DE", "JP"), format=fmt, distractor_fraction=fraction, workers=1)


def _roles(config: WorldConfig) -> dict[str, list[str]]:
    """The place ids of each role, planned independently of what was written."""
    out: dict[str, list[str]] = {"train": [], "query": [], "distractor": []}
    for job in assign_roles(plan_places(config), config.distractor_fraction):
        out[job.role].append(job.spec.place_id)
    return out


def _world(factory, config: WorldConfig) -> Path:
    root = factory.mktemp(config.format)
    generate_world(root, config, show_progress_bar=False)
    return root


def _broken(tmp_path: Path, root: Path) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(root, copy)
    return copy


def _kinds(root: Path, fmt: str | None = None) -> list[tuple[str, str]]:
    return [(p.kind, p.path) for p in check_dataset(root, fmt=fmt, show_progress_bar=False).problems]


# --------------------------------------------------------------------------------------------- University-1652

U_CONFIG = _config("university1652", places=10, test=6, fraction=0.34)


@pytest.fixture(scope="module")
def u1652(tmp_path_factory):
    return _world(tmp_path_factory, U_CONFIG)


def test_university1652_roles_and_distractors(u1652):
    roles = _roles(U_CONFIG)
    assert len(roles["query"]) == 4 and len(roles["distractor"]) == 2  # round(0.34 * 6) gallery-only buildings
    test = University1652Dataset(u1652, split="test")
    assert [p.place_id for p in test.places_for("query")] == sorted(roles["query"])
    assert [p.place_id for p in test.places_for("gallery")] == sorted(roles["query"] + roles["distractor"])
    d2s = test.eval_split("drone", "satellite")
    assert len(d2s.queries) == 4 * U_CONFIG.drone_views and len(d2s.gallery) == 6
    assert d2s.distractor_ids == frozenset(roles["distractor"])
    assert {q.place_id for q in d2s.queries} == set(roles["query"])
    assert all(q.group == q.place_id and q.path.parent.parent.name == "query_drone" for q in d2s.queries)
    assert all(g.path.parent.parent.name == "gallery_satellite" for g in d2s.gallery)
    s2d = test.eval_split("satellite", "drone")
    assert len(s2d.queries) == 4 and len(s2d.gallery) == 6 * U_CONFIG.drone_views
    assert s2d.distractor_ids == frozenset(roles["distractor"])
    # no merged pool: the test split is read by role only
    with pytest.raises(DataError, match="fixed"):
        test.places  # noqa: B018
    with pytest.raises(DataError, match="role"):
        load_places(u1652, fmt="university1652", split="test")
    assert len(load_places(u1652, fmt="university1652", split="test", role="gallery")) == 6
    train = load_places(u1652, fmt="university1652")
    assert sorted(p.place_id for p in train) == sorted(roles["train"])
    assert all(len(p.images["drone"]) == 2 and p.texts and p.lat is not None for p in train)
    specs = {s.place_id: s for s in plan_places(U_CONFIG)}
    assert all((q.lat, q.lon) == (specs[q.place_id].lat, specs[q.place_id].lon) for q in d2s.queries)
    split = load_eval_split(u1652, fmt="university1652", query_view="street", gallery_view="satellite")
    assert len(split.queries) == 4 and split.name.endswith("street->satellite")


def test_university1652_google_kml_and_extra_gallery(u1652, tmp_path):
    root = _broken(tmp_path, u1652)
    first = sorted(_roles(U_CONFIG)["train"])[0]
    (root / "train" / "google" / first).mkdir(parents=True)
    shutil.copy(root / "train" / "street" / first / "street-0.png", root / "train" / "google" / first / "g.png")
    places = {p.place_id: p for p in load_places(root, fmt="university1652", include_google=True)}
    assert len(places[first].images["street"]) == 2
    assert len({p.place_id: p for p in load_places(root, fmt="university1652")}[first].images["street"]) == 1
    # coordinates from the release's KML files when there is no coords.csv
    (root / "coords.csv").unlink()
    kml = ('<kml xmlns="http://www.opengis.net/kml/2.2" xmlns:gx="http://www.google.com/kml/ext/2.2"><Document>'
           "<gx:Tour><gx:Playlist><gx:FlyTo><LookAt><longitude>151.2093</longitude><latitude>-33.8688</latitude>"
           "</LookAt></gx:FlyTo></gx:Playlist></gx:Tour></Document></kml>")
    (root / "train" / "drone" / first / f"{first}.kml").write_text(kml)
    point = '<kml><Placemark><Point><coordinates>2.35,48.85,0</coordinates></Point></Placemark></kml>'
    (root / "kml").mkdir()
    second = sorted(_roles(U_CONFIG)["train"])[1]
    (root / "kml" / f"Tour_{second}.kml").write_text(point)
    places = {p.place_id: p for p in load_places(root, fmt="university1652")}
    assert (places[first].lat, places[first].lon) == (-33.8688, 151.2093)
    assert (places[second].lat, places[second].lon) == (48.85, 2.35)
    (root / "kml" / "bad.kml").write_text("<kml><unclosed></kml>")
    with pytest.raises(DataError, match="bad.kml"):
        read_kml_point(root / "kml" / "bad.kml")
    report = check_dataset(root, show_progress_bar=False)
    assert [p.kind for p in report.problems] == ["bad-coordinates"] and "bad.kml" in report.problems[0].message
    (root / "kml" / "bad.kml").unlink()
    # a folder of extra unlabelled gallery images (the 160k extension)
    extra = root / "test" / "gallery_satellite_160k"
    extra.mkdir()
    shutil.copy(next((root / "train" / "satellite" / first).iterdir()), extra / "x.png")
    split = University1652Dataset(root, split="test").eval_split("drone", "satellite", extra_gallery=extra)
    assert len(split.gallery) == 7 and split.gallery[-1].place_id is None
    assert check_dataset(root, show_progress_bar=False).ok  # gallery_* extensions are allowed


def test_university1652_check(u1652, tmp_path):
    assert check_dataset(u1652, show_progress_bar=False).ok
    assert check_dataset(u1652, show_progress_bar=False).stats["distractor_buildings"] == 2
    root = _broken(tmp_path, u1652)
    query = sorted(_roles(U_CONFIG)["query"])[0]
    shutil.rmtree(root / "test" / "gallery_satellite" / query)  # a query without its positive
    for image in (root / "test" / "query_drone" / query).iterdir():
        image.unlink()
    (root / "test" / "gallery_drone").rename(root / "test" / "drone")  # wrong folder name
    kinds = _kinds(root)
    assert ("wrong-layout", str(root / "test" / "drone")) in kinds
    assert ("missing-image", str(root / "test" / "query_drone" / query)) in kinds
    assert ("no-positive", str(root / "test" / "query_drone" / query)) in kinds
    assert ("no-positive", str(root / "test" / "query_street" / query)) in kinds


# --------------------------------------------------------------------------------------------- GeoText-1652

G_CONFIG = _config("geotext1652", places=8, test=4)


@pytest.fixture(scope="module")
def geotext(tmp_path_factory):
    return _world(tmp_path_factory, G_CONFIG)


def test_geotext1652_json_schema(geotext):
    roles = _roles(G_CONFIG)
    train = json.loads((geotext / "train.json").read_text())
    test = json.loads((geotext / "test_951_version.json").read_text())
    images_per_place = G_CONFIG.drone_views + 2
    assert len(train) == len(roles["train"]) * images_per_place * G_CONFIG.texts_per_place  # one caption per entry
    assert all(isinstance(e["caption"], str) for e in train) and all(isinstance(e["caption"], list) for e in test)
    assert len(test) == (len(roles["query"]) + len(roles["distractor"])) * images_per_place
    assert all(len(e["sentences"]) == len(e["bboxes"]) and e["bboxes"][0] is not None for e in train)
    assert not any(part in {"drone", "satellite", "street"} for e in test for part in e["image"].split("/"))
    assert (geotext / "test" / f"gallery_no_train({len(roles['distractor'])})").is_dir()


def test_geotext1652_loader(geotext):
    roles = _roles(G_CONFIG)
    train = GeoText1652Dataset(geotext, split="train")
    places = train.places
    assert [p.place_id for p in places] == sorted(roles["train"])
    assert all(len(p.images["drone"]) == 2 and len(p.images["satellite"]) == 1 and len(p.images["street"]) == 1
               for p in places)
    # captions per building: 2 per drone image (distinct headings) + 2 satellite + 2 street
    assert all(len(p.texts) == G_CONFIG.texts_per_place * (G_CONFIG.drone_views + 2) for p in places)
    entry = train.entries[0]
    assert entry.grounding[0].bbox == (0.5, 0.5, 0.4, 0.4) and all(g.bbox is None for g in entry.grounding[1:])
    test = GeoText1652Dataset(geotext, split="test")
    t2d = test.eval_split("text", "drone")
    n_test = len(roles["query"]) + len(roles["distractor"])
    assert len(t2d.gallery) == n_test * G_CONFIG.drone_views
    assert len(t2d.queries) == len(t2d.gallery) * G_CONFIG.texts_per_place
    keys = {g.key: g for g in t2d.gallery}
    assert all(keys[q.target].place_id == q.place_id for q in t2d.queries)
    d2t = test.eval_split("drone", "text")
    assert len(d2t.queries) == len(t2d.gallery) and all(g.target is None for g in d2t.gallery)
    assert len(test.eval_split("text", "satellite").gallery) == n_test
    # train.json lists each image once per caption: one item per image, all its captions as queries
    t2d_train = train.eval_split("text", "drone")
    assert len(t2d_train.gallery) == len(roles["train"]) * G_CONFIG.drone_views
    assert len(t2d_train.queries) == len(t2d_train.gallery) * G_CONFIG.texts_per_place
    assert len(load_places(geotext, fmt="geotext1652")) == len(roles["train"])


def test_geotext1652_check(geotext, tmp_path):
    assert check_dataset(geotext, show_progress_bar=False).ok
    root = _broken(tmp_path, geotext)
    gone = json.loads((root / "train.json").read_text())[0]["image"]
    (root / gone).unlink()
    kinds = _kinds(root)
    assert kinds == [("missing-image", str(root / "train.json"))]
    (root / "train.json").unlink()
    assert ("missing-split-file", str(root / "train.json")) in _kinds(root, "geotext1652")


# --------------------------------------------------------------------------------------------- CVUSA


def test_cvusa_world_loader_and_check(tmp_path, capsys):
    root = tmp_path / "cvusa"
    assert main(["synth", "--out", str(root), "--places", "6", "--test-places", "3", "--image-size", str(SIZE),
                 "--format", "cvusa", "--workers", "1", "--quiet"]) == 0
    lines = (root / "splits" / "val-19zl.csv").read_text().split()
    assert len(lines) == 3 and all(len(line.split(",")) == 3 for line in lines)
    train = CVUSADataset(root, split="train")
    assert len(train.places) == 3 and all(set(p.images) == {"satellite", "street"} for p in train.places)
    split = load_eval_split(root, fmt="cvusa", query_view="street", gallery_view="satellite")
    assert len(split.queries) == len(split.gallery) == 3
    assert [q.place_id for q in split.queries] == [g.place_id for g in split.gallery]
    assert load_eval_split(root, fmt="cvusa", query_view="satellite", gallery_view="street").query_view == "satellite"
    assert main(["data", "check", str(root), "--quiet"]) == 0
    broken = _broken(tmp_path, root)
    (broken / "splits" / "train-19zl.csv").unlink()
    (broken / "bingmap").rename(broken / "bingmaps")
    kinds = {k for k, _ in _kinds(broken)}
    assert ("missing-split-file", str(broken / "splits" / "train-19zl.csv")) in _kinds(broken)
    assert kinds == {"missing-split-file", "missing-image"}
    with pytest.raises(DataError, match="train-19zl.csv"):
        CVUSADataset(broken, split="train")
    assert ("missing-split-file", str(root / "splits" / "train-19zl.csv")) not in _kinds(root, "cvusa")
    assert _kinds(root, "vigor") == [("wrong-layout", str(root / "splits"))]  # the wrong --format: a named error
    assert main(["data", "check", str(root), "--format", "cvact", "--quiet"]) == 1
    assert "ACT_data.mat" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------- CVACT

A_CONFIG = _config("cvact", places=8, test=4)


def _haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    p1, p2 = math.radians(a[0]), math.radians(b[0])
    dp, dl = p2 - p1, math.radians(b[1] - a[1])
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371008.8 * math.asin(math.sqrt(h))


def test_cvact_mat_splits_and_coordinates(tmp_path_factory, tmp_path):
    root = _world(tmp_path_factory, A_CONFIG)
    roles = _roles(A_CONFIG)
    train, val, test = (CVACTDataset(root, split=s) for s in ("train", "val", "test"))
    assert len(train.places) == len(roles["train"]) and len(val.places) == len(roles["query"])
    assert len(test.places) == len(roles["query"]) + len(roles["distractor"])
    assert test.images.name == "ANU_data_test" and val.images.name == "ANU_data_small"
    split = load_eval_split(root, fmt="cvact", query_view="street", gallery_view="satellite", split="val")
    assert len(split.queries) == len(split.gallery) == len(roles["query"])
    # lat/lon from UTM: Canberra, and neighbours on the 120 m grid are 120 m apart on the ellipsoid (to 0.3 m)
    lat, lon = train.places[0].lat, train.places[0].lon
    assert -35.5 < lat < -35.0 and 149.0 < lon < 149.3
    p, q = utm_to_latlon(693000.0, 6090000.0), utm_to_latlon(693120.0, 6090000.0)
    assert _haversine_m(p, q) == pytest.approx(120.0, abs=0.3)
    assert _haversine_m(p, utm_to_latlon(693000.0, 6090120.0)) == pytest.approx(120.0, abs=0.3)
    assert check_dataset(root, show_progress_bar=False).ok
    broken = _broken(tmp_path, root)
    (broken / "ANU_data_small" / "streetview" / f"{train.places[0].place_id}_grdView.jpg").unlink()
    assert [k for k, _ in _kinds(broken)] == ["missing-image"]
    assert len(CVACTDataset(broken, split="train").places) == len(roles["train"]) - 1  # left out, as published
    (broken / "ACT_data.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    assert _kinds(broken) == [("unreadable-mat", str(broken / "ACT_data.mat"))]
    with pytest.raises(DataError, match="ACT_data.mat"):
        CVACTDataset(broken)


# --------------------------------------------------------------------------------------------- VIGOR

V_CONFIG = _config("vigor", places=16, test=8)
TILE_M = 100.0  # a synthetic tile covers half of the 200 m satellite render


@pytest.fixture(scope="module")
def vigor(tmp_path_factory):
    return _world(tmp_path_factory, V_CONFIG)


def _offset_from_names(pano: str, tile: str) -> tuple[float, float]:
    (plat, plon), (tlat, tlon) = pano_latlon(pano), tile_latlon(tile)
    return (plon - tlon) * 111320.0 * math.cos(math.radians(tlat)), (plat - tlat) * 111320.0


def test_vigor_same_area_semi_positives_and_offsets(vigor):
    roles = _roles(V_CONFIG)
    split = VIGORDataset(vigor, mode="same", split="test").eval_split()
    assert len(split.queries) == len(roles["query"]) and len(split.gallery) == 4 * V_CONFIG.places
    keys = {g.key for g in split.gallery}
    assert all(len(split.semi_positives[q.key]) == 3 and set(split.semi_positives[q.key]) <= keys
               for q in split.queries)
    assert all(q.place_id in keys and q.place_id not in split.semi_positives[q.key] for q in split.queries)
    for q in split.queries:
        east, north = q.offset_m
        assert _offset_from_names(q.path.name, q.place_id.split("/")[1]) == pytest.approx((east, north), abs=0.05)
        assert max(abs(east), abs(north)) < TILE_M / 4  # the positive tile holds the panorama in its central part
    near = {q.place_id for q in split.queries} | {t for ts in split.semi_positives.values() for t in ts}
    assert split.distractor_ids == frozenset(keys - near)
    assert len(split.distractor_ids) == 4 * (V_CONFIG.places - len(roles["query"]))  # tiles of places not queried
    for q in split.queries:  # semi-positive tiles hold the panorama, outside their central part
        for semi in split.semi_positives[q.key]:
            east, north = _offset_from_names(q.path.name, semi.split("/")[1])
            assert TILE_M / 4 - 1 < max(abs(east), abs(north)) < TILE_M / 2 + 1e-6


def test_vigor_cross_area_and_train(vigor):
    roles = _roles(V_CONFIG)
    cross = load_eval_split(vigor, fmt="vigor", query_view="street", gallery_view="satellite", mode="cross")
    cities = {q.key.split("/")[0] for q in cross.queries} | {g.key.split("/")[0] for g in cross.gallery}
    assert cities == {"Chicago", "SanFrancisco"}
    jobs = assign_roles(plan_places(V_CONFIG), V_CONFIG.distractor_fraction)
    in_test_cities = [j for j in jobs if j.number % 4 in (2, 3)]
    assert len(cross.gallery) == 4 * len(in_test_cities)
    assert len(cross.queries) == sum(j.role != "distractor" for j in in_test_cities)
    same_train = load_places(vigor, fmt="vigor", split="train")
    assert len(same_train) == len(roles["train"]) and all(len(p.images["street"]) == 1 for p in same_train)
    cross_train = load_places(vigor, fmt="vigor", split="train", mode="cross")
    assert {p.country for p in cross_train} == {"NewYork", "Seattle"}


def test_vigor_check(vigor, tmp_path):
    assert check_dataset(vigor, show_progress_bar=False).ok
    root = _broken(tmp_path, vigor)
    (root / "splits" / "NewYork" / "same_area_balanced_test.txt").unlink()
    (root / "splits" / "Chicago").rename(root / "splits" / "Chicag0")
    pano = next((root / "Seattle" / "panorama").iterdir())
    pano.unlink()
    kinds = _kinds(root)
    assert ("missing-split-file", str(root / "splits" / "NewYork" / "same_area_balanced_test.txt")) in kinds
    assert ("wrong-layout", str(root / "splits" / "Chicag0")) in kinds
    assert ("missing-image", str(root / "Seattle" / "panorama")) in kinds
    with pytest.raises(DataError, match="same_area_balanced_test.txt"):
        VIGORDataset(root, mode="same", split="test")


def test_vigor_label_file_errors_name_the_line(vigor, tmp_path):
    root = _broken(tmp_path, vigor)
    path = root / "splits" / "NewYork" / "pano_label_balanced.txt"
    path.write_text(path.read_text() + "only_three fields here\n")
    with pytest.raises(DataError, match=r"pano_label_balanced.txt:\d+: expected 13 fields"):
        VIGORDataset(root, mode="cross", split="train", cities=("NewYork",))


def test_unknown_format_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset format 'kitti'"):
        load_places(tmp_path, fmt="kitti")
    with pytest.raises(ValueError, match="no direction drone->text"):
        load_eval_split(tmp_path, fmt="cvusa", query_view="drone", gallery_view="text")
    assert np.isfinite(utm_to_latlon(500000.0, 10000000.0)).all()  # the zone's central meridian at the equator


def test_split_files_with_a_non_utf8_byte_are_named_errors(tmp_path):
    from geobridge.data.cvusa import read_pairs
    from geobridge.data.vigor import read_labels, read_list

    bad = tmp_path / "split.txt"
    bad.write_bytes(b"bingmap/19/0000001.jpg,streetview/panos/0000001\xe9.jpg\n")
    for reader in (read_pairs, read_labels, read_list):
        with pytest.raises(DataError, match="split.txt:1: not valid UTF-8"):
            reader(bad)
    good = tmp_path / "good.csv"
    good.write_text("\n  \nbingmap/19/1.jpg,streetview/panos/1.jpg,annotations/1.png\r\n")
    assert read_pairs(good) == [("bingmap/19/1.jpg", "streetview/panos/1.jpg")]
