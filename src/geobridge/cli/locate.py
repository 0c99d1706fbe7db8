"""``geobridge locate``: estimate where query images and texts come from, against an index; prints JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FUSION_CHOICES = ("auto", "score", "consensus", "max", "weighted")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "locate",
        help="geo-locate query images and/or texts against an index",
        description="Embed each query with its view, search the index among the other views, fuse the results per "
        "place and print the estimated location, its confidence and the ranked matches as JSON or GeoJSON.",
    )
    parser.add_argument("--index", required=True, help="index file written by 'geobridge index build'")
    parser.add_argument("--checkpoint", default=None,
                        help="model folder or run folder, or with --backend onnx a 'geobridge export onnx' folder "
                        "(default: the checkpoint recorded in the index)")
    parser.add_argument("--backend", default="torch", choices=("torch", "onnx"),
                        help="run the torch model or its exported ONNX graphs with onnxruntime (default torch)")
    parser.add_argument("--image", action="append", default=[], metavar="PATH", help="a query image (repeatable)")
    parser.add_argument("--image-view", action="append", default=[], choices=("drone", "street", "satellite"),
                        help="the view of each --image, in order (repeat once per image)")
    parser.add_argument("--view", default=None, choices=("drone", "street", "satellite"),
                        help="the view of every --image without its own --image-view (default drone)")
    parser.add_argument("--text", action="append", default=[], help="a query text (repeatable)")
    parser.add_argument("--top-k", type=int, default=10, help="matches to return (default 10)")
    parser.add_argument("--fusion", default="auto", choices=FUSION_CHOICES,
                        help="how queries are fused (default auto: weighted if the index is calibrated, else score)")
    parser.add_argument("--radius-km", type=float, default=25.0, help="consensus radius in km (default 25)")
    parser.add_argument("--include-same-view", action="store_true",
                        help="also match gallery items of the query's own view")
    parser.add_argument("--format", default="json", choices=("json", "geojson"), help="output format")
    parser.add_argument("--out", default=None, help="write the output to this file instead of printing it")
    parser.add_argument("--device", default="cpu", help="torch device for the model")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geobridge._atomic import atomic_write_chunks
    from geobridge.errors import GeoBridgeError
    from geobridge.export.backends import load_encoder
    from geobridge.index import GeoIndex, locate

    if not args.image and not args.text:
        raise GeoBridgeError("give at least one --image or --text")
    if len(args.image_view) > len(args.image):
        raise GeoBridgeError(f"{len(args.image_view)} --image-view values for {len(args.image)} --image values")
    if args.top_k < 1:
        raise GeoBridgeError(f"--top-k must be >= 1, got {args.top_k}")
    index = GeoIndex.load(args.index)
    checkpoint = args.checkpoint or index.model_info.get("checkpoint")
    if not checkpoint:
        raise GeoBridgeError(f"{args.index} records no checkpoint; pass --checkpoint")
    model = load_encoder(checkpoint, backend=args.backend, device=args.device)
    default_view = args.view or "drone"
    views = list(args.image_view) + [default_view] * (len(args.image) - len(args.image_view))
    for path in args.image:
        if not Path(path).is_file():
            raise GeoBridgeError(f"query image not found: {path}")
    result = locate(
        model,
        index,
        images=list(zip(views, args.image, strict=True)),
        texts=list(args.text),
        top_k=args.top_k,
        fusion=args.fusion,
        exclude_views=() if args.include_same_view else None,
        radius_km=args.radius_km,
    )
    payload = result.to_geojson() if args.format == "geojson" else result.to_dict()
    text = json.dumps(payload, indent=2)
    if args.out:
        atomic_write_chunks(Path(args.out), [text.encode() + b"\n"])
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0
