"""Fuzz the config, checkpoint, dataset and index-file entry points with generated malformed inputs (hypothesis).

Every generated input must end in one of two ways:

* a clean error: the project's own exception (``GeoBridgeError`` and its subclasses; a non-zero exit with one
  line on stderr for the CLI) whose message names the bad key, file or line; never another exception;
* or acceptance, and then the accepted value must really be valid (right type, in range, the loader and
  ``data check`` agreeing); inputs that are invalid by construction must never be accepted.

Generated inputs per run (fixed ``max_examples``, ``derandomize=True`` so CI sees the same inputs each time):

=====================================================  =====
training config dot-list overrides (any value)           100
training config overrides out of range                    60
model config mutations (any JSON value)                  120
model config mutations of the wrong type                  80
checkpoint config.json mutations (from_pretrained)        30
checkpoint tensors (dtype, NaN/inf)                       12
dataset manifest mutations (check and loader)             50
places.jsonl mutations and raw bytes                      50
index metadata mutations (valid checksum)                100
index factory strings with large numbers                  60
index header field and byte mutations                     80
=====================================================  =====
total                                                    742

The whole file takes about 25-40 s on a busy 2-core machine; each example has a 2 s deadline.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import shutil
import tempfile
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _index_files import index_parts as gbx_parts
from _index_files import write_index
from conftest import make_world
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from geobridge.cli.main import main
from geobridge.errors import CheckpointError, ConfigError, DataError, GeoBridgeError, IndexFormatError
from geobridge.models import GeoBridge, GeoBridgeConfig, get_model_config
from geobridge.schema import Choice, Range
from geobridge.train import TrainConfig, load_config

SETTINGS = dict(deadline=2000, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _one_line_error(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message and "Traceback" not in message, message
    return message


def _leaf_paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Paths to every value of nested dicts (lists count as one value)."""
    if isinstance(data, dict) and data:
        return [p for k, v in data.items() for p in _leaf_paths(v, (*prefix, k))] + ([prefix] if prefix else [])
    return [prefix]


