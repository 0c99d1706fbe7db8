"""Every protocol end to end: a tiny world generated in the protocol's layout, the tiny model, ``run_protocol`` (or
``geobridge eval``), and the brute-force versions of the official scripts (tests/test_protocols.py) run on the same
embeddings.

The references get their labels from the layout's own files, not from the loaders: University-1652 folder names
(Sample4Geo's -1 for gallery buildings that no query shows), CVUSA's split CSV, CVACT's ``ACT_data.mat``, VIGOR's
label files (positive, then semi-positive tiles) and GeoText-1652's test JSON (``img2building`` from ``image_id``).
The model's embeddings are recorded as the protocol computes them, so both sides rank the same vectors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
from test_protocols import (
    _haversine_m,
    _official_geotext,
    _official_safa,
    _official_sample4geo_cvusa,
    _official_sample4geo_vigor,
    _official_u1652,
    _official_vigor,
)

from geobridge.data import load_eval_split
from geobridge.errors import GeoBridgeError
from geobridge.eval.protocol_run import run_protocol
from geobridge.protocols import DEFAULT_PROTOCOLS, get_protocol, list_protocols
from geobridge.synth import WorldConfig, generate_world, plan_places
from geobridge.synth.layouts import assign_roles

SIZE = 24
U_PROTOCOLS = ("university1652", "sample4geo-university")
CVACT_PROTOCOLS = (("cvact", "valSet", "ANU_data_small"), ("cvact-test", "valSetAll", "ANU_data_test"))
VIGOR_PROTOCOLS = ("vigor-same", "vigor-cross", "sample4geo-vigor-same", "sample4geo-vigor-cross")
SINGLE_PROTOCOLS = ("geotext1652", "cvusa")  # one test each below


def _config(fmt: str, *, places: int, test: int, fraction: float = 0.25) -> WorldConfig:
    return WorldConfig(places=places, test_places=test, image_size=SIZE, drone_views=2, texts_per_place=2, seed=5,
                       countries=("DE", "JP"), format=fmt, distractor_fraction=fraction, workers=1)


def _roles(config: WorldConfig) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"train": [], "query": [], "distractor": []}
    for job in assign_roles(plan_places(config), config.distractor_fraction):
        out[job.role].append(job.spec.place_id)
    return out


class _Recorder:
    """Wraps the model; remembers the embedding of every image path and text it encoded."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.seen: dict[tuple[str, str], np.ndarray] = {}

    def encode(self, items, *, view, batch_size=64, show_progress_bar=None):  # noqa: ANN001, ANN201
        out = np.asarray(self.model.encode(items, view=view, batch_size=batch_size, show_progress_bar=False))
        for item, row in zip(items, out, strict=True):
            self.seen[(view, str(item))] = row
        return out

    def rows(self, view: str, items: list[Any]) -> np.ndarray:
        """(N, D) float64 unit rows of ``items`` (paths or texts), as the official scripts normalise them."""
        x = np.stack([self.seen[(view, str(item))] for item in items]).astype(np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def model(tiny_model_config):
    import torch

    from geobridge.models import GeoBridge

    torch.manual_seed(0)
    return GeoBridge(tiny_model_config).eval()


def _world(factory, config: WorldConfig) -> Path:
    root = factory.mktemp(config.format)
    generate_world(root, config, show_progress_bar=False)
    return root


def _run(model: Any, name: str, root: Path, out: Path, **options: Any) -> tuple[dict[str, Any], _Recorder]:
    recorder = _Recorder(model)
    protocol = get_protocol(name).with_options(**options)
    metrics = run_protocol(recorder, protocol, root, out, show_progress_bar=False)
    report = (out / "report.md").read_text()
    for direction in get_protocol(name).directions:
        key = f"{direction[0]}->{direction[1]}"
        if f"{key}/R@1%_K" in metrics:  # the K of R@1% is printed per direction
            row = f"| `{key}` | {int(metrics[f'{key}/n_queries'])} | {int(metrics[f'{key}/n_gallery'])} | " \
                  f"{int(metrics[f'{key}/R@1%_K'])} |"
            assert row in report
    return metrics, recorder


def _close(metrics: dict[str, Any], direction: str, ref: dict[str, float], keys: tuple[str, ...]) -> None:
    for key in keys:
        assert metrics[f"{direction}/{key}"] == pytest.approx(ref[key], abs=1e-9), (direction, key)


# --------------------------------------------------------------------------------------------- University-1652

U_CONFIG = _config("university1652", places=12, test=9, fraction=0.34)


@pytest.fixture(scope="module")
def u1652(tmp_path_factory):
    return _world(tmp_path_factory, U_CONFIG)


def _folder_items(root: Path, folder: str) -> list[tuple[Path, int]]:
    """Every image of ``test/<folder>/<building>/`` with its building as a number (evaluate_gpu reads the folder
    name as an int; the synthetic ids are ``p00003``, so the digits)."""
    base = root / "test" / folder
    return [(p, int(b.name.lstrip("p"))) for b in sorted(base.iterdir()) for p in sorted(b.iterdir()) if p.is_file()]


@pytest.mark.parametrize("name", U_PROTOCOLS)
def test_u1652_protocols_on_a_generated_world_with_distractors(u1652, model, tmp_path, name):
    roles = _roles(U_CONFIG)
    n_query, n_distractor = len(roles["query"]), len(roles["distractor"])
    assert (n_query, n_distractor) == (6, 3)
    metrics, rec = _run(model, name, u1652, tmp_path / "report")
    # the protocol's counts: query_<view> against gallery_<view>, distractor buildings in the gallery only
    expected = {"drone->satellite": (n_query * U_CONFIG.drone_views, n_query + n_distractor),
                "satellite->drone": (n_query, (n_query + n_distractor) * U_CONFIG.drone_views)}
    for direction, (nq, ng) in expected.items():
        assert (metrics[f"{direction}/n_queries"], metrics[f"{direction}/n_gallery"]) == (nq, ng)
        q, g = direction.split("->")
        queries, gallery = _folder_items(u1652, f"query_{q}"), _folder_items(u1652, f"gallery_{g}")
        ql = np.array([b for _, b in queries])
        gl = np.array([b for _, b in gallery])
        if name == "sample4geo-university":  # U1652DatasetEval: -1 for gallery ids absent from the queries
            gl = np.where(np.isin(gl, ql), gl, -1)
            assert (gl == -1).sum() == n_distractor * (U_CONFIG.drone_views if g == "drone" else 1)
        # the recorder's rows follow the files; the protocol's item order is its own
        ref = _official_u1652(rec.rows(q, [p for p, _ in queries]), ql, rec.rows(g, [p for p, _ in gallery]), gl)
        _close(metrics, direction, ref, ("R@1", "R@5", "R@1%", "AP"))
        if ng >= 10:
            _close(metrics, direction, ref, ("R@10",))
        assert metrics[f"{direction}/R@1%_K"] == ref["K"] == round(ng * 0.01) + 1


def test_u1652_multi_query_and_160k_style_extra_gallery(u1652, model, tmp_path):
    metrics, rec = _run(model, "university1652", u1652, tmp_path / "multi", multi_query=True)
    queries, gallery = _folder_items(u1652, "query_drone"), _folder_items(u1652, "gallery_satellite")
    unit = rec.rows("drone", [p for p, _ in queries])
    buildings = sorted({b for _, b in queries})
    merged = np.stack([unit[[b == k for _, b in queries]].mean(axis=0) for k in buildings])
    merged /= np.linalg.norm(merged, axis=1, keepdims=True)
    gl = np.array([b for _, b in gallery])
    ref = _official_u1652(merged, np.array(buildings), rec.rows("satellite", [p for p, _ in gallery]), gl)
    assert metrics["drone->satellite/n_queries"] == len(buildings) == 6
    _close(metrics, "drone->satellite", ref, ("R@1", "R@5", "R@1%", "AP"))
    # unlabelled extra gallery images are distractors too: kept (university1652) or dropped (sample4geo)
    extra = tmp_path / "extra"
    extra.mkdir()
    for k, (path, _) in enumerate(_folder_items(u1652, "gallery_satellite")[:4]):
        (extra / f"x{k}.png").write_bytes(path.read_bytes())
    split = load_eval_split(u1652, fmt="university1652", query_view="drone", gallery_view="satellite",
                            extra_gallery=extra)
    assert len(split.gallery) == 9 + 4 and sum(g.place_id is None for g in split.gallery) == 4


# --------------------------------------------------------------------------------------------- GeoText-1652

G_CONFIG = _config("geotext1652", places=10, test=8)


def test_geotext1652_protocol_matches_itm_eval(tmp_path_factory, model, tmp_path):
    root = _world(tmp_path_factory, G_CONFIG)
    metrics, rec = _run(model, "geotext1652", root, tmp_path / "report")
    # re_eval_dataset, with the true building of every image: the drone entries of the test JSON in file order
    entries = [e for e in json.loads((root / "test_951_version.json").read_text())
               if Path(e["image"]).stem.startswith("image-")]
    # the release's building is image_id[:4] (4-digit ids); the synthetic ids are longer: the folder part
    buildings = sorted({e["image_id"].split("/")[0] for e in entries})
    img2building = [buildings.index(e["image_id"].split("/")[0]) for e in entries]
    texts, txt2img = [], []
    for i, e in enumerate(entries):
        texts.extend(e["caption"])
        txt2img.extend([i] * len(e["caption"]))
    n_images = (len(_roles(G_CONFIG)["query"]) + len(_roles(G_CONFIG)["distractor"])) * G_CONFIG.drone_views
    assert len(entries) == n_images and len(texts) == n_images * G_CONFIG.texts_per_place
    img_f = rec.rows("drone", [root / e["image"] for e in entries])
    txt_f = rec.rows("text", texts)
    ref = _official_geotext(img_f @ txt_f.T, txt2img, img2building)
    assert [metrics[f"drone->text/R@{k}"] for k in (1, 5, 10)] == pytest.approx(ref["txt"], abs=1e-9)
    assert [metrics[f"text->drone/R@{k}"] for k in (1, 5, 10)] == pytest.approx(ref["img"], abs=1e-9)
    for key in ("txt_r_mean", "img_r_mean", "r_mean"):
        assert metrics[key] == pytest.approx(ref[key], abs=1e-9), key
    assert metrics["text->drone/n_queries"] == len(texts) and metrics["text->drone/n_gallery"] == n_images
    assert metrics["primary_metric"] == "r_mean"


# --------------------------------------------------------------------------------------------- CVUSA / CVACT


def _one_to_one_refs(metrics: dict[str, Any], street: np.ndarray, sat: np.ndarray, labels: list[str]) -> None:
    """Sample4Geo's calculate_scores and SAFA's validate on (N, D) street and satellite rows of the same pairs."""
    n = len(labels)
    ids = np.arange(n)
    r1, r5, r10, r1p = _official_sample4geo_cvusa(street @ sat.T, ids, ids)
    got = [metrics[f"street->satellite/{k}"] for k in ("R@1", "R@5", "R@10", "R@1%")]
    assert got[:2] + got[3:] == pytest.approx([r1, r5, r1p], abs=1e-9)
    if n >= 10:
        assert got[2] == pytest.approx(r10, abs=1e-9)
    assert metrics["street->satellite/R@1%_K"] == n // 100
    safa = _official_safa(2 - 2 * (sat @ street.T)) if n >= 11 else None
    if safa is not None:
        assert got == pytest.approx([safa["R@1"], safa["R@5"], safa["R@10"], safa["R@1%"]], abs=1e-9)
    assert metrics["street->satellite/n_queries"] == metrics["street->satellite/n_gallery"] == n


def test_cvusa_protocol_matches_sample4geo_and_safa(tmp_path_factory, model, tmp_path):
    config = _config("cvusa", places=16, test=12)
    root = _world(tmp_path_factory, config)
    metrics, rec = _run(model, "cvusa", root, tmp_path / "report")
    pairs = [line.split(",")[:2] for line in (root / "splits" / "val-19zl.csv").read_text().split()]
    assert len(pairs) == 12  # CVUSA's test split: every test place, no distractors
    street = rec.rows("street", [root / p for _, p in pairs])
    sat = rec.rows("satellite", [root / s for s, _ in pairs])
    _one_to_one_refs(metrics, street, sat, [s for s, _ in pairs])


A_CONFIG = _config("cvact", places=16, test=12)


@pytest.fixture(scope="module")
def cvact(tmp_path_factory):
    return _world(tmp_path_factory, A_CONFIG)


@pytest.mark.parametrize(("name", "struct", "folder"), CVACT_PROTOCOLS)
def test_cvact_protocols_match_sample4geo(cvact, model, tmp_path, name, struct, folder):
    config, root = A_CONFIG, cvact
    metrics, rec = _run(model, name, root, tmp_path / "report")
    mat = scipy.io.loadmat(str(root / "ACT_data.mat"))
    ids = [str(np.asarray(x).ravel()[0]) for x in mat["panoIds"].ravel()]
    rows = np.asarray(mat[struct]["valInd"][0][0], dtype=np.int64).ravel() - 1
    pids = [ids[r] for r in rows]
    roles = _roles(config)
    assert len(pids) == (len(roles["query"]) if name == "cvact" else len(roles["query"]) + len(roles["distractor"]))
    street = rec.rows("street", [root / folder / "streetview" / f"{p}_grdView.jpg" for p in pids])
    sat = rec.rows("satellite", [root / folder / "satview_polish" / f"{p}_satView_polish.jpg" for p in pids])
    _one_to_one_refs(metrics, street, sat, pids)


# --------------------------------------------------------------------------------------------- VIGOR

V_CONFIG = _config("vigor", places=24, test=16)


@pytest.fixture(scope="module")
def vigor(tmp_path_factory):
    return _world(tmp_path_factory, V_CONFIG)


def _vigor_files(root: Path, mode: str) -> tuple[list[tuple[str, Path]], list[tuple[str, Path, list[str]]]]:
    """(gallery key, tile path) of every tile and (pano key, path, [positive, semi...] keys) of every test query,
    read from VIGOR's split files: same-area = all cities' *_test.txt; cross-area = Chicago and SanFrancisco."""
    cities = ("NewYork", "Seattle", "SanFrancisco", "Chicago") if mode == "same" else ("Chicago", "SanFrancisco")
    label_file = "same_area_balanced_test.txt" if mode == "same" else "pano_label_balanced.txt"
    tiles, queries = [], []
    for city in cities:
        splits = root / "splits" / city
        tiles += [(f"{city}/{t}", root / city / "satellite" / t) for t in splits.joinpath("satellite_list.txt")
                  .read_text().split()]
        for line in splits.joinpath(label_file).read_text().splitlines():
            tokens = line.split()
            queries.append((f"{city}/{tokens[0]}", root / city / "panorama" / tokens[0],
                            [f"{city}/{tokens[k]}" for k in (1, 4, 7, 10)]))
    return tiles, queries


def _latlon(name: str, prefix: str) -> tuple[float, float]:
    if prefix == "pano":
        _, lat, lon = name.split(",")[:3]
    else:
        lat, lon = Path(name).stem.split("_")[1:3]
    return float(lat), float(lon)


@pytest.mark.parametrize("name", VIGOR_PROTOCOLS)
def test_vigor_protocols_match_validate_top_and_sample4geo(vigor, model, tmp_path, name):
    mode = "cross" if name.endswith("cross") else "same"
    metrics, rec = _run(model, name, vigor, tmp_path / "report")
    tiles, queries = _vigor_files(vigor, mode)
    column = {key: j for j, (key, _) in enumerate(tiles)}
    test_label = [[column[k] for k in keys] for _, _, keys in queries]
    sim = rec.rows("street", [p for _, p, _ in queries]) @ rec.rows("satellite", [p for _, p in tiles]).T
    d = "street->satellite"
    assert (metrics[f"{d}/n_queries"], metrics[f"{d}/n_gallery"]) == (len(queries), len(tiles))
    if name.startswith("vigor"):
        ref = _official_vigor(sim, test_label)
        _close(metrics, d, ref, ("R@1", "R@5", "R@10", "R@1%", "hit_rate"))
        assert metrics[f"{d}/R@1%_K"] == int(len(tiles) * 0.01) + 1
        # metre error of the top-1 tile centre (VIGOR's delta = 0), from the file names' coordinates
        top1 = np.argmax(sim, axis=1)
        errors = [_haversine_m(*_latlon(p.name, "pano"), *_latlon(tiles[t][1].name, "tile"), 6371008.8)
                  for (_, p, _), t in zip(queries, top1, strict=True)]
        assert metrics[f"{d}/median_m"] == pytest.approx(float(np.median(errors)), rel=1e-6)
        assert metrics[f"{d}/mean_m"] == pytest.approx(float(np.mean(errors)), rel=1e-6)
    else:
        labels = [[tiles[c][0] for c in row] for row in test_label]
        ref = dict(zip(("R@1", "R@5", "R@10", "R@1%", "hit_rate"),
                       _official_sample4geo_vigor(sim, labels, np.array([k for k, _ in tiles])), strict=True))
        _close(metrics, d, ref, ("R@1", "R@5", "R@10", "R@1%", "hit_rate"))
        assert metrics[f"{d}/R@1%_K"] == len(tiles) // 100


# --------------------------------------------------------------------------------------------- CLI, defaults


def test_cli_eval_format_uses_the_default_protocol(vigor, tiny_model_config, tmp_path, capsys):
    import torch

    from geobridge.cli.main import main
    from geobridge.models import GeoBridge

    torch.manual_seed(0)
    GeoBridge(tiny_model_config).save_pretrained(tmp_path / "model")
    args = ["eval", "--checkpoint", str(tmp_path / "model"), "--data", str(vigor)]
    assert main([*args, "--out", str(tmp_path / "a"), "--format", "vigor"]) == 0
    assert "street->satellite: R@1 = " in capsys.readouterr().out
    by_format = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert by_format["protocol"] == DEFAULT_PROTOCOLS["vigor"] == "vigor-same"
    assert main([*args, "--out", str(tmp_path / "b"), "--protocol", "vigor-same"]) == 0
    by_name = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert by_format == by_name
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "c"), "--format", "cvusa", "--protocol", "vigor-same"]) == 2
    assert "reads the vigor layout, not --format cvusa" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "c"), "--format", "vigor", "--split", "train"]) == 2
    assert "evaluated on its test split" in capsys.readouterr().err


