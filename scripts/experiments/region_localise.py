"""The whole map path on a generated region: fine-tune, index the test orthomosaic, locate its drone photos.

1. ``generate_region``: a ``--blocks`` x ``--blocks`` region (200 m blocks), the western half for training, the
   eastern half for testing, drone photos with their true look-at positions.
2. A GeoLoc-layout training set from the training region: one place per drone photo, its satellite image the
   200 m crop of the training orthomosaic centred on the photo's look-at point.
3. Fine-tune a model (``--init-from``, e.g. a gb-small run trained on the synthetic GeoLoc world; from scratch
   without it) on those drone/satellite pairs for ``--epochs`` epochs.
4. Index the test orthomosaic (``--tile-m`` tiles every ``--stride-m``) with the fine-tuned model, with the
   untrained ImageNet backbone (gb-lite0 with untrained heads), and with the starting model before fine-tuning.
5. Locate every test drone photo: error in metres (median, share within 25/50/100 m), without a prior and with a
   ``--prior-km`` prior centred ``--prior-offset-m`` from the truth in a random direction (a coarse GNSS fix);
   time per query. Random: a uniform point of the test orthomosaic.
6. Flight sequences: per test block column, one drone photo per block from north to south, 10 s apart; the
   smoothed track (``geobridge.index.sequence``) against the single-frame estimates.

Prints one JSON object (also written to ``<out>/results.json``).
    PYTHONPATH=src python scripts/experiments/region_localise.py --out runs/region_exp \
        --init-from runs/seed1/run/model
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from geobridge.data.io import read_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--test-columns", type=int, default=8, help="block columns of the test region")
    parser.add_argument("--drones-per-block", type=int, default=2, help="training pairs per block; tests use one")
    parser.add_argument("--drone-size", type=int, default=96)
    parser.add_argument("--init-from", default=None, help="a saved GeoBridge model folder to fine-tune")
    parser.add_argument("--model", default="gb-small", help="model config when training from scratch")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--tile-m", type=float, default=200.0)
    parser.add_argument("--stride-m", type=float, default=100.0)
    parser.add_argument("--prior-km", type=float, default=1.0)
    parser.add_argument("--prior-offset-m", type=float, default=300.0)
    parser.add_argument("--max-speed-mps", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rotate", action="store_true",
                        help="fine-tune with the satellite crops' random 90-degree rotations (heading invariance)")
    args = parser.parse_args()

    import torch

    from geobridge.synth.region import RegionConfig, generate_region

    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clock: dict[str, float] = {}
    t0 = time.perf_counter()
    region = out / "region"
    config = RegionConfig(blocks=args.blocks, drones_per_block=args.drones_per_block, drone_size=args.drone_size,
                          street=False, seed=args.seed, test_columns=args.test_columns)
    manifest = json.loads((region / "region.json").read_text()) if (region / "region.json").is_file() else None
    if manifest is None or manifest["config"] != {**manifest["config"], **{"blocks": args.blocks,
                                                                         "test_columns": args.test_columns}}:
        manifest = generate_region(region, config)
    clock["generate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    world = write_training_world(region, out / "train_world", tile_m=args.tile_m)
    run = fine_tune(world, out / "run", init_from=args.init_from, model=args.model, epochs=args.epochs, lr=args.lr,
                    rotate=args.rotate)
    clock["fine_tune_s"] = time.perf_counter() - t0

    from geobridge.index import build_raster_index
    from geobridge.models import GeoBridge, get_model_config

    queries = [q for q in read_jsonl(region / "test" / "queries.jsonl") if q["path"].endswith("_0.jpg")]
    for q in queries:
        q["path"] = str(region / "test" / q["path"])
    ortho = region / "test" / "ortho.tif"
    models: dict[str, Any] = {"fine-tuned": GeoBridge.from_pretrained(run / "model")}
    lite = get_model_config("gb-lite0")
    lite.text.kind = "hashing"  # the text tower plays no part here; skip loading MiniLM
    lite.image.test_time_augment = []  # 4x cheaper; an untrained head gains nothing from rotation averaging
    models["imagenet-untrained-heads"] = GeoBridge(lite).eval()
    if args.init_from:
        models["start (no fine-tune)"] = GeoBridge.from_pretrained(args.init_from)
    rng = np.random.default_rng(args.seed)
    priors = [offset_point(q["lat"], q["lon"], args.prior_offset_m, rng) for q in queries]
    results: dict[str, Any] = {"conditions": conditions(args, manifest, len(queries)), "models": {}}
    for name, model in models.items():
        t0 = time.perf_counter()
        index = build_raster_index(model, [ortho], tile_m=args.tile_m, stride_m=args.stride_m,
                                   show_progress_bar=False)
        entry: dict[str, Any] = {"index_tiles": len(index), "index_s": time.perf_counter() - t0}
        evaluate(model, index, queries[:2])  # warm-up: the first calls of a model pay one-off costs
        entry["no_prior"], singles = evaluate(model, index, queries)
        entry["prior"], _ = evaluate(model, index, queries, priors=priors, radius_km=args.prior_km)
        if name == "fine-tuned":
            entry["sequence"] = sequences(queries, singles, max_speed_mps=args.max_speed_mps,
                                          slack_m=args.stride_m)
        results["models"][name] = entry
    bounds = manifest["splits"]["test"]["wgs84_bounds"]
    random_errors = []
    for q in queries:
        lon, lat = rng.uniform(bounds[0], bounds[2]), rng.uniform(bounds[1], bounds[3])
        random_errors.append(metres(q["lat"], q["lon"], lat, lon))
    results["random"] = error_stats(random_errors)
    random_prior = []
    for q, (plat, plon) in zip(queries, priors, strict=True):  # uniform in the prior's disc
        lat, lon = offset_point(plat, plon, 1000.0 * args.prior_km * math.sqrt(rng.uniform()), rng)
        random_prior.append(metres(q["lat"], q["lon"], lat, lon))
    results["random_in_prior"] = error_stats(random_prior)
    results["prior_centre"] = error_stats([metres(q["lat"], q["lon"], *p)
                                           for q, p in zip(queries, priors, strict=True)])
    results["clock"] = clock
    text = json.dumps(results, indent=2)
    (out / "results.json").write_text(text + "\n")
    print(text)


def conditions(args: argparse.Namespace, manifest: dict[str, Any], n_queries: int) -> dict[str, Any]:
    return {"blocks": args.blocks, "test_columns": args.test_columns, "drones_per_block": args.drones_per_block,
            "drone_size": args.drone_size,
            "test_bounds_m": manifest["splits"]["test"]["native_bounds"], "queries": n_queries,
            "init_from": args.init_from, "epochs": args.epochs, "lr": args.lr, "rotate": args.rotate,
            "tile_m": args.tile_m,
            "stride_m": args.stride_m, "prior_km": args.prior_km, "prior_offset_m": args.prior_offset_m,
            "cpu_threads": os.cpu_count(), "load_avg_start": os.getloadavg()[0]}


def write_training_world(region: Path, root: Path, *, tile_m: float) -> Path:
    """A GeoLoc-layout world: one training place per training drone photo (a few held out as test places)."""
    import rasterio
    from PIL import Image
    from rasterio.windows import from_bounds

    queries = [q for q in read_jsonl(region / "train" / "queries.jsonl") if q["view"] == "drone"]
    places, texts = [], []
    with rasterio.open(region / "train" / "ortho.tif") as src:
        for k, q in enumerate(queries):
            pid = f"r{k:04d}"
            half = tile_m / 2
            window = from_bounds(q["x"] - half, q["y"] - half, q["x"] + half, q["y"] + half, transform=src.transform)
            crop = src.read(window=window, boundless=True, fill_value=0, out_shape=(3, 128, 128))  # (3, 128, 128)
            (root / "satellite" / pid).mkdir(parents=True, exist_ok=True)
            (root / "drone" / pid).mkdir(parents=True, exist_ok=True)
            tile = Image.fromarray(crop.transpose(1, 2, 0)).resize((64, 64), Image.BICUBIC)
            tile.save(root / "satellite" / pid / "0.png")
            Image.open(region / "train" / q["path"]).convert("RGB").save(root / "drone" / pid / "00.png")
            places.append({"place_id": pid, "country": "DE", "lat": q["lat"], "lon": q["lon"],
                           "split": "test" if k % 10 == 9 else "train", "terrain": "rural", "landmark": None})
            texts.append({"place_id": pid, "texts": ["a place in the region"]})
    (root / "places.jsonl").write_text("".join(json.dumps(p) + "\n" for p in places))
    (root / "texts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts))
    (root / "manifest.json").write_text(json.dumps({
        "format": "geoloc", "format_version": 1, "name": "region training pairs", "image_size": 64,
        "drone_views": 1, "views": ["drone", "satellite"], "holdout_countries": [], "countries": [], "seed": 0,
        "generator": "scripts/experiments/region_localise.py", "appearance": {}}))
    return root


def fine_tune(
    world: Path, run: Path, *, init_from: str | None, model: str, epochs: int, lr: float, rotate: bool
) -> Path:
    from geobridge.train.config import load_config
    from geobridge.train.trainer import train

    overrides = [f"out={run}", f"data.root={world}", "data.views=[drone,satellite]", "loss.use_anchors=false",
                 f"optim.epochs={epochs}", "optim.batch_size=16", f"optim.lr={lr}", "optim.warmup_epochs=0",
                 "sampler.strategy=random", f"data.rotate={str(rotate).lower()}"]
    overrides += [f"model.init_from={init_from}"] if init_from else [f"model.name={model}", "model.text_kind=hashing"]
    train(load_config(None, overrides), evaluate=False)
    return run


def evaluate(
    model: Any, index: Any, queries: list[dict[str, Any]], *,
    priors: list[tuple[float, float]] | None = None, radius_km: float | None = None,
) -> tuple[dict[str, float], list[list[dict[str, Any]]]]:
    """Error statistics and time per query; also each query's top-10 candidates (for the sequences)."""
    from geobridge.index import Prior, locate

    errors, times, candidates = [], [], []
    for k, q in enumerate(queries):
        t0 = time.perf_counter()
        result = locate(model, index, images=[("drone", q["path"])], top_k=10, fusion="score",
                        prior=Prior(*priors[k], radius_km=radius_km) if priors else None)
        times.append(time.perf_counter() - t0)
        errors.append(metres(q["lat"], q["lon"], result.lat, result.lon))
        candidates.append([{"lat": m.lat, "lon": m.lon, "score": m.score, "place_id": m.place_id}
                           for m in result.matches])
    stats = error_stats(errors)
    stats["ms_per_query"] = 1000.0 * float(np.median(times))
    stats["search_ms_per_query"] = search_ms(model, index, queries, priors=priors, radius_km=radius_km)
    return stats, candidates


