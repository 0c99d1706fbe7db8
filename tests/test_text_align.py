"""Text alignment (train/text_align.py): the loss by hand, the epoch's batches, learning with the image towers
untouched, MiniLM's top layers alone trained and saved, and the trainer's stage."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_data import make_geoloc

from geobridge.data import load_places
from geobridge.errors import ConfigError
from geobridge.train import load_config
from geobridge.train.config import TextAlignSection
from geobridge.train.text_align import _batches, align_loss, align_text, place_galleries


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_geoloc(tmp_path_factory.mktemp("align") / "w", n=12)


def test_align_loss_is_the_mean_over_views_of_both_directions_by_hand():
    gen = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(3, 4, generator=gen), dim=-1)  # places 5, 1, 7
    labels = torch.tensor([5, 1, 7])
    sat_rows = torch.tensor([0, 1, 5, 7, 9])  # every place but one of the batch's has a tile ...
    sat = F.normalize(torch.randn(5, 4, generator=gen), dim=-1)
    street_rows = torch.tensor([1, 2])  # ... only place 1 of the batch has a panorama
    street = F.normalize(torch.randn(2, 4, generator=gen), dim=-1)
    scale = torch.tensor(2.0)
    got = align_loss(text, labels, {"satellite": (sat_rows, sat), "street": (street_rows, street)},
                     logit_scale=scale, label_smoothing=0.0)

    def ce(row: torch.Tensor, target: int) -> float:  # -log softmax(row)[target]
        return float(torch.logsumexp(row, 0) - row[target])

    t = scale.exp()
    # satellite: each description against all 5 tiles, each of the batch's 3 tiles against the 3 descriptions
    sat_t2i = np.mean([ce(t * sat @ text[i], int((sat_rows == labels[i]).nonzero())) for i in range(3)])
    sat_i2t = np.mean([ce(t * text @ sat[int((sat_rows == labels[i]).nonzero())], i) for i in range(3)])
    # street: only the description of place 1 (batch position 1) has a partner
    st_t2i = ce(t * street @ text[1], 0)
    st_i2t = ce(t * text @ street[0], 1)
    want = ((sat_t2i + sat_i2t) / 2 + (st_t2i + st_i2t) / 2) / 2
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_an_epoch_holds_every_description_once_in_batches_of_distinct_places(world):
    places = load_places(world)
    batches = _batches(places, rng=np.random.default_rng(0), batch_size=5)
    seen = [(int(i), text) for labels, texts in batches for i, text in zip(labels, texts, strict=True)]
    assert sorted(seen) == sorted((i, t) for i, p in enumerate(places) for t in p.texts)
    assert all(len(set(labels.tolist())) == len(labels) >= 2 for labels, _ in batches)
    for labels, texts in batches:
        assert all(t in places[int(i)].texts for i, t in zip(labels, texts, strict=True))
    other = _batches(places, rng=np.random.default_rng(1), batch_size=5)
    assert [b[1] for b in other] != [b[1] for b in batches]  # shuffled by the seed


def test_alignment_learns_the_descriptions_and_leaves_every_image_embedding_as_it_was(world, tiny_model_config):
    from geobridge.models import GeoBridge

    config = copy.deepcopy(tiny_model_config)
    config.image.test_time_augment = []  # plain embeddings of the noise images: distinct enough to learn
    torch.manual_seed(0)
    model = GeoBridge(config).eval()
    places = load_places(world)
    sats = [str(p.images["satellite"][0]) for p in places]
    before = model.encode(sats, view="satellite")

    def text_to_satellite_r1() -> float:
        texts = [p.texts[0] for p in places]
        sims = model.encode(texts, view="text") @ model.encode(sats, view="satellite").T  # (P, P)
        return float((sims.argmax(1) == np.arange(len(places))).mean())

    chance_level = text_to_satellite_r1()
    record = align_text(model, places, TextAlignSection(epochs=30, batch_size=6, lr=1e-2), show_progress_bar=False)
    assert record["steps"] == 30 * 4 and record["places"] == {"drone": 12, "satellite": 12, "street": 12}
    assert record["loss"][-1] < record["loss"][0]
    assert text_to_satellite_r1() >= 0.9 > chance_level + 0.4
    np.testing.assert_array_equal(model.encode(sats, view="satellite"), before)  # the image tower did not move
    assert all(p.requires_grad for p in model.image.parameters())  # and trains again in a later run


def test_place_galleries_average_a_drone_orbit(world, tiny_model_config):
    from geobridge.models import GeoBridge

    model = GeoBridge(tiny_model_config).eval()
    places = load_places(world)[:3]
    rows, emb = place_galleries(model, places)["drone"]
    photos = model.encode([str(path) for path in places[1].images["drone"]], view="drone")  # (2, D)
    want = F.normalize(torch.from_numpy(photos).mean(0), dim=0)
    assert rows.tolist() == [0, 1, 2]
    torch.testing.assert_close(emb[1], want)


def test_minilm_alignment_trains_only_its_top_layers_and_saves_only_those(world, tmp_path):
    from safetensors.torch import load_file

    from geobridge.models import GeoBridge, get_model_config
    from geobridge.models.checkpoint import save_tensors

    config = get_model_config("gb-tiny")
    assert config.text.kind == "minilm" and config.text.freeze
    model = GeoBridge(config).eval()
    places = load_places(world)[:4]
    align_text(model, places, TextAlignSection(epochs=1, trainable_layers=1, batch_size=4),
               show_progress_bar=False)
    tuned = {n for n, p in model.text.named_parameters() if p.requires_grad}
    assert tuned and all(n.startswith("proj.") or ".layer.5." in n for n in tuned)
    assert model.config.text.freeze is False and model.config.text.trainable_layers == 1

    model.save_pretrained(tmp_path / "m")
    saved = load_file(tmp_path / "m" / "model.safetensors")
    text_keys = [k for k in saved if k.startswith("text.encoder.")]
    assert text_keys and all(".layer.5." in k for k in text_keys)  # nothing below the trained layer
    texts = [p.texts[0] for p in places]
    loaded = GeoBridge.from_pretrained(tmp_path / "m")
    np.testing.assert_allclose(loaded.encode(texts, view="text"), model.encode(texts, view="text"), atol=1e-6)

    # a checkpoint that saved the frozen layers as well (before they were left out) still loads
    full = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_tensors(tmp_path / "m" / "model.safetensors", full, metadata={"format": "geobridge-model"})
    again = GeoBridge.from_pretrained(tmp_path / "m")
    np.testing.assert_allclose(again.encode(texts, view="text"), model.encode(texts, view="text"), atol=1e-6)


def test_training_ends_with_the_alignment_and_records_it(world, tmp_path):
    from geobridge.train import train

    config = load_config(None, [f"out={tmp_path / 'run'}", f"data.root={world}", "model.text_kind=hashing",
                                "optim.epochs=1", "optim.batch_size=4", "text_align.epochs=2",
                                "text_align.batch_size=4"])
    train(config, evaluate=False)
    record = json.loads((tmp_path / "run" / "run.json").read_text())["text_align"]
    assert record["epochs"] == 2 and record["steps"] == 2 * 2 * 3  # 10 training places, 2 descriptions, 4 a batch
    assert len(record["loss"]) == 2


def test_a_saved_model_aligned_afterwards_equals_the_run_that_aligned_at_its_end(world, tmp_path):
    from geobridge.models import GeoBridge
    from geobridge.train import train

    common = [f"data.root={world}", "model.text_kind=hashing", "optim.epochs=1", "optim.batch_size=4"]
    train(load_config(None, [*common, f"out={tmp_path / 'plain'}"]), evaluate=False)
    config = load_config(None, [*common, f"out={tmp_path / 'aligned'}", "text_align.epochs=1",
                                "text_align.batch_size=4"])
    train(config, evaluate=False)
    model = GeoBridge.from_pretrained(tmp_path / "plain")
    align_text(model, load_places(world, split="train"), config.text_align, seed=config.train.seed,
               weight_decay=config.optim.weight_decay, label_smoothing=config.loss.label_smoothing,
               show_progress_bar=False)
    texts = [p.texts[0] for p in load_places(world)]
    aligned = GeoBridge.from_pretrained(tmp_path / "aligned")
    np.testing.assert_allclose(model.encode(texts, view="text"), aligned.encode(texts, view="text"), atol=1e-5)


def test_alignment_needs_the_text_view():
    with pytest.raises(ConfigError, match="text_align.epochs"):
        load_config(None, ["text_align.epochs=1", "train.drop_views=[text]"])
    with pytest.raises(ConfigError, match="text_align.lr"):
        load_config(None, ["text_align.lr=0"])
