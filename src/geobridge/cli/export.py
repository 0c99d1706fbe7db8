"""``geobridge export onnx``: ONNX graphs of a checkpoint (one per image view, plus the text tower)."""

from __future__ import annotations

import argparse

from geobridge.cli import args as arg


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export a checkpoint for deployment (ONNX)")
    formats = parser.add_subparsers(dest="export_format", metavar="FORMAT")
    onnx = formats.add_parser(
        "onnx",
        help="one ONNX graph per image view plus the text tower, checked with onnxruntime",
        description="Write DIR/<view>.onnx for each image view, DIR/text.onnx (with the tokenizer) and "
        "DIR/manifest.json, then check that onnxruntime reproduces the torch embeddings (cosine >= 0.9999). "
        "Run 'geobridge locate' or 'geobridge serve' on DIR with --backend onnx.",
    )
    onnx.add_argument("--checkpoint", required=True, type=arg.existing("folder"),
                      help="model folder or training run folder")
    onnx.add_argument("--out", required=True, type=arg.output(), help="output folder (written atomically)")
    onnx.add_argument("--view", action="append", default=[], choices=("drone", "satellite", "street"),
                      help="export only these image views (repeatable; default all three)")
    onnx.add_argument("--opset", type=arg.integer(lo=7, hi=23), default=17, help="ONNX opset (default 17)")
    onnx.add_argument("--force", action="store_true", help="replace --out if it exists")
    onnx.set_defaults(func=run, out_kind="folder")
    parser.set_defaults(func=_missing_format, export_parser=parser)


def _missing_format(args: argparse.Namespace) -> int:
    args.export_parser.print_help()
    return 2


def run(args: argparse.Namespace) -> int:
    from geobridge.export import export_onnx
    from geobridge.views import IMAGE_VIEWS

    views = tuple(dict.fromkeys(args.view)) or IMAGE_VIEWS
    manifest = export_onnx(args.checkpoint, args.out, views=views, opset=args.opset, overwrite=args.force)
    checks = ", ".join(f"{k} {v:.6f}" for k, v in manifest["check"].items())
    print(f"wrote {args.out}: {', '.join(manifest['images'])} and text graphs; min cosine to torch: {checks}")
    return 0
