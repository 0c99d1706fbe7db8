"""Gallery embedding throughput of ``geobridge embed`` under torchrun: 2 ranks against 1 rank (CPU, gloo).

For each config (gb-tiny with random weights; gb-lite0 with its packaged ImageNet backbone; both saved with
``save_pretrained`` as the checkpoint, test-time augmentation off so every image is one forward) the same
generated gallery (PNG files 1.5x the satellite input size, a ``coords.csv``) is embedded by the whole command

    torchrun --standalone --nproc_per_node=W -m geobridge.cli.main embed --checkpoint CKPT --images DIR ...

with W = 1 (the baseline) and W = 2, each into a fresh output folder. The cores are split between the ranks:
1 rank x all threads against 2 ranks x half of them (``OMP_NUM_THREADS``); images are decoded in the rank itself
(``--num-workers 0``) so that the thread budget is exact. At full size a third run, 1 rank x half the cores,
separates rank scaling from thread scaling (on a busy machine a 2-thread OpenMP team can be slower than one
thread). Runs alternate between the variants repetition by repetition; medians are reported.

Two times per run: the wall time of the whole command (torchrun start, imports, model load, rendezvous,
embedding, the manifest) and the embedding phase read back from the output folder: ``records.jsonl`` is written
by rank 0 just before every rank starts embedding, each ``shard-<k>.json`` marker when shard k is done, so a
rank's embedding time is its last marker's mtime minus the records file's mtime (file times, ~ms precision).
The embeddings of the two runs are compared (max abs difference; a shard's batches never depend on W).
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import Context, Findings, make_images, make_model

NAME = "embed"
TITLE = "Gallery embedding: `geobridge embed` under torchrun (gloo, CPU), 2 ranks vs 1 rank"
ROOT = Path(__file__).resolve().parents[1]


def plan(*, quick: bool) -> list[dict[str, Any]]:
    if quick:
        return [{"config": "gb-tiny", "n_images": 16, "shard_size": 4, "batch_size": 4, "repeat": 1, "warmup": 0,
                 "one_thread_baseline": False}]
    return [
        {"config": "gb-tiny", "n_images": 1024, "shard_size": 128, "batch_size": 64, "repeat": 3, "warmup": 1,
         "one_thread_baseline": True},
        {"config": "gb-lite0", "n_images": 256, "shard_size": 32, "batch_size": 32, "repeat": 2, "warmup": 1,
         "one_thread_baseline": True},
    ]


def cores() -> int:
    """The CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def torchrun_command() -> list[str]:
    """The ``torchrun`` next to this interpreter, else its module (the same launcher)."""
    script = Path(sys.executable).with_name("torchrun")
    return [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]


def write_gallery(folder: Path, *, n: int, size: tuple[int, int]) -> Path:
    """``n`` PNG files and a ``coords.csv`` (path, lat, lon, place_id) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, image in enumerate(make_images(n, size=size)):
        name = f"{i:05d}.png"
        image.save(folder / name)
        rows.append({"path": name, "lat": round(rng.uniform(-60, 60), 6), "lon": round(rng.uniform(-180, 180), 6),
                     "place_id": f"p{i:05d}"})
    with open(folder / "coords.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "lat", "lon", "place_id"])
        writer.writeheader()
        writer.writerows(rows)
    return folder


def run_embed(
    *, checkpoint: Path, gallery: Path, out: Path, ranks: int, threads: int, shard_size: int, batch_size: int
) -> dict[str, Any]:
    """One whole ``geobridge embed`` command under torchrun; its wall time and the per-rank embedding times."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    command = [*torchrun_command(), "--standalone", f"--nproc_per_node={ranks}", "-m", "geobridge.cli.main", "embed",
               "--checkpoint", str(checkpoint), "--images", str(gallery), "--views", "satellite", "--out", str(out),
               "--shard-size", str(shard_size), "--batch-size", str(batch_size), "--num-workers", "0",
               "--no-progress"]
    started = time.time()
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=1800)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"geobridge embed with {ranks} rank(s) failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    begin = (out / "records.jsonl").stat().st_mtime  # rank 0 writes it just before every rank starts embedding
    per_rank = [0.0] * ranks
    for marker in out.glob("shard-*.json"):
        rank = int(json.loads(marker.read_text())["shard"]) % ranks
        per_rank[rank] = max(per_rank[rank], marker.stat().st_mtime - begin)
    return {"wall_s": wall, "startup_s": begin - started, "rank_embed_s": per_rank, "embed_s": max(per_rank),
            "summary": summary}


def measure_config(ctx: Context, spec: dict[str, Any], *, tmp: Path) -> dict[str, Any]:
    from geobridge.index.shards import load_embeddings

    name, n = spec["config"], spec["n_images"]
    model = make_model(name)
    model.config.image.test_time_augment = []  # one forward per image (gb-lite0 would run its symmetries)
    checkpoint = model.save_pretrained(tmp / f"{name}-ckpt")
    height, width = model.config.image.input_size["satellite"]
    gallery = write_gallery(tmp / f"{name}-gallery", n=n, size=(int(width * 1.5), int(height * 1.5)))
    del model
    variants = plan_variants(cores(), diagnosis=spec["one_thread_baseline"])
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in variants}
    outputs: dict[str, Path] = {}
    for repetition in range(spec["warmup"] + spec["repeat"]):
        for key, (ranks, threads) in variants.items():
            out = tmp / f"{name}-out-{key}-{repetition}"
            ctx.log(NAME, f"{name}: {n} images, {ranks} rank(s) x {threads} thread(s), run {repetition + 1}")
            result = run_embed(checkpoint=checkpoint, gallery=gallery, out=out, ranks=ranks, threads=threads,
                               shard_size=spec["shard_size"], batch_size=spec["batch_size"])
            runs[key].append({"ranks": ranks, "threads": threads, "warmup": repetition < spec["warmup"], **result})
            outputs[key] = out
    single, double = list(variants)[:2]
    one, records_one, _ = load_embeddings(outputs[single])
    two, records_two, _ = load_embeddings(outputs[double])
    timed = {key: [r for r in rs if not r["warmup"]] for key, rs in runs.items()}
    return {
        **spec,
        "input_size": [height, width],
        "variants": {key: {"ranks": r, "threads_per_rank": t} for key, (r, t) in variants.items()},
        "median": {key: {q: statistics.median(r[q] for r in rs) for q in ("wall_s", "startup_s", "embed_s")}
                   for key, rs in timed.items()},
        "max_abs_diff": float(np.max(np.abs(one - two))) if one.size else 0.0,
        "same_records": records_one == records_two,
        "shape": list(one.shape),
        "runs": runs,
    }


