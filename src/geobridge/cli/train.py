"""``geobridge train``: train or fine-tune a model (also under ``torchrun --nproc_per_node=N``)."""

from __future__ import annotations

import argparse
import json

from geobridge.cli import args as arg


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a GeoBridge model",
        description="Train a GeoBridge model. Options: a YAML config, then key=value overrides "
        "(e.g. optim.epochs=5 loss.use_anchors=false). Run under torchrun for DDP.",
    )
    parser.add_argument("--config", type=arg.existing("file"), help="YAML config (see configs/)")
    parser.add_argument("--out", type=arg.output(), help="run folder (same as out=...)")
    parser.add_argument("--data", type=arg.existing("folder"), help="dataset root (same as data.root=...)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")
    parser.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    parser.add_argument("--strict", action="store_true",
                        help="refuse training places that lack one of the views trained (default: count them)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dot-list config overrides")
    parser.set_defaults(func=run, out_kind="folder")


def run(args: argparse.Namespace) -> int:
    from geobridge.eval.training import training_evaluator
    from geobridge.train import load_config, train

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"out={args.out}")
    if args.data:
        overrides.append(f"data.root={args.data}")
    config = load_config(args.config, overrides)
    result = train(config, resume=args.resume, strict=args.strict, evaluator=training_evaluator(config),
                   evaluate=not args.no_eval)
    summary = {k: v for k, v in result.items() if k.endswith(("/R@1", "train/loss"))}
    print(json.dumps(summary, indent=2, sort_keys=True))
    print(f"model saved to {config.out}/model")
    return 0
