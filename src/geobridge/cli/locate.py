"""``geobridge locate``: estimate where query images and texts come from, against an index; prints JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from geobridge.cli import args as arg
from geobridge.fusions import LOCATE_FUSIONS, fusion_help


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "locate",
        help="geo-locate query images and/or texts against an index",
        description="Embed each query with its view, search the index among the other views, fuse the results per "
        "place and print the estimated location, its confidence and the ranked matches as JSON or GeoJSON.",
    )
    parser.add_argument("--index", required=True, type=arg.existing(),
                        help="index file written by 'geobridge index build'")
    parser.add_argument("--checkpoint", default=None, type=arg.existing("folder"),
                        help="model folder or run folder, or with --backend onnx a 'geobridge export onnx' folder "
                        "(default: the checkpoint recorded in the index)")
    parser.add_argument("--backend", default="torch", choices=("torch", "onnx"),
                        help="run the torch model or its exported ONNX graphs with onnxruntime (default torch)")
    parser.add_argument("--image", action="append", default=[], metavar="PATH", type=arg.existing("file"),
                        help="a query image (repeatable)")
    parser.add_argument("--image-view", action="append", default=[], choices=("drone", "street", "satellite"),
                        help="the view of each --image, in order (repeat once per image)")
    parser.add_argument("--view", default=None, choices=("drone", "street", "satellite"),
                        help="the view of every --image without its own --image-view (default drone)")
    parser.add_argument("--text", action="append", default=[], help="a query text (repeatable)")
    parser.add_argument("--top-k", type=arg.count(hi=10_000), default=10, help="matches to return (default 10)")
    parser.add_argument("--fusion", default="auto", choices=LOCATE_FUSIONS,
                        help=f"how queries are fused (default auto). {fusion_help()}".replace("%", "%%"))
    parser.add_argument("--near", metavar="LAT,LON", default=None, type=arg.LatLon(),
                        help="search only index entries whose centre lies within --radius-km of this point (a prior)")
    parser.add_argument("--prior", choices=("exif",), default=None,
                        help="exif: take the prior's centre from the first --image's EXIF GPS position")
    parser.add_argument("--radius-km", type=arg.positive(hi=arg.HALF_EARTH_KM), default=None,
                        help="with --near or --prior: the prior's radius in km (required there); without a prior, "
                        "the consensus radius (kept for older command lines; prefer --consensus-radius-km)")
    parser.add_argument("--consensus-radius-km", type=arg.positive(hi=arg.HALF_EARTH_KM), default=None,
                        help="consensus fusion radius in km (default 25)")
    parser.add_argument("--truth", metavar="LAT,LON", default=None, type=arg.LatLon(),
                        help="the true position, where known: the output adds the estimate's error in metres")
    parser.add_argument("--include-same-view", action="store_true",
                        help="also match gallery items of the query's own view")
    parser.add_argument("--sequence", nargs="+", default=None, metavar="FRAMES", type=arg.existing(),
                        help="the frames of one flight (image paths in order, a folder of images, or a .jsonl with "
                        "path, optional timestamp and true lat/lon per line): print one smoothed track")
    parser.add_argument("--max-speed-mps", type=arg.positive(hi=1e9), default=None,
                        help="--sequence with timestamps: the motion bound's top speed in m/s")
    parser.add_argument("--max-step-m", type=arg.positive(hi=4e7), default=None,
                        help="--sequence without timestamps: the longest move between consecutive frames in metres")
    parser.add_argument("--slack-m", type=arg.number(lo=0.0, hi=4e7), default=0.0,
                        help="--sequence: metres added to the motion bound (e.g. half the tile stride; default 0)")
    parser.add_argument("--window", type=arg.count(hi=1_000_000), default=None,
                        help="--sequence: smooth each frame over the W frames on each side (default: whole flight)")
    parser.add_argument("--format", default="json", choices=("json", "geojson"), help="output format")
    parser.add_argument("--out", default=None, type=arg.output(),
                        help="write the output to this file instead of printing it")
    parser.add_argument("--device", default="cpu", type=arg.Device(), help="torch device for the model")
    parser.set_defaults(func=run, out_kind="file")


def run(args: argparse.Namespace) -> int:
    from geobridge.errors import GeoBridgeError
    from geobridge.export.backends import load_encoder
    from geobridge.index import GeoIndex, Prior, locate

    if args.sequence is not None:
        return _run_sequence(args)
    if not args.image and not args.text:
        raise GeoBridgeError("give at least one --image or --text (or --sequence FRAMES)")
    if len(args.image_view) > len(args.image):
        raise GeoBridgeError(f"{len(args.image_view)} --image-view values for {len(args.image)} --image values")
    near, prior_radius, consensus_radius = _prior(args)
    index = GeoIndex.load(args.index)
    checkpoint = args.checkpoint or index.model_info.get("checkpoint")
    if not checkpoint:
        raise GeoBridgeError(f"{args.index} records no checkpoint; pass --checkpoint")
    model = load_encoder(checkpoint, backend=args.backend, device=args.device)
    default_view = args.view or "drone"
    views = list(args.image_view) + [default_view] * (len(args.image) - len(args.image_view))
    result = locate(
        model,
        index,
        images=list(zip(views, args.image, strict=True)),
        texts=list(args.text),
        top_k=args.top_k,
        fusion=args.fusion,
        exclude_views=() if args.include_same_view else None,
        radius_km=consensus_radius,
        prior=Prior(*near, radius_km=prior_radius, source=args.prior or "near") if near is not None else None,
        truth=args.truth,
    )
    _write(result.to_geojson() if args.format == "geojson" else result.to_dict(), out=args.out)
    return 0


def _run_sequence(args: argparse.Namespace) -> int:
    from geobridge.errors import GeoBridgeError
    from geobridge.index import GeoIndex, Prior
    from geobridge.index.sequence import locate_sequence, read_sequence
    from geobridge.models import GeoBridge

    if args.image or args.text or args.prior:
        raise GeoBridgeError("--sequence takes its frames alone: drop --image, --text and --prior")
    frames = read_sequence(args.sequence)
    near, prior_radius, _ = _prior(args)
    index = GeoIndex.load(args.index)
    checkpoint = args.checkpoint or index.model_info.get("checkpoint")
    if not checkpoint:
        raise GeoBridgeError(f"{args.index} records no checkpoint; pass --checkpoint")
    if frames[0].timestamp is not None and args.max_speed_mps is None:
        raise GeoBridgeError("the --sequence frames have timestamps: give --max-speed-mps (the motion bound)")
    if frames[0].timestamp is None and args.max_step_m is None:
        raise GeoBridgeError("the --sequence frames have no timestamps: give --max-step-m (the motion bound)")
    model = GeoBridge.from_pretrained(checkpoint, device=args.device)
    track = locate_sequence(model, index, frames, view=args.view or "drone", top_k=args.top_k,
                            max_speed_mps=args.max_speed_mps, max_step_m=args.max_step_m, slack_m=args.slack_m,
                            window=args.window,
                            prior=Prior(*near, radius_km=prior_radius) if near is not None else None)
    _write(track.to_geojson() if args.format == "geojson" else track.to_dict(), out=args.out)
    return 0


def _write(payload: dict, *, out: str | None) -> None:
    from geobridge._atomic import atomic_write_chunks

    text = json.dumps(payload, indent=2)
    if out:
        atomic_write_chunks(Path(out), [text.encode() + b"\n"])
        print(f"wrote {out}")
    else:
        print(text)


def _prior(args: argparse.Namespace) -> tuple[tuple[float, float] | None, float | None, float]:
    """``(near, prior radius, consensus radius)`` from --near / --prior exif, --radius-km, --consensus-radius-km."""
    from geobridge.errors import GeoBridgeError
    from geobridge.images import exif_gps

    consensus = args.consensus_radius_km
    if args.near is not None and args.prior is not None:
        raise GeoBridgeError("give either --near LAT,LON or --prior exif, not both")
    if args.near is None and args.prior is None:
        legacy = args.radius_km
        return None, None, float(consensus if consensus is not None else legacy if legacy is not None else 25.0)
    if args.radius_km is None:
        raise GeoBridgeError("a prior (--near or --prior) needs --radius-km R, the search radius in km")
    if args.near is not None:
        near = args.near
    else:
        if not args.image:
            raise GeoBridgeError("--prior exif reads the GPS position of the first --image; give an --image")
        found = exif_gps(args.image[0])
        if found is None:
            raise GeoBridgeError(f"--prior exif: {args.image[0]} has no EXIF GPS position; pass --near LAT,LON instead")
        near = found
    return near, float(args.radius_km), float(consensus if consensus is not None else 25.0)

