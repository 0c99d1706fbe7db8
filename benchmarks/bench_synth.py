"""Speed of the procedural world generator ``geobridge.synth``: places per second with all views written.

The measured run generates ``--places`` places (drone views, satellite tile, street panorama, texts, PNG files)
with the default number of worker processes (``min(2, CPUs)``). The baseline, measured in the same run, is
single-process generation (``workers=1``) of a smaller subset; ``ratio`` is the speed-up of the default over it.
The issue target is 1,000 places with all views in <= 5 minutes on 2 cores (``met``).

Wall time depends on what else the machine runs (a ``nice -n 19`` run beside a busy job gets a few percent of
the CPU), so the CPU seconds of the process and of its worker processes are recorded too: ``cpu_s_per_place``
and ``projected_seconds_for_1000_free_cores`` (the measured run's CPU time, pool start-up included, scaled to
1,000 places and spread evenly over ``min(2, workers)`` free cores) tell what an unloaded 2-core machine would do.

Usage::

    nice -n 19 python benchmarks/bench_synth.py --places 1000 --image-size 128 --out-json bench_synth.json
    python benchmarks/bench_synth.py --places 40 --image-size 64 --quick          # seconds
    nice -n 19 python benchmarks/bench_synth.py --places 60 --baseline-places 20  # a busy machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TARGET_PLACES = 1000
TARGET_SECONDS = 300.0


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished child processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _generate(out: Path, *, places: int, image_size: int, workers: int | None) -> tuple[float, float, int]:
    """Generate a world into ``out``; returns (wall seconds including pool start-up, CPU seconds, images)."""
    from geobridge.synth import WorldConfig, generate_world

    config = WorldConfig(places=places, image_size=image_size, workers=workers, seed=0)
    cpu = _cpu_seconds()
    start = time.perf_counter()
    summary = generate_world(out, config, show_progress_bar=False)  # the pool's workers are joined on return
    return time.perf_counter() - start, _cpu_seconds() - cpu, summary.images


def run(*, places: int = TARGET_PLACES, image_size: int = 128, quick: bool = False,
        baseline_places: int | None = None) -> dict[str, Any]:
    """Time the generation of ``places`` places, and a single-process baseline; returns a flat dict.

    The baseline generates ``baseline_places`` places (default 100, or 8 with ``quick`` so that a smoke run
    takes seconds), at most ``places``.
    """
    from geobridge.synth import WorldConfig
    from geobridge.synth.writer import default_workers

    if places < 1:
        raise ValueError(f"places must be >= 1, got {places}")
    WorldConfig(places=places, image_size=image_size).validate()
    if baseline_places is None:
        baseline_places = 8 if quick else 100
    if baseline_places < 1:
        raise ValueError(f"baseline_places must be >= 1, got {baseline_places}")
    baseline_places = min(places, baseline_places)
    workers = default_workers()
    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        print(f"bench_synth: baseline, {baseline_places} places with 1 worker ...", file=sys.stderr, flush=True)
        base_s, base_cpu, _ = _generate(Path(tmp) / "baseline", places=baseline_places, image_size=image_size,
                                        workers=1)
        print(f"bench_synth: {places} places with {workers} workers ...", file=sys.stderr, flush=True)
        seconds, cpu, images = _generate(Path(tmp) / "world", places=places, image_size=image_size, workers=None)
    load_after = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    rate = places / seconds
    base_rate = baseline_places / base_s
    projected = TARGET_PLACES / rate
    free_cores = min(2, workers)
    projected_free = TARGET_PLACES * cpu / places / free_cores
    return {
        "name": "synth",
        "places": places,
        "image_size": image_size,
        "drone_views": WorldConfig().drone_views,
        "images": images,
        "workers": workers,
        "seconds": round(seconds, 2),
        "places_per_s": round(rate, 3),
        "baseline_places": baseline_places,
        "baseline_seconds": round(base_s, 2),
        "baseline_places_per_s": round(base_rate, 3),
        "ratio": round(rate / base_rate, 3),
        "cpu_seconds": round(cpu, 2),
        "cpu_s_per_place": round(cpu / places, 4),
        "baseline_cpu_s_per_place": round(base_cpu / baseline_places, 4),
        "projected_seconds_for_1000": round(projected, 1),
        "projected_seconds_for_1000_free_cores": round(projected_free, 1),
        "target_seconds_for_1000": TARGET_SECONDS,
        "met": bool(projected <= TARGET_SECONDS),
        "met_on_free_cores": bool(projected_free <= TARGET_SECONDS),
        "quick": quick,
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "python": platform.python_version(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--places", type=int, default=TARGET_PLACES, help="places to generate (default 1000)")
    parser.add_argument("--image-size", type=int, default=128, help="side of drone/satellite images (default 128)")
    parser.add_argument("--baseline-places", type=int, default=None,
                        help="places of the single-process baseline (default 100; 8 with --quick)")
    parser.add_argument("--quick", action="store_true", help="8-place baseline instead of 100 (smoke runs)")
    parser.add_argument("--out-json", default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)
    result = run(places=args.places, image_size=args.image_size, quick=args.quick,
                 baseline_places=args.baseline_places)
    for key, value in result.items():
        print(f"{key:>38}: {value}")
    print(f"generation with {result['workers']} workers is {result['ratio']:.2f}x the single-process baseline; "
          f"1,000 places would take {result['projected_seconds_for_1000']:.0f} s "
          f"(target <= {TARGET_SECONDS:.0f} s: {'met' if result['met'] else 'MISSED'}); from CPU time, "
          f"{result['projected_seconds_for_1000_free_cores']:.0f} s on {min(2, result['workers'])} free cores")
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
