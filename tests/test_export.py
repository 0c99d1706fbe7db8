"""ONNX export: graphs per view and for text, their metadata, onnxruntime parity with torch, locate/serve on them."""

from __future__ import annotations

import copy
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from geobridge.cli.main import main  # noqa: E402
from geobridge.errors import ExportError  # noqa: E402
from geobridge.export import OnnxEncoder, export_onnx  # noqa: E402
from geobridge.models import GeoBridge  # noqa: E402

VIEWS = ("drone", "satellite", "street")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def exported(world, tiny_model_config, tmp_path_factory):
    """The world's tiny model with test-time augmentation on satellite, exported once for the module."""
    root = tmp_path_factory.mktemp("export")
    config = copy.deepcopy(tiny_model_config)
    config.image.test_time_augment = ["satellite"]
    torch.manual_seed(1)
    model = GeoBridge(config).eval()
    model.save_pretrained(root / "ckpt")
    assert main(["export", "onnx", "--checkpoint", str(root / "ckpt"), "--out", str(root / "onnx")]) == 0
    return {"root": root, "model": model, "onnx": root / "onnx"}


def test_export_writes_graphs_metadata_and_manifest(exported):
    import onnx

    from geobridge.export.onnx_export import checkpoint_hash

    folder, model = exported["onnx"], exported["model"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "geobridge-onnx" and manifest["embed_dim"] == model.embed_dim
    assert manifest["checkpoint_sha256"] == checkpoint_hash(exported["root"] / "ckpt")["sha256"]
    assert set(manifest["images"]) == set(VIEWS) and manifest["text"]["kind"] == "hashing"
    assert all(v >= 0.9999 for v in manifest["check"].values()) and set(manifest["check"]) == {*VIEWS, "text"}
    for view in VIEWS:
        graph = onnx.load(str(folder / f"{view}.onnx"))
        meta = {p.key: p.value for p in graph.metadata_props}
        assert meta["view"] == view and meta["kind"] == "image"
        assert json.loads(meta["input_size"]) == model.config.image.input_size[view]
        assert json.loads(meta["mean"]) == pytest.approx(model.config.image.mean)
        assert json.loads(meta["std"]) == pytest.approx(model.config.image.std)
        assert int(meta["embed_dim"]) == model.embed_dim
        assert meta["checkpoint_sha256"] == manifest["checkpoint_sha256"]
        assert json.loads(meta["test_time_augment"]) == (view == "satellite")
    assert sorted(p.name for p in exported["root"].iterdir()) == ["ckpt", "onnx"]  # no temporary folder left


@pytest.mark.parametrize("view", VIEWS)
def test_onnxruntime_matches_torch_per_view(exported, view):
    model, encoder = exported["model"], OnnxEncoder(exported["onnx"])
    rng = np.random.default_rng(3)
    height, width = model.config.image.input_size[view]
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
              for h, w in [(height, width), (40, 90), (height * 2, width * 2), (17, 23), (height, width)]]
    ref = model.encode(images, view=view, batch_size=2)
    got = encoder.encode(images, view=view, batch_size=2)
    assert got.shape == ref.shape == (5, model.embed_dim) and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert _cosines(got, ref).min() >= 0.9999
    tensors = torch.from_numpy(np.stack([np.asarray(images[0]), np.asarray(images[4])])).permute(0, 3, 1, 2)
    assert _cosines(encoder.encode(tensors, view=view), ref[[0, 4]]).min() >= 0.9999  # uint8 tensors too


def test_onnxruntime_matches_torch_for_text(exported):
    model, encoder = exported["model"], OnnxEncoder(exported["onnx"])
    texts = ["a red tower", "", "Harbour; cranes, ships and a grey lighthouse " * 5, "green"]
    got, ref = encoder.encode(texts, view="text", batch_size=3), model.encode(texts, view="text")
    assert got.shape == ref.shape and _cosines(got, ref).min() >= 0.9999
    assert encoder.encode([], view="text").shape == (0, model.embed_dim)


def test_export_refuses_existing_out_and_fails_loudly_below_the_cosine(exported, tmp_path):
    ckpt = exported["root"] / "ckpt"
    with pytest.raises(ExportError, match="exists"):
        export_onnx(ckpt, exported["onnx"])
    assert main(["export", "onnx", "--checkpoint", str(ckpt), "--out", str(exported["onnx"])]) == 2
    with pytest.raises(ExportError, match="self-check failed.*drone"):
        export_onnx(ckpt, tmp_path / "strict", views=("drone",), min_cosine=1.5)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_per_view_towers_export(tiny_model_config, tmp_path):
    config = copy.deepcopy(tiny_model_config)
    config.image.share_backbone = False
    torch.manual_seed(2)
    model = GeoBridge(config).eval()
    model.save_pretrained(tmp_path / "ckpt")
    manifest = export_onnx(tmp_path / "ckpt", tmp_path / "onnx", views=("street",))
    assert set(manifest["images"]) == {"street"} and manifest["check"]["street"] >= 0.9999
    images = [Image.fromarray(np.full((32, 64, 3), v, dtype=np.uint8)) for v in (10, 200)]
    got = OnnxEncoder(tmp_path / "onnx").encode(images, view="street")
    assert _cosines(got, model.encode(images, view="street")).min() >= 0.9999


