"""``geobridge index``: build a geo-localisation index from a checkpoint and reference images, calibrate its
fusion weights, or show one."""

from __future__ import annotations

import argparse
import json
from typing import Any

from geobridge.cli import args as arg
from geobridge.views import IMAGE_VIEWS, VIEWS

SPLITS = ("train", "val", "test", "all")  # a dataset split, or every split
IMAGES_HELP = (
    "a folder of reference images described by a table: --coords CSV, or <DIR>/coords.csv, or <DIR>/index.jsonl. "
    "CSV columns (header row required): path,lat,lon and optionally place_id,view (paths relative to DIR; "
    "place_id defaults to the file name stem, view to the first of --views). index.jsonl holds one JSON object per "
    "line with the same keys."
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("index", help="build, calibrate or inspect a geo-localisation index (faiss)")
    commands = parser.add_subparsers(dest="index_command", metavar="ACTION")

    build = commands.add_parser(
        "build",
        help="embed reference images with a checkpoint and write an index file",
        description="Embed reference images with a checkpoint and write a single-file GeoBridge index "
        "(faiss index + metadata JSON + SHA-256 checksum, written atomically).",
    )
    build.add_argument("--checkpoint", type=arg.existing("folder"),
                       help="model folder or training run folder (not with --from-embeddings)")
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=arg.existing("folder"),
                        help="a GeoLoc-format dataset root (see docs/data-format.md)")
    source.add_argument("--images", metavar="DIR", type=arg.existing("folder"), help=IMAGES_HELP)
    source.add_argument("--raster", nargs="+", metavar="TIF", type=arg.existing("file"),
                        help="georeferenced rasters (GeoTIFF orthophotos, any CRS) cut into tiles of --tile-m metres "
                        "(needs the geo extra: rasterio, pyproj)")
    source.add_argument("--from-embeddings", metavar="SHARDS", type=arg.existing("folder"),
                        help="a complete folder written by `geobridge embed` (no model is run)")
    build.add_argument("--coords", metavar="CSV", type=arg.existing("file"),
                       help="the table for --images (CSV or .jsonl); see --images")
    build.add_argument("--split", default="test", choices=SPLITS,
                       help="dataset split for --data ('all' for every split)")
    build.add_argument("--format", default="geoloc", choices=("geoloc", "university1652"), help="layout of --data")
    build.add_argument("--out", required=True, type=arg.output(),
                       help="index file to write, e.g. runs/sat.gbx (a folder with --layout folder)")
    build.add_argument("--layout", default="file", choices=("file", "folder"),
                       help="file: one checksummed .gbx (small indexes); folder: faiss file + JSON-lines records + "
                       "manifest, IVF lists memory-mapped on load (large galleries; docs/index.md)")
    build.add_argument("--views", default=("satellite",), type=arg.names(IMAGE_VIEWS, what="image view"),
                       help="comma-separated image views to index (default satellite)")
    build.add_argument("--tile-m", type=arg.positive(hi=1e6), default=None, help="--raster: tile side in ground metres")
    build.add_argument("--stride-m", type=arg.positive(hi=1e6), default=None,
                       help="--raster: metres between tile origins (default --tile-m: no overlap)")
    build.add_argument("--scales", default=(1.0,), type=arg.positives(hi=1e3),
                       help="--raster: comma-separated multiples of --tile-m/--stride-m to tile at, e.g. 1,2,4")
    build.add_argument("--max-nodata", type=arg.fraction(), default=0.5,
                       help="--raster: skip tiles with more than this share of nodata pixels (default 0.5)")
    build.add_argument("--tile-px", type=arg.integer(lo=8, hi=8192), default=None,
                       help="--raster: pixels per tile side as embedded (default the model's satellite input size)")
    build.add_argument("--factory", default="Flat", help="faiss factory string: Flat, HNSW32, IVF1024,PQ32,RFlat ...")
    build.add_argument("--batch-size", type=arg.batch_size(), default=64)
    build.add_argument("--device", default="cpu", type=arg.Device(), help="torch device for the model")
    build.add_argument("--no-progress", action="store_true", help="hide progress bars")
    build.add_argument("--strict", action="store_true",
                       help="refuse a gallery with places that lack one of --views (default: count them and go on)")
    build.set_defaults(func=run_build, out_kind=lambda args: args.layout)

    calibrate = commands.add_parser(
        "calibrate",
        help="fit the index's fusion weights (fusion=weighted) on labelled query places",
        description="Embed one query of each view per labelled place, search it in the index and fit one weight "
        "per query view that makes the fused ranking put the true place first (multinomial logistic regression). "
        "The weights are written into the index file (atomically). The places must be in the index; use places "
        "you will not evaluate on.",
    )
    calibrate.add_argument("index", type=arg.existing(), help="index file to calibrate (rewritten in place)")
    calibrate.add_argument("--checkpoint", default=None, type=arg.existing("folder"),
                           help="model folder or run folder (default: the checkpoint recorded in the index)")
    calibrate.add_argument("--data", required=True, type=arg.existing("folder"),
                           help="a GeoLoc-format dataset root with the calibration places")
    calibrate.add_argument("--split", default="test", choices=SPLITS,
                           help="dataset split of the calibration places ('all' for every)")
    calibrate.add_argument("--format", default="geoloc", choices=("geoloc", "university1652"), help="layout of --data")
    calibrate.add_argument("--views", default=("drone", "street", "text"), type=arg.names(VIEWS, what="view"),
                           help="comma-separated query views to weigh (default drone,street,text)")
    calibrate.add_argument("--batch-size", type=arg.batch_size(), default=64)
    calibrate.add_argument("--device", default="cpu", type=arg.Device(), help="torch device for the model")
    calibrate.add_argument("--no-progress", action="store_true", help="hide progress bars")
    calibrate.set_defaults(func=run_calibrate)

    info = commands.add_parser("info", help="print an index's summary as JSON")
    info.add_argument("index", type=arg.existing(), help="index file or folder")
    info.set_defaults(func=run_info)
    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run(args: argparse.Namespace) -> int:
    return int(args.func(args))


