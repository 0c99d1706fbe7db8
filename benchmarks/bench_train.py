"""Training-step throughput of gb-tiny (hashing text tower): GeoBridge loss with and without semantic anchors,
against a plain two-view symmetric InfoNCE step in the style of Sample4Geo's training loop.

Every variant gets its own model (same initial weights) and AdamW optimizer and runs full steps on the same
synthetic batch of B places: forward, loss, backward, optimizer step, as ``geobridge.train.Trainer`` does.

* ``anchors``: drone + satellite + street images and the places' texts, ``GeoBridgeLoss(use_anchors=True)``
  (pair terms, view-text anchor terms and the bridge term).
* ``no_anchors``: the three image views, ``GeoBridgeLoss(use_anchors=False)`` (texts are not embedded, as in the
  trainer).
* ``sample4geo``: drone and satellite only, one symmetric InfoNCE with label smoothing 0.1 written out here
  (shared backbone, in-batch negatives), the Sample4Geo recipe on the same backbone and batch.

The steps are interleaved round-robin so that load changes on a shared machine affect each variant alike.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks._common import Context, Findings, ratio

NAME = "train"
TITLE = "Training-step throughput (gb-tiny, hashing text encoder)"
VARIANTS = ("anchors", "no_anchors", "sample4geo")


def plan(*, quick: bool) -> dict[str, Any]:
    if quick:
        return {"batch_size": 8, "steps": 3, "warmup": 1}
    return {"batch_size": 32, "steps": 12, "warmup": 2}


def make_batch(model: Any, *, batch_size: int, seed: int = 0) -> dict[str, Any]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    images = {}
    for view, (height, width) in model.config.image.input_size.items():
        images[view] = torch.randn(batch_size, 3, height, width, generator=gen)  # (B, 3, H, W)
    texts = [
        f"a place with {w} fields and a {c} river near town {i}"
        for i, (w, c) in enumerate(
            zip(["green", "dry", "wide", "small"] * batch_size, ["wide", "narrow", "slow"] * batch_size, strict=False)
        )
    ]
    return {"images": images, "texts": texts[:batch_size], "labels": torch.arange(batch_size)}


def make_step(variant: str, *, batch: dict[str, Any], seed: int = 0) -> tuple[Any, int]:
    """A closure that runs one full training step of ``variant``; also returns the images per step."""
    import torch
    import torch.nn.functional as F

    from geobridge.losses import GeoBridgeLoss
    from geobridge.models import GeoBridge, get_model_config

    config = get_model_config("gb-tiny")
    config.text.kind = "hashing"
    torch.manual_seed(seed)
    model = GeoBridge(config).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.05)
    labels = batch["labels"]
    if variant == "sample4geo":
        images = {v: batch["images"][v] for v in ("drone", "satellite")}

        def step() -> float:
            emb = model(images)
            scale = emb["logit_scale"].exp()
            logits = scale * emb["drone"] @ emb["satellite"].T  # (B, B)
            loss = (
                F.cross_entropy(logits, labels, label_smoothing=0.1)
                + F.cross_entropy(logits.T, labels, label_smoothing=0.1)
            ) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return float(loss.detach())

        return step, 2 * len(labels)

    use_anchors = variant == "anchors"
    loss_fn = GeoBridgeLoss(use_anchors=use_anchors)
    images = batch["images"]
    texts = batch["texts"] if use_anchors else None
    view_labels = {v: labels for v in images}
    if use_anchors:
        view_labels["text"] = labels

    def step() -> float:
        emb = model(images, texts)
        logit_scale = emb.pop("logit_scale")
        losses = loss_fn(emb, view_labels, logit_scale=logit_scale)
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        return float(total.detach())

    return step, len(images) * len(labels)


def bench(ctx: Context) -> dict[str, Any]:
    import torch

    p = plan(quick=ctx.quick)
    from geobridge.models import GeoBridge, get_model_config

    config = get_model_config("gb-tiny")
    config.text.kind = "hashing"
    batch = make_batch(GeoBridge(config), batch_size=p["batch_size"])
    steps = {v: make_step(v, batch=batch) for v in VARIANTS}
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    losses: dict[str, float] = {}
    for _ in range(p["warmup"]):
        for step, _ in steps.values():
            step()
    for round_ in range(p["steps"]):
        for variant, (step, _) in steps.items():
            start = time.perf_counter()
            losses[variant] = step()
            times[variant].append(time.perf_counter() - start)
        if (round_ + 1) % max(1, p["steps"] // 3) == 0:
            ctx.log(
                NAME,
                f"round {round_ + 1}/{p['steps']}: "
                + ", ".join(f"{v} {np.median(times[v]) * 1e3:.0f} ms" for v in VARIANTS),
            )
    step_s = {v: float(np.median(times[v])) for v in VARIANTS}
    b = p["batch_size"]
    found = Findings(medians={
        "anchors/samples_per_s": b / step_s["anchors"],
        "anchors/images_per_s": steps["anchors"][1] / step_s["anchors"],
        "anchors/step_s": step_s["anchors"],
    })
    for variant in ("no_anchors", "sample4geo"):
        found.baselines[f"{variant}/samples_per_s"] = b / step_s[variant]
        found.baselines[f"{variant}/images_per_s"] = steps[variant][1] / step_s[variant]
        found.baselines[f"{variant}/step_s"] = step_s[variant]
    versus = [  # (variant, baseline variant, row, note)
        ("anchors", "no_anchors", f"GeoBridge loss with anchors vs without (B={b} places, samples/s)",
         "anchors add the text forward, 3 view-text terms and the bridge term"),
        ("anchors", "sample4geo", "GeoBridge loss with anchors vs Sample4Geo-style 2-view InfoNCE",
         f"{steps['anchors'][1]} vs {steps['sample4geo'][1]} images per step"),
        ("no_anchors", "sample4geo", "GeoBridge loss without anchors vs Sample4Geo-style 2-view InfoNCE", ""),
    ]
    for variant, base, metric, note in versus:
        found.compare(metric, value=b / step_s[variant], baseline=b / step_s[base], unit="samples/s",
                      key=f"{variant}_speed_vs_{base}", ratio_value=ratio(step_s[base], step_s[variant]),
                      ratio_name="speed ratio", note=note)
    return found.result(
        NAME,
        title=TITLE,
        parameters={
            "config": "gb-tiny (text.kind=hashing)",
            "batch_size_places": b,
            "views": {
                "anchors": "drone+satellite+street+text",
                "no_anchors": "drone+satellite+street",
                "sample4geo": "drone+satellite",
            },
            "steps_timed": p["steps"],
            "warmup_steps": p["warmup"],
            "optimizer": "AdamW lr 1e-4 wd 0.05",
            "torch_threads": torch.get_num_threads(),
            "sample": "one place (all its views in the step)",
        },
        target=None,
        notes=[
            "No issue target: informational. A sample is one place with all of the variant's views, so the "
            "variants process different numbers of images per sample (images/s is in medians).",
            "Synthetic tensors (no data loading); the trainer's loader, view dropout and LR schedule are excluded.",
            "Final losses: " + ", ".join(f"{v} {losses[v]:.3f}" for v in VARIANTS) + " (finite = steps are real).",
        ],
        details={"step_times_s": {v: [round(t, 5) for t in times[v]] for v in VARIANTS}},
    )
