"""Load test of the HTTP service: concurrent clients posting a small PNG to ``POST /locate`` on loopback.

The service runs in its own process (``geobridge serve`` on 127.0.0.1, a free port) over an untrained gb-tiny
model and a random-vector index; the load generator is one ``httpx.AsyncClient`` driving ``clients`` concurrent
request loops for ``duration_s`` seconds (or ``requests_per_client`` requests each). It reports requests,
errors, latency percentiles and throughput, plus two baselines measured in the same run:

* ``in_process``: the same ``locate`` call (PNG decode + encode + search) in this process, without HTTP;
* ``single_client``: one client at a time over HTTP (no queueing).

``ratio_p50`` is HTTP p50 under load / in-process p50 (mostly queueing behind the ``workers`` inference threads);
``overhead_ratio_p50`` is single-client HTTP p50 / in-process p50 (the cost of HTTP, multipart and threads).

Usage::

    nice -n 19 python benchmarks/bench_serve.py --clients 50 --duration-s 30 --out-json bench_serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    if not samples_s:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}
    ms = np.asarray(samples_s, dtype=np.float64) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(ms.mean()), 2),
        "max_ms": round(float(ms.max()), 2),
    }


def _query_png(*, size: int = 64, seed: int = 0) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _make_assets(folder: Path, *, index_size: int, seed: int) -> tuple[Path, Path]:
    """Save an untrained gb-tiny model (hashing text tower) and a random-vector index of ``index_size`` entries."""
    import torch

    from geobridge.index import GeoIndex
    from geobridge.models import GeoBridge, get_model_config

    torch.manual_seed(seed)
    config = get_model_config("gb-tiny")
    config.text.kind = "hashing"  # no pretrained text weights needed
    model = GeoBridge(config).eval()
    checkpoint = model.save_pretrained(folder / "model")
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((index_size, model.embed_dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    views = ("satellite", "street", "drone")
    records = [
        {
            "place_id": f"p{i // 3:05d}",
            "lat": float(rng.uniform(-60, 70)),
            "lon": float(rng.uniform(-180, 180)),
            "view": views[i % 3],
            "path": f"refs/p{i // 3:05d}_{views[i % 3]}.png",
        }
        for i in range(index_size)
    ]
    index = GeoIndex(model.embed_dim, factory="Flat")
    index.add(vectors, records)
    index_path = index.save(folder / "bench.gbindex")
    return Path(checkpoint), Path(index_path)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen, *, timeout_s: float = 180.0) -> dict[str, Any]:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with code {proc.returncode}")
        try:
            response = httpx.get(url + "/health", timeout=2.0)
            if response.status_code == 200:
                return dict(response.json())
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the service did not become healthy within {timeout_s:.0f} s")


async def _load(
    url: str, payload: bytes, *, clients: int, requests_per_client: int | None, duration_s: float, top_k: int
) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    per_client: list[int] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    stop_at = time.perf_counter() + duration_s

    async def one_client(client: httpx.AsyncClient) -> None:
        done = 0
        while time.perf_counter() < stop_at and (requests_per_client is None or done < requests_per_client):
            start = time.perf_counter()
            try:
                response = await client.post(
                    url + "/locate",
                    files=[("images", ("query.png", payload, "image/png"))],
                    data={"views": "drone", "top_k": str(top_k)},
                )
                if response.status_code != 200 or "matches" not in response.json():
                    errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                else:
                    latencies.append(time.perf_counter() - start)
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            done += 1
        per_client.append(done)

    started = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0)) as client:
        await asyncio.gather(*(one_client(client) for _ in range(clients)))
    wall = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "wall_s": wall, "per_client": per_client}


def _in_process_baseline(
    checkpoint: Path, index_path: Path, payload: bytes, *, repeats: int, top_k: int
) -> list[float]:
    from geobridge.images import decode_image_bytes
    from geobridge.index import GeoIndex, locate
    from geobridge.models import GeoBridge

    model = GeoBridge.from_pretrained(checkpoint)
    index = GeoIndex.load(index_path)
    times: list[float] = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        image = decode_image_bytes(payload, name="payload.png")  # the decoder the service uses
        locate(model, index, images=[("drone", image)], top_k=top_k)
        if i >= 2:  # two warm-up calls
            times.append(time.perf_counter() - start)
    return times


def run(
    *,
    clients: int = 50,
    requests_per_client: int | None = None,
    duration_s: float = 30.0,
    workers: int = 2,
    index_size: int = 3000,
    top_k: int = 10,
    baseline_repeats: int = 50,
    single_client_requests: int = 30,
    seed: int = 0,
) -> dict[str, Any]:
    """Start the service, load it with ``clients`` concurrent clients, and return the measurements as a flat dict."""
    import httpx

    if clients < 1 or duration_s <= 0:
        raise ValueError("clients must be >= 1 and duration_s > 0")
    payload = _query_png(seed=seed)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        checkpoint, index_path = _make_assets(Path(tmp), index_size=index_size, seed=seed)
        baseline = _in_process_baseline(checkpoint, index_path, payload, repeats=baseline_repeats, top_k=top_k)

        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable, "-m", "geobridge.cli.main", "serve", "--index", str(index_path), "--checkpoint",
            str(checkpoint), "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--log-level", "warning",
        ]
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            health = _wait_healthy(url, proc)
            single: list[float] = []
            with httpx.Client(timeout=60.0) as client:
                for i in range(single_client_requests + 2):
                    start = time.perf_counter()
                    response = client.post(
                        url + "/locate",
                        files=[("images", ("query.png", payload, "image/png"))],
                        data={"views": "drone", "top_k": str(top_k)},
                    )
                    response.raise_for_status()
                    if i >= 2:
                        single.append(time.perf_counter() - start)
            load = asyncio.run(
                _load(url, payload, clients=clients, requests_per_client=requests_per_client, duration_s=duration_s,
                      top_k=top_k)
            )
            still_healthy = httpx.get(url + "/health", timeout=10.0).status_code == 200
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server_log_tail = log_path.read_text(errors="replace")[-2000:]

    http = _percentiles(load["latencies"])
    inproc = _percentiles(baseline)
    one = _percentiles(single)
    requests = len(load["latencies"]) + len(load["errors"])
    return {
        "benchmark": "serve",
        "clients": clients,
        "duration_s": round(load["wall_s"], 2),
        "requests": requests,
        "ok": len(load["latencies"]),
        "errors": len(load["errors"]),
        "error_samples": load["errors"][:5],
        "requests_per_client_min": min(load["per_client"]),
        "requests_per_client_max": max(load["per_client"]),
        "throughput_rps": round(len(load["latencies"]) / load["wall_s"], 2) if load["wall_s"] > 0 else 0.0,
        **{f"http_{k}": v for k, v in http.items()},
        **{f"single_client_{k}": v for k, v in one.items()},
        **{f"in_process_{k}": v for k, v in inproc.items()},
        "ratio_p50": round(http["p50_ms"] / inproc["p50_ms"], 2),
        "overhead_ratio_p50": round(one["p50_ms"] / inproc["p50_ms"], 2),
        "still_healthy_after": still_healthy,
        "workers": workers,
        "index_size": int(health.get("index_size", index_size)),
        "model": health.get("model"),
        "top_k": top_k,
        "payload_bytes": len(payload),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "server_log_tail": server_log_tail if load["errors"] else "",
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--requests-per-client", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--index-size", type=int, default=3000)
    parser.add_argument("--out-json", default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)
    result = run(
        clients=args.clients,
        requests_per_client=args.requests_per_client,
        duration_s=args.duration_s,
        workers=args.workers,
        index_size=args.index_size,
    )
    for key, value in result.items():
        if key not in ("server_log_tail", "error_samples") or value:
            print(f"{key:>28}: {value}")
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
