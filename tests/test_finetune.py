"""Fine-tuning: trainable blocks of the image tower, init_from a GeoLoc-trained run, the shipped recipes end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_data import make_geoloc

from geobridge.data import load_places
from geobridge.data.pairs import epoch_pairs, full_batches
from geobridge.errors import CheckpointError, GeoBridgeError
from geobridge.eval.training import training_evaluator
from geobridge.models import GeoBridge, get_model_config
from geobridge.models.image_tower import frozen_parameters
from geobridge.protocols import get_protocol
from geobridge.train import load_config, train
from geobridge.train.setup import build_model

CONFIGS = Path(__file__).parents[1] / "configs"
RECIPES = Path(__file__).parents[1] / "src" / "geobridge" / "train" / "recipes"
FINETUNE = ["university1652", "cvusa", "cvact", "vigor", "geotext1652"]


def _tiny(**image) -> GeoBridge:
    config = get_model_config("gb-tiny")
    config.text.kind = "hashing"
    for key, value in image.items():
        setattr(config.image, key, value)
    torch.manual_seed(0)
    return GeoBridge(config)


def _trainable(model: GeoBridge) -> set[str]:
    return {n for n, p in model.image.named_parameters() if p.requires_grad}


def test_trainable_blocks_freeze_all_but_the_last_blocks():
    # test_convnext: stem, 2+2+2+2 blocks... timm groups them as stem, one group per block, then head.norm
    full = _tiny()
    backbone = {n for n, _ in full.image.named_parameters() if n.startswith("backbone.")}
    assert _trainable(full) >= backbone
    one = _tiny(trainable_blocks=1)
    trained_backbone = {n.removeprefix("backbone.") for n in _trainable(one) if n.startswith("backbone.")}
    assert trained_backbone and all(n.startswith(("stages.3.blocks.1.", "head.norm.")) for n in trained_backbone)
    assert {n for n in _trainable(full) if not n.startswith("backbone.")} == \
        {n for n in _trainable(one) if not n.startswith("backbone.")}  # adapters, view embeddings, projection
    # each further block unfreezes one more timm group; the stem only when every block trains
    two = {n for n in _trainable(_tiny(trainable_blocks=2)) if n.startswith("backbone.")}
    assert {n.removeprefix("backbone.") for n in two} - trained_backbone
    blocks = len({n.split(".blocks.")[0] + n.split(".blocks.")[1].split(".")[0] for n in backbone if ".blocks." in n})
    assert frozen_parameters(full.image.backbone, trainable_blocks=blocks) == set()
    assert "stem.0.weight" in frozen_parameters(full.image.backbone, trainable_blocks=blocks - 1)
    zero = frozen_parameters(full.image.backbone, trainable_blocks=0)
    assert zero == {n.removeprefix("backbone.") for n in backbone if not n.startswith("backbone.head.")}
    with pytest.raises(ValueError, match="trainable_blocks"):
        _tiny(trainable_blocks=-1)


def test_frozen_blocks_keep_their_batchnorm_statistics(tmp_path):
    config = get_model_config("gb-small")
    config.text.kind = "hashing"
    config.image.trainable_blocks = 1  # resnet18: only layer4.1 trains
    model = GeoBridge(config).train()
    norms = {n: m for n, m in model.image.backbone.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert {n for n, m in norms.items() if m.training} == {n for n in norms if n.startswith("layer4.1.")}
    frozen, trained = (norms[n].view_running_mean.clone() for n in ("layer1.0.bn1", "layer4.1.bn1"))
    model.image(torch.randn(4, 3, 64, 64), view="drone")
    assert torch.equal(norms["layer1.0.bn1"].view_running_mean, frozen)
    # the trained block's drone statistics moved, the other views' did not (per-view statistics)
    moved = (norms["layer4.1.bn1"].view_running_mean != trained).any(dim=1)  # (views,)
    assert moved.tolist() == [True, False, False]
    # the setting travels with the checkpoint
    restored = GeoBridge.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert restored.config.image.trainable_blocks == 1 and _trainable(restored) == _trainable(model)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A tiny model trained for two steps on a GeoLoc-format world: the GeoLoc-trained checkpoint to start from."""
    root = tmp_path_factory.mktemp("pretrain")
    world = make_geoloc(root / "geoloc", n=10)
    run = root / "run"
    config = load_config(None, [f"data.root={world}", f"out={run}", "model.text_kind=hashing", "optim.batch_size=4",
                                "optim.epochs=1", "train.max_steps=2", "data.pipeline=tensor", "train.device=cpu"])
    train(config, evaluate=False)
    assert (run / "model" / "model.safetensors").is_file()
    return run


def test_init_from_loads_strictly_and_refuses_architecture_overrides(pretrained, tmp_path):
    base = [f"model.init_from={pretrained}", "model.name=gb-convnext-base"]  # the checkpoint's architecture wins
    model = build_model(load_config(None, [*base, "model.image_trainable_blocks=1"]))
    saved = load_file(str(pretrained / "model" / "model.safetensors"))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)
    assert model.config.name == "gb-tiny" and model.config.image.trainable_blocks == 1
    resized = build_model(load_config(None, [*base, "model.image_input_size.street=[32,96]"]))
    assert resized.config.image.input_size["street"] == [32, 96]
    with pytest.raises(GeoBridgeError, match="text_kind"):
        build_model(load_config(None, [*base, "model.text_kind=minilm"]))
    with pytest.raises(GeoBridgeError, match="text_trainable_layers"):
        build_model(load_config(None, [*base, "model.text_trainable_layers=2"]))  # a hashing tower has no layers
    with pytest.raises(GeoBridgeError, match="image_input_size"):
        load_config(None, ["model.image_input_size.aerial=[8,8]"])
    # strict on shapes: a checkpoint whose projection has another width does not load
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((pretrained / "model" / "config.json").read_text())
    tensors = dict(saved)
    tensors["image.proj.weight"] = torch.zeros(7, tensors["image.proj.weight"].shape[1])
    from safetensors.torch import save_file

    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "geobridge-model"})
    with pytest.raises(CheckpointError, match="does not match"):
        build_model(load_config(None, [f"model.init_from={broken}"]))


