"""Per-view normalisation of a shared image backbone (models/view_norm.py, ``image.norm``)."""

from __future__ import annotations

import copy
import json
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from geobridge.errors import CheckpointError, ConfigError
from geobridge.models import GeoBridge, get_model_config
from geobridge.models.view_norm import ViewBatchNorm2d, ViewBatchNormAct2d, active_view, view_norm_layers


def _config(backbone: str = "resnet18", *, norm: str = "view_batch", share: bool = True):
    config = get_model_config("gb-small")
    config.text.kind = "hashing"
    config.image.backbone = backbone
    config.image.backbone_kwargs = {"channels": [8, 16, 32, 64]} if backbone == "resnet18" else {}
    config.image.input_size = {"drone": [32, 32], "satellite": [32, 32], "street": [32, 64]}
    config.image.test_time_augment = []
    config.image.norm = norm
    config.image.share_backbone = share
    return config


def _views(n: int, *, seed: int) -> dict[str, torch.Tensor]:
    """Two image views with very different pixel statistics: bright drone, dark high-contrast street."""
    gen = torch.Generator().manual_seed(seed)
    drone = 1.5 + 0.5 * torch.randn(n, 3, 32, 32, generator=gen)  # (n, 3, 32, 32)
    street = -1.0 + 2.0 * torch.randn(n, 3, 32, 64, generator=gen)  # (n, 3, 32, 64)
    return {"drone": drone, "street": street}


def _train_a_few_steps(model: GeoBridge, *, steps: int = 60) -> None:
    """Matched drone/street pairs, each view forwarded as its own batch (as the trainer does), the learning rate
    decaying to zero as the trainer's schedule does (running statistics trail weights that still move fast)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    model.train()
    for step in range(steps):
        batch = _views(16, seed=step)
        emb = model(batch)
        logits = emb["drone"] @ emb["street"].T * 10.0  # (16, 16)
        loss = F.cross_entropy(logits, torch.arange(16))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()


def _eval_vs_training_statistics(model: GeoBridge) -> dict[str, float]:
    """Per view, the smallest cosine between the eval embedding of 64 fresh images and their embedding normalised
    with that view's training statistics (train-mode BatchNorm over the same 64 images, nothing updated)."""
    images = _views(64, seed=999)
    out = {}
    with torch.no_grad():
        model.eval()
        evaluated = {v: model.encode_image(x, view=v) for v, x in images.items()}
        state = copy.deepcopy(model.state_dict())
        model.train()
        with_own = {v: model.encode_image(x, view=v) for v, x in images.items()}
        model.load_state_dict(state)  # the train-mode pass moved running statistics: put them back
        model.eval()
    for view in images:
        out[view] = float((evaluated[view] * with_own[view]).sum(-1).min())
    return out


def test_shared_backbone_evaluates_each_view_with_its_own_training_statistics():
    torch.manual_seed(0)
    fixed = GeoBridge(_config(norm="view_batch"))
    torch.manual_seed(0)
    shared = GeoBridge(_config(norm="batch"))  # one set of statistics for both views (the flaw)
    for model in (fixed, shared):
        _train_a_few_steps(model)
    fixed_cos = _eval_vs_training_statistics(fixed)
    shared_cos = _eval_vs_training_statistics(shared)
    # per-view statistics: evaluation embeds each view as training normalised it
    assert min(fixed_cos.values()) > 0.95, (fixed_cos, shared_cos)
    # one shared set: the averaged statistics fit neither view (the control shows the test can fail)
    assert min(shared_cos.values()) < 0.8, (fixed_cos, shared_cos)


