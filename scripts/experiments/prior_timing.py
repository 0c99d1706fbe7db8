"""Time per query with and without a 1 km prior on a large generated region with a dense tile index.

On the 12 x 12-block region of ``region_localise.py`` (345 tiles; a 1.6 x 2.4 km test area that a 1 km disc
mostly covers) the search is a fraction of a millisecond beside the embedding, so a prior cannot lower the time
per query there. This script makes the index large enough for the search to matter:

1. ``generate_region``: ``--blocks`` x ``--blocks`` blocks (default 30: 6 x 6 km), the eastern ``--test-columns``
   for testing, one drone photo per block.
2. Index the test orthomosaic in ``--tile-m`` tiles every ``--stride-m`` (default 200 m every 25 m: ~50k tiles,
   Flat) with ``--model`` (a saved model folder, e.g. one fine-tuned by ``region_localise.py`` on another region).
3. Locate ``--queries`` test drone photos with ``locate``, each without a prior and with a ``--prior-km`` prior
   centred ``--prior-offset-m`` from the truth, in blocks of 10 queries per condition whose order alternates
   (see ``BLOCK``): wall time per query (median), error in metres, and the disc's share of the index.

Prints one JSON object (also written to ``<out>/results.json``).
    PYTHONPATH=src python scripts/experiments/prior_timing.py --out runs/prior_timing \
        --model runs/region_c/run/model
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from geobridge.data.io import read_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from region_localise import error_stats, metres, offset_point  # noqa: E402

BLOCK = 10  # queries per timing block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", required=True, help="a saved GeoBridge model folder")
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--test-columns", type=int, default=28)
    parser.add_argument("--drone-size", type=int, default=96)
    parser.add_argument("--tile-m", type=float, default=200.0)
    parser.add_argument("--stride-m", type=float, default=25.0)
    parser.add_argument("--queries", type=int, default=120)
    parser.add_argument("--prior-km", type=float, default=1.0)
    parser.add_argument("--prior-offset-m", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-tile-tta", action="store_true",
                        help="embed the tiles without test-time augmentation (8x faster to index; queries keep it)")
    args = parser.parse_args()

    from geobridge.index import GeoIndex, Prior, build_raster_index, locate
    from geobridge.models import GeoBridge
    from geobridge.synth.region import RegionConfig, generate_region

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clock: dict[str, float] = {}
    region = out / "region"
    t0 = time.perf_counter()
    if not (region / "region.json").is_file():
        generate_region(region, RegionConfig(blocks=args.blocks, test_columns=args.test_columns, drones_per_block=1,
                                             drone_size=args.drone_size, street=False, seed=args.seed))
    clock["generate_s"] = time.perf_counter() - t0

    model = GeoBridge.from_pretrained(args.model)
    tta = list(model.config.image.test_time_augment)
    if args.no_tile_tta:
        model.config.image.test_time_augment = [v for v in tta if v != "satellite"]
    t0 = time.perf_counter()
    saved = out / ("index-no-tile-tta.gbx" if args.no_tile_tta else "index.gbx")
    if saved.is_file():
        index = GeoIndex.load(saved)
    else:
        index = build_raster_index(model, [region / "test" / "ortho.tif"], tile_m=args.tile_m,
                                   stride_m=args.stride_m)
        index.save(saved)
    model.config.image.test_time_augment = tta
    clock["index_s"] = time.perf_counter() - t0

    rng = np.random.default_rng(args.seed)
    queries = read_jsonl(region / "test" / "queries.jsonl")
    picked = rng.choice(len(queries), size=min(args.queries, len(queries)), replace=False)
    queries = [queries[i] for i in sorted(picked.tolist())]
    priors = [offset_point(q["lat"], q["lon"], args.prior_offset_m, rng) for q in queries]
    runs: dict[str, dict[str, list[float]]] = {c: {"s": [], "error_m": []} for c in ("no_prior", "prior")}
    for q, near in zip(queries[:2], priors[:2], strict=True):  # warm-up: first calls pay one-off costs
        locate(model, index, images=[("drone", str(region / "test" / q["path"]))],
               prior=Prior(*near, radius_km=args.prior_km))
    # blocks of BLOCK queries, each block run once per condition, the order of the conditions alternating from
    # block to block: load changes hit both alike, and neither condition runs right after a call of the other
    # (a search without a prior streams the whole index through the caches and evicts the model's weights, which
    # would bill the next call for it)
    for b, start in enumerate(range(0, len(queries), BLOCK)):
        block = list(range(start, min(start + BLOCK, len(queries))))
        for condition in (("no_prior", "prior") if b % 2 == 0 else ("prior", "no_prior")):
            for k in block:
                q, near = queries[k], priors[k]
                kwargs = {"prior": Prior(*near, radius_km=args.prior_km)} if condition == "prior" else {}
                begin = time.perf_counter()
                result = locate(model, index, images=[("drone", str(region / "test" / q["path"]))], top_k=10,
                                fusion="score", **kwargs)
                runs[condition]["s"].append(time.perf_counter() - begin)
                runs[condition]["error_m"].append(metres(q["lat"], q["lon"], result.lat, result.lon))
    shares = [len(index.ids_within(near, radius_km=args.prior_km)) / len(index) for near in priors]
    results: dict[str, Any] = {
        "conditions": {**vars(args), "index_tiles": len(index), "cpu_threads": os.cpu_count(),
                       "load_avg_start": os.getloadavg()[0]},
        "disc_share_of_index": {"median": float(np.median(shares)), "max": float(np.max(shares))},
        "clock": clock,
    }
    for condition, run in runs.items():
        results[condition] = {"ms_per_query": 1000.0 * float(np.median(run["s"])),
                              "ms_per_query_p90": 1000.0 * float(np.quantile(run["s"], 0.9)),
                              **error_stats(run["error_m"])}
    results["prior_time_vs_no_prior"] = results["prior"]["ms_per_query"] / results["no_prior"]["ms_per_query"]
    results["load_avg_end"] = os.getloadavg()[0]
    text = json.dumps(results, indent=2)
    (out / "results.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