def test_eval_format_choices_cover_every_layout():
    import argparse

    from geobridge.cli import eval as eval_cli
    from geobridge.data.layouts import FORMATS

    parser = argparse.ArgumentParser()
    eval_cli.add_parser(parser.add_subparsers())
    action = next(a for a in parser._subparsers._group_actions[0].choices["eval"]._actions if a.dest == "format")
    assert tuple(action.choices) == FORMATS
    assert set(DEFAULT_PROTOCOLS) == set(FORMATS) - {"geoloc"}
    assert all(get_protocol(p).layout == fmt for fmt, p in DEFAULT_PROTOCOLS.items())


def test_trainer_final_evaluation_on_university1652_uses_its_protocol(u1652, tmp_path):
    from geobridge.eval.embed import evaluate_model
    from geobridge.eval.training import training_evaluator
    from geobridge.train import load_config
    from geobridge.train.trainer import train

    config = load_config(None, [f"data.root={u1652}", "data.format=university1652", f"out={tmp_path / 'run'}",
                                "model.text_kind=hashing", "optim.batch_size=2", "optim.epochs=1",
                                "train.max_steps=1", "data.augment=false", "data.num_workers=0"])
    result = train(config, evaluator=training_evaluator(config, show_progress_bar=False))
    n_query = len(_roles(U_CONFIG)["query"])
    assert result["protocol"] == "university1652"
    assert result["drone->satellite/n_queries"] == n_query * U_CONFIG.drone_views
    assert result["drone->satellite/n_gallery"] == 9 and math.isfinite(result["drone->satellite/AP"])
    with pytest.raises(GeoBridgeError, match="evaluated on its test split"):
        evaluate_model(object(), u1652, fmt="university1652", split="train")