def test_reestimated_statistics_are_the_exact_statistics_of_the_images():
    torch.manual_seed(0)
    model = GeoBridge(_config()).eval()
    images = _views(24, seed=3)["street"]
    uint8 = [((x.permute(1, 2, 0).clamp(-2, 2) + 2) / 4 * 255).to(torch.uint8).numpy() for x in images]
    model.reestimate_norm_statistics({"street": uint8}, batch_size=24, num_workers=0)
    # the first BatchNorm sees conv1's output of the normalised images: its street row is their exact mean
    from geobridge.models.encoding import normalise

    batch = normalise(torch.from_numpy(np.stack(uint8)).permute(0, 3, 1, 2), mean=model.config.image.mean,
                      std=model.config.image.std)
    with torch.no_grad():
        feats = model.image.backbone.conv1(batch)  # (24, C, H, W)
    bn1 = model.image.backbone.bn1
    assert isinstance(bn1, ViewBatchNorm2d)
    street = 2  # IMAGE_VIEWS.index("street")
    torch.testing.assert_close(bn1.view_running_mean[street], feats.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn1.view_running_var[street], feats.var(dim=(0, 2, 3), unbiased=True),
                               rtol=1e-4, atol=1e-5)
    # the other views' rows are untouched (the initial statistics)
    assert torch.all(bn1.view_running_mean[0] == 0) and torch.all(bn1.view_running_var[0] == 1)


def test_old_shared_statistics_checkpoint_loads_as_batch_and_converts(tmp_path, caplog):
    torch.manual_seed(0)
    old = GeoBridge(_config(norm="batch"))
    old.save_pretrained(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    del meta["model"]["image"]["norm"]  # as written before image.norm existed
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    with caplog.at_level("WARNING"):
        loaded = GeoBridge.from_pretrained(tmp_path / "old")
    assert loaded.config.image.norm == "batch"
    assert "one set of BatchNorm statistics" in caplog.text
    assert not view_norm_layers(loaded)
    images = {"drone": [np.full((32, 32, 3), v, np.uint8) for v in (10, 200, 90)]}
    before = loaded.encode(images["drone"], view="drone", num_workers=0)
    np.testing.assert_allclose(before, old.encode(images["drone"], view="drone", num_workers=0), atol=1e-6)
    # re-estimating converts it to per-view statistics; saved and loaded, it embeds the same
    loaded.reestimate_norm_statistics(images, batch_size=8, num_workers=0)
    assert loaded.config.image.norm == "view_batch" and view_norm_layers(loaded)
    after = loaded.encode(images["drone"], view="drone", num_workers=0)
    loaded.save_pretrained(tmp_path / "new")
    reloaded = GeoBridge.from_pretrained(tmp_path / "new")
    assert reloaded.config.image.norm == "view_batch"
    np.testing.assert_array_equal(reloaded.encode(images["drone"], view="drone", num_workers=0), after)


def test_checkpoint_keeps_each_views_statistics(tmp_path):
    torch.manual_seed(0)
    model = GeoBridge(_config())
    _train_a_few_steps(model, steps=3)
    rows = model.image.backbone.bn1.view_running_mean
    assert not torch.equal(rows[0], rows[2])  # drone and street moved apart; satellite never trained
    assert torch.all(rows[1] == 0)
    model.save_pretrained(tmp_path / "m")
    loaded = GeoBridge.from_pretrained(tmp_path / "m")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    # a per-view checkpoint does not load into a shared-statistics architecture: the error names the tensors
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["model"]["image"]["norm"] = "batch"
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="running_mean"):
        GeoBridge.from_pretrained(tmp_path / "m")


def test_bare_backbone_in_eval_without_a_view_is_an_error():
    model = GeoBridge(_config()).eval()
    with pytest.raises(RuntimeError, match="no view is active"):
        model.image.backbone(torch.zeros(2, 3, 32, 32))
    with active_view(0):
        assert model.image.backbone(torch.zeros(2, 3, 32, 32)).shape == (2, 64)