def plan_variants(total: int, *, diagnosis: bool) -> dict[str, tuple[int, int]]:
    """``{key: (ranks, threads per rank)}``: the baseline (1 rank, every core), the candidate (2 ranks, half the
    cores each) and, with ``diagnosis``, 1 rank with the candidate's threads per rank (rank scaling at equal
    threads: on a busy machine a 2-thread OpenMP team can be much slower than 1 thread)."""
    half = max(1, total // 2)
    variants = {f"ranks1_threads{total}": (1, total), f"ranks2_threads{half}": (2, half)}
    if diagnosis and half != total:
        variants[f"ranks1_threads{half}"] = (1, half)
    return variants


def bench(ctx: Context) -> dict[str, Any]:
    specs = plan(quick=ctx.quick)
    with tempfile.TemporaryDirectory(prefix="gb-bench-embed-") as tmp:
        measured = [measure_config(ctx, spec, tmp=Path(tmp)) for spec in specs]
    found = Findings(notes=[
        "Whole command = torchrun start, Python and torch imports, model load, gloo rendezvous, embedding, the "
        "manifest; the embedding phase is read from the output files' mtimes (records.jsonl to each rank's last "
        "shard marker). Satellite view, test-time augmentation off, --num-workers 0 (decoding in the rank).",
        f"{cores()} usable CPUs: 1 rank x {cores()} thread(s) against 2 ranks x {max(1, cores() // 2)} thread(s) "
        "(OMP_NUM_THREADS); the diagnosis row compares with 1 rank x the same threads per rank. On a machine that "
        "other jobs use, thread teams lose most (a descheduled thread stalls its team), so the 2-rank speed-up is "
        "pessimistic for 1 rank x 2 threads there and noisier than usual.",
    ])
    for m in measured:
        name, n, med = m["config"], m["n_images"], m["median"]
        keys = list(m["variants"])
        for key in keys:
            store = found.medians if key == keys[1] else found.baselines
            store[f"{name}/{key}_command_images_per_s"] = n / med[key]["wall_s"]
            store[f"{name}/{key}_embed_images_per_s"] = n / med[key]["embed_s"]
            store[f"{name}/{key}_startup_s"] = med[key]["startup_s"]
        base, cand = med[keys[0]], med[keys[1]]
        found.medians[f"{name}/max_abs_diff_vs_1_rank"] = m["max_abs_diff"]
        label = f"{name} ({n} images {m['input_size'][0]}x{m['input_size'][1]}, shards of {m['shard_size']})"
        same = f"max |diff| to 1 rank {m['max_abs_diff']:.2g}, records identical: {m['same_records']}"
        found.compare(f"{label}: whole command, 2 ranks vs 1", value=n / cand["wall_s"],
                      baseline=n / base["wall_s"], unit="img/s", key=f"{name}/command_speedup_vs_1_rank",
                      note=f"startup {cand['startup_s']:.1f} s vs {base['startup_s']:.1f} s; {same}")
        found.compare(f"{label}: embedding phase, 2 ranks vs 1", value=n / cand["embed_s"],
                      baseline=n / base["embed_s"], unit="img/s", key=f"{name}/embed_speedup_vs_1_rank",
                      note="slowest rank; " + same)
        if len(keys) > 2:
            diag, (_, few), (_, many) = med[keys[2]], m["variants"][keys[2]].values(), m["variants"][keys[0]].values()
            found.compare(f"{label}: embedding phase, 2 ranks vs 1 rank at {few} thread(s) per rank (diagnosis)",
                          value=n / cand["embed_s"], baseline=n / diag["embed_s"], unit="img/s",
                          key=f"{name}/embed_speedup_vs_1_rank_same_threads",
                          note=f"1 rank: {n / diag['embed_s']:.0f} img/s with {few} thread(s), "
                          f"{n / base['embed_s']:.0f} img/s with {many}")
        if not m["same_records"] or m["max_abs_diff"] > 1e-5:
            found.notes.append(f"{name}: the 2-rank embeddings DIFFER from the 1-rank ones ({same}).")
    if ctx.quick:
        found.notes.append("--quick: gb-tiny only, 16 images, one run each, no warm-up run.")
    return found.result(
        NAME, title=TITLE,
        parameters={"configs": specs, "view": "satellite", "test_time_augment": False, "num_workers": 0,
                    "cpus": cores(), "threads_per_rank": {"1 rank": cores(), "2 ranks": max(1, cores() // 2)},
                    "launcher": " ".join(Path(c).name for c in torchrun_command()) + " --standalone",
                    "backend": "gloo", "warmup": "per spec: untimed runs of both before the timed ones",
                    "ratio": "2-rank images/s / 1-rank images/s (speed-up)"},
        target=None, details={"per_config": measured},
    )