def search_ms(model: Any, index: Any, queries: list[dict[str, Any]], *,
              priors: list[tuple[float, float]] | None, radius_km: float | None, repeats: int = 5) -> float:
    """Median over queries of the fastest of ``repeats`` index searches (the embedding excluded)."""
    from geobridge.index import search_depth

    vectors = model.encode([q["path"] for q in queries], view="drone", batch_size=64, show_progress_bar=False)
    depth = search_depth(index, 10)  # as locate: DEFAULT_CANDIDATES places
    best = []
    for k, vector in enumerate(vectors):
        near = priors[k] if priors else None
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            index.search(vector, k=depth, exclude_views=("drone",), near=near, radius_km=radius_km if near else None)
            runs.append(time.perf_counter() - t0)
        best.append(min(runs))
    return 1000.0 * float(np.median(best))


def sequences(queries: list[dict[str, Any]], candidates: list[list[dict[str, Any]]], *, max_speed_mps: float,
              slack_m: float) -> dict[str, Any]:
    """Per test block column, the first drone photo of each block from north to south, 10 s apart."""
    from geobridge.index.sequence import SequenceFrame, build_track

    by_column: dict[int, list[int]] = {}
    for k, q in enumerate(queries):
        if q["path"].endswith("_0.jpg"):
            by_column.setdefault(q["block"][1], []).append(k)
    track_errors, single_errors, moved, breaks = [], [], 0, 0
    for column in sorted(by_column):
        rows = sorted(by_column[column], key=lambda k: queries[k]["block"][0])
        frames = [SequenceFrame(path=queries[k]["path"], timestamp=10.0 * t,
                                truth=(queries[k]["lat"], queries[k]["lon"])) for t, k in enumerate(rows)]
        track = build_track([candidates[k] for k in rows], frames, max_speed_mps=max_speed_mps, slack_m=slack_m)
        track_errors += [f["error_m"] for f in track.frames]
        single_errors += [f["single_error_m"] for f in track.frames]
        moved += int(track.summary["moved"])
        breaks += track.breaks
    return {"flights": len(by_column), "frames": len(track_errors), "track": error_stats(track_errors),
            "single": error_stats(single_errors), "moved": moved, "breaks": breaks,
            "bound": {"max_speed_mps": max_speed_mps, "dt_s": 10.0, "slack_m": slack_m}}


def error_stats(errors: list[float]) -> dict[str, float]:
    e = np.asarray(errors)
    within = {f"within_{r}m_%": 100.0 * float(np.mean(e <= r)) for r in (25, 50, 100)}
    return {"median_m": float(np.median(e)), **within, "n": float(len(e))}


def offset_point(lat: float, lon: float, distance_m: float, rng: np.random.Generator) -> tuple[float, float]:
    bearing = rng.uniform(0, 2 * math.pi)
    dlat = distance_m * math.cos(bearing) / 111_195.0
    dlon = distance_m * math.sin(bearing) / (111_195.0 * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


def metres(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    from geobridge.eval.geo import haversine_km

    return 1000.0 * float(haversine_km(lat1, lon1, lat2, lon2))


if __name__ == "__main__":
    main()
