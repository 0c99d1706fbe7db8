"""CLIP towers from local weights (models/clip/): a tiny CLIP with random weights, written in both published
layouts inside the test's folder, goes through the code a user's checkpoint takes."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_world
from test_data import make_geoloc
from tiny_clip import CLIP_MEAN, TINY, tiny_clip, tiny_clip_model_config, write_hf_clip, write_open_clip

from geobridge.cli.main import main
from geobridge.errors import CheckpointError, ConfigError
from geobridge.models import GeoBridge, GeoBridgeConfig
from geobridge.models.clip.tokens import OpenClipTokens, chunk_texts
from geobridge.views import IMAGE_VIEWS

pytest.importorskip("open_clip")
LAYOUTS = ("hf", "open_clip")
LONG = " ".join(f"A {c} church stands {d} of the old stone harbour wall." for c in ("white", "red", "grey", "tall")
                for d in ("north", "south", "east"))  # 12 sentences, 144 CLIP tokens


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clip")
    return {"hf": write_hf_clip(root / "hf-clip"), "open_clip": write_open_clip(root / "open_clip.safetensors")}


def _model(weights: Path | None, **kwargs) -> GeoBridge:
    torch.manual_seed(0)
    return GeoBridge(GeoBridgeConfig.from_dict(tiny_clip_model_config(weights, **kwargs))).eval()


def _library_features(library: str, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
    reference = tiny_clip(library).eval()  # the same seed as the files: the same weights
    with torch.no_grad():
        if library == "hf":
            return (reference.get_image_features(pixel_values=images).pooler_output,
                    reference.get_text_features(input_ids=ids, attention_mask=mask).pooler_output)
        return reference.encode_image(images), reference.encode_text(ids)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_clip_tower_is_the_library_forward_bit_for_bit(weights, layout):
    model = _model(weights[layout])
    assert model.config.clip.library == layout
    assert model.logit_scale.item() == pytest.approx(4.0)  # the checkpoint's temperature, not the config's
    images = torch.randn(3, 3, TINY["image_size"], TINY["image_size"], generator=torch.Generator().manual_seed(1))
    ids, mask = model.text.tokens(["a red tower by the river", "fields"])
    want_image, want_text = _library_features(layout, images, ids, mask)
    with torch.no_grad():
        for view in IMAGE_VIEWS:  # each view's own tower starts as CLIP
            assert torch.equal(model.image(images, view=view), want_image)
        assert torch.equal(model.text.encoder(ids, mask), want_text)
        assert torch.equal(model.text(["a red tower by the river", "fields"]), want_text)


def test_the_two_tokenizers_agree_and_the_hf_folder_gives_its_normalisation(weights):
    hf, oc = _model(weights["hf"]), _model(weights["open_clip"])
    texts = ["A white church north of the lake; red-roofed houses.", LONG]
    assert torch.equal(hf.text.tokens(texts)[0], oc.text.tokens(texts)[0].masked_fill(oc.text.tokens(texts)[1] == 0,
                                                                                      hf.text.tokens.pad_id))
    assert hf.config.image.mean == pytest.approx(CLIP_MEAN)


def test_shared_and_per_view_towers_and_trainable_blocks(weights):
    per_view = _model(weights["open_clip"])
    encoders = [per_view.image.backbone_for(v) for v in IMAGE_VIEWS]
    assert len({id(e) for e in encoders}) == 3  # the paper: a tower per view
    shared = _model(weights["open_clip"], share_backbone=True, trainable_blocks=1)
    assert len({id(shared.image.backbone_for(v)) for v in IMAGE_VIEWS}) == 1
    trainable = {n for n, p in shared.image.named_parameters() if p.requires_grad}
    blocks = {n.split(".resblocks.")[1].split(".")[0] for n in trainable if ".resblocks." in n}
    assert blocks == {str(TINY["vision_layers"] - 1)}  # the last block only
    assert "backbone.visual.proj" in trainable and "backbone.visual.ln_post.weight" in trainable
    assert "backbone.visual.conv1.weight" not in trainable and "backbone.visual.positional_embedding" not in trainable
    assert any(n.startswith("adapters.") for n in trainable)
    shared.image.set_trainable_blocks(None)
    assert all(p.requires_grad for p in shared.image.parameters())


def test_long_descriptions_are_embedded_in_runs_of_whole_sentences(weights):
    model = _model(weights["open_clip"])
    tokens = model.text.tokens
    assert tokens.count(LONG) > (TINY["context_length"] - 2) * 3 // 2  # well past one context
    runs, owner = chunk_texts(["short text", LONG], count=tokens.count, limit=TINY["context_length"] - 2)
    assert runs[0] == "short text" and owner.tolist() == [0] + [1] * (len(runs) - 1) and len(runs) >= 3
    assert all(tokens.count(r) <= TINY["context_length"] - 2 for r in runs)
    assert " ".join(runs[1:]) == LONG  # nothing cut, nothing reordered
    with torch.no_grad():
        got = model.text(["short text", LONG])
        ids, mask = tokens(runs)
        features = model.text.encoder(ids, mask)
    assert torch.equal(got[0], features[0])  # a text that fits is CLIP's own embedding
    assert torch.allclose(got[1], features[1:].mean(dim=0), atol=1e-6)
    model.config.clip.long_text = "truncate"
    with torch.no_grad():
        truncated = model.text([LONG])
    assert torch.equal(truncated[0], model.text.encoder(*tokens([LONG]))[0])


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _bad_checkpoints(root: Path, weights: dict[str, Path]) -> dict[str, tuple[Path, str]]:
    good = weights["open_clip"].read_bytes()
    hf_pickle = root / "hf-pickle"
    hf_pickle.mkdir(parents=True)
    (hf_pickle / "config.json").write_text((weights["hf"] / "config.json").read_text())
    torch.save({"a": torch.zeros(1)}, hf_pickle / "pytorch_model.bin")
    return {
        "missing": (root / "nowhere.safetensors", "not found"),
        "no config": (_write(root / "empty" / "x.txt", b"").parent, "config.json is missing"),
        "truncated": (_write(root / "cut.safetensors", good[: len(good) // 2]), "corrupt or unreadable"),
        "pickle": (_write(root / "w.pt", b"\x80\x04K\x01."), "pickle"),
        "hf pickle": (hf_pickle, "pickle"),
        "wrong architecture": (write_open_clip(root / "deep.safetensors", vision_layers=4), "wrong CLIP architecture"),
        "wrong hf architecture": (write_hf_clip(root / "wide-hf", text_layers=3), r"text_layers 3 \(expected 2\)"),
    }


def test_bad_checkpoints_get_one_line_naming_the_path_and_nothing_is_written(weights, tmp_path, capsys):
    world = make_world(tmp_path / "world")
    config = tmp_path / "gb-clip-tiny.json"
    config.write_text(json.dumps(tiny_clip_model_config(None)))
    for name, (path, message) in _bad_checkpoints(tmp_path / "bad", weights).items():
        with pytest.raises(CheckpointError, match=message) as error:
            _model(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value), name
        out = tmp_path / f"run-{name.replace(' ', '-')}"
        code = main(["train", "--data", str(world), "--out", str(out), f"model.name={config}",
                     f"model.clip_weights={path}", "optim.epochs=1", "optim.batch_size=4", "data.num_workers=0"])
        err = capsys.readouterr().err
        assert code != 0 and str(path) in err, (name, err)
        assert not out.exists(), name


def test_a_safetensors_file_whose_header_length_starts_with_0x80_is_not_a_pickle(tmp_path):
    from safetensors.torch import save_file

    from geobridge.models.checkpoint import load_tensors

    for width in range(1, 200):  # find a header whose length's low byte is 0x80
        path = tmp_path / "w.safetensors"
        save_file({"x" * width: torch.zeros(2)}, str(path))
        if path.read_bytes()[0] == 0x80:
            break
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] & 0xFF == 0x80
    assert torch.equal(next(iter(load_tensors(path).values())), torch.zeros(2))


@pytest.fixture(scope="module", params=LAYOUTS)
def trained(request, weights, tmp_path_factory) -> dict:
    """A tiny CLIP of each layout trained for a few steps through the CLI, on a generated world."""
    layout = request.param
    root = tmp_path_factory.mktemp(f"trained-{layout}")
    world = make_geoloc(root / "world", n=14)  # 12 training places
    config = root / "gb-clip-tiny.json"
    config.write_text(json.dumps(tiny_clip_model_config(None)))
    run = root / "run"
    assert main(["train", "--data", str(world), "--out", str(run), f"model.name={config}",
                 f"model.clip_weights={weights[layout]}", "optim.epochs=6", "optim.batch_size=4", "optim.lr=1e-3",
                 "optim.text_lr=1e-3", "data.num_workers=0", "train.norm_recalibration_images=0"]) == 0
    return {"layout": layout, "run": run, "world": world}


def test_trains_saves_loads_and_exports(weights, trained, tmp_path):
    layout, run = trained["layout"], trained["run"]
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert losses[-1] < losses[0] * 0.8, losses  # it learns the training places
    trained = GeoBridge.from_pretrained(run)
    assert trained.config.clip.library == layout
    start = _model(weights[layout])
    moved = [not torch.equal(a, b) for a, b in zip(trained.image.backbone_for("drone").parameters(),
                                                   start.image.backbone_for("drone").parameters(), strict=True)]
    assert any(moved)
    texts = ["a red tower, place 3", LONG]
    images = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8) for i in range(3)]
    saved = tmp_path / "again"
    trained.save_pretrained(saved)
    again = GeoBridge.from_pretrained(saved)
    assert np.array_equal(again.encode(texts, view="text"), trained.encode(texts, view="text"))
    assert np.array_equal(again.encode(images, view="street"), trained.encode(images, view="street"))
    assert main(["export", "onnx", "--checkpoint", str(run), "--out", str(tmp_path / "onnx")]) == 0
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert min(manifest["check"].values()) >= 0.9999, manifest["check"]

    from geobridge.export.onnx_runtime import OnnxEncoder

    onnx = OnnxEncoder(tmp_path / "onnx")
    cosine = np.sum(onnx.encode(texts, view="text") * trained.encode(texts, view="text"), axis=1)
    assert cosine.min() >= 0.9999


def test_clip_weights_need_a_clip_model_and_refuse_init_from(weights, tmp_path, capsys):
    world = make_world(tmp_path / "world")
    code = main(["train", "--data", str(world), "--out", str(tmp_path / "r"), "model.name=gb-tiny",
                 "model.text_kind=hashing", f"model.clip_weights={weights['hf']}"])
    assert code != 0 and "has no CLIP towers" in capsys.readouterr().err
    with pytest.raises(Exception, match="input_size"):
        GeoBridgeConfig.from_dict(tiny_clip_model_config(None, input_size={"drone": [32, 32], "satellite": [32, 32],
                                                                           "street": [32, 64]}))


def test_open_clip_tokens_need_no_download():
    tokens = OpenClipTokens(context_length=77)
    ids, mask = tokens(["a tower"])
    assert ids.shape == (1, 77) and int(mask.sum()) == 4  # start, "a", "tower", end


@pytest.mark.parametrize("layout", LAYOUTS)
def test_activation_checkpointing_gives_the_same_gradients(weights, layout):
    images = torch.randn(2, 3, TINY["image_size"], TINY["image_size"], generator=torch.Generator().manual_seed(2))
    grads = []
    for checkpointing in (False, True):
        model = _model(weights[layout], grad_checkpointing=checkpointing).train()
        model.image(images, view="satellite").square().sum().backward()
        grads.append([p.grad for p in model.image.backbone_for("satellite").parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


def test_fine_tunes_only_the_last_layers_from_a_trained_clip_run(trained, tmp_path):
    out = tmp_path / "finetuned"
    assert main(["train", "--data", str(trained["world"]), "--out", str(out), f"model.init_from={trained['run']}",
                 "model.image_trainable_blocks=1", "model.text_trainable_layers=1", "optim.epochs=1",
                 "optim.batch_size=4", "optim.lr=1e-3", "optim.text_lr=1e-3", "data.num_workers=0",
                 "train.norm_recalibration_images=0"]) == 0
    before = GeoBridge.from_pretrained(trained["run"]).state_dict()
    after = GeoBridge.from_pretrained(out).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    last_vision, last_text = str(TINY["vision_layers"] - 1), str(TINY["text_layers"] - 1)
    for key in changed:
        if key.startswith("image.") and (".layers." in key or ".resblocks." in key):
            assert re.search(rf"\.(layers|resblocks)\.{last_vision}\.", key), key
        if key.startswith("text.") and (".layers." in key or ".resblocks." in key):
            assert re.search(rf"\.(layers|resblocks)\.{last_text}\.", key), key
        assert "embedding" not in key and "conv1" not in key and "pre_layrnorm" not in key, key
    assert any(".resblocks." in k or ".layers." in k for k in changed)  # the last blocks did train
    assert with_prefix(changed, "text.") and with_prefix(changed, "image.")


def with_prefix(keys: set[str], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


@pytest.mark.parametrize("name", ["geoloc-pretrain-clip", *(f"{b}-finetune-clip" for b in (
    "university1652", "cvusa", "cvact", "vigor", "geotext1652"))])
def test_the_clip_recipes_are_the_papers(name):
    from geobridge.train import load_config

    root = Path(__file__).parents[1]
    shipped = root / "configs" / f"{name}.yaml"
    assert shipped.resolve() == (root / "src/geobridge/train/recipes" / f"{name}.yaml").resolve()
    config = load_config(shipped)
    assert config.model.name == "gb-clip-l14" and config.optim.lr == config.optim.text_lr == 1e-5
    assert config.optim.weight_decay == 0.0  # Adam
    if name.startswith("geoloc"):
        assert config.optim.epochs == 200 and config.loss.use_anchors
    else:  # as the benchmark's own recipe, with the paper's CLIP settings
        assert config.model.image_trainable_blocks == config.model.text_trainable_layers == 3
        assert config.model.image_input_size == {}  # CLIP's 224 px squares
        plain = load_config(root / "configs" / name.replace("-clip", ".yaml"))
        assert (config.data, config.sampler, config.optim.epochs, config.train.eval_protocol) == (
            plain.data, plain.sampler, plain.optim.epochs, plain.train.eval_protocol)


def test_indexes_locates_and_serves_with_clip_towers(trained, tmp_path, capsys):
    index = tmp_path / "sat.gbx"
    assert main(["index", "build", "--checkpoint", str(trained["run"]), "--data", str(trained["world"]), "--views",
                 "satellite", "--out", str(index), "--no-progress"]) == 0
    capsys.readouterr()
    drone = next((trained["world"] / "drone").glob("*/*.png"))
    long_text = "A red tower by the river. " * 20  # a description past CLIP's context: runs of sentences
    assert main(["locate", "--index", str(index), "--image", str(drone), "--view", "drone", "--text", long_text,
                 "--top-k", "2"]) == 0  # the world has 2 test places
    matches = json.loads(capsys.readouterr().out)["matches"]
    assert len(matches) == 2 and all(np.isfinite(m["score"]) for m in matches)

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from geobridge.index import GeoIndex
    from geobridge.serve.app import create_app

    app = create_app(model=GeoBridge.from_pretrained(trained["run"]), index=GeoIndex.load(index),
                     max_upload_bytes=1 << 20, max_pixels=1_000_000, workers=1)
    with TestClient(app) as client:
        files = [("images", ("d.png", drone.read_bytes(), "image/png"))]
        response = client.post("/locate", files=files, data={"view": "drone", "text": long_text, "top_k": "2"})
    assert response.status_code == 200, response.text
    served = response.json()["matches"]
    assert [m["place_id"] for m in served] == [m["place_id"] for m in matches]  # the CLI's answer
    assert served[0]["score"] == pytest.approx(matches[0]["score"], abs=1e-4)


def test_torchrun_two_processes_train_the_same_clip_model_as_one(weights, tmp_path):
    """2-process gloo DDP on the CPU vs one process on the same global batch: the same weights (only the order of
    floating-point sums differs), the per-view towers' and the text tower's included."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    world = make_geoloc(tmp_path / "world", n=18)
    config = tmp_path / "gb-clip-tiny.json"
    config.write_text(json.dumps(tiny_clip_model_config(None)))
    args = ["train", "--data", str(world), "--no-eval", f"model.name={config}",
            f"model.clip_weights={weights['open_clip']}", "optim.epochs=1", "train.max_steps=2", "optim.batch_size=8",
            "data.augment=false", "data.num_workers=0", "train.norm_recalibration_images=0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    for name, launcher in (("single", [sys.executable]), ("ddp", [torchrun, "--standalone", "--nproc_per_node=2"])):
        done = subprocess.run([*launcher, "-m", "geobridge.cli.main", *args, "--out", str(tmp_path / name)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    single = load_file(str(tmp_path / "single" / "model" / "model.safetensors"))
    ddp = load_file(str(tmp_path / "ddp" / "model" / "model.safetensors"))
    assert set(single) == set(ddp)
    start = load_file(str(weights["open_clip"]))["visual.proj"]
    assert not torch.equal(single["image.view_backbones.drone.visual.proj"], start)  # it did train
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=0, atol=1e-5)


def test_text_alignment_tunes_only_the_clip_text_towers_last_blocks(weights, tmp_path):
    from test_data import make_geoloc

    from geobridge.data import load_places
    from geobridge.train.config import TextAlignSection
    from geobridge.train.text_align import align_text

    world = make_geoloc(tmp_path / "w", n=6)
    config = tiny_clip_model_config(weights["open_clip"])
    config["text"]["freeze"] = True
    model = GeoBridge(GeoBridgeConfig.from_dict(config)).eval()
    places = load_places(world)
    tiles = [str(p.images["satellite"][0]) for p in places]
    before_tiles, before_text = model.encode(tiles, view="satellite"), model.encode([LONG], view="text")
    align_text(model, places, TextAlignSection(epochs=1, trainable_layers=1, batch_size=3), show_progress_bar=False)
    tuned = {n for n, p in model.text.named_parameters() if p.requires_grad}
    blocks = {n.split(".resblocks.")[1].split(".")[0] for n in tuned if ".resblocks." in n}
    assert blocks == {str(TINY["text_layers"] - 1)} and not model.config.text.freeze
    assert not any("token_embedding" in n for n in tuned)
    np.testing.assert_array_equal(model.encode(tiles, view="satellite"), before_tiles)
    assert not np.allclose(model.encode([LONG], view="text"), before_text)


def test_a_clip_tower_refuses_a_cut_band_and_takes_the_whole_input_as_no_cut():
    cut = tiny_clip_model_config(None, keep_rows={"street": [0.25, 1.0]})
    with pytest.raises(ConfigError, match=r"model.image_keep_rows.street=\[0.0,1.0\]"):
        GeoBridgeConfig.from_dict(cut)
    whole = GeoBridgeConfig.from_dict(tiny_clip_model_config(None, keep_rows={"street": [0.0, 1.0]}))
    assert whole.image.keep_rows == {"street": [0.0, 1.0]}
