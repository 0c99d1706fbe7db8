"""Text alignment: after joint training, the text side tuned alone against the frozen image towers.

Joint training keeps MiniLM frozen on the CPU (its cached sentence embeddings make a step cheap), which leaves the
text directions at what a frozen sentence embedding can say; fine-tuning MiniLM in every joint step lifts them
6-17 points but costs 3.7x the training time (docs/model.md). Here the image towers are finished: every training
place's images are embedded once, as evaluation sees them, and only the text projection and the encoder's top
layers train (the frozen layers below run once per sentence). Each description is scored against every training
place of each image view, not only the batch's, and each batch place's images against the batch's descriptions.
The image embeddings do not move, so no image direction can change. (LiT, Zhai et al. 2022, locks a pretrained
image tower for the whole of training; here the locked towers were first trained jointly with the text anchors.)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from geobridge.data.types import Place
from geobridge.losses.contrastive import symmetric_info_nce
from geobridge.models import GeoBridge
from geobridge.train.config import TextAlignSection
from geobridge.train.setup import lr_at
from geobridge.views import IMAGE_VIEWS


def align_text(
    model: GeoBridge,
    places: Sequence[Place],
    section: TextAlignSection,
    *,
    weight_decay: float = 0.05,
    label_smoothing: float = 0.1,
    seed: int = 0,
    show_progress_bar: bool = True,
) -> dict[str, Any]:
    """Tune ``model``'s text tower in place for ``section.epochs`` passes over the descriptions of ``places``.

    Returns a record: epochs, steps, seconds, each epoch's mean loss and the places per image view. ``seed`` draws
    the batches and the dropout (in a forked torch RNG): the same model and places give the same alignment
    whether it ends a training run or runs on a saved model.
    """
    devices = [model.device.index or 0] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return _align(model, places, section, weight_decay=weight_decay, label_smoothing=label_smoothing,
                      seed=seed, show_progress_bar=show_progress_bar)


def _align(
    model: GeoBridge,
    places: Sequence[Place],
    section: TextAlignSection,
    *,
    weight_decay: float,
    label_smoothing: float,
    seed: int,
    show_progress_bar: bool,
) -> dict[str, Any]:
    started = time.time()
    galleries = place_galleries(model, places, test_time_augment=section.test_time_augment,
                                show_progress_bar=show_progress_bar)
    if not galleries:
        raise ValueError("text alignment needs training places with images")
    model.text.unfreeze_top_layers(section.trainable_layers)
    texts = [text for place in places for text in place.texts]
    if not texts:
        raise ValueError("text alignment needs training places with descriptions")
    model.text.warm_cache(texts, show_progress_bar=show_progress_bar)

    tuned = [p for p in model.text.parameters() if p.requires_grad]
    tuned_ids = {id(p) for p in tuned}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in tuned_ids]
    for param in frozen:  # the image towers and the temperature stay as joint training left them
        param.requires_grad_(False)
    rng = np.random.default_rng(seed)
    epochs = [_batches(places, rng=rng, batch_size=section.batch_size) for _ in range(section.epochs)]
    total = sum(len(batches) for batches in epochs)  # the schedule's length
    optimizer = torch.optim.AdamW(_param_groups(model, section, weight_decay=weight_decay), betas=(0.9, 0.999))
    scale = model.logit_scale.detach()
    losses: list[float] = []
    step = 0
    try:
        model.text.train()
        for epoch, batches in enumerate(epochs):
            bar = tqdm(batches, desc=f"text alignment {epoch + 1}/{section.epochs}", unit="step", leave=False,
                       disable=not show_progress_bar)
            summed = 0.0
            for labels, batch_texts in bar:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total_steps=total, warmup_steps=total // 10,
                                        base_lr=group["base_lr"], min_lr_ratio=0.01)
                text_emb = model.encode_text(batch_texts)  # (B, D)
                loss = align_loss(text_emb, labels.to(text_emb.device), galleries, logit_scale=scale,
                                  label_smoothing=label_smoothing)
                loss.backward()
                nn.utils.clip_grad_norm_(tuned, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                summed += float(loss.detach())
                step += 1
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            losses.append(round(summed / max(1, len(batches)), 4))
            if show_progress_bar:
                tqdm.write(f"text alignment epoch {epoch + 1}: loss {losses[-1]:.4f}")
    finally:
        model.eval()
        for param in frozen:
            param.requires_grad_(True)
    return {"epochs": section.epochs, "steps": step, "seconds": round(time.time() - started, 1), "loss": losses,
            "trainable_layers": section.trainable_layers,
            "places": {view: int(rows.numel()) for view, (rows, _) in galleries.items()}}


def align_loss(
    text_emb: torch.Tensor,
    labels: torch.Tensor,
    galleries: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    logit_scale: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean over image views of the symmetric InfoNCE between the batch's descriptions and the view's gallery.

    ``text_emb`` (B, D) unit vectors of B descriptions of B different places, ``labels`` (B,) their place indices;
    ``galleries[view]`` = ((P,) place indices, (P, D) unit place embeddings). Text -> image: each description
    against all P places; image -> text: each batch place that has the view against the B descriptions.
    """
    terms = [symmetric_info_nce(text_emb, emb, labels, rows, logit_scale=logit_scale, label_smoothing=label_smoothing)
             for rows, emb in galleries.values()]
    return torch.stack(terms).mean()


