"""``geobridge eval``: evaluate a checkpoint on a dataset and write a report with plots."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a model: every direction, km errors, plots, report")
    parser.add_argument("--checkpoint", required=True, help="model folder or training run folder")
    parser.add_argument("--data", required=True, help="dataset root")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--format", default="geoloc", choices=("geoloc", "university1652"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--holdout", default=None, help="comma-separated held-out countries (default: manifest)")
    parser.add_argument("--no-robustness", action="store_true", help="skip the degraded-view conditions")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geobridge.eval.pipeline import DEFAULT_CONDITIONS, evaluate_run
    from geobridge.eval.run_info import describe_run
    from geobridge.models import GeoBridge

    model = GeoBridge.from_pretrained(args.checkpoint)
    holdout = None if args.holdout is None else tuple(c for c in args.holdout.split(",") if c)
    metrics = evaluate_run(
        model,
        args.data,
        args.out,
        fmt=args.format,
        split=args.split,
        holdout_countries=holdout,
        conditions=() if args.no_robustness else DEFAULT_CONDITIONS,
        batch_size=args.batch_size,
        sections={"Model": f"checkpoint `{args.checkpoint}`", "Data": f"`{args.data}`, split `{args.split}`"},
        run=describe_run(args.checkpoint),
        show_progress_bar=True,
    )
    primary = metrics["primary_metric"]
    print(f"{primary} = {metrics[primary]:.2f}")
    print(f"report: {args.out}/report.md")
    return 0
