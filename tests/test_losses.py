from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from geobridge.losses import GeoBridgeLoss, match_labels, symmetric_info_nce


def test_info_nce_matches_hand_computation():
    # Two places; a = [e0, e1], b = [e0, (e0 + e1)/sqrt2]; scale s = exp(0) = 1.
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    r = 1 / math.sqrt(2)
    b = torch.tensor([[1.0, 0.0], [r, r]])
    labels = torch.tensor([0, 1])
    # logits = a @ b.T = [[1, r], [0, r]]
    # a->b: row0 target0: -log(e^1/(e^1+e^r)); row1 target1: -log(e^r/(e^0+e^r))
    # b->a: logits.T = [[1, 0], [r, r]]; row0 target0: -log(e/(e+1)); row1 target1: -log(1/2)
    ab = (-math.log(math.e / (math.e + math.exp(r))) - math.log(math.exp(r) / (1 + math.exp(r)))) / 2
    ba = (-math.log(math.e / (math.e + 1)) + math.log(2)) / 2
    loss = symmetric_info_nce(a, b, labels, labels, logit_scale=torch.tensor(0.0))
    assert loss.item() == pytest.approx((ab + ba) / 2, rel=1e-6)


def test_info_nce_label_smoothing_and_partial_overlap():
    torch.manual_seed(0)
    a = F.normalize(torch.randn(5, 8), dim=-1)
    b = F.normalize(torch.randn(4, 8), dim=-1)
    la = torch.tensor([10, 11, 12, 13, 14])
    lb = torch.tensor([12, 99, 10, 14])  # 99 has no partner; 11 and 13 have none either
    rows, cols = match_labels(la, lb)
    assert rows.tolist() == [0, 2, 4] and cols.tolist() == [2, 0, 3]
    scale = torch.tensor(math.log(10.0))
    logits = 10.0 * a @ b.T
    ref_ab = F.cross_entropy(logits[[0, 2, 4]], torch.tensor([2, 0, 3]), label_smoothing=0.1)
    ref_ba = F.cross_entropy(logits.T[[2, 0, 3]], torch.tensor([0, 2, 4]), label_smoothing=0.1)
    got = symmetric_info_nce(a, b, la, lb, logit_scale=scale, label_smoothing=0.1)
    assert got.item() == pytest.approx(((ref_ab + ref_ba) / 2).item(), rel=1e-6)


def test_info_nce_no_overlap_is_zero_with_graph():
    a = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(2, 4, requires_grad=True)
    loss = symmetric_info_nce(a, b, torch.tensor([0, 1, 2]), torch.tensor([5, 6]), logit_scale=torch.tensor(1.0))
    loss.backward()
    assert loss.item() == 0.0 and a.grad is not None


def _batch(seed=0, n=6, d=16):
    g = torch.Generator().manual_seed(seed)
    emb = {v: F.normalize(torch.randn(n, d, generator=g), dim=-1) for v in ("drone", "satellite", "street", "text")}
    labels = {v: torch.arange(n) for v in emb}
    return emb, labels


def test_geobridge_loss_terms_and_ablation():
    emb, labels = _batch()
    scale = torch.tensor(2.0)
    full = GeoBridgeLoss(label_smoothing=0.0)(emb, labels, logit_scale=scale)
    assert set(full) == {
        "drone_satellite_loss",
        "drone_street_loss",
        "satellite_street_loss",
        "drone_text_loss",
        "satellite_text_loss",
        "street_text_loss",
        "bridge_loss",
    }
    expected = symmetric_info_nce(emb["drone"], emb["text"], labels["drone"], labels["text"], logit_scale=scale)
    assert full["drone_text_loss"].item() == pytest.approx(expected.item())
    baseline = GeoBridgeLoss(use_anchors=False, label_smoothing=0.0)(emb, labels, logit_scale=scale)
    assert set(baseline) == {"drone_satellite_loss", "drone_street_loss", "satellite_street_loss"}
    assert baseline["drone_street_loss"].item() == pytest.approx(full["drone_street_loss"].item())
    weighted = GeoBridgeLoss(anchor_weight=0.5, bridge_weight=2.0, label_smoothing=0.0)(emb, labels, logit_scale=scale)
    assert weighted["street_text_loss"].item() == pytest.approx(0.5 * full["street_text_loss"].item())
    assert weighted["bridge_loss"].item() == pytest.approx(2.0 * full["bridge_loss"].item())
    per_pair = GeoBridgeLoss(pair_weight=2.0, pair_weights={"drone_street": 0.3}, label_smoothing=0.0)(
        emb, labels, logit_scale=scale
    )
    assert per_pair["drone_street_loss"].item() == pytest.approx(0.3 * full["drone_street_loss"].item())
    assert per_pair["satellite_street_loss"].item() == pytest.approx(2.0 * full["satellite_street_loss"].item())
    with pytest.raises(ValueError, match="street_drone"):
        GeoBridgeLoss(pair_weights={"street_drone": 1.0})