def test_activation_checkpointing_updates_statistics_once():
    torch.manual_seed(0)
    plain = GeoBridge(_config())
    torch.manual_seed(0)
    checkpointed = GeoBridge(_config())
    checkpointed.image.set_grad_checkpointing(True)
    batch = _views(8, seed=1)
    for model in (plain, checkpointed):
        model.train()
        emb = model(batch)
        (emb["drone"] @ emb["street"].T).sum().backward()
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(checkpointed.state_dict()[key], value)
    counters = checkpointed.image.backbone.bn1.view_num_batches_tracked
    assert counters.tolist() == [1, 0, 1]


def test_concurrent_encodes_of_different_views_use_their_own_statistics():
    torch.manual_seed(0)
    model = GeoBridge(_config())
    _train_a_few_steps(model, steps=5)
    model.eval()
    images = _views(8, seed=5)
    expected = {v: model.encode_image(x, view=v).detach() for v, x in images.items()}
    results: dict[str, list[torch.Tensor]] = {v: [] for v in images}

    def work(view: str) -> None:
        with torch.no_grad():
            for _ in range(10):
                results[view].append(model.encode_image(images[view], view=view))

    threads = [threading.Thread(target=work, args=(v,)) for v in images for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for view, outs in results.items():
        for out in outs:
            torch.testing.assert_close(out, expected[view])


def test_batchnorm_act_backbone_converts_and_pretrained_group_norm_is_refused():
    model = GeoBridge(_config("test_efficientnet"))
    layers = view_norm_layers(model)
    assert layers and any(isinstance(m, ViewBatchNormAct2d) for m in layers)
    assert not any(type(m) in (nn.BatchNorm2d,) for m in model.image.modules())
    grouped = GeoBridge(_config("test_efficientnet", norm="group"))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in grouped.image.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in grouped.image.modules())
    config = get_model_config("gb-lite0")
    config.text.kind = "hashing"
    config.image.norm = "group"
    with pytest.raises(ConfigError, match="image.norm=group"):
        GeoBridge(config)


def test_view_specific_towers_keep_plain_batchnorm():
    model = GeoBridge(_config(share=False))
    assert not view_norm_layers(model)
    assert len([m for m in model.image.modules() if isinstance(m, nn.BatchNorm2d)]) > 0


def test_onnx_graphs_carry_each_views_statistics(tmp_path):
    pytest.importorskip("onnxruntime")
    from geobridge.export import export_onnx
    from geobridge.export.onnx_runtime import OnnxEncoder

    torch.manual_seed(0)
    model = GeoBridge(_config())
    _train_a_few_steps(model, steps=3)  # drone and street statistics apart
    model.save_pretrained(tmp_path / "m")
    manifest = export_onnx(tmp_path / "m", tmp_path / "onnx", views=("drone", "street"))
    assert min(manifest["check"].values()) > 0.9999  # each graph matches torch's own view
    images = [np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8) for i in range(4)]
    encoder = OnnxEncoder(tmp_path / "onnx")
    drone = encoder.encode(images, view="drone")
    np.testing.assert_allclose(drone, model.encode(images, view="drone", num_workers=0), atol=1e-4)


def test_renorm_command_converts_an_old_checkpoint(tmp_path, capsys):
    from geobridge.cli.main import main
    from tests.conftest import make_world

    world = make_world(tmp_path / "world", n=8)
    torch.manual_seed(0)
    GeoBridge(_config(norm="batch")).save_pretrained(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    del meta["model"]["image"]["norm"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    args = ["renorm", "--checkpoint", str(tmp_path / "old"), "--data", str(world), "--split", "test",
            "--out", str(tmp_path / "new"), "--batch-size", "4"]
    assert main(args) == 0
    assert "image.norm batch -> view_batch" in capsys.readouterr().out
    new = GeoBridge.from_pretrained(tmp_path / "new")
    assert new.config.image.norm == "view_batch"
    rows = new.image.backbone.bn1.view_num_batches_tracked
    assert rows.tolist() == [2, 2, 2]  # 6 test places: one batch of 4 and one of 2 per view
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old", "world"]  # no staging folder left
    # an existing --out is refused and left alone
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
