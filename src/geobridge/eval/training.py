"""The evaluation a training run reports, built from its config and handed to the trainer (``Trainer(...,
evaluator=...)``, ``train(..., evaluator=...)``), so that training imports no evaluation code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from geobridge.eval.embed import evaluate_model
from geobridge.eval.protocol_run import evaluate_protocol, protocol_splits
from geobridge.protocols import get_protocol
from geobridge.train.config import TrainConfig


def training_evaluator(config: TrainConfig, *, show_progress_bar: bool = True) -> Callable[[Any], dict[str, Any]]:
    """model -> metrics: with ``train.eval_protocol``, that protocol's on ``data.root``; else every direction on
    the places of ``data.eval_split`` (GeoLoc), or the layout's default protocol for a benchmark layout (e.g.
    ``university1652``: query_* against gallery_*, distractors)."""
    if config.train.eval_protocol:
        protocol = get_protocol(config.train.eval_protocol)

        def by_protocol(model: Any) -> dict[str, Any]:
            splits = protocol_splits(protocol, config.data.root)
            metrics, _ = evaluate_protocol(model, protocol, splits, show_progress_bar=show_progress_bar)
            return dict(metrics)

        return by_protocol

    def on_eval_split(model: Any) -> dict[str, Any]:
        return evaluate_model(model, config.data.root, fmt=config.data.format, split=config.data.eval_split,
                              show_progress_bar=show_progress_bar)

    return on_eval_split