def _set_path(data: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _get_path(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[key]
    return data


# ---------------------------------------------------------------------------------------------------------------------
# training config and dot-list overrides


def _train_keys() -> list[str]:
    out = []

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")  # type: ignore[arg-type]
            else:
                out.append(f"{prefix}{f.name}")

    walk(TrainConfig, "")
    return out


TRAIN_KEYS = _train_keys()
OVERRIDE_VALUES = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n"), max_size=12),
    st.sampled_from(["", "null", "true", "false", "[]", "[drone]", "[drone,aerial]", "{}", "after:2", "after:-1",
                     "nan", "-inf", "1e309", "cuda:0", "${oops}", "[1,2", "1.5", "-0.0", "0"]),
)
OVERRIDE_KEYS = st.one_of(
    st.sampled_from(TRAIN_KEYS),
    st.sampled_from(["optim.lrr", "loss.pair_weights.drone_street", "loss.pair_weights.street_drone", "nope",
                     "optim", "optim.lr.x"]),
)


def _run_train_cli(overrides: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", *overrides])
    return code, err.getvalue().strip()


@settings(max_examples=100, **SETTINGS)
@given(st.lists(st.tuples(OVERRIDE_KEYS, OVERRIDE_VALUES), min_size=1, max_size=3))
def test_fuzz_overrides_clean_error_or_valid_config(pairs):
    overrides = [f"{k}={v}" for k, v in pairs]
    try:
        config = load_config(None, overrides)
    except GeoBridgeError as exc:
        message = _one_line_error(exc)
        assert any(k in message or k.split(".")[0] in message for k, _ in pairs) or "bad config" in message, message
        if len(pairs) > 1:
            return  # the CLI is checked on the single-override examples (about a third), to bound the time
        code, err = _run_train_cli(overrides)
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith("geobridge train: error: "), err
        return
    from geobridge.train.config import TRAIN_RULES

    defaults = dataclasses.asdict(TrainConfig())
    accepted = dataclasses.asdict(config)
    for key, _ in pairs:  # an accepted value has the default's type and obeys its rule
        path = tuple(key.split("."))
        value, default = _get_path(accepted, path), _get_path(defaults, path) if key in TRAIN_KEYS else None
        if default is not None:
            assert type(value) is type(default) or (isinstance(default, float) and type(value) is float), key
        rule = TRAIN_RULES.get(key)
        if isinstance(rule, Range) and value is not None:
            assert not isinstance(value, bool) and rule.contains(value), (key, value)
        if isinstance(rule, Choice) and value is not None:
            assert value in rule.names, (key, value)


def _field_type(key: str) -> Any:
    """The annotation of a dotted TrainConfig key, without ``| None``."""
    from geobridge.schema import _strip_optional

    cls: Any = TrainConfig
    for part in key.split("."):
        tp = _strip_optional(typing.get_type_hints(cls)[part])
        cls = tp
    return cls


def _range_keys() -> list[str]:
    from geobridge.train.config import TRAIN_RULES

    return sorted(k for k, r in TRAIN_RULES.items() if isinstance(r, Range) and "*" not in k)


@settings(max_examples=60, **SETTINGS)
@given(st.sampled_from(_range_keys()), st.sampled_from(["below", "above"]), st.floats(1e-3, 1e6))
def test_fuzz_out_of_range_overrides_are_refused(key, side, delta):
    from geobridge.train.config import TRAIN_RULES

    rule = TRAIN_RULES[key]
    edge = rule.lo if side == "below" else rule.hi
    if edge is None:
        return
    is_int = _field_type(key) is int
    step = max(1, round(delta)) if is_int else delta
    value = edge - step if side == "below" else edge + step
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{key}={int(value) if is_int else repr(float(value))}"])
    assert _one_line_error(info.value).startswith(f"{key}:")


# ---------------------------------------------------------------------------------------------------------------------
# model configs


BASE_MODEL = get_model_config("gb-tiny").to_dict()
MODEL_PATHS = sorted(_leaf_paths(BASE_MODEL), key=str)


@settings(max_examples=120, **SETTINGS)
@given(st.sampled_from(MODEL_PATHS + [("surprise",), ("image", "bakbone")]), JSON_VALUES)
def test_fuzz_model_config_clean_error_or_same_value(path, value):
    data = _set_path(BASE_MODEL, path, value)
    try:
        config = GeoBridgeConfig.from_dict(data, where="model")
    except ConfigError as exc:
        message = _one_line_error(exc)
        assert message.startswith(f"model.{path[0]}"), message
        return
    accepted = config.to_dict()
    if isinstance(value, dict) and path[-1] != "backbone_kwargs":
        return  # a section given in part: the keys it leaves out keep their defaults
    assert _get_path(accepted, path) == value  # no silent conversion (e.g. "5" -> 5, "drone,satellite" -> [...])
    original = _get_path(BASE_MODEL, path) if path[0] != "surprise" else None
    if isinstance(original, bool) or isinstance(original, str):
        assert type(value) is type(original)
    elif isinstance(original, int):
        assert type(value) is int and value > 0
    elif isinstance(original, float):
        assert type(value) in (int, float) and np.isfinite(value)


def _wrong_type(original: Any) -> st.SearchStrategy:
    if isinstance(original, bool):
        return st.one_of(st.integers(), st.text(max_size=5), st.none())
    if isinstance(original, int):
        return st.one_of(st.text(max_size=5), st.floats().filter(lambda f: not float(f).is_integer()),
                         st.booleans(), st.integers(max_value=0), st.lists(st.integers(), max_size=2))
    if isinstance(original, float):
        return st.one_of(st.text(max_size=5), st.booleans(), st.none(), st.sampled_from([float("nan"), float("inf")]))
    if isinstance(original, str):
        return st.one_of(st.integers(), st.booleans(), st.lists(st.text(max_size=3), max_size=2),
                         st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
    if isinstance(original, list):
        return st.one_of(st.text(max_size=8), st.integers(), st.dictionaries(st.text(max_size=3), st.integers()))
    return st.one_of(st.text(max_size=5), st.integers(), st.lists(st.integers(), max_size=2))


TYPED_PATHS = [p for p in MODEL_PATHS if _get_path(BASE_MODEL, p) is not None and p != ("image", "backbone_kwargs")]


@settings(max_examples=80, **SETTINGS)
@given(st.data())
def test_fuzz_model_config_wrong_types_are_refused(data):
    path = data.draw(st.sampled_from(TYPED_PATHS))
    value = data.draw(_wrong_type(_get_path(BASE_MODEL, path)))
    with pytest.raises(ConfigError) as info:
        GeoBridgeConfig.from_dict(_set_path(BASE_MODEL, path, value), where="model")
    assert _one_line_error(info.value).startswith("model." + ".".join(path[:1]))


# ---------------------------------------------------------------------------------------------------------------------
# checkpoints: config.json and tensors


@settings(max_examples=30, **SETTINGS)
@given(st.data())
def test_fuzz_checkpoint_config_is_a_checkpoint_error(saved_tiny_model, data):
    meta = json.loads((saved_tiny_model / "config.json").read_text())
    where = data.draw(st.sampled_from(["format", "format_version", "model", "whole"]))
    if where == "format":
        meta["format"] = data.draw(JSON_VALUES.filter(lambda v: v != "geobridge-model"))
    elif where == "format_version":
        meta["format_version"] = data.draw(JSON_VALUES.filter(lambda v: not (type(v) is int and v == 1)))
    elif where == "model":
        path = data.draw(st.sampled_from(TYPED_PATHS))
        meta["model"] = _set_path(meta["model"], path, data.draw(_wrong_type(_get_path(BASE_MODEL, path))))
    else:
        meta = data.draw(JSON_VALUES)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(saved_tiny_model, Path(tmp) / "m"))
        (folder / "config.json").write_text(json.dumps(meta))
        with pytest.raises(CheckpointError) as info:
            GeoBridge.from_pretrained(folder)
    assert str(folder / "config.json") in _one_line_error(info.value)


@settings(max_examples=12, **SETTINGS)
@given(st.data())
def test_fuzz_checkpoint_tensors_dtype_and_finiteness(saved_tiny_model, data):
    tensors = load_file(str(saved_tiny_model / "model.safetensors"))
    key = data.draw(st.sampled_from(sorted(k for k, v in tensors.items() if v.is_floating_point())))
    corruption = data.draw(st.sampled_from(["int64", "int32", "uint8", "bool", "nan", "inf", "-inf"]))
    tensor = tensors[key].clone()
    if corruption in ("nan", "inf", "-inf"):
        tensor.view(-1)[data.draw(st.integers(0, tensor.numel() - 1))] = float(corruption)
    else:
        tensor = (tensor * 100).to(getattr(torch, corruption))
    tensors[key] = tensor
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(saved_tiny_model, Path(tmp) / "m"))
        save_file(tensors, str(folder / "model.safetensors"))
        with pytest.raises(CheckpointError) as info:
            GeoBridge.from_pretrained(folder)
    message = _one_line_error(info.value)
    assert repr(key) in message and "model.safetensors" in message


# ---------------------------------------------------------------------------------------------------------------------
# dataset manifests and places.jsonl


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("fuzz_world") / "world", n=4)


