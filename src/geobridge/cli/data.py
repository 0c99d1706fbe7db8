"""``geobridge data check|info DIR``: validate a dataset or summarise it."""

from __future__ import annotations

import argparse
import json
import sys

from geobridge.cli import args as arg

# the names of the layouts, kept here so that building the parser imports no dataset code
FORMATS = ("geoloc", "university1652", "geotext1652", "cvusa", "cvact", "vigor")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="check or summarise a dataset folder")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="list every problem in a dataset (exit 1 if any)")
    check.add_argument("root", help="dataset folder (GeoLoc or a published layout, see --format)")
    check.add_argument("--format", default=None, choices=FORMATS,
                       help="the layout to check against (default: detected from the folder's files)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    check.set_defaults(func=run_check)
    info = sub.add_parser("info", help="count places per split, view and country")
    info.add_argument("root", type=arg.existing("folder"), help="dataset folder")
    info.set_defaults(func=run_info)


def run_check(args: argparse.Namespace) -> int:
    from geobridge.data import check_dataset

    report = check_dataset(args.root, fmt=args.format, show_progress_bar=False if args.quiet or args.json else None)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0 if report.ok else 1
    for problem in report.problems:
        print(problem)
    if report.ok:
        print(f"ok: {args.root} ({report.layout}) {json.dumps(report.stats)}")
        return 0
    print(f"{len(report.problems)} problem(s) in {args.root} ({report.layout})", file=sys.stderr)
    return 1


def run_info(args: argparse.Namespace) -> int:
    from collections import Counter

    from geobridge.data import load_places
    from geobridge.data.check import detect_layout

    layout = detect_layout(__import__("pathlib").Path(args.root))
    places = load_places(args.root, fmt=layout if layout != "unknown" else "geoloc")
    splits = Counter(p.split for p in places)
    countries = Counter(p.country for p in places)
    views = {v: sum(len(p.images.get(v, ())) for p in places) for v in ("drone", "satellite", "street")}
    views["text"] = sum(len(p.texts) for p in places)
    print(json.dumps({"places": len(places), "splits": splits, "countries": countries, "views": views}, indent=2))
    return 0
