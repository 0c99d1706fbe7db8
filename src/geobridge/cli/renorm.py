"""``geobridge renorm``: re-estimate a checkpoint's BatchNorm statistics per image view, without retraining.

A checkpoint written before per-view normalisation (``image.norm=batch``) evaluates every view of its shared
backbone with running statistics averaged over all three views; this gives each view its own, estimated from
that view's training images, and writes a new checkpoint with ``image.norm=view_batch``. On a per-view checkpoint
it re-estimates the statistics (a check that training left them right: the embeddings should barely move).
"""

from __future__ import annotations

import argparse

from geobridge.cli import args as arg
from geobridge.cli.data import FORMATS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "renorm", help="re-estimate BatchNorm statistics per image view (fixes checkpoints with shared statistics)"
    )
    parser.add_argument("--checkpoint", required=True, type=arg.existing("folder"),
                        help="model folder or training run folder")
    parser.add_argument("--data", required=True, type=arg.existing("folder"),
                        help="dataset root whose images estimate the statistics")
    parser.add_argument("--out", required=True, type=arg.output(), help="new model folder (must not exist)")
    parser.add_argument("--format", default="geoloc", choices=FORMATS, help="layout of --data (default geoloc)")
    parser.add_argument("--split", default="train", choices=("train", "val", "test"),
                        help="split whose images are used (default train)")
    parser.add_argument("--images", type=arg.count(lo=2), default=800,
                        help="images per view, drawn at random (default 800)")
    parser.add_argument("--seed", type=arg.seed(), default=0, help="seed of the draw")
    parser.add_argument("--batch-size", type=arg.batch_size(lo=2), default=64)
    parser.set_defaults(func=run, out_kind="new-folder")


def run(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    import numpy as np

    from geobridge.data import load_places
    from geobridge.errors import GeoBridgeError
    from geobridge.models import GeoBridge
    from geobridge.views import IMAGE_VIEWS

    out = Path(args.out)
    model = GeoBridge.from_pretrained(args.checkpoint)
    before = model.config.image.norm
    places = load_places(args.data, fmt=args.format, split=args.split)
    rng = np.random.default_rng(args.seed)
    items = {}
    for view in IMAGE_VIEWS:
        paths = [path for place in places for path in place.images.get(view, [])]
        if len(paths) >= 2:
            chosen = rng.choice(len(paths), size=min(args.images, len(paths)), replace=False)
            items[view] = [paths[i] for i in sorted(chosen)]
    if not items:
        raise GeoBridgeError(f"{args.data} ({args.split}) has fewer than 2 images of every image view")
    try:
        counts = model.reestimate_norm_statistics(items, batch_size=args.batch_size, show_progress_bar=True)
    except ValueError as exc:
        raise GeoBridgeError(str(exc)) from exc
    staging = out.parent / f".{out.name}.renorm-tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary = ", ".join(f"{view} {n}" for view, n in counts.items())
    print(f"wrote {out}: image.norm {before} -> {model.config.image.norm}; statistics from {summary} images")
    return 0