MANIFEST_KEYS = ["format", "format_version", "views", "drone_views", "image_size", "countries", "holdout_countries",
                 "name", "seed"]
TYPED_MANIFEST = {
    "format_version": st.one_of(st.text(max_size=4), st.floats(), st.booleans(), st.integers(max_value=0),
                                st.integers(min_value=2)),
    "views": st.one_of(st.text(max_size=12), st.integers(), st.just([]),
                       st.lists(st.text(max_size=6).filter(lambda v: v not in ("drone", "satellite", "street", "text")),
                                min_size=1, max_size=2)),
    "drone_views": st.one_of(st.text(max_size=4), st.floats(), st.booleans(), st.integers(max_value=-1)),
    "countries": st.one_of(st.text(max_size=4), st.dictionaries(st.text(max_size=3), st.integers(), min_size=1),
                           st.lists(st.fixed_dictionaries({"code": st.just("DE"), "bbox": st.one_of(
                               st.text(max_size=6), st.lists(st.integers(), max_size=3),
                               st.lists(st.floats(), min_size=4, max_size=4).filter(
                                   lambda b: not all(np.isfinite(b)) or not (-90 <= b[0] <= b[1] <= 90)))}),
                               min_size=1, max_size=2)),
    "holdout_countries": st.one_of(st.text(min_size=1, max_size=4), st.lists(st.integers(), min_size=1, max_size=2)),
}


