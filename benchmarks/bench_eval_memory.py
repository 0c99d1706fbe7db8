"""Peak memory and time of the chunked retrieval evaluator, and of the dense reference at a smaller size.

Each measurement runs in a fresh Python subprocess, which reports its own peak resident set size
(``VmHWM`` in /proc/self/status, see ``_peak_mb``; tracemalloc would miss numpy/torch buffers). The peak therefore
includes the interpreter, numpy, torch and the embeddings themselves; ``rss_before_mb`` is the resident size just
before the evaluation starts (data already in memory).

Usage::

    python benchmarks/bench_eval_memory.py --out bench_eval_memory.json
    python benchmarks/bench_eval_memory.py --n-query 2000 --n-gallery 10000 --dim 64   # quick
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

LIMIT_BYTES = 4 * 1024**3
METHOD = "VmHWM (peak RSS of the process's own memory map) of a fresh subprocess; ru_maxrss where /proc is absent"


def _rss_now_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    """Peak resident set size of this process's own memory map, in MiB.

    Linux: ``VmHWM`` from /proc/self/status. Not ``ru_maxrss``: the kernel carries the parent's high-water mark
    into ``ru_maxrss`` across fork + exec, so a worker started by a parent holding gigabytes (the benchmark suite
    keeps a 1M-vector gallery) would report the parent's size instead of its own.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 1024**2


def _worker(spec: dict) -> dict:
    """Runs in the subprocess: make the data, evaluate one direction, report time, peak memory and a checksum."""
    import numpy as np

    from geobridge.eval import EmbeddingSet, direction_metrics, retrieve, world_protocol

    n_query, n_gallery, dim = spec["n_query"], spec["n_gallery"], spec["dim"]
    rng = np.random.default_rng(spec["seed"])
    gallery = rng.standard_normal((n_gallery, dim), dtype=np.float32)  # (M, D)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    labels = rng.integers(0, n_gallery, n_query)
    query = gallery[labels] + 0.25 * rng.standard_normal((n_query, dim), dtype=np.float32)  # (N, D)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    coords = rng.uniform(-60, 60, (n_gallery, 2))
    q_set = EmbeddingSet("drone", query, labels, lat=coords[labels, 0], lon=coords[labels, 1])
    g_set = EmbeddingSet("satellite", gallery, np.arange(n_gallery), lat=coords[:, 0], lon=coords[:, 1])
    import torch  # noqa: F401  (loaded before the baseline so that its import is not counted as evaluation)

    rss_before = _rss_now_mb()
    peak_before = _peak_mb()
    start = time.perf_counter()
    result = retrieve(q_set, g_set, k=10, chunk_size=spec["chunk_size"], show_progress_bar=False)
    metrics = direction_metrics(world_protocol(), result)
    seconds = time.perf_counter() - start
    digest = hashlib.sha256(result.first_positive_rank.tobytes() + result.topk_indices.tobytes()).hexdigest()[:16]
    return {
        "n_query": n_query,
        "n_gallery": n_gallery,
        "dim": dim,
        "chunk_size": spec["chunk_size"],
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(_peak_mb(), 1),
        "peak_rss_before_eval_mb": round(peak_before, 1),
        "rss_before_mb": round(rss_before, 1),
        "data_mb": round((query.nbytes + gallery.nbytes) / 2**20, 1),
        "R@1": round(metrics["R@1"], 3),
        "AP": round(metrics["AP"], 3),
        "checksum": digest,
    }


def _spawn(spec: dict) -> dict:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(
    *,
    n_query: int = 20000,
    n_gallery: int = 100000,
    dim: int = 256,
    chunk_size: int | None = None,
    dense_n_query: int = 2000,
    dense_n_gallery: int = 20000,
    seed: int = 0,
) -> dict:
    """Measure the chunked evaluation at full size (``chunk_size=None`` = the evaluator's automatic ~256 MB blocks),
    and the dense reference against the chunked path at a smaller size (same data, results compared by checksum).
    Returns a dict with the measurements and ``passed`` = full-size peak RSS < 4 GiB."""
    chunk = "auto" if chunk_size is None else int(chunk_size)
    chunked = _spawn({"n_query": n_query, "n_gallery": n_gallery, "dim": dim, "chunk_size": chunk, "seed": seed})
    small = {"n_query": dense_n_query, "n_gallery": dense_n_gallery, "dim": dim, "seed": seed}
    small_chunked = _spawn({**small, "chunk_size": chunk})
    small_dense = _spawn({**small, "chunk_size": None})
    from geobridge.eval.retrieval import auto_chunk_size

    return {
        "method": METHOD,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "auto_chunk_size": auto_chunk_size(n_gallery) if chunk == "auto" else chunk,
        "chunked": chunked,
        "small_chunked": small_chunked,
        "small_dense": small_dense,
        "small_dense_matches_chunked": small_dense["checksum"] == small_chunked["checksum"],
        "limit_mb": LIMIT_BYTES / 2**20,
        "passed": chunked["peak_rss_mb"] * 2**20 < LIMIT_BYTES,
    }