def test_every_registered_protocol_has_an_end_to_end_test():
    tested = {*U_PROTOCOLS, *(name for name, _, _ in CVACT_PROTOCOLS), *VIGOR_PROTOCOLS, *SINGLE_PROTOCOLS}
    assert tested == set(list_protocols())


def test_index_reads_u1652_test_by_role(u1652, tiny_model_config, tmp_path, capsys):
    import torch

    from geobridge.cli.main import main
    from geobridge.index import GeoIndex
    from geobridge.models import GeoBridge

    torch.manual_seed(0)
    GeoBridge(tiny_model_config).save_pretrained(tmp_path / "model")
    out = tmp_path / "sat.gbx"
    assert main(["index", "build", "--checkpoint", str(tmp_path / "model"), "--data", str(u1652), "--format",
                 "university1652", "--split", "test", "--out", str(out), "--no-progress"]) == 0
    info = GeoIndex.load(out).info()
    roles = _roles(U_CONFIG)
    assert info["count"] == info["places"] == len(roles["query"]) + len(roles["distractor"])  # gallery_satellite
    capsys.readouterr()
    # calibration queries come from the query role: every query building is in the index
    assert main(["index", "calibrate", str(out), "--data", str(u1652), "--format", "university1652", "--split",
                 "test", "--views", "drone,street", "--no-progress"]) == 0
    weights = json.loads(capsys.readouterr().out)["fusion_weights"]
    assert set(weights) == {"drone", "street"} and all(math.isfinite(w) for w in weights.values())
