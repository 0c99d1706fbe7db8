"""``geobridge synth``: generate a synthetic multi-view world (drone, satellite, street, text)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from geobridge.cli import args as arg
from geobridge.views import IMAGE_VIEWS

if TYPE_CHECKING:  # pragma: no cover
    from geobridge.synth import WorldConfig


def synth_countries() -> tuple[str, ...]:
    """The codes of the countries the generator has a style for (imported when an option names one)."""
    from geobridge.synth.countries import country_codes

    return country_codes()


def _seasons() -> tuple[str, ...]:
    from geobridge.data.degrade import SEASONS

    return SEASONS


def _times_of_day() -> tuple[str, ...]:
    from geobridge.data.degrade import TIMES_OF_DAY

    return TIMES_OF_DAY


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="generate a synthetic multi-view world",
        description="Generate a procedural world of places, each with oblique drone views, a north-up satellite "
        "tile, a street-level 360° panorama and text descriptions, in the GeoLoc layout (docs/data-format.md) "
        "or a benchmark's layout (University-1652, GeoText-1652, CVUSA, CVACT, VIGOR).",
    )
    parser.add_argument("--out", required=True, type=arg.output(),
                        help="output directory (new, empty, or a previous world)")
    parser.add_argument("--places", type=arg.count(), default=600, help="number of places (default 600)")
    parser.add_argument(
        "--extra-train-places",
        type=arg.count(lo=0),
        default=0,
        help="training places appended after --places, from the countries not held out (default 0)",
    )
    parser.add_argument("--seed", type=arg.seed(), default=0, help="world seed (default 0)")
    parser.add_argument("--image-size", type=arg.integer(lo=16, hi=2048), default=128,
                        help="side of drone/satellite images (default 128)")
    parser.add_argument("--drone-views", type=arg.count(hi=64), default=4, help="drone headings per place (default 4)")
    parser.add_argument("--train-street-views", type=arg.count(hi=16), default=1,
                        help="street panoramas per training place, the others 8-30 m from the first; test places "
                             "keep one (default 1; geoloc layout only)")
    parser.add_argument("--texts-per-place", type=arg.count(hi=64), default=3,
                        help="descriptions per place (default 3)")
    parser.add_argument("--countries", type=arg.country_codes(known=synth_countries), default=None,
                        help="country codes to use, e.g. DE,FR (all)")
    parser.add_argument(
        "--holdout", type=arg.country_codes(known=synth_countries), default=(),
        help="countries whose places all go to test, e.g. NO,EG",
    )
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--test-places", type=arg.count(lo=0), default=None,
                       help="number of test places (holdout included)")
    split.add_argument("--test-fraction", type=arg.fraction(hi_open=True), default=0.25,
                       help="fraction of test places (default 0.25)")
    parser.add_argument("--val-fraction", type=arg.fraction(hi_open=True), default=0.0,
                        help="fraction of validation places (geoloc)")
    parser.add_argument("--format", choices=("geoloc", "university1652", "geotext1652", "cvusa", "cvact", "vigor"),
                        default="geoloc", help="output layout (default geoloc)")
    parser.add_argument("--distractor-fraction", type=arg.fraction(hi_open=True), default=0.25,
                        help="benchmark layouts: share of test places written to the gallery only (default 0.25)")
    parser.add_argument("--season", default="none", type=arg.names(_seasons, what="season", single=True),
                        help="appearance shift: none, summer, autumn or winter")
    parser.add_argument("--time-of-day", default="noon",
                        type=arg.names(_times_of_day, what="time of day", single=True),
                        help="appearance shift: noon, dusk or night")
    parser.add_argument("--blur", type=arg.number(lo=0.0, hi=64.0), default=0.0,
                        help="appearance shift: Gaussian blur sigma in pixels")
    parser.add_argument("--low-resolution", type=arg.number(lo=1.0, hi=64.0), default=1.0,
                        help="appearance shift: downscale factor")
    parser.add_argument("--shift-views", type=arg.names(IMAGE_VIEWS, what="image view"),
                        default=("drone", "satellite", "street"),
                        help="views the appearance shift applies to (default all), e.g. satellite,street")
    parser.add_argument("--workers", type=arg.count(hi=256), default=None,
                        help="worker processes (default min(2, CPUs))")
    parser.add_argument("--preview", action="store_true", help="also write <out>/preview.png, a contact sheet")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    parser.add_argument("--region", type=arg.count(hi=1000), default=None, metavar="BLOCKS",
                        help="region mode: a BLOCKS x BLOCKS grid of 200 m blocks of the first --countries style, "
                        "written as train/test GeoTIFF orthomosaics in a UTM CRS with GPS-tagged drone photos and "
                        "street panoramas (needs the geo extra; uses --seed, --drone-views, --image-size)")
    parser.set_defaults(func=run, out_kind="folder")


def world_config(args: argparse.Namespace) -> WorldConfig:
    """The world that ``geobridge synth`` with these arguments generates."""
    from geobridge.synth import WorldConfig

    return WorldConfig(
        places=args.places,
        extra_train_places=args.extra_train_places,
        image_size=args.image_size,
        drone_views=args.drone_views,
        train_street_views=args.train_street_views,
        texts_per_place=args.texts_per_place,
        seed=args.seed,
        countries=args.countries,
        holdout_countries=args.holdout,
        test_fraction=args.test_fraction,
        test_places=args.test_places,
        val_fraction=args.val_fraction,
        format=args.format,
        distractor_fraction=args.distractor_fraction,
        season=args.season,
        time_of_day=args.time_of_day,
        blur=args.blur,
        low_resolution=args.low_resolution,
        shift_views=args.shift_views,
        workers=args.workers,
    )


def run(args: argparse.Namespace) -> int:
    from geobridge.synth import generate_world, write_preview

    if args.region is not None:
        return _run_region(args)
    config = world_config(args)
    summary = generate_world(args.out, config, show_progress_bar=not args.quiet)
    if args.preview:
        write_preview(args.out, f"{args.out}/preview.png")
    if not args.quiet:
        splits = ", ".join(f"{k} {v}" for k, v in summary.splits.items())
        print(
            f"wrote {summary.places} places ({splits}), {summary.images} images to {summary.root} "
            f"in {summary.seconds:.1f} s ({summary.places_per_second:.1f} places/s)"
        )
        if args.preview:
            print(f"preview: {args.out}/preview.png")
    return 0


def _run_region(args: argparse.Namespace) -> int:
    import json

    from geobridge.synth.region import RegionConfig, generate_region

    config = RegionConfig(blocks=args.region, country=(args.countries or ("DE",))[0], seed=args.seed,
                          drones_per_block=args.drone_views, drone_size=args.image_size)
    manifest = generate_region(args.out, config)
    if not args.quiet:
        print(json.dumps(manifest["splits"]))
    return 0
