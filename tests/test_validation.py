"""Issue 15: every bad config, checkpoint, dataset manifest and index file gets a clean error naming the key/file.

Each test here failed before the shared validators (geobridge/schema.py, data/geoloc.py's manifest checks,
index/factory.py, models/checkpoint.py's tensor checks) and passes now.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import torch
from _index_files import index_parts, write_index
from conftest import make_world
from safetensors.torch import load_file, save_file

from geobridge.cli.main import main
from geobridge.errors import CheckpointError, DataError, GeoBridgeError, IndexFormatError
from geobridge.models import GeoBridge, GeoBridgeConfig, get_model_config
from geobridge.train import TrainConfig, load_config

# ---------------------------------------------------------------------------------------------------------------------
# training config and overrides


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optim.grad_accum=0", "optim.grad_accum"),
        ("optim.lr=-1", "optim.lr"),
        ("optim.lr=0", "optim.lr"),
        ("optim.epochs=0", "optim.epochs"),
        ("optim.batch_size=1", "optim.batch_size"),
        ("optim.text_lr=-0.1", "optim.text_lr"),
        ("optim.min_lr_ratio=1.5", "optim.min_lr_ratio"),
        ("optim.weight_decay=-1", "optim.weight_decay"),
        ("optim.warmup_epochs=-1", "optim.warmup_epochs"),
        ("optim.grad_clip=-1", "optim.grad_clip"),
        ("loss.label_smoothing=1.0", "loss.label_smoothing"),
        ("loss.anchor_weight=-2", "loss.anchor_weight"),
        ("loss.pair_weights.drone_street=-1", "loss.pair_weights.drone_street"),
        ("loss.pair_weight=nan", "loss.pair_weight"),
        ("data.num_workers=-1", "data.num_workers"),
        ("data.views=[drone,aerial]", "data.views[1]"),
        ("data.views=[]", "data.views"),
        ("data.views={}", "data.views"),
        ("out=\x1f", "out"),
        ("train.seed=-1", "train.seed"),
        ("train.view_dropout=1.0", "train.view_dropout"),
        ("train.eval_every=-1", "train.eval_every"),
        ("train.max_steps=0", "train.max_steps"),
        ("train.device=tpu", "train.device"),
        ("train.drop_views=[aerial]", "train.drop_views[0]"),
        ("sampler.gps_epochs=after:x", "sampler.gps_epochs"),
        ("sampler.neighbours=0", "sampler.neighbours"),
        ("sampler.embedding_refresh=0", "sampler.embedding_refresh"),
        ("model.name=no-such-model", "model.name"),
        ("model.text_kind=bert", "model.text_kind"),
        ("model.text_trainable_layers=-1", "model.text_trainable_layers"),
        ("optim.epochs=abc", "optim.epochs"),
    ],
)
def test_bad_override_is_a_clean_error_naming_the_key(override, key):
    with pytest.raises(GeoBridgeError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert message.startswith(f"{key}:") and "\n" not in message, message


def test_range_edges_are_accepted():
    config = load_config(None, ["optim.lr=10", "optim.epochs=1", "optim.grad_accum=1", "train.view_dropout=0.99",
                                "optim.grad_clip=0", "train.device=cuda:1", "sampler.gps_epochs=after:3"])
    assert (config.optim.lr, config.optim.epochs, config.optim.grad_accum) == (10.0, 1, 1)
    assert config.train.view_dropout == 0.99 and config.train.device == "cuda:1"


def test_every_numeric_option_has_a_range():
    from geobridge.models.config import MODEL_RULES
    from geobridge.schema import Range, numeric_fields
    from geobridge.train.config import TRAIN_RULES

    for cls, rules in ((TrainConfig, TRAIN_RULES), (GeoBridgeConfig, MODEL_RULES)):
        keys = numeric_fields(cls)
        assert len(keys) >= 8
        assert [k for k in keys if not isinstance(rules.get(k), Range)] == []


def test_trainer_validates_a_config_built_in_code(tmp_path):
    from geobridge.train import Trainer

    config = TrainConfig(out=str(tmp_path / "run"))
    config.optim.grad_accum = 0  # ZeroDivisionError in the trainer before
    with pytest.raises(GeoBridgeError, match="optim.grad_accum"):
        Trainer(config)


@pytest.mark.parametrize("args", [["model.name=nope"], ["optim.grad_accum=0"], ["optim.lr=-1"], ["--out", "F"]])
def test_train_cli_prints_one_line_and_fails(args, tmp_path, capsys):
    existing = tmp_path / "file.txt"
    existing.write_text("x")
    args = [str(existing) if a == "F" else a for a in args]
    assert main(["train", "--data", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("geobridge train: error: ") and len(err.splitlines()) == 1 and "Traceback" not in err
    assert (f"--out {existing}" in err and "not a folder" in err) if "--out" in args else args[0].split("=")[0] in err


# ---------------------------------------------------------------------------------------------------------------------
# model configs and checkpoints


def test_model_config_names_the_key_of_a_mistyped_value():
    data = get_model_config("gb-tiny").to_dict()
    data["embed_dim"] = "large"
    with pytest.raises(ValueError, match=r"^model\.embed_dim: expected an int in \[1, \d+\], got 'large'$"):
        GeoBridgeConfig.from_dict(data, where="model")
    data["embed_dim"] = 128
    data["image"]["input_size"]["drone"] = [64]
    with pytest.raises(ValueError, match=r"image\.input_size\.drone"):
        GeoBridgeConfig.from_dict(data)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda m: m["model"]["image"].update(backbone="no_such_net"), "model.image.backbone: unknown timm backbone"),
        (lambda m: m["model"]["image"].update(backbone_kwargs={"no_such_arg": 1}), "image.backbone_kwargs"),
        (lambda m: m.update(format_version="two"), "format_version: expected an int >= 1, got 'two'"),
        (lambda m: m.pop("format_version"), "format_version"),
        (lambda m: m["model"].update(embed_dim="large"), "model.embed_dim: expected an int"),
        (lambda m: m["model"]["text"].update(kind=7), "model.text.kind"),
        (lambda m: m["model"].update(image=[1, 2]), "model.image: expected a mapping"),
        (lambda m: m.pop("model"), "model: missing"),
    ],
)
def test_bad_checkpoint_config_is_a_checkpoint_error(saved_tiny_model, tmp_path, mutate, needle):
    folder = _copy(saved_tiny_model, tmp_path / "m")
    meta = json.loads((folder / "config.json").read_text())
    mutate(meta)
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as info:
        GeoBridge.from_pretrained(folder)
    assert str(folder / "config.json") in str(info.value) and needle in str(info.value), str(info.value)


@pytest.mark.parametrize("kind", ["int64", "nan", "inf"])
def test_checkpoint_tensors_must_be_floating_and_finite(saved_tiny_model, tmp_path, kind):
    folder = _copy(saved_tiny_model, tmp_path / "m")
    tensors = load_file(str(folder / "model.safetensors"))
    key = "proj.weight" if "proj.weight" in tensors else sorted(k for k in tensors if k.endswith("proj.weight"))[0]
    if kind == "int64":
        tensors[key] = (tensors[key] * 1000).to(torch.int64)
    else:
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[3] = float(kind)
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError) as info:
        GeoBridge.from_pretrained(folder)
    assert repr(key) in str(info.value) and str(folder / "model.safetensors") in str(info.value)
    assert ("int64" in str(info.value)) if kind == "int64" else "NaN or inf" in str(info.value)


def test_good_checkpoint_still_loads_exactly(saved_tiny_model):
    model = GeoBridge.from_pretrained(saved_tiny_model)
    stored = load_file(str(saved_tiny_model / "model.safetensors"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stored.items())


# ---------------------------------------------------------------------------------------------------------------------
# dataset manifests and places.jsonl


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("w") / "world")


def _manifest(world: Path, tmp: Path, change) -> Path:
    root = _copy(world, tmp / "d")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest = change(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda m: [m], "expected a JSON object, got list"),
        (lambda m: {**m, "drone_views": "four"}, "drone_views: expected an int >= 0, got 'four'"),
        (lambda m: {**m, "countries": [{"code": "DE", "bbox": "abcd"}]}, "countries[0]: bbox: expected"),
        (lambda m: {**m, "countries": [{"code": "DE", "bbox": [60, 50, 0, 10]}]}, "countries[0]: bbox"),
        (lambda m: {**m, "countries": {"DE": 1}}, "countries: expected a list"),
        (lambda m: {**m, "views": "drone,satellite"}, "views: expected a non-empty list"),
        (lambda m: {**m, "views": ["drone", "aerial"]}, "views: unknown view 'aerial'"),
        (lambda m: {**m, "format_version": "one"}, "format_version: expected an int >= 1, got 'one'"),
        (lambda m: {**m, "holdout_countries": "NO"}, "holdout_countries: expected a list"),
    ],
)
def test_mistyped_manifest_fails_check_and_loader_alike(world_dir, tmp_path, capsys, change, needle):
    from geobridge.data import GeoLocDataset, check_dataset

    root = _manifest(world_dir, tmp_path, change)
    report = check_dataset(root, show_progress_bar=False)
    assert not report.ok and any(needle in p.message for p in report.problems), [str(p) for p in report.problems]
    assert all(p.path == str(root / "manifest.json") for p in report.problems)
    with pytest.raises(DataError) as info:
        GeoLocDataset(root)
    assert str(root / "manifest.json") in str(info.value) and needle in str(info.value)
    assert main(["data", "check", "--quiet", str(root)]) == 1
    assert main(["data", "info", str(root)]) == 2
    assert needle in capsys.readouterr().err


def test_non_utf8_places_fail_check_and_loader_naming_the_line(world_dir, tmp_path):
    from geobridge.data import GeoLocDataset, check_dataset

    root = _copy(world_dir, tmp_path / "d")
    lines = (root / "places.jsonl").read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"urban", b"urb\xe9n")  # latin-1, not UTF-8
    (root / "places.jsonl").write_bytes(b"\n".join(lines))
    where = f"{root / 'places.jsonl'}:3"
    report = check_dataset(root, show_progress_bar=False)
    assert [p.kind for p in report.problems if p.path == where] == ["bad-encoding"]
    assert "not valid UTF-8 (byte 0xe9" in next(p.message for p in report.problems if p.path == where)
    with pytest.raises(DataError, match=rf"^{where}: not valid UTF-8 \(byte 0xe9"):
        GeoLocDataset(root)


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ({"place_id": {"a": 1}, "lat": 1.0, "lon": 2.0, "split": "test"}, "place_id: expected a non-empty string"),
        ({"place_id": "../x", "lat": 1.0, "lon": 2.0, "split": "test"}, "place_id: '../x' cannot be a folder"),
        ({"place_id": "q", "lat": 91.0, "lon": 2.0, "split": "test"}, "lat: expected a number in [-90, 90]"),
        ({"place_id": "q", "lat": True, "lon": 2.0, "split": "test"}, "lat: expected a number"),
    ],
)
def test_bad_place_record_is_named_by_line(world_dir, tmp_path, row, needle):
    from geobridge.data import GeoLocDataset, check_dataset

    root = _copy(world_dir, tmp_path / "d")
    with open(root / "places.jsonl", "a") as fh:
        fh.write("\n" + json.dumps(row) + "\n")  # a blank line first: numbers are file lines, not record counts
    with pytest.raises(DataError, match=rf"places\.jsonl:10: {re.escape(needle)}"):
        GeoLocDataset(root)
    assert not check_dataset(root, show_progress_bar=False).ok


# ---------------------------------------------------------------------------------------------------------------------
# index files


def _index_parts(tmp_path: Path):
    header, meta, index_bytes, _ = index_parts(tmp_path)
    return header, meta, index_bytes


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"factory": "IVF99999999,PQ999"}, "IVF nlist must be in [1, 262144], got 99999999"),
        ({"factory": "PQ4x24"}, "PQ bits must be in [1, 12]"),
        ({"factory": "HNSW100000"}, "HNSW M must be in"),
        ({"factory": "IVF4,Flat"}, "does not match the factory string"),
        ({"dim": 100000}, "dim: expected an int in [1, 8192]"),
        ({"dim": 17}, "metadata says 5 of dim 17"),
        ({"next_id": 2}, "records[2].id: expected an int in [0, next_id=2)"),
        ({"next_id": "5"}, "next_id: expected an int"),
        ({"metric": "l2"}, "metric: expected one of ip"),
        ({"records": {"0": 1}}, "records: expected a list"),
        ({"model_info": [1]}, "model_info: expected an object"),
        ({"surprise": 1}, "unknown keys ['surprise']"),
    ],
)
def test_index_metadata_is_bounded_before_anything_is_built(tmp_path, change, needle):
    from geobridge.index import GeoIndex

    header, meta, index_bytes = _index_parts(tmp_path)
    path = write_index(tmp_path / "b.gbx", header, {**meta, **change}, index_bytes)
    start = time.perf_counter()
    with pytest.raises(IndexFormatError) as info:
        GeoIndex.load(path)
    assert time.perf_counter() - start < 1.0  # refused before any allocation, not after a MemoryError
    assert str(path) in str(info.value) and needle in str(info.value), str(info.value)


def test_duplicate_record_ids_are_refused(tmp_path):
    from geobridge.index import GeoIndex

    header, meta, index_bytes = _index_parts(tmp_path)
    meta["records"][1]["id"] = 0
    with pytest.raises(IndexFormatError, match="records.1..id: 0 appears twice"):
        GeoIndex.load(write_index(tmp_path / "b.gbx", header, meta, index_bytes))


@pytest.mark.parametrize("change", [{"meta_bytes": -5}, {"format_version": True}, {"sha256": 5}])
def test_index_header_types_are_checked(tmp_path, change):
    from geobridge.index import GeoIndex
    from geobridge.index.single_file import MAGIC

    header, meta, index_bytes = _index_parts(tmp_path)
    good = write_index(tmp_path / "b.gbx", header, meta, index_bytes).read_bytes()
    end = good.index(b"\n", len(MAGIC))
    fields = {**json.loads(good[len(MAGIC) : end]), **change}
    if "meta_bytes" in change:  # lengths that still add up to the payload's
        fields["index_bytes"] = len(good) - end - 1 - change["meta_bytes"]
    (tmp_path / "c.gbx").write_bytes(MAGIC + json.dumps(fields).encode() + good[end:])
    with pytest.raises(IndexFormatError, match="corrupt header"):
        GeoIndex.load(tmp_path / "c.gbx")


def test_index_cli_and_constructor_refuse_a_huge_factory(tmp_path, capsys):
    from geobridge.index import GeoIndex

    with pytest.raises(GeoBridgeError, match="IVF nlist must be in"):
        GeoIndex(64, factory="IVF99999999,Flat")
    header, meta, index_bytes = _index_parts(tmp_path)
    path = write_index(tmp_path / "b.gbx", header, {**meta, "factory": "IVF99999999,PQ999"}, index_bytes)
    assert main(["index", "info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "IVF nlist must be in" in err
