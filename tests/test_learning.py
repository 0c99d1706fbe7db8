"""Training must learn: recall on held-out synthetic places far above chance, and the demo end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geobridge.synth import WorldConfig, generate_world

TEST_PLACES = 16


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("learn") / "world"
    generate_world(root, WorldConfig(places=80, test_places=TEST_PLACES, image_size=32, drone_views=2, seed=3,
                                     workers=1), show_progress_bar=False)
    return root


@pytest.mark.slow
def test_training_recalls_held_out_places_far_above_chance(world, tmp_path):
    from geobridge.eval.training import training_evaluator
    from geobridge.train import load_config, train

    config = load_config(None, [
        f"out={tmp_path / 'run'}", f"data.root={world}", "model.name=gb-tiny", "model.text_kind=hashing",
        "optim.epochs=8", "optim.batch_size=16", "optim.lr=2e-3", "data.pipeline=tensor", "train.seed=0",
    ])
    metrics = train(config, evaluator=training_evaluator(config, show_progress_bar=False))
    print({k: round(v, 1) for k, v in metrics.items() if k.endswith("/R@1") and k.count("/") == 1})
    chance = 100.0 / TEST_PLACES  # one true satellite tile among the held-out gallery
    assert metrics["drone->satellite/R@1"] >= 3 * chance, metrics
    assert metrics["satellite->drone/R@1"] >= 3 * chance, metrics
    assert metrics["mean/R@1"] >= 1.5 * chance, metrics
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["drone->satellite/R@1"] == pytest.approx(
        metrics["drone->satellite/R@1"])