def _check_and_load(root: Path) -> tuple[Any, BaseException | None]:
    from geobridge.data import GeoLocDataset, check_dataset

    report = check_dataset(root, show_progress_bar=False)  # never raises
    try:
        GeoLocDataset(root)
    except DataError as exc:
        _one_line_error(exc)
        return report, exc
    return report, None


@settings(max_examples=50, **SETTINGS)
@given(st.data())
def test_fuzz_manifest_check_and_loader_agree(world_dir, data):
    manifest = json.loads((world_dir / "manifest.json").read_text())
    bad = data.draw(st.booleans())
    if bad:  # invalid by construction
        key = data.draw(st.sampled_from(sorted(TYPED_MANIFEST)))
        manifest[key] = data.draw(TYPED_MANIFEST[key])
    elif data.draw(st.booleans()):
        manifest[data.draw(st.sampled_from(MANIFEST_KEYS))] = data.draw(JSON_VALUES)
    else:
        manifest = data.draw(JSON_VALUES)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(shutil.copytree(world_dir, Path(tmp) / "w"))
        (root / "manifest.json").write_text(json.dumps(manifest))
        report, error = _check_and_load(root)
        manifest_problems = [p for p in report.problems if p.path == str(root / "manifest.json")]
        assert bool(manifest_problems) == (error is not None and str(root / "manifest.json") in str(error))
        if bad:
            assert error is not None and manifest_problems


@settings(max_examples=50, **SETTINGS)
@given(st.data())
def test_fuzz_places_check_never_passes_what_the_loader_refuses(world_dir, data):
    lines = (world_dir / "places.jsonl").read_bytes().split(b"\n")
    row = data.draw(st.integers(0, 3))
    if data.draw(st.booleans()):  # raw bytes into one line (often not UTF-8 or not JSON)
        at = data.draw(st.integers(0, len(lines[row])))
        lines[row] = lines[row][:at] + data.draw(st.binary(min_size=1, max_size=4)) + lines[row][at:]
    else:
        record = json.loads(lines[row])
        key = data.draw(st.sampled_from(["place_id", "lat", "lon", "split", "country", "landmark", "extra"]))
        record[key] = data.draw(JSON_VALUES)
        lines[row] = json.dumps(record).encode()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(shutil.copytree(world_dir, Path(tmp) / "w"))
        (root / "places.jsonl").write_bytes(b"\n".join(lines))
        report, error = _check_and_load(root)
        if error is not None:  # the loader refuses: data check must not say ok, and both name the same line
            assert not report.ok
            assert any(str(error).startswith(p.path + ":") or p.path in str(error) for p in report.problems)
        bad_lines = [n for n, raw in enumerate(b"\n".join(lines).split(b"\n"), start=1) if not _is_utf8(raw)]
        if bad_lines:  # the first line that is not UTF-8 is named by both
            assert error is not None and f"places.jsonl:{bad_lines[0]}: not valid UTF-8" in str(error)
            encoding = {p.path for p in report.problems if p.kind == "bad-encoding"}
            assert f"{root / 'places.jsonl'}:{bad_lines[0]}" in encoding


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------------
# index files: metadata, factory strings, header


@pytest.fixture(scope="module")
def index_parts(tmp_path_factory):
    return gbx_parts(tmp_path_factory.mktemp("fuzz_index"))


def _load_clean(path: Path) -> Any:
    from geobridge.index import GeoIndex

    try:
        return GeoIndex.load(path)
    except IndexFormatError as exc:
        assert str(path) in _one_line_error(exc)
        return None


META_PATHS = ["dim", "factory", "metric", "next_id", "records", "model_info", "fusion_weights", "surprise"]
RECORD_KEYS = ["id", "place_id", "lat", "lon", "view", "path"]