def test_recipe_options_are_checked():
    with pytest.raises(GeoBridgeError, match="eval_protocol"):
        load_config(None, ["data.format=cvusa", "train.eval_protocol=university1652"])
    with pytest.raises(GeoBridgeError, match="eval_protocol"):
        load_config(None, ["train.eval_protocol=cvusa-2"])
    with pytest.raises(GeoBridgeError, match="epoch_unit"):
        load_config(None, ["data.epoch_unit=images"])
    with pytest.raises(GeoBridgeError, match="pair_views"):
        load_config(None, ["data.epoch_unit=pairs", "data.views=[drone,street]"])
    with pytest.raises(GeoBridgeError, match="image_trainable_blocks"):
        load_config(None, ["model.image_trainable_blocks=-2"])


@pytest.mark.parametrize("name", FINETUNE)
def test_finetune_recipes_are_shipped_and_pair_based(name):
    shipped, packaged = CONFIGS / f"{name}-finetune.yaml", RECIPES / f"{name}-finetune.yaml"
    assert shipped.resolve() == packaged.resolve(), "configs/ holds links to the packaged recipes, not copies"
    config = load_config(shipped)
    assert config.data.format == name and config.model.init_from is None
    assert get_protocol(config.train.eval_protocol).layout == name
    assert config.data.epoch_unit == "pairs" and set(config.data.pair_views) <= set(config.data.views)
    assert config.model.image_trainable_blocks == 3  # the GeoBridge paper: only the last three layers train


# One entry per layout that `geobridge synth --format` writes and `load_places` reads: (format, recipe overrides).
# the panorama recipes' 40 epochs and 384 px, cut to 2 epochs (the second on similarity hard negatives) at 32 px
SMALL_PANORAMAS = ["optim.epochs=2", "model.image_input_size.satellite=[32,32]",
                   "model.image_input_size.street=[32,64]"]
LAYOUTS = [
    pytest.param("university1652", [], id="university1652"),
    pytest.param("cvusa", SMALL_PANORAMAS, id="cvusa"),
    pytest.param("cvact", SMALL_PANORAMAS, id="cvact"),
    pytest.param("vigor", SMALL_PANORAMAS, id="vigor-same"),
    pytest.param("vigor", [*SMALL_PANORAMAS, "data.loader_options.mode=cross", "train.eval_protocol=vigor-cross"],
                 id="vigor-cross"),
    pytest.param("geotext1652", [], id="geotext1652"),
    # similarity hard negatives (the CVUSA/CVACT/VIGOR recipes' sampler) re-mined after every epoch
    pytest.param("university1652", ["sampler.strategy=embedding", "sampler.embedding_refresh=1", "optim.epochs=2"],
                 id="university1652-embedding"),
]


@pytest.mark.parametrize("fmt,extra", LAYOUTS)
def test_finetune_recipe_end_to_end_on_a_generated_layout(pretrained, tmp_path, fmt, extra):
    from geobridge.synth import WorldConfig, generate_world

    world = tmp_path / "world"
    generate_world(world, WorldConfig(places=10, test_places=3, image_size=32, drone_views=3, texts_per_place=1,
                                      format=fmt, workers=1), show_progress_bar=False)
    out = tmp_path / "finetune"
    config = load_config(CONFIGS / f"{fmt}-finetune.yaml", [
        f"model.init_from={pretrained}", f"data.root={world}", f"out={out}", "optim.batch_size=4",
        "data.num_workers=0", "data.pipeline=tensor", "train.device=cpu", "model.text_trainable_layers=null",
        *extra,
    ])
    places = load_places(world, fmt=fmt, split=config.data.train_split)
    pairs = epoch_pairs(places, views=config.data.pair_views)
    expected_steps = full_batches(np.bincount(pairs.place), 4)

    def items(place, view):
        return len(place.texts) if view == "text" else len(place.images.get(view, ()))

    query, reference = config.data.pair_views  # every query item of a place with a reference item, once
    assert len(pairs) == sum(items(p, query) for p in places if items(p, reference))
    assert expected_steps >= len(places) // 4  # at least a place epoch (54 times one on University-1652)
    result = train(config, evaluator=training_evaluator(config, show_progress_bar=False))
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [expected_steps * (e + 1) for e in range(config.optim.epochs)]
    protocol = get_protocol(config.train.eval_protocol)  # the recipe's final evaluation is its benchmark's
    for query, gallery in protocol.directions:
        assert 0.0 <= result[f"{query}->{gallery}/R@1"] <= 100.0
    # only the last three blocks of the backbone moved; the head, adapters and projection trained too
    before = load_file(str(pretrained / "model" / "model.safetensors"))
    after = load_file(str(out / "model" / "model.safetensors"))
    tuned = GeoBridge.from_pretrained(out)
    frozen = {f"image.backbone.{n}" for n in frozen_parameters(tuned.image.backbone, trainable_blocks=3)}
    assert frozen and tuned.config.image.trainable_blocks == 3
    for key in before:
        if key in frozen:
            assert torch.equal(before[key], after[key]), key
    moved = [k for k in before if k not in frozen and not torch.equal(before[k], after[k])]
    assert any(k.startswith("image.backbone.") for k in moved) and "image.proj.weight" in moved
