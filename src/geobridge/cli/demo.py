"""``geobridge demo``: the whole pipeline on the built-in synthetic world, in one command."""

from __future__ import annotations

import argparse

from geobridge.cli import args as arg
from geobridge.cli.synth import synth_countries


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="synthetic world -> training -> evaluation report -> localisation index",
        description="Generate the default synthetic world, train the CPU recipe, evaluate every direction "
        "(cross-domain and robustness included), build a localisation index and measure query fusion. "
        "An interrupted demo continues where it stopped when run again with the same --out.",
    )
    parser.add_argument("--out", default="runs/demo", type=arg.output(), help="output folder (default runs/demo)")
    parser.add_argument("--places", type=arg.count(), default=600, help="places in the world (default 600)")
    parser.add_argument(
        "--extra-train-places",
        type=arg.count(lo=0),
        default=1800,
        help="training places beyond --places, from the countries not held out (default 1800)",
    )
    parser.add_argument("--train-street-views", type=arg.count(hi=16), default=1,
                        help="street panoramas per training place (default 1)")
    parser.add_argument("--test-places", type=arg.count(), default=200, help="held-out test places (default 200)")
    parser.add_argument("--image-size", type=arg.integer(lo=16, hi=2048), default=64,
                        help="image side in pixels (default 64)")
    parser.add_argument("--seed", type=arg.seed(), default=0)
    parser.add_argument(
        "--holdout", type=arg.country_codes(known=synth_countries), default=("NO", "EG"),
        help="held-out countries (default NO,EG)",
    )
    parser.add_argument("--recipe", default="tiny", help="training recipe name or YAML path (default tiny)")
    parser.add_argument("--no-robustness", action="store_true", help="skip the degraded-view evaluation")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training config overrides")
    parser.set_defaults(func=run, out_kind="folder")


def run(args: argparse.Namespace) -> int:
    import json

    from geobridge.demo import DemoConfig, run_demo

    config = DemoConfig(
        places=args.places,
        extra_train_places=args.extra_train_places,
        train_street_views=args.train_street_views,
        test_places=args.test_places,
        image_size=args.image_size,
        seed=args.seed,
        holdout_countries=args.holdout,
        recipe=args.recipe,
        overrides=tuple(args.overrides),
        robustness=not args.no_robustness,
    )
    summary = run_demo(args.out, config)
    print(json.dumps({"timings": summary["timings"], **summary["metrics"]}, indent=2))
    print(f"report: {summary['report']}")
    return 0
