"""``geobridge serve``: the HTTP service and map page over a built index."""

from __future__ import annotations

import argparse

from geobridge.cli import args as arg
from geobridge.images import MAX_IMAGE_PIXELS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve POST /locate and the map page over an index")
    parser.add_argument("--index", required=True, type=arg.existing(), help="index written by `geobridge index build`")
    parser.add_argument(
        "--checkpoint", default=None, type=arg.existing("folder"),
        help="model folder or training run (default: the one the index records)"
    )
    parser.add_argument("--backend", default="torch", choices=("torch", "onnx"),
                        help="run the torch model or, from a 'geobridge export onnx' folder given as --checkpoint, "
                        "its ONNX graphs with onnxruntime (default torch)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=arg.port(), default=8000, help="TCP port (default 8000; 0: any free port)")
    parser.add_argument("--workers", type=arg.count(hi=256), default=2, help="decode/inference threads")
    parser.add_argument("--max-upload-mb", type=arg.positive(hi=4096.0), default=8.0,
                        help="per-file upload limit in MiB")
    parser.add_argument("--max-pixels", type=arg.count(hi=MAX_IMAGE_PIXELS), default=MAX_IMAGE_PIXELS,
                        help=f"per-image decoded pixel limit, at most the decoder's {MAX_IMAGE_PIXELS:,} (the default)")
    parser.add_argument(
        "--thumbnails-root", default=None, type=arg.existing("folder"),
        help="folder that relative reference paths in the index are under"
    )
    parser.add_argument("--device", default="cpu", type=arg.Device(), help="torch device for the model")
    parser.add_argument(
        "--torch-threads", type=arg.count(lo=0, hi=1024), default=1,
        help="intra-op threads per inference, torch or onnxruntime (1: the workers run in parallel; 0: the "
        "library's default)"
    )
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geobridge.errors import GeoBridgeError

    try:
        import uvicorn
    except ImportError as exc:
        raise GeoBridgeError("the service needs the serve extra: pip install 'geobridge[serve]'") from exc
    from geobridge.export.backends import load_encoder
    from geobridge.index import GeoIndex
    from geobridge.serve.app import checkpoint_from_index, create_app

    if args.torch_threads >= 1 and args.backend == "torch":
        import torch

        torch.set_num_threads(args.torch_threads)
    index = GeoIndex.load(args.index)
    checkpoint = args.checkpoint or checkpoint_from_index(index)
    if not checkpoint:
        raise GeoBridgeError(f"{args.index} does not record its checkpoint; pass --checkpoint")
    threads = args.torch_threads if args.torch_threads >= 1 else None
    model = load_encoder(checkpoint, backend=args.backend, device=args.device, threads=threads)
    app = create_app(
        model=model,
        index=index,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=args.max_pixels,
        workers=args.workers,
        thumbnails_root=args.thumbnails_root,
    )
    where = f"http://{args.host}:{args.port}/" if args.port else f"a free port of {args.host} (uvicorn logs which)"
    print(f"serving {len(index)} vectors with {checkpoint} on {where}")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
