"""The GeoBridge training objective: view-pair contrast plus semantic-anchor terms."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geobridge.losses.config import LOSS_RULES, LossConfig
from geobridge.losses.contrastive import info_nce, match_labels, symmetric_info_nce
from geobridge.schema import build
from geobridge.views import IMAGE_VIEW_PAIRS, IMAGE_VIEWS

# the paper's image terms: a cycle through the three views, each term in the written direction
PAPER_IMAGE_DIRECTIONS = (("drone", "satellite"), ("satellite", "street"), ("street", "drone"))


class GeoBridgeLoss(nn.Module):
    """Multi-view contrastive loss with text descriptions as semantic anchors.

    Inputs are per-view unit embeddings ``emb[view]`` (B_v, D) with place labels ``labels[view]`` (B_v,)
    (unique within a view), for views among drone, satellite, street and text, and the model's learnable
    ``logit_scale`` (the temperature is ``1 / exp(logit_scale)``). Returns a dict of named, already weighted
    ``*_loss`` terms; the trainer sums every key that ends in ``_loss``.

    Terms (``s = exp(logit_scale)``, CE = cross-entropy with label smoothing ``label_smoothing``):

    * ``{a}_{b}_loss`` for every pair of image views present (drone-satellite, drone-street,
      satellite-street), weight ``pair_weight``: symmetric InfoNCE, CE(s * cos(a_i, b_.), i) averaged over
      both directions. This alone is the Sample4Geo-style baseline (``use_anchors=False``). ``pair_weights``
      overrides the weight of named pairs, e.g. ``{"drone_street": 0.3}``.
    * ``{v}_text_loss`` for every image view v, weight ``anchor_weight``: symmetric InfoNCE between the view
      and the place's text description (the semantic anchor). This is the cross-modal consistency term that
      aligns text and visual features and makes language a query.
    * ``bridge_loss``, weight ``bridge_weight``: the views are pulled together *through* the anchors. For a
      place seen in views a and b, ``p_a = softmax(s * cos(a_i, T))`` is its distribution over the batch's
      text anchors T (detached: the anchors act as a fixed semantic coordinate frame for this term), and
      the term is the symmetric KL divergence ``(KL(p_a || p_b) + KL(p_b || p_a)) / 2``, averaged over places
      and over every pair of image views. Two views that describe the same place must relate to all the
      other places' descriptions in the same way, which transfers to pairs (such as drone-street) that have
      little direct visual overlap.

    ``objective`` names the form of the two groups of terms:

    * ``"geobridge"`` (default): every pair of image views present and every (image view, text) pair, each
      term symmetric, weighted and summed as above;
    * ``"paper"``: the GeoBridge paper's objective as its public summaries give it. L_img is the *mean* of the
      InfoNCE terms drone->satellite, satellite->street and street->drone (a cycle through the three views),
      L_text the mean of text->drone, text->street and text->satellite, and the loss is
      ``pair_weight * L_img + anchor_weight * L_text`` (1:1 by default). Each term runs in the written
      direction only unless ``symmetric=True``. ``bridge_weight`` adds the bridge term as above (the paper has
      none; set it to 0). Per-pair weights scale the image terms inside the mean.

    ``use_pairs=False`` drops the image-image terms (the text-only arm of the anchors ablation); with
    ``use_anchors=False`` (the image-only arm) the text terms go.

    The GeoBridge paper (arXiv 2512.02697) shows, in its method figure, batch similarity matrices for the
    three image-view pairs and for text with each view: the first two groups above, with symmetric
    InfoNCE as the assumed form (its equations, weights and code are not public). ``bridge_loss`` is our
    addition; ``bridge_weight=0`` gives the six-term objective alone (see docs/model.md).
    """

    def __init__(self, config: LossConfig | None = None, /, **options: Any) -> None:
        """From a ``LossConfig`` (a training config's ``loss`` section), and/or its fields as keyword ``options``
        (``GeoBridgeLoss(use_anchors=False)``); every value is checked (``ConfigError``, a ``ValueError``)."""
        super().__init__()
        merged = {**dataclasses.asdict(config or LossConfig()), **options}
        self.config = config = build(LossConfig, merged, rules=LOSS_RULES, where="loss")
        self.objective = config.objective
        self.symmetric = (config.objective == "geobridge") if config.symmetric is None else bool(config.symmetric)
        self.use_pairs = config.use_pairs
        self.use_anchors = config.use_anchors
        named = config.pair_weights
        self.pair_weights = {pair: float(named.get(pair, config.pair_weight)) for pair in IMAGE_VIEW_PAIRS}
        self.anchor_weight = config.anchor_weight
        self.bridge_weight = config.bridge_weight
        self.label_smoothing = config.label_smoothing

    def forward(
        self,
        emb: dict[str, torch.Tensor],
        labels: dict[str, torch.Tensor],
        *,
        logit_scale: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        image_views = [v for v in IMAGE_VIEWS if v in emb and emb[v].shape[0] > 0]
        has_text = "text" in emb and emb["text"].shape[0] > 0
        pairs = self._image_directions(image_views) if self.use_pairs else []
        anchors = [("text", v) for v in image_views] if self.use_anchors and has_text else []
        # "paper" averages each group, so its terms carry 1 / (number of terms in the group)
        pair_norm = len(pairs) if self.objective == "paper" and pairs else 1
        anchor_norm = len(anchors) if self.objective == "paper" and anchors else 1
        losses: dict[str, torch.Tensor] = {}
        for a, b in pairs:
            weight = self.pair_weights["_".join(sorted((a, b), key=IMAGE_VIEWS.index))] / pair_norm
            losses[f"{a}_{b}_loss"] = weight * self._contrast(emb, labels, a, b, logit_scale)
        for text, view in anchors:
            weight = self.anchor_weight / anchor_norm
            losses[f"{view}_text_loss"] = weight * self._contrast(emb, labels, text, view, logit_scale)
        if not anchors:
            return losses
        if self.bridge_weight > 0 and len(image_views) >= 2:
            losses["bridge_loss"] = self.bridge_weight * self._bridge(emb, labels, image_views, logit_scale)
        return losses

    def _image_directions(self, image_views: list[str]) -> list[tuple[str, str]]:
        """The (query, gallery) image-view pairs with a term: the paper's cycle, or every pair."""
        if self.objective == "paper":
            return [(a, b) for a, b in PAPER_IMAGE_DIRECTIONS if a in image_views and b in image_views]
        return list(itertools.combinations(image_views, 2))

    def _contrast(
        self,
        emb: dict[str, torch.Tensor],
        labels: dict[str, torch.Tensor],
        a: str,
        b: str,
        logit_scale: torch.Tensor,
    ) -> torch.Tensor:
        """The a->b InfoNCE (symmetric: the mean of a->b and b->a)."""
        nce = symmetric_info_nce if self.symmetric else info_nce
        return nce(emb[a], emb[b], labels[a], labels[b], logit_scale=logit_scale, label_smoothing=self.label_smoothing)

    def _bridge(
        self,
        emb: dict[str, torch.Tensor],
        labels: dict[str, torch.Tensor],
        image_views: list[str],
        logit_scale: torch.Tensor,
    ) -> torch.Tensor:
        anchors = emb["text"].detach()  # (T, D)
        scale = logit_scale.exp()
        terms = []
        for a, b in itertools.combinations(image_views, 2):
            rows, cols = match_labels(labels[a], labels[b])
            if rows.numel() == 0:
                continue
            log_p_a = F.log_softmax(scale * emb[a][rows] @ anchors.T, dim=-1)  # (P, T)
            log_p_b = F.log_softmax(scale * emb[b][cols] @ anchors.T, dim=-1)  # (P, T)
            kl_ab = F.kl_div(log_p_b, log_p_a, log_target=True, reduction="batchmean")  # KL(p_a || p_b)
            kl_ba = F.kl_div(log_p_a, log_p_b, log_target=True, reduction="batchmean")  # KL(p_b || p_a)
            terms.append((kl_ab + kl_ba) / 2)
        if not terms:
            return emb[image_views[0]].sum() * 0.0
        return torch.stack(terms).mean()
