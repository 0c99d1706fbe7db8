"""The trainer's full step against a bare timm forward+backward on the same batch, and the data pipeline's share.

On a small generated world (64 px, the CPU recipe's input size) with the recipe's model (``gb-small``, frozen
MiniLM text tower) and batch:

* ``geobridge``: one step as ``geobridge.train.Trainer`` runs it: the next batch from the data pipeline, the
  model's forward for every view and the texts, ``GeoBridgeLoss`` with anchors, backward, clip and AdamW step.
  Measured with each pipeline: ``tensor`` (decode-once uint8 cache + batched augmentation) and ``pil``
  (per-sample PIL decode and augmentation in the loader).
  With the tensor pipeline also in contiguous (NCHW) memory format instead of the recipe's channels-last
  (``tensor_nchw``, ``train.channels_last=false``).
* ``timm_bare``: the same timm backbone (a fresh copy, in the recipe's memory format), forward and backward on the
  same image tensors (one call per view, the mean of the pooled features as the loss) and an AdamW step: the cost
  of the network alone.

The ratio ``timm_bare step time / geobridge step time`` is the fraction of the bare network's throughput that the
full training step keeps (target >= 0.8 with the tensor pipeline). The data share is the time spent producing
the batch over the whole step. Variants are interleaved round by round, so load changes hit them alike.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import Context, Findings, ratio

NAME = "train_step"
TITLE = "Training step of the CPU recipe vs a bare timm forward+backward (gb-small, 64 px)"


def plan(*, quick: bool) -> dict[str, Any]:
    if quick:
        return {"places": 24, "batch_size": 8, "rounds": 2, "model": "gb-tiny"}
    return {"places": 120, "batch_size": 32, "rounds": 8, "model": "gb-small"}


def _trainer(world: Path, out: Path, *, pipeline: str, model: str, batch_size: int, extra: tuple[str, ...] = ()) -> Any:
    from geobridge.demo import recipe_path
    from geobridge.train import load_config
    from geobridge.train.trainer import Trainer

    overrides = [
        f"out={out}",
        f"data.root={world}",
        f"data.pipeline={pipeline}",
        f"model.name={model}",
        f"optim.batch_size={batch_size}",
        *extra,
    ]
    return Trainer(load_config(recipe_path("tiny"), overrides), show_progress_bar=False)


def _timed_step(trainer: Any, batches: Any) -> tuple[float, float]:
    """(data seconds, compute seconds) of one training step, as ``Trainer.fit`` runs it."""
    import torch

    start = time.perf_counter()
    batch = next(batches)
    data_s = time.perf_counter() - start
    start = time.perf_counter()
    losses = trainer._forward_losses(batch)
    sum(losses.values()).backward()
    torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.config.optim.grad_clip)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    return data_s, time.perf_counter() - start


def _bare_step(backbone: Any, optimizer: Any, images: dict[str, Any]) -> float:
    start = time.perf_counter()
    loss = sum(backbone(x).mean() for x in images.values())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def _endless(trainer: Any) -> Any:
    epoch = 0
    while True:
        trainer._set_epoch(epoch)
        yield from trainer.data
        epoch += 1


def bench(ctx: Context) -> dict[str, Any]:
    import torch

    from geobridge.synth import WorldConfig, generate_world

    p = plan(quick=ctx.quick)
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        generate_world(
            world,
            WorldConfig(places=p["places"], test_places=4, image_size=64, seed=5, workers=1),
            show_progress_bar=False,
        )
        variants = {"tensor": ("tensor", ()), "pil": ("pil", ()),
                    "tensor_nchw": ("tensor", ("train.channels_last=false",))}
        trainers = {
            name: _trainer(world, Path(tmp) / name, pipeline=pipe, model=p["model"], batch_size=p["batch_size"],
                           extra=extra)
            for name, (pipe, extra) in variants.items()
        }
        streams = {pipe: _endless(t) for pipe, t in trainers.items()}
        sample = next(streams["tensor"])
        layout = torch.channels_last if trainers["tensor"].config.train.channels_last else torch.contiguous_format
        # the same tensors for the bare network, in the recipe's memory format
        images = {v: x.clone().contiguous(memory_format=layout) for v, x in sample["images"].items()}
        backbone = copy.deepcopy(trainers["tensor"].model.image.backbone).train()
        bare_opt = torch.optim.AdamW(backbone.parameters(), lr=1e-4)
        for pipe in trainers:  # warm-up step of each
            _timed_step(trainers[pipe], streams[pipe])
        _bare_step(backbone, bare_opt, images)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in trainers}
        bare: list[float] = []
        for round_ in range(p["rounds"]):
            for pipe in trainers:
                times[pipe].append(_timed_step(trainers[pipe], streams[pipe]))
            bare.append(_bare_step(backbone, bare_opt, images))
            ctx.log(NAME, f"round {round_ + 1}/{p['rounds']}")
    b = p["batch_size"]
    step_s = {pipe: float(np.median([d + c for d, c in t])) for pipe, t in times.items()}
    data_s = {pipe: float(np.median([d for d, _ in t])) for pipe, t in times.items()}
    bare_s = float(np.median(bare))
    found = Findings(
        medians={
            "tensor/samples_per_s": b / step_s["tensor"],
            "tensor/step_s": step_s["tensor"],
            "tensor/data_s": data_s["tensor"],
            "tensor/data_share": data_s["tensor"] / step_s["tensor"],
            "pil/samples_per_s": b / step_s["pil"],
            "pil/step_s": step_s["pil"],
            "pil/data_s": data_s["pil"],
            "pil/data_share": data_s["pil"] / step_s["pil"],
            "tensor_nchw/samples_per_s": b / step_s["tensor_nchw"],
            "tensor_nchw/step_s": step_s["tensor_nchw"],
        },
        baselines={"timm_bare/samples_per_s": b / bare_s, "timm_bare/step_s": bare_s},
    )
    step_s["bare_timm"] = bare_s
    versus = [  # (key, pipeline, its baseline, row, ratio name, target, note)
        ("tensor_step_vs_bare_timm", "tensor", "bare_timm",
         f"full training step (tensor pipeline) vs bare timm fwd+bwd, B={b} places, samples/s", "throughput ratio",
         0.8, f"data pipeline {100 * found.medians['tensor/data_share']:.0f} % of the step; "
         "the step also runs the text head, the loss and the adapters"),
        ("pil_step_vs_bare_timm", "pil", "bare_timm", "full training step (PIL pipeline) vs bare timm fwd+bwd",
         "throughput ratio", None, f"data pipeline {100 * found.medians['pil/data_share']:.0f} % of the step"),
        ("tensor_vs_pil_step", "tensor", "pil", "tensor pipeline vs PIL pipeline (full step)", "speed ratio", None, ""),
        ("channels_last_vs_nchw_step", "tensor", "tensor_nchw",
         "channels-last (the recipe) vs contiguous NCHW memory format (tensor pipeline, full step)", "speed ratio",
         None, "oneDNN's NHWC convolutions; the same model, summed in another order"),
    ]
    for key, pipe, base, metric, ratio_name, target, note in versus:
        found.compare(metric, value=b / step_s[pipe], baseline=b / step_s[base], unit="samples/s", key=key,
                      ratio_value=ratio(step_s[base], step_s[pipe]), ratio_name=ratio_name,
                      op=">=" if target is not None else None, threshold=target, note=note)
    return found.result(
        NAME,
        title=TITLE,
        parameters={
            "model": p["model"],
            "batch_size_places": b,
            "world": f"{p['places']} generated places at 64 px",
            "recipe": "configs/tiny.yaml (anchors on, augmentation on)",
            "rounds_timed": p["rounds"],
            "torch_threads": torch.get_num_threads(),
            "channels_last": bool(trainers["tensor"].config.train.channels_last),
        },
        target="full step >= 0.8x the bare timm forward+backward (tensor pipeline)",
        notes=[
            "A sample is one place: one drone photo, the satellite tile, the panorama and one description.",
            "The bare timm step runs the backbone only (no adapters, projection, text head or loss) on the same "
            "image tensors.",
        ],
        details={
            "step_times_s": {pipe: [[round(d, 5), round(c, 5)] for d, c in t] for pipe, t in times.items()},
            "bare_times_s": [round(t, 5) for t in bare],
        },
    )
