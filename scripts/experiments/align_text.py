"""Text alignment (train/text_align.py) measured on a model that is already trained: tune its text tower against
its frozen image towers on the world's training places, then evaluate every direction on the test places.

    python scripts/experiments/align_text.py --model runs/demo/run --world runs/demo/world --holdout NO,EG \
        --out runs/align/s0 [text_align.epochs=2 text_align.lr=3e-3 ...]

Writes ``<out>/results.json`` (the alignment's record, the config and the test metrics) and ``<out>/model``. The image
directions cannot move (the image towers are frozen); the text directions are what it measures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved GeoBridge model folder")
    parser.add_argument("--world", required=True)
    parser.add_argument("--train-world", help="take the training places from this world instead (e.g. one with more "
                        "descriptions per place)")
    parser.add_argument("--holdout", default="")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="text_align.KEY=VALUE")
    args = parser.parse_args()

    import torch

    from geobridge.data import load_places
    from geobridge.eval.embed import evaluate_model
    from geobridge.models import GeoBridge
    from geobridge.train import load_config
    from geobridge.train.text_align import align_text

    torch.manual_seed(args.seed)
    config = load_config(None, [f"data.root={args.world}", "text_align.epochs=2", *args.overrides])
    model = GeoBridge.from_pretrained(args.model)
    places = load_places(args.train_world or args.world, split="train")
    record = align_text(model, places, config.text_align, weight_decay=config.optim.weight_decay,
                        label_smoothing=config.loss.label_smoothing, seed=args.seed)
    started = time.time()
    holdout = tuple(c for c in args.holdout.split(",") if c)
    test = evaluate_model(model, args.world, split="test", holdout_countries=holdout, show_progress_bar=False)
    out = Path(args.out)
    model.save_pretrained(out / "model")
    results = {"model": args.model, "world": args.world, "train_world": args.train_world,
               "overrides": args.overrides, "align": record,
               "eval_s": round(time.time() - started, 1),
               "test": {k: round(v, 2) for k, v in test.items() if isinstance(v, float)}}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    keys = [k for k in results["test"] if k.endswith("/R@1") and k.count("/") == 1]
    print(json.dumps({"align": record, **{k: results["test"][k] for k in keys}}, indent=1))


if __name__ == "__main__":
    main()
