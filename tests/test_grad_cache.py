"""Contrastive-aware gradient accumulation: the cached two-pass step equals one step on the whole batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geobridge.losses import GeoBridgeLoss
from geobridge.train.grad_cache import cached_accumulation

# float64: the two computations differ only in the order of floating-point sums
RTOL, ATOL = 1e-9, 1e-12


def _micro_batches() -> list[dict]:
    """Two micro-batches of 4 places (labels 0-3 and 4-7); drone misses one place in each, text one in the first."""
    gen = torch.Generator().manual_seed(0)
    batches = []
    for start in (0, 4):
        labels = torch.arange(start, start + 4)
        batches.append({
            "images": {
                "drone": torch.randn(3, 3, 64, 64, generator=gen, dtype=torch.float64),
                "satellite": torch.randn(4, 3, 64, 64, generator=gen, dtype=torch.float64),
            },
            "labels": {"drone": labels[1:], "satellite": labels, "text": labels[: 3 if start == 0 else 4]},
            "texts": [f"a {['red', 'blue', 'green', 'grey'][i % 4]} tower by place {i}" for i in
                      labels[: 3 if start == 0 else 4].tolist()],
        })
    return batches


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_cached_accumulation_equals_the_full_batch(tiny_model_config):
    from geobridge.models import GeoBridge

    torch.manual_seed(0)
    model = GeoBridge(tiny_model_config).double().train()
    loss_fn = GeoBridgeLoss()
    batches = _micro_batches()

    def embed(batch, with_graph):
        out = model(batch["images"], batch["texts"])
        scale = out.pop("logit_scale")
        return out, batch["labels"], scale

    def losses_of(emb, labels, scale):
        return loss_fn(emb, labels, logit_scale=scale)

    # the whole batch in one forward
    full_images = {v: torch.cat([b["images"][v] for b in batches]) for v in ("drone", "satellite")}
    full_labels = {v: torch.cat([b["labels"][v] for b in batches]) for v in ("drone", "satellite", "text")}
    out = model(full_images, [t for b in batches for t in b["texts"]])
    full = loss_fn(out, full_labels, logit_scale=out.pop("logit_scale"))
    sum(full.values()).backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)

    got_losses = cached_accumulation(batches, embed=embed, loss_fn=losses_of, module=model)
    got = _grads(model)
    assert set(got_losses) == set(full) and {"drone_satellite_loss", "bridge_loss"} <= set(full)
    for key in full:
        torch.testing.assert_close(got_losses[key], full[key].detach(), rtol=RTOL, atol=ATOL)
    assert got.keys() == expected.keys() and "logit_scale" in got and len(got) > 10
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=RTOL, atol=ATOL, msg=name)
    assert any(float(g.abs().max()) > 1e-6 for g in got.values())  # gradients that actually flow

    # and it is not per-micro-batch accumulation, whose loss sees only 4 places at a time
    per_micro = sum(float(sum(losses_of(*embed(b, True)).values()).detach()) for b in batches) / len(batches)
    assert abs(per_micro - float(sum(full.values()))) > 1e-3


class _Noisy(nn.Module):
    """Dropout and BatchNorm: the second pass must replay the first pass's dropout masks."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 8))
        self.logit_scale = nn.Parameter(torch.tensor(2.0, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"a": nn.functional.normalize(self.net(x[:, :6]), dim=-1),
                "b": nn.functional.normalize(self.net(x[:, 6:]), dim=-1), "logit_scale": self.logit_scale * 1.0}


def test_dropout_is_replayed_and_batchnorm_statistics_update_once(monkeypatch):
    torch.manual_seed(1)
    model = _Noisy().double().train()
    batches = [(torch.randn(5, 12, dtype=torch.float64), torch.arange(5 * i, 5 * i + 5)) for i in range(3)]
    loss_fn = GeoBridgeLoss(use_anchors=False, label_smoothing=0.0)
    views = {"a": "drone", "b": "satellite"}

    def embed(batch, with_graph):
        x, labels = batch
        out = model(x)
        scale = out.pop("logit_scale")
        return {views[k]: v for k, v in out.items()}, {"drone": labels, "satellite": labels}, scale

    def losses_of(emb, labels, scale):
        return loss_fn(emb, labels, logit_scale=scale)

    # reference: every micro-batch forward with its graph, in order (the same masks, BN statistics per micro-batch)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    outs = [embed(x, True) for x in batches]
    emb = {v: torch.cat([o[0][v] for o in outs]) for v in ("drone", "satellite")}
    labels = {v: torch.cat([o[1][v] for o in outs]) for v in ("drone", "satellite")}
    ref = sum(losses_of(emb, labels, outs[0][2]).values())
    ref.backward()
    expected, expected_rng = _grads(model), torch.get_rng_state()
    expected_stats = model.net[1].running_mean.clone()
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)

    torch.manual_seed(7)
    got_losses = cached_accumulation(batches, embed=embed, loss_fn=losses_of, module=model)
    assert float(sum(got_losses.values())) == pytest.approx(float(ref.detach()), rel=1e-12)
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, expected[name], rtol=RTOL, atol=ATOL, msg=name)
    torch.testing.assert_close(model.net[1].running_mean, expected_stats, rtol=1e-12, atol=0)
    assert int(model.net[1].num_batches_tracked) == 2 * len(batches)  # two views per micro-batch, counted once
    assert torch.equal(torch.get_rng_state(), expected_rng)  # the generator ends where one pass leaves it

    # without the replay the second pass draws new masks, and the gradients are wrong
    from geobridge.train import grad_cache

    monkeypatch.setattr(grad_cache.RngState, "restore", lambda self: None)
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    torch.manual_seed(7)
    cached_accumulation(batches, embed=embed, loss_fn=losses_of, module=model)
    assert any(not torch.allclose(g, expected[n]) for n, g in _grads(model).items())


def test_no_micro_batches_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        cached_accumulation([], embed=lambda b, g: b, loss_fn=lambda e, la, s: {}, module=nn.Linear(1, 1))
