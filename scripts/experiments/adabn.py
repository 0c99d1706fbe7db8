"""Test-time statistics (AdaBN): each view's BatchNorm statistics re-estimated on the *test* places' own images
(unlabelled, as a user has their reference tiles and query photos), then every direction evaluated again; how far
it closes the gap between held-out countries and in-domain places.

    python scripts/experiments/adabn.py --run runs/demo/run --world runs/demo/world --holdout NO,EG \
        --out runs/adabn/demo.json

The statistics come from every image of the test places (in-domain and held-out alike); the model's weights are
not touched. Writes the R@1 of every direction and of the two query groups, as trained and with test statistics.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--world", required=True)
    parser.add_argument("--holdout", default="NO,EG")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from geobridge.data import load_places
    from geobridge.data.types import sample_images
    from geobridge.eval.embed import evaluate_model
    from geobridge.models import GeoBridge

    holdout = tuple(c for c in args.holdout.split(",") if c)
    keys = ("drone->satellite/R@1", "satellite->drone/R@1", "street->satellite/R@1", "satellite->street/R@1",
            "street->drone/R@1", "drone->street/R@1", "text->satellite/R@1", "text->drone/R@1",
            "text->street/R@1", "in_domain/drone->satellite/R@1", "out_of_domain/drone->satellite/R@1")

    def evaluate(model: GeoBridge) -> dict[str, float]:
        metrics = evaluate_model(model, args.world, split="test", holdout_countries=holdout, show_progress_bar=False)
        return {k: round(float(metrics[k]), 1) for k in keys if k in metrics}

    results = {"as_trained": evaluate(GeoBridge.from_pretrained(args.run))}
    test_places = load_places(args.world, split="test")
    model = GeoBridge.from_pretrained(args.run)
    items = sample_images(test_places, ("drone", "satellite", "street"), limit=10**9, rng=np.random.default_rng(0))
    model.reestimate_norm_statistics(items, batch_size=64, show_progress_bar=False)
    results["test_statistics"] = evaluate(model)
    results["images_per_view"] = {v: len(x) for v, x in items.items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