@torch.no_grad()
def place_galleries(
    model: GeoBridge, places: Sequence[Place], *, test_time_augment: bool = True, show_progress_bar: bool = False
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per image view: the (P,) indices of the places that have it and their (P, D) unit embeddings, each the
    renormalised mean of the place's images of that view (a drone orbit's photos) as evaluation embeds them."""
    out = {}
    for view in IMAGE_VIEWS:
        owners = [i for i, place in enumerate(places) for _ in place.images.get(view, ())]
        if not owners:
            continue
        paths = [path for place in places for path in place.images.get(view, ())]
        emb = torch.from_numpy(model.encode(paths, view=view, test_time_augment=test_time_augment,
                                                show_progress_bar=show_progress_bar))  # (N, D)
        index = torch.tensor(owners)
        rows, inverse = torch.unique(index, return_inverse=True)  # (P,), (N,)
        sums = emb.new_zeros(len(rows), emb.shape[1]).index_add_(0, inverse, emb)  # (P, D)
        out[view] = (rows, torch.nn.functional.normalize(sums, dim=-1).to(model.device))
    return out


def _batches(
    places: Sequence[Place], *, rng: np.random.Generator, batch_size: int
) -> list[tuple[torch.Tensor, list[str]]]:
    """One epoch: every description of every place once, in batches of descriptions of distinct places.

    Round r takes each place's r-th description (of its own shuffled order), the places of a round shuffled; a
    round's last short batch is kept if it holds at least two places."""
    order = [rng.permutation(len(place.texts)) for place in places]
    rounds = max((len(place.texts) for place in places), default=0)
    out = []
    for r in range(rounds):
        members = [i for i, place in enumerate(places) if len(place.texts) > r]
        members = [members[k] for k in rng.permutation(len(members))]
        for begin in range(0, len(members), batch_size):
            chunk = members[begin : begin + batch_size]
            if len(chunk) >= 2:
                texts = [places[i].texts[order[i][r]] for i in chunk]
                out.append((torch.tensor(chunk), texts))
    return out


def _param_groups(model: GeoBridge, section: TextAlignSection, *, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups of the tuned text parameters: the encoder's layers at ``encoder_lr``, the rest at ``lr``; no
    weight decay on biases and norms."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.text.named_parameters():
        if not param.requires_grad:
            continue
        encoder = name.startswith("encoder.") and model.text.config.kind != "hashing"
        lr = section.encoder_lr if encoder else section.lr
        groups.setdefault((lr, 0.0 if param.ndim < 2 else weight_decay), []).append(param)
    return [{"params": ps, "lr": lr, "base_lr": lr, "weight_decay": wd} for (lr, wd), ps in sorted(groups.items())]