def test_locate_backend_onnx_gives_the_torch_top1(world, tmp_path, capsys):
    out = tmp_path / "onnx"
    assert main(["export", "onnx", "--checkpoint", str(world["run"]), "--out", str(out)]) == 0
    index = tmp_path / "idx.gbx"
    assert main(["index", "build", "--checkpoint", str(world["run"]), "--data", str(world["data"]), "--split",
                 "test", "--out", str(index), "--no-progress"]) == 0
    capsys.readouterr()
    for pid in ("p002", "p005", "p007"):
        query = ["--index", str(index), "--image", str(world["data"] / "drone" / pid / "00.png"), "--text",
                 f"a tower, place {pid[-1]}", "--top-k", "3"]
        assert main(["locate", *query]) == 0
        ref = json.loads(capsys.readouterr().out)
        assert main(["locate", *query, "--backend", "onnx", "--checkpoint", str(out)]) == 0
        got = json.loads(capsys.readouterr().out)
        assert [m["place_id"] for m in got["matches"]] == [m["place_id"] for m in ref["matches"]]
        assert got["matches"][0]["score"] == pytest.approx(ref["matches"][0]["score"], abs=1e-4)
    assert main(["locate", "--index", str(index), "--text", "x", "--backend", "onnx",
                 "--checkpoint", str(world["run"])]) == 2  # a torch checkpoint is not an ONNX export
    assert "manifest.json" in capsys.readouterr().err


def test_serve_on_onnx_graphs(exported):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from geobridge.index import GeoIndex
    from geobridge.serve.app import create_app

    model, encoder = exported["model"], OnnxEncoder(exported["onnx"], threads=1)
    rng = np.random.default_rng(5)
    tiles = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(4)]
    index = GeoIndex(model.embed_dim, factory="Flat")
    index.add(model.encode(tiles, view="drone"),  # drone embeddings filed as satellite: a query's exact match
              [{"place_id": f"p{i}", "lat": 10.0 + i, "lon": 20.0, "view": "satellite", "path": f"p{i}.png"}
               for i in range(4)])
    app = create_app(model=encoder, index=index, workers=1)
    buffer = io.BytesIO()
    tiles[2].save(buffer, format="PNG")
    with TestClient(app) as client:
        response = client.post("/locate", files=[("images", ("q.png", buffer.getvalue(), "image/png"))],
                               data={"views": "drone", "top_k": "2"})
    assert response.status_code == 200, response.text
    top = response.json()["matches"][0]
    assert top["place_id"] == "p2" and top["similarity"] == pytest.approx(1.0, abs=1e-4)  # torch's own vector


@pytest.mark.slow
def test_minilm_text_graph_matches_torch(tmp_path):
    """gb-tiny as shipped (MiniLM text tower): the transformer, pooling and projection graph plus tokenizer."""
    from geobridge.models import get_model_config

    torch.manual_seed(0)
    model = GeoBridge(get_model_config("gb-tiny")).eval()
    model.save_pretrained(tmp_path / "ckpt")
    manifest = export_onnx(tmp_path / "ckpt", tmp_path / "onnx", views=("drone",))
    assert manifest["text"]["kind"] == "minilm" and (tmp_path / "onnx" / manifest["text"]["tokenizer"]).is_file()
    texts = ["a red tower beside a river", "Snow-covered peaks, a dam and a long bridge " * 40, "ok"]
    got = OnnxEncoder(tmp_path / "onnx").encode(texts, view="text")
    assert _cosines(got, model.encode(texts, view="text")).min() >= 0.9999


def test_the_onnx_runtime_path_imports_neither_torch_nor_onnx(exported):
    import subprocess
    import sys

    code = ("import sys; from geobridge.export import OnnxEncoder; "
            f"e = OnnxEncoder({str(exported['onnx'])!r}); v = e.encode(['a red tower'], view='text'); "
            "print(v.shape, 'torch' in sys.modules, 'onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["(1,", f"{exported['model'].embed_dim})", "False", "False"]


def test_a_kept_band_of_rows_is_cut_in_the_model_and_in_its_onnx_graph(tiny_model_config, tmp_path):
    """image.keep_rows: the panorama's top quarter never reaches the backbone, in torch, after save/load and in
    the exported graph."""
    config = copy.deepcopy(tiny_model_config)
    config.image.keep_rows = {"street": [0.25, 1.0]}
    torch.manual_seed(3)
    model = GeoBridge(config).eval()
    model.save_pretrained(tmp_path / "ckpt")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)  # the input size: no resampling across the cut
    other_sky = base.copy()
    other_sky[:16] = rng.integers(0, 256, (16, 128, 3), dtype=np.uint8)  # a different top quarter
    images = [Image.fromarray(base), Image.fromarray(other_sky)]
    torch_emb = model.encode(images, view="street")
    assert _cosines(torch_emb[:1], torch_emb[1:]).min() >= 0.9999  # the sky does not matter
    loaded = GeoBridge.from_pretrained(tmp_path / "ckpt")
    assert loaded.config.image.keep_rows == {"street": [0.25, 1.0]}
    assert _cosines(loaded.encode(images, view="street"), torch_emb).min() >= 0.9999
    base[16:17] = 255 - base[16:17]  # a row inside the band does matter
    assert _cosines(model.encode([Image.fromarray(base)], view="street"), torch_emb[:1]).min() < 0.9999
    manifest = export_onnx(tmp_path / "ckpt", tmp_path / "onnx", views=("street",))
    assert manifest["check"]["street"] >= 0.9999
    got = OnnxEncoder(tmp_path / "onnx").encode(images, view="street")
    assert _cosines(got, torch_emb).min() >= 0.9999