TITLE = "Evaluation memory: chunked retrieval evaluation peak RSS"
TARGET = "peak RSS < 4 GiB for 20k queries x 100k gallery x 256-d (chunked evaluator)"


def bench(ctx) -> dict:  # ctx: benchmarks._common.Context
    """The suite's entry point (``python -m benchmarks``): ``run()`` at full or --quick size as a suite record."""
    from benchmarks._common import make_result, ratio, size_label, target_row

    params = (
        {"n_query": 500, "n_gallery": 2000, "dim": 32, "dense_n_query": 200, "dense_n_gallery": 1000}
        if ctx.quick
        else {"n_query": 20000, "n_gallery": 100000, "dim": 256, "dense_n_query": 2000, "dense_n_gallery": 20000}
    )
    ctx.log("eval_memory", f"run({params}) in fresh subprocesses")
    raw = run(**params)
    full, small_c, small_d = raw["chunked"], raw["small_chunked"], raw["small_dense"]
    limit_mb = raw["limit_mb"]
    label = f"{size_label(params['n_query'])} x {size_label(params['n_gallery'])} x {params['dim']}"
    rows = [
        target_row(
            metric=f"{label} chunked evaluation: peak RSS vs 4 GiB limit",
            value=full["peak_rss_mb"],
            baseline=limit_mb,
            unit="MiB",
            ratio_value=ratio(full["peak_rss_mb"], limit_mb),
            ratio_name="fraction of the limit",
            op="<",
            threshold=1.0,
            note=f"{full['seconds']:.1f} s; embeddings alone {full['data_mb']:.0f} MiB; "
            f"RSS before evaluation {full['rss_before_mb']:.0f} MiB",
        ),
        target_row(
            metric=f"{params['dense_n_query']} x {params['dense_n_gallery']}: chunked vs dense peak RSS",
            value=small_c["peak_rss_mb"],
            baseline=small_d["peak_rss_mb"],
            unit="MiB",
            ratio_value=ratio(small_c["peak_rss_mb"], small_d["peak_rss_mb"]),
            ratio_name="memory ratio (chunked / dense)",
            note=f"results identical: {raw['small_dense_matches_chunked']}; "
            f"time {small_c['seconds']:.2f} s vs {small_d['seconds']:.2f} s",
        ),
    ]
    return make_result(
        "eval_memory",
        title=TITLE,
        parameters={**params, "chunk_size": raw["auto_chunk_size"], "method": raw["method"]},
        medians={
            "peak_rss_mb": full["peak_rss_mb"],
            "seconds": full["seconds"],
            "small_chunked_peak_rss_mb": small_c["peak_rss_mb"],
        },
        baseline_medians={
            "limit_mb": limit_mb,
            "small_dense_peak_rss_mb": small_d["peak_rss_mb"],
            "small_dense_seconds": small_d["seconds"],
        },
        ratios={
            "peak_vs_limit": ratio(full["peak_rss_mb"], limit_mb),
            "small_chunked_vs_dense_peak": ratio(small_c["peak_rss_mb"], small_d["peak_rss_mb"]),
            "small_chunked_vs_dense_time": ratio(small_c["seconds"], small_d["seconds"]),
        },
        target=TARGET,
        rows=rows,
        notes=[
            "One measurement per setting (peak RSS is deterministic up to allocator noise; each runs in a fresh "
            "subprocess, so no repetition median).",
            "The dense reference at the small size must give identical ranks (checksum): "
            f"{raw['small_dense_matches_chunked']}.",
        ],
        details={"raw": raw},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--n-query", type=int, default=20000)
    parser.add_argument("--n-gallery", type=int, default=100000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=None, help="queries per block (default: auto, ~256 MB)")
    parser.add_argument("--dense-n-query", type=int, default=2000)
    parser.add_argument("--dense-n-gallery", type=int, default=20000)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    result = run(
        n_query=args.n_query,
        n_gallery=args.n_gallery,
        dim=args.dim,
        chunk_size=args.chunk_size,
        dense_n_query=args.dense_n_query,
        dense_n_gallery=args.dense_n_gallery,
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
