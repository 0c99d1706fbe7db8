"""GeoBridge benchmark suite: ``python -m benchmarks`` runs every benchmark and writes results.json,
results.md and the plots (see benchmarks/README.md)."""

from __future__ import annotations

BENCHMARKS = (
    "search", "scaling", "ann", "encode", "train", "train_step", "synth", "eval_memory", "serve", "deploy", "prior",
    "embed", "index_load", "clip_step",
)

__all__ = ["BENCHMARKS"]
