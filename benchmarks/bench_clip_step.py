"""A training step of the paper's CLIP towers against a bare forward+backward of the same towers on the same batch.

``gb-clip-b16`` (three view-specific CLIP ViT-B/16 image towers and CLIP's text tower, random weights: no CLIP
weights can be had on this machine, and the weights do not change the cost) on a small generated world, at a
small batch on the CPU:

* ``geobridge``: one step as ``geobridge.train.Trainer`` runs it: the next batch from the data pipeline
  (the tensor pipeline, 224 px), every view's tower and the texts (tokenized, in runs of whole sentences),
  ``GeoBridgeLoss`` with anchors, backward, clip and AdamW step;
* ``clip_bare``: copies of the same towers, forward and backward on the same image tensors and the same token ids
  (one call per view and one for the texts, the mean of the features as the loss), and an AdamW step.

The ratio ``bare step time / geobridge step time`` is the fraction of the bare towers' throughput that the full
step keeps (target >= 0.8). Both are interleaved round by round. Quick mode uses a tiny CLIP.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import Context, Findings, ratio
from benchmarks.bench_train_step import _endless, _timed_step, _trainer

NAME = "clip_step"
TITLE = "Training step of gb-clip-b16 vs a bare forward+backward of its CLIP towers"
TINY_CLIP = {"embed_dim": 24, "image_size": 32, "patch_size": 8, "vision_width": 32, "vision_layers": 2,
             "vision_heads": 2, "text_width": 32, "text_layers": 2, "text_heads": 2}


def plan(*, quick: bool) -> dict[str, Any]:
    if quick:
        return {"places": 16, "batch_size": 4, "rounds": 2, "model": "tiny"}
    return {"places": 24, "batch_size": 4, "rounds": 4, "model": "gb-clip-b16"}


def _tiny_config(folder: Path) -> str:
    from geobridge.models import get_model_config

    config = get_model_config("gb-clip-b16").to_dict()
    config["clip"].update(TINY_CLIP)
    config["embed_dim"] = TINY_CLIP["embed_dim"]
    size = TINY_CLIP["image_size"]
    config["image"]["input_size"] = {v: [size, size] for v in config["image"]["input_size"]}
    path = folder / "gb-clip-tiny.json"
    path.write_text(json.dumps(config))
    return str(path)


def _bare_step(towers: dict[str, Any], text: Any, optimizer: Any, images: dict[str, Any], tokens: Any) -> float:
    start = time.perf_counter()
    loss = sum(towers[view](x).mean() for view, x in images.items()) + text(*tokens).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def bench(ctx: Context) -> dict[str, Any]:
    import torch

    from geobridge.synth import WorldConfig, generate_world
    from geobridge.text_runs import pack_runs

    p = plan(quick=ctx.quick)
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        generate_world(world, WorldConfig(places=p["places"], test_places=4, image_size=64, seed=5, workers=1),
                       show_progress_bar=False)
        model = _tiny_config(Path(tmp)) if p["model"] == "tiny" else p["model"]
        trainer = _trainer(world, Path(tmp) / "run", pipeline="tensor", model=model, batch_size=p["batch_size"],
                           extra=("train.norm_recalibration_images=0", "optim.lr=1e-5", "optim.text_lr=1e-5",
                                  "model.image_keep_rows.street=[0.0,1.0]"))  # CLIP embeds whole squares
        stream = _endless(trainer)
        sample = next(stream)
        layout = torch.channels_last if trainer.config.train.channels_last else torch.contiguous_format
        images = {v: x.clone().contiguous(memory_format=layout) for v, x in sample["images"].items()}
        tower = trainer.model.text
        runs, _ = pack_runs(list(sample["text"]), count=tower.tokens.count, limit=tower.tokens.context_length - 2)
        tokens = tower.tokens(runs)
        towers = {v: copy.deepcopy(trainer.model.image.backbone_for(v)).train() for v in images}
        text = copy.deepcopy(tower.encoder).train()
        params = [q for t in towers.values() for q in t.parameters()] + list(text.parameters())
        bare_opt = torch.optim.AdamW(params, lr=1e-5)
        _timed_step(trainer, stream)  # warm-up of each
        _bare_step(towers, text, bare_opt, images, tokens)
        steps: list[tuple[float, float]] = []
        bare: list[float] = []
        for round_ in range(p["rounds"]):
            steps.append(_timed_step(trainer, stream))
            bare.append(_bare_step(towers, text, bare_opt, images, tokens))
            ctx.log(NAME, f"round {round_ + 1}/{p['rounds']}")
        trainer.close()
    b = p["batch_size"]
    step_s = float(np.median([d + c for d, c in steps]))
    data_s = float(np.median([d for d, _ in steps]))
    bare_s = float(np.median(bare))
    found = Findings(
        medians={"geobridge/samples_per_s": b / step_s, "geobridge/step_s": step_s, "geobridge/data_s": data_s,
                 "geobridge/data_share": data_s / step_s},
        baselines={"clip_bare/samples_per_s": b / bare_s, "clip_bare/step_s": bare_s},
    )
    found.compare(f"full training step vs bare CLIP towers fwd+bwd, B={b} places, samples/s", value=b / step_s,
                  baseline=b / bare_s, unit="samples/s", key="step_vs_bare_clip", ratio_value=ratio(bare_s, step_s),
                  ratio_name="throughput ratio", op=">=", threshold=0.8,
                  note=f"data pipeline {100 * data_s / step_s:.0f} % of the step; the step also runs the loss")
    return found.result(
        NAME,
        title=TITLE,
        parameters={"model": p["model"], "batch_size_places": b, "images_per_step": b * len(images),
                    "text_runs_per_step": len(runs), "world": f"{p['places']} generated places at 64 px",
                    "input_px": int(next(iter(images.values())).shape[-1]), "rounds_timed": p["rounds"],
                    "torch_threads": torch.get_num_threads(), "device": "cpu"},
        target="full step >= 0.8x the bare forward+backward of the same CLIP towers",
        notes=["A sample is one place: one drone photo, the satellite tile, the panorama and one description.",
               "Random weights: the cost of a step does not depend on them."],
        details={"step_times_s": [[round(d, 5), round(c, 5)] for d, c in steps],
                 "bare_times_s": [round(t, 5) for t in bare]},
    )