@settings(max_examples=100, **SETTINGS)
@given(st.data())
def test_fuzz_index_metadata_clean_error_or_consistent_index(index_parts, tmp_path_factory, data):
    header, meta, index_bytes, _ = index_parts
    meta = copy.deepcopy(meta)
    if data.draw(st.booleans()):
        meta[data.draw(st.sampled_from(META_PATHS))] = data.draw(JSON_VALUES)
    else:
        meta["records"][data.draw(st.integers(0, 4))][data.draw(st.sampled_from(RECORD_KEYS))] = data.draw(JSON_VALUES)
    path = write_index(tmp_path_factory.mktemp("m") / "b.gbx", header, meta, index_bytes)
    index = _load_clean(path)
    if index is not None:  # accepted: it must be the same 5 vectors, searchable, with valid records
        assert len(index) == 5 and index.dim == 16
        result = index.search(np.ones((1, 16), dtype=np.float32), k=5)
        assert sorted(result.ids[0].tolist()) == [0, 1, 2, 3, 4]
        assert all(-90 <= r["lat"] <= 90 and isinstance(r["place_id"], str) for _, r in index.records())


FACTORY_PARTS = st.sampled_from(["IVF", "HNSW", "PQ", "IVF{}_HNSW", "PQ{}x"])


@settings(max_examples=60, **SETTINGS)
@given(FACTORY_PARTS, st.integers(10**6, 10**40), st.sampled_from(["", ",Flat", ",PQ4", ",RFlat", ",PQ4x99"]))
def test_fuzz_huge_factory_strings_are_refused_before_building(index_parts, tmp_path_factory, part, number, tail):
    header, meta, index_bytes, _ = index_parts
    factory = (part.format(number) + "32" if "{}" in part else f"{part}{number}") + tail
    path = write_index(tmp_path_factory.mktemp("f") / "b.gbx", header, {**meta, "factory": factory}, index_bytes)
    assert _load_clean(path) is None
    with pytest.raises(GeoBridgeError):
        from geobridge.index import GeoIndex

        GeoIndex(16, factory=factory)


@settings(max_examples=80, **SETTINGS)
@given(st.data())
def test_fuzz_index_header_mutations(index_parts, tmp_path_factory, data):
    from geobridge.index.single_file import MAGIC

    header, _, _, good = index_parts
    end = good.index(b"\n", len(MAGIC))
    if data.draw(st.booleans()):
        fields = json.loads(good[len(MAGIC) : end])
        key = data.draw(st.sampled_from(["format", "format_version", "meta_bytes", "index_bytes", "sha256", "x"]))
        fields[key] = data.draw(JSON_VALUES)
        blob = MAGIC + json.dumps(fields).encode() + good[end:]
        changed = fields != header
    else:  # flip bytes anywhere in the first 300 bytes (magic, header, metadata start)
        blob = bytearray(good)
        for _ in range(data.draw(st.integers(1, 3))):
            blob[data.draw(st.integers(0, 299))] ^= data.draw(st.integers(1, 255))
        blob = bytes(blob)
        changed = blob != good
    path = tmp_path_factory.mktemp("h") / "c.gbx"
    path.write_bytes(blob)
    index = _load_clean(path)
    if changed and index is not None:  # only a change that leaves every checked field equal may load
        assert len(index) == 5 and index.dim == 16


@pytest.mark.parametrize("band,message", [
    ({"street": [0.5, 0.4]}, "0 <= top < bottom <= 1"),
    ({"street": [0.0, 1.5]}, "0 <= top < bottom <= 1"),
    ({"street": [0.25]}, "0 <= top < bottom <= 1"),
    ({"street": ["a", 1.0]}, "finite number"),
    ({"sky": [0.0, 0.5]}, "unknown views"),
    ({"street": [0.0, 0.05]}, "at least 8"),
])
def test_bad_kept_rows_are_refused_with_the_key(band, message):
    data = copy.deepcopy(BASE_MODEL)
    data["image"]["keep_rows"] = band
    with pytest.raises(ConfigError, match=message) as info:
        GeoBridgeConfig.from_dict(data, where="model")
    assert _one_line_error(info.value).startswith("model.image.keep_rows")
