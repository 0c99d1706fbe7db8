"""One lever of issue 20 measured: train a recipe on a generated world, evaluate every direction, then re-estimate
each view's BatchNorm statistics on training images and evaluate again (the flaw check: nothing should move).

    python scripts/experiments/levers.py --world runs/worlds/s0 --world-seed 0 --holdout NO,EG \
        --out runs/levers/base-s0 [--train-seed 0] [KEY=VALUE overrides of configs/tiny.yaml ...]

The world is generated once per seed (the demo's sizes) and reused by every lever; ``<out>/results.json`` holds
the metrics before and after re-estimation, train-split recall on 200 training places, times and the config.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", required=True)
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--holdout", default="NO,EG")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--extra-train-places", type=int, default=600)
    parser.add_argument("--recipe", default="configs/tiny.yaml")
    parser.add_argument("--out", required=True)
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--renorm-images", type=int, default=800)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    from geobridge.data import load_places
    from geobridge.data.types import sample_images
    from geobridge.eval.embed import evaluate_model
    from geobridge.models import GeoBridge
    from geobridge.synth import WorldConfig, generate_world
    from geobridge.train import load_config, train

    world, out = Path(args.world), Path(args.out)
    holdout = tuple(c for c in args.holdout.split(",") if c)
    if not (world / "manifest.json").is_file():
        generate_world(world, WorldConfig(places=600, extra_train_places=args.extra_train_places, test_places=200,
                                          image_size=args.image_size, seed=args.world_seed,
                                          holdout_countries=holdout), show_progress_bar=True)
    started = time.time()
    if not (out / "run" / "model" / "config.json").is_file():
        config = load_config(args.recipe, [f"out={out / 'run'}", f"data.root={world}",
                                           f"train.seed={args.train_seed}", *args.overrides])
        train(config, resume=True, evaluate=False)
    train_s = time.time() - started
    model = GeoBridge.from_pretrained(out / "run")
    before = evaluate_model(model, world, split="test", holdout_countries=holdout, show_progress_bar=False)
    results = {"world": str(world), "world_seed": args.world_seed, "holdout": list(holdout),
               "train_seed": args.train_seed, "recipe": args.recipe, "overrides": args.overrides,
               "train_s": round(train_s, 1), "test": _flat(before)}
    train_places = load_places(world, split="train")
    rng = np.random.default_rng(0)
    results["train"] = _flat(_evaluate_places(model, [train_places[i] for i in
                                                       sorted(rng.choice(len(train_places), 200, replace=False))]))
    if model.config.image.norm != "group":
        items = sample_images(train_places, ("drone", "satellite", "street"), limit=args.renorm_images, rng=rng)
        test_places = load_places(world, split="test")
        probe = {v: [p.images[v][0] for p in test_places if p.images.get(v)] for v in items}
        as_trained = {v: model.encode(x, view=v, show_progress_bar=False) for v, x in probe.items()}
        try:
            model.reestimate_norm_statistics(items, batch_size=64, show_progress_bar=False)
            # how far re-estimation moves each view's test embeddings: mean cosine to the embeddings as trained
            results["reestimation_cosine"] = {
                v: round(float((model.encode(x, view=v, show_progress_bar=False) * as_trained[v]).sum(1).mean()), 4)
                for v, x in probe.items()
            }
            after = evaluate_model(model, world, split="test", holdout_countries=holdout, show_progress_bar=False)
            results["test_reestimated"] = _flat(after)
        except ValueError as exc:  # no BatchNorm in the backbone
            results["test_reestimated"] = str(exc)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _print(results)


def _evaluate_places(model, places) -> dict:
    from geobridge.eval.embed import embed_places
    from geobridge.eval.evaluator import RetrievalEvaluator

    return dict(RetrievalEvaluator(show_progress_bar=False)(embed_places(model, places, show_progress_bar=False)))


def _flat(metrics: dict) -> dict[str, float]:
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {k: round(float(v), 2) for k, v in numbers.items()}


DIRECTIONS = ("drone->satellite", "satellite->drone", "street->satellite", "satellite->street", "street->drone",
              "drone->street", "text->satellite", "text->drone", "text->street")


def _print(results: dict) -> None:
    rows = [("test", results["test"]), ("train", results["train"])]
    if isinstance(results.get("test_reestimated"), dict):
        rows.append(("test, re-estimated", results["test_reestimated"]))
    print("| R@1 | " + " | ".join(DIRECTIONS) + " |")
    for name, metrics in rows:
        print(f"| {name} | " + " | ".join(f"{metrics.get(d + '/R@1', float('nan')):.1f}" for d in DIRECTIONS) + " |")
    print(f"train {results['train_s']:.0f} s")


if __name__ == "__main__":
    main()
