"""``geobridge embed``: embed a gallery into resumable shards, one share per torchrun rank."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from geobridge.cli import args as arg
from geobridge.cli.index import IMAGES_HELP, SPLITS
from geobridge.views import IMAGE_VIEWS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="embed a gallery into resumable shards (runs under torchrun, one share of the shards per rank)",
        description="Embed the reference images of a dataset or image folder with a checkpoint into a folder of "
        "shards (index/shards.py). Under torchrun each rank embeds every WORLD_SIZE-th shard (gloo on the CPU, "
        "nccl on CUDA). Re-running the same command after a crash embeds only the shards not yet done. Then: "
        "geobridge index build --from-embeddings OUT --out INDEX.gbx",
    )
    parser.add_argument("--checkpoint", required=True, type=arg.existing("folder"),
                        help="model folder or training run folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=arg.existing("folder"),
                        help="a GeoLoc-format dataset root (see docs/data-format.md)")
    source.add_argument("--images", metavar="DIR", type=arg.existing("folder"), help=IMAGES_HELP)
    parser.add_argument("--coords", metavar="CSV", type=arg.existing("file"),
                        help="the table for --images (CSV or .jsonl); see --images")
    parser.add_argument("--split", default="test", choices=SPLITS,
                        help="dataset split for --data ('all' for every split)")
    parser.add_argument("--format", default="geoloc", choices=("geoloc", "university1652"), help="layout of --data")
    parser.add_argument("--views", default=("satellite",), type=arg.names(IMAGE_VIEWS, what="image view"),
                        help="comma-separated image views to embed (default satellite)")
    parser.add_argument("--out", required=True, metavar="SHARDS", type=arg.output(),
                        help="folder of shards to write (or to resume)")
    parser.add_argument("--shard-size", type=arg.count(), default=4096, help="images per shard (default 4096)")
    parser.add_argument("--batch-size", type=arg.batch_size(), default=64)
    parser.add_argument("--num-workers", type=arg.count(lo=0, hi=256), default=2,
                        help="DataLoader processes decoding images per rank")
    parser.add_argument("--device", default="auto", type=arg.Device(auto=True),
                        help="auto (cuda:LOCAL_RANK if there is CUDA), cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a gallery with places that lack one of --views (default: count them and go on)")
    parser.set_defaults(func=run, out_kind="folder")


def run(args: argparse.Namespace) -> int:
    import torch

    from geobridge._hashing import file_sha256
    from geobridge.cli.index import gallery_places
    from geobridge.index import model_info_of
    from geobridge.index.build import gallery_records
    from geobridge.index.shards import embed_shards
    from geobridge.models import GeoBridge
    from geobridge.models.geobridge import WEIGHTS_NAME
    from geobridge.train.distributed import cleanup, init_distributed

    views = args.views
    places = gallery_places(args, views=views)
    records = gallery_records(places, views=views)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    info = init_distributed(device)
    try:
        if info.enabled and device.type == "cuda":
            device = torch.device("cuda", info.local_rank)
            torch.cuda.set_device(device)  # nccl collectives run on this rank's GPU
        model = GeoBridge.from_pretrained(args.checkpoint, device=device)
        model_info = model_info_of(model, checkpoint=args.checkpoint)
        weights = model_info["checkpoint"]
        weights_sha = file_sha256(_weights_file(weights, WEIGHTS_NAME))

        def agree(ok: bool) -> bool:
            """All ranks' ``ok`` and-ed together; also a barrier."""
            if not info.enabled:
                return ok
            flag = torch.tensor([0 if ok else 1], device=device)
            torch.distributed.all_reduce(flag)
            return int(flag.item()) == 0

        summary = embed_shards(model, records, args.out, shard_size=args.shard_size, batch_size=args.batch_size,
                               num_workers=args.num_workers, model_info=model_info, weights_sha256=weights_sha,
                               rank=info.rank, world_size=info.world_size, agree=agree,
                               show_progress_bar=not args.no_progress and info.is_main)
        counts = torch.tensor([len(summary.embedded), len(summary.skipped)], device=device)
        if info.enabled:
            torch.distributed.all_reduce(counts)
        if info.is_main:
            print(json.dumps({"out": str(args.out), "count": summary.count, "shards": summary.shards,
                              "embedded": int(counts[0]), "skipped": int(counts[1]), "ranks": info.world_size}))
    finally:
        cleanup(info)
    return 0


def _weights_file(checkpoint: str, name: str) -> Path:
    """The weights file of a model folder or of a training run folder (``<run>/model/``)."""
    folder = Path(checkpoint)
    return folder / name if (folder / name).is_file() else folder / "model" / name