def gallery_places(args: argparse.Namespace, *, views: tuple[str, ...]) -> list:
    """The reference places of ``--images`` (with ``--coords``) or of ``--data`` (``--split``, ``--format``); those
    without one of ``views`` are counted on stderr (an error with ``--strict``)."""
    from geobridge.data.coverage import check_coverage
    from geobridge.errors import GeoBridgeError
    from geobridge.index import read_image_table

    if args.coords and not args.images:
        raise GeoBridgeError("--coords goes with --images")
    if args.images:
        places = read_image_table(args.images, coords=args.coords, default_view=views[0])
    else:
        from geobridge.data import load_places

        try:
            # a University-1652 test split is indexed by its gallery role (gallery_<view>/), never a merged pool
            places = load_places(args.data, fmt=args.format, split=None if args.split == "all" else args.split,
                                 role="gallery")
        except ValueError as exc:
            raise GeoBridgeError(str(exc)) from exc
    check_coverage(places, views=views, strict=args.strict, where=args.images or f"{args.data} ({args.split})")
    return places


def run_build(args: argparse.Namespace) -> int:
    from geobridge.errors import GeoBridgeError
    from geobridge.index import GeoIndex

    if args.from_embeddings:
        from geobridge.index.shards import load_embeddings

        if args.checkpoint:
            raise GeoBridgeError("--checkpoint does not go with --from-embeddings (the embeddings record theirs)")
        vectors, records, manifest = load_embeddings(args.from_embeddings)
        index = GeoIndex(int(vectors.shape[1]), factory=args.factory, model_info=manifest.get("model_info") or {})
        index.add(vectors, records)
    else:
        if not args.checkpoint:
            raise GeoBridgeError("--checkpoint is required with --data, --images or --raster")
        if args.raster:
            index = _raster_index(args)
        else:
            index = _place_index(args)
    if args.layout == "folder":
        index.save_folder(args.out)
    else:
        index.save(args.out)
    summary = index.info()
    line = {"out": str(args.out), "count": summary["count"], "places": summary["places"], "views": summary["views"],
            "factory": summary["factory"]}
    if args.raster:
        line.update(rasters=list(args.raster), tiling=index.model_info["tiling"])
    print(json.dumps(line))
    return 0


def _place_index(args: argparse.Namespace) -> Any:
    import logging

    from geobridge.errors import GeoBridgeError
    from geobridge.index import build_index, model_info_of
    from geobridge.models import GeoBridge

    if args.tile_m is not None or args.stride_m is not None:
        raise GeoBridgeError("--tile-m and --stride-m go with --raster")
    views = args.views
    places = gallery_places(args, views=views)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = GeoBridge.from_pretrained(args.checkpoint, device=args.device)
    info = model_info_of(model, checkpoint=args.checkpoint)
    return build_index(model, places, views=views, factory=args.factory, batch_size=args.batch_size,
                       show_progress_bar=not args.no_progress, model_info=info)


def _raster_index(args: argparse.Namespace) -> Any:
    import logging

    from geobridge.errors import GeoBridgeError
    from geobridge.index import model_info_of
    from geobridge.index.raster import build_raster_index
    from geobridge.models import GeoBridge

    if args.tile_m is None:
        raise GeoBridgeError("--raster needs --tile-m (tile side in metres)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = GeoBridge.from_pretrained(args.checkpoint, device=args.device)
    return build_raster_index(
        model, args.raster, tile_m=args.tile_m, stride_m=args.stride_m, scales=args.scales, tile_px=args.tile_px,
        max_nodata=args.max_nodata, factory=args.factory, batch_size=args.batch_size,
        show_progress_bar=not args.no_progress, model_info=model_info_of(model, checkpoint=args.checkpoint),
    )


def run_calibrate(args: argparse.Namespace) -> int:
    from geobridge.data import load_places
    from geobridge.errors import GeoBridgeError
    from geobridge.index import GeoIndex, calibrate_index
    from geobridge.models import GeoBridge

    views = args.views
    index = GeoIndex.load(args.index)
    checkpoint = args.checkpoint or index.model_info.get("checkpoint")
    if not checkpoint:
        raise GeoBridgeError(f"{args.index} records no checkpoint; pass --checkpoint")
    try:  # calibration queries of a University-1652 test split come from its query role (query_<view>/)
        places = load_places(args.data, fmt=args.format, split=None if args.split == "all" else args.split,
                             role="query")
    except ValueError as exc:
        raise GeoBridgeError(str(exc)) from exc
    model = GeoBridge.from_pretrained(checkpoint, device=args.device)
    index.fusion_weights = calibrate_index(model, index, places, views=views, batch_size=args.batch_size,
                                           show_progress_bar=not args.no_progress)
    from geobridge.index.folder import is_index_folder

    if is_index_folder(args.index):
        index.save_folder(args.index)
    else:
        index.save(args.index)
    print(json.dumps({"index": str(args.index), "fusion_weights": index.fusion_weights}))
    return 0


def run_info(args: argparse.Namespace) -> int:
    from geobridge.index import GeoIndex

    print(json.dumps(GeoIndex.load(args.index).info(), indent=2, sort_keys=True))
    return 0
