from __future__ import annotations

import copy
import json
import os
import pickle

import numpy as np
import pytest
import torch

from geobridge.errors import CheckpointError
from geobridge.models import GeoBridge, GeoBridgeConfig, get_model_config, list_models


def _images(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_builtin_configs_parse_and_list():
    names = list_models()
    assert {"gb-tiny", "gb-convnext-base", "gb-vit-base"} <= set(names)
    for name in names:
        config = get_model_config(name)
        assert config.name == name and config.embed_dim > 0
        assert GeoBridgeConfig.from_dict(config.to_dict()) == config


def test_unknown_config_keys_are_errors():
    data = get_model_config("gb-tiny").to_dict()
    data["image"]["bakbone"] = "x"
    with pytest.raises(ValueError, match="bakbone"):
        GeoBridgeConfig.from_dict(data)
    with pytest.raises(ValueError, match="gb-tiny"):
        get_model_config("gb-nope")


def test_forward_shapes_and_unit_norm(tiny_model_config):
    torch.manual_seed(0)
    model = GeoBridge(tiny_model_config).eval()
    images = {"drone": torch.randn(3, 3, 64, 64), "street": torch.randn(2, 3, 64, 128)}
    out = model(images, ["a red tower by a river", "grey blocks"])
    assert out["drone"].shape == (3, 128) and out["street"].shape == (2, 128) and out["text"].shape == (2, 128)
    for view in ("drone", "street", "text"):
        assert torch.allclose(out[view].norm(dim=-1), torch.ones(out[view].shape[0]), atol=1e-5)
    assert out["logit_scale"].shape == () and out["logit_scale"].item() == pytest.approx(model.logit_scale.item())


def test_encode_returns_normalised_numpy(tiny_model_config):
    model = GeoBridge(tiny_model_config)
    emb = model.encode(_images(5, 80, 80), view="drone", batch_size=2)
    assert emb.shape == (5, 128) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    text = model.encode(["one", "two", "three"], view="text")
    assert text.shape == (3, 128)
    with pytest.raises(ValueError, match="unknown view"):
        model.encode(["x"], view="aerial")


def test_test_time_augment_makes_embeddings_invariant(tiny_model_config):
    config = copy.deepcopy(tiny_model_config)  # the session's shared config stays as it was
    config.image.test_time_augment = ["drone", "satellite", "street"]
    torch.manual_seed(0)
    model = GeoBridge(config).eval()
    tile = _images(1, 64, 64, seed=3)[0]
    rotated = [np.rot90(tile, k).copy() for k in range(4)] + [tile[:, ::-1].copy(), np.rot90(tile[::-1], 1).copy()]
    emb = model.encode([tile, *rotated], view="satellite")
    np.testing.assert_allclose(emb[1:], np.repeat(emb[:1], len(rotated), axis=0), atol=1e-5)
    plain = model.encode([tile, *rotated], view="satellite", test_time_augment=False)
    assert np.abs(plain[1:] - plain[:1]).max() > 1e-3  # without it, a rotated tile embeds differently
    pano = _images(1, 64, 128, seed=4)[0]
    turned = [np.roll(pano, 32, axis=1), np.roll(pano[:, ::-1], 96, axis=1).copy()]
    emb = model.encode([pano, *turned], view="street")
    np.testing.assert_allclose(emb[1:], np.repeat(emb[:1], 2, axis=0), atol=1e-5)
    photo = _images(1, 64, 64, seed=5)[0]
    emb = model.encode([photo, photo[:, ::-1].copy()], view="drone")
    np.testing.assert_allclose(emb[1], emb[0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_save_load_round_trip_is_exact(tmp_path, tiny_model_config):
    torch.manual_seed(1)
    model = GeoBridge(tiny_model_config)
    with torch.no_grad():  # make the zero-initialised adapters matter
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    images = _images(4, 64, 128, seed=3)
    before = model.encode(images, view="street")
    before_text = model.encode(["a white church north of a lake"], view="text")
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["format"] == "geobridge-model" and meta["model"]["text"]["kind"] == "hashing"
    loaded = GeoBridge.from_pretrained(tmp_path / "m")
    np.testing.assert_array_equal(loaded.encode(images, view="street"), before)
    np.testing.assert_array_equal(loaded.encode(["a white church north of a lake"], view="text"), before_text)


def test_frozen_minilm_is_not_saved_but_round_trips(tmp_path):
    config = get_model_config("gb-tiny")
    model = GeoBridge(config)
    model.save_pretrained(tmp_path / "m")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    assert not any(k.startswith("text.encoder.") for k in keys)
    loaded = GeoBridge.from_pretrained(tmp_path / "m")
    texts = ["a red-roofed tower north of a river bend", "dense grey blocks on a diagonal grid"]
    np.testing.assert_array_equal(loaded.encode(texts, view="text"), model.encode(texts, view="text"))


def test_pickle_checkpoints_are_refused(tmp_path, tiny_model_config):
    evil = tmp_path / "weights.pt"
    with open(evil, "wb") as fh:
        pickle.dump({"x": 1}, fh)
    with pytest.raises(CheckpointError, match="refusing"):
        GeoBridge.from_pretrained(evil)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save({"state_dict": {}}, folder / "model.bin")
    with pytest.raises(CheckpointError, match="refusing"):
        GeoBridge.from_pretrained(folder)


def test_bad_checkpoints_name_the_problem(tmp_path, tiny_model_config):
    with pytest.raises(CheckpointError, match="not found"):
        GeoBridge.from_pretrained(tmp_path / "missing")
    model = GeoBridge(tiny_model_config)
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        GeoBridge.from_pretrained(tmp_path / "m")
    other = get_model_config("gb-tiny")
    other.text.kind = "hashing"
    other.embed_dim = 64
    GeoBridge(other).save_pretrained(tmp_path / "n")
    meta = json.loads((tmp_path / "n" / "config.json").read_text())
    meta["model"]["embed_dim"] = 128
    (tmp_path / "n" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match|size"):
        GeoBridge.from_pretrained(tmp_path / "n")


def test_minilm_top_layers_fine_tune_alone():
    config = get_model_config("gb-tiny")
    config.text.freeze = False
    config.text.trainable_layers = 2
    model = GeoBridge(config)
    trainable = {n for n, p in model.text.encoder.named_parameters() if p.requires_grad}
    assert trainable and all(".layer.4." in n or ".layer.5." in n for n in trainable)
    assert not any("embeddings" in n for n in trainable)
    loss = model.encode_text(["a red church by the river", "white roofs"]).sum()
    loss.backward()
    grads = {n for n, p in model.text.encoder.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and grads <= trainable


def test_minilm_top_layers_run_alone_on_cached_states_of_the_frozen_layers():
    """With only the top layers trained, the frozen layers below run once per distinct text (their token states
    are cached) and the embedding equals the whole model's, padding and all."""
    from geobridge.models.text_tower import MiniLMEncoder

    encoder = MiniLMEncoder(model_path=None, freeze=False, trainable_layers=2).eval()
    texts = ["A small town with red roofs by a river.", "x",
             "Seen from above: fields and a white church north-west of a lake; trees along the road."]
    whole = encoder.model.encode(texts, convert_to_tensor=True)  # sentence-transformers' own full pass
    bert = encoder.model[0].auto_model
    calls = []
    hook = bert.embeddings.register_forward_hook(lambda *args: calls.append(1))  # the frozen pass starts there
    try:
        torch.testing.assert_close(encoder(texts), whole, atol=2e-6, rtol=0)
        assert len(calls) == 1  # the frozen layers ran once, for the three texts
        again = encoder([texts[2], texts[0]])  # another batch, another padding: cache hits only
        assert len(calls) == 1
        torch.testing.assert_close(again, whole[[2, 0]], atol=2e-6, rtol=0)
        encoder.length_group = 2  # texts of like length padded in groups of two: the same embeddings, in order
        torch.testing.assert_close(encoder([texts[2], texts[1], texts[0]]), whole[[2, 1, 0]], atol=2e-6, rtol=0)
    finally:
        hook.remove()
    encoder.train()
    loss = encoder(texts).sum()
    loss.backward()
    grads = {n for n, p in encoder.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and all(".layer.4." in n or ".layer.5." in n for n in grads)
    encoder._train_top_layers(1)  # another split of frozen and trained layers: the cache starts again
    encoder.eval()
    torch.testing.assert_close(encoder(texts), whole, atol=2e-6, rtol=0)


def test_view_specific_towers_round_trip(tmp_path, tiny_model_config):
    config = GeoBridgeConfig.from_dict({**tiny_model_config.to_dict(), "image": {
        **tiny_model_config.to_dict()["image"], "share_backbone": False}})
    torch.manual_seed(0)
    model = GeoBridge(config).eval()
    backbones = [model.image.backbone_for(v) for v in ("drone", "satellite", "street")]
    assert model.image.backbone is None and len({id(b) for b in backbones}) == 3
    shared = GeoBridge(tiny_model_config)
    n_shared = sum(p.numel() for p in shared.image.parameters())
    n_views = sum(p.numel() for p in model.image.parameters())
    n_backbone = sum(p.numel() for p in shared.image.backbone.parameters())
    assert n_views == n_shared + 2 * n_backbone
    x = torch.rand(2, 3, 32, 32)
    assert not torch.allclose(model.encode_image(x, view="drone"), model.encode_image(x, view="satellite"))
    model.save_pretrained(tmp_path / "m")
    loaded = GeoBridge.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(loaded.encode_image(x, view="street"), model.encode_image(x, view="street"))


def test_minilm_loads_offline_without_touching_the_environment(monkeypatch):
    from geobridge.models.text_tower import MiniLMEncoder

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    encoder = MiniLMEncoder(model_path=None, freeze=True)
    assert "HF_HUB_OFFLINE" not in os.environ and "TRANSFORMERS_OFFLINE" not in os.environ  # nothing process-wide
    assert encoder(["a red church by a river"]).shape == (1, encoder.width)


def test_sentence_pooling_averages_the_hidden_layer_over_sentences(tiny_model_config):
    import copy

    from geobridge.models.text_tower import TextTower, split_sentences

    pieces, owner = split_sentences(["A pond in the north. A white church; trees!", "no punctuation", ""])
    assert pieces == ["A pond in the north.", "A white church;", "trees!", "no punctuation", ""]
    assert owner.tolist() == [0, 0, 0, 1, 2]
    config = copy.deepcopy(tiny_model_config.text)
    torch.manual_seed(0)
    paragraph = TextTower(config, embed_dim=16)
    config.pooling = "sentences"
    sentences = TextTower(config, embed_dim=16)
    sentences.load_state_dict(paragraph.state_dict())  # the same parameters
    with torch.no_grad():
        one = ["a single sentence without a stop"]
        torch.testing.assert_close(sentences(one), paragraph(one))
        first, act, last = paragraph.proj
        hidden = act(first(paragraph.encoder(["A pond in the north.", "A white church."])))  # (2, H)
        expected = last(hidden.mean(dim=0, keepdim=True))  # (1, D)
        torch.testing.assert_close(sentences(["A pond in the north. A white church."]), expected)