def test_bridge_loss_is_symmetric_kl_of_anchor_distributions():
    emb, labels = _batch(seed=1, n=4)
    scale = torch.tensor(1.5)
    losses = GeoBridgeLoss(label_smoothing=0.0)(emb, labels, logit_scale=scale)
    s = math.exp(1.5)
    terms = []
    for a, b in (("drone", "satellite"), ("drone", "street"), ("satellite", "street")):
        pa = torch.softmax(s * emb[a] @ emb["text"].T, dim=-1)
        pb = torch.softmax(s * emb[b] @ emb["text"].T, dim=-1)
        kl_ab = (pa * (pa.log() - pb.log())).sum(-1).mean()
        kl_ba = (pb * (pb.log() - pa.log())).sum(-1).mean()
        terms.append((kl_ab + kl_ba) / 2)
    assert losses["bridge_loss"].item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)
    # identical views relate to the anchors identically: no bridge loss
    same = {**emb, "street": emb["drone"].clone(), "satellite": emb["drone"].clone()}
    assert GeoBridgeLoss()(same, labels, logit_scale=scale)["bridge_loss"].item() == pytest.approx(0.0, abs=1e-6)


def test_bridge_gradient_does_not_move_anchors():
    emb, labels = _batch(seed=2)
    text = emb["text"].clone().requires_grad_(True)
    drone = emb["drone"].clone().requires_grad_(True)
    losses = GeoBridgeLoss()({**emb, "text": text, "drone": drone}, labels, logit_scale=torch.tensor(2.0))
    losses["bridge_loss"].backward()
    assert text.grad is None and drone.grad is not None and drone.grad.abs().sum() > 0


def test_missing_view_only_uses_present_pairs():
    emb, labels = _batch()
    del emb["street"], labels["street"]
    losses = GeoBridgeLoss()(emb, labels, logit_scale=torch.tensor(2.0))
    assert "drone_street_loss" not in losses and "street_text_loss" not in losses
    assert "drone_satellite_loss" in losses and "bridge_loss" in losses


def test_paper_objective_is_the_mean_of_directional_terms_by_hand():
    emb, labels = _batch(seed=3)
    scale = torch.tensor(1.5)
    s = math.exp(1.5)

    def ce(q, g):  # one-directional InfoNCE q -> g, all places matched by position
        return F.cross_entropy(s * emb[q] @ emb[g].T, torch.arange(6)).item()

    l_img = (ce("drone", "satellite") + ce("satellite", "street") + ce("street", "drone")) / 3
    l_text = (ce("text", "drone") + ce("text", "street") + ce("text", "satellite")) / 3
    losses = GeoBridgeLoss(objective="paper", bridge_weight=0.0, label_smoothing=0.0)(emb, labels, logit_scale=scale)
    assert set(losses) == {
        "drone_satellite_loss", "satellite_street_loss", "street_drone_loss",
        "drone_text_loss", "street_text_loss", "satellite_text_loss",
    }
    assert sum(losses.values()).item() == pytest.approx(l_img + l_text, rel=1e-6)
    assert losses["street_drone_loss"].item() == pytest.approx(ce("street", "drone") / 3, rel=1e-6)
    # symmetric=True: each term becomes the mean of both directions
    sym = GeoBridgeLoss(objective="paper", symmetric=True, bridge_weight=0.0, label_smoothing=0.0)(
        emb, labels, logit_scale=scale
    )
    expected = (ce("drone", "satellite") + ce("satellite", "drone")) / 2 / 3
    assert sym["drone_satellite_loss"].item() == pytest.approx(expected, rel=1e-6)


def test_text_only_and_image_only_arms():
    emb, labels = _batch(seed=4)
    scale = torch.tensor(2.0)
    text_only = GeoBridgeLoss(use_pairs=False, bridge_weight=0.0)(emb, labels, logit_scale=scale)
    assert set(text_only) == {"drone_text_loss", "satellite_text_loss", "street_text_loss"}
    image_only = GeoBridgeLoss(use_anchors=False)(emb, labels, logit_scale=scale)
    assert set(image_only) == {"drone_satellite_loss", "drone_street_loss", "satellite_street_loss"}
    with pytest.raises(ValueError, match="loss.objective"):
        GeoBridgeLoss(objective="clip")


def test_loss_is_built_from_its_config_section_or_keywords():
    from geobridge.losses import LossConfig

    emb, labels = _batch(seed=2, n=4)
    scale = torch.tensor(1.5)
    config = LossConfig(pair_weight=2.0, pair_weights={"drone_street": 0.3}, label_smoothing=0.0)
    from_config = GeoBridgeLoss(config)(emb, labels, logit_scale=scale)
    from_keywords = GeoBridgeLoss(pair_weight=2.0, pair_weights={"drone_street": 0.3}, label_smoothing=0.0)(
        emb, labels, logit_scale=scale
    )
    assert from_config.keys() == from_keywords.keys()
    for key in from_config:
        assert from_config[key].item() == pytest.approx(from_keywords[key].item())
    overridden = GeoBridgeLoss(config, use_anchors=False)  # keywords override the section's fields
    assert overridden.use_anchors is False and overridden.pair_weights["drone_street"] == 0.3
    assert config.use_anchors is True  # the section itself is not changed
    with pytest.raises(ValueError, match="loss.label_smoothing"):
        GeoBridgeLoss(config, label_smoothing=1.0)
    with pytest.raises(ValueError, match="unknown key"):
        GeoBridgeLoss(temperature=0.07)
