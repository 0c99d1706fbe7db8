"""Run the GeoBridge benchmark suite.

python -m benchmarks                      # everything, full size (<= 20 min on 2 cores)
python -m benchmarks --quick --out /tmp/b # tiny sizes, seconds (the smoke test)
python -m benchmarks --only search,ann    # a subset; merged into an existing results.json in --out
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import BENCHMARKS, _machine
from benchmarks._common import Context, machine_info, make_result

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
SCHEMA_VERSION = 1


def _entry_point(name: str) -> tuple[Callable[[Context], dict[str, Any]], str]:
    """The ``bench(ctx)`` function of a benchmark name, and its title (imported lazily)."""
    module_name, function = {
        "search": ("benchmarks.bench_search", "bench"),
        "scaling": ("benchmarks.bench_search", "bench_scaling"),
        "ann": ("benchmarks.bench_ann", "bench"),
        "encode": ("benchmarks.bench_encode", "bench"),
        "train": ("benchmarks.bench_train", "bench"),
        "train_step": ("benchmarks.bench_train_step", "bench"),
        "synth": ("benchmarks._external", "bench_synth"),
        "eval_memory": ("benchmarks.bench_eval_memory", "bench"),
        "serve": ("benchmarks._external", "bench_serve"),
        "deploy": ("benchmarks.bench_deploy", "bench"),
        "prior": ("benchmarks.bench_prior", "bench"),
        "embed": ("benchmarks.bench_embed", "bench"),
        "index_load": ("benchmarks.bench_index_load", "bench"),
        "clip_step": ("benchmarks.bench_clip_step", "bench"),
    }[name]
    module = importlib.import_module(module_name)
    return getattr(module, function), getattr(module, "TITLE", name)


def parse_only(value: str | None) -> list[str]:
    if not value:
        return list(BENCHMARKS)
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; valid names are {list(BENCHMARKS)}")
    return [n for n in BENCHMARKS if n in names]  # suite order


def run_suite(
    *, names: list[str], quick: bool, out_dir: Path, verbose: bool = True, notes: list[str] | None = None
) -> dict[str, Any]:
    """Run ``names`` in order, writing results.json after each one; returns the full results dict."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / RESULTS_JSON
    results: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "machine": {}, "benchmarks": {}}
    if results_path.is_file() and set(names) != set(BENCHMARKS):
        try:
            previous = json.loads(results_path.read_text())
            if previous.get("schema_version") == SCHEMA_VERSION:
                results["benchmarks"] = previous.get("benchmarks", {})
                for entry in results["benchmarks"].values():  # keep each kept entry's own machine load
                    entry.setdefault("load_average", _entry_load(previous.get("machine", {})))
        except (OSError, ValueError):
            pass
    ctx = Context(quick=quick, out_dir=str(out_dir), verbose=verbose)
    results["machine"] = machine_info()
    results["mode"] = "quick" if quick else "full"
    results["notes"] = list(notes or [])
    suite_start = time.perf_counter()
    clock_start = _cpu_clock()
    for position, name in enumerate(names, 1):
        ctx.log(name, f"--- benchmark {position}/{len(names)} ---")
        start = time.perf_counter()
        load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        try:
            function, title = _entry_point(name)
            entry = function(ctx)
        except Exception as exc:  # noqa: BLE001 - one failing benchmark must not lose the others
            entry = make_result(
                name,
                title=name,
                status="error",
                message=f"{type(exc).__name__}: {exc}",
                details={"traceback": traceback.format_exc()[-4000:]},
            )
            ctx.log(name, f"FAILED: {type(exc).__name__}: {exc}")
        entry["elapsed_s"] = round(time.perf_counter() - start, 2)
        entry["mode"] = results["mode"]
        entry["date"] = results["machine"]["date"]
        entry["machine"] = _machine.summary()  # kept with the entry when a later --only run merges others
        entry["load_average"] = {"start": load_start,
                                 "end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
        results["benchmarks"][name] = entry
        ctx.log(name, f"done in {entry['elapsed_s']:.1f} s (status {entry['status']}, met {entry['met']})")
        _write_json(results_path, results)
    results["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["machine"]["other_cpu_share"] = _other_cpu_share(clock_start, _cpu_clock(),
                                                             seconds=time.perf_counter() - suite_start,
                                                             cpus=results["machine"].get("cpu_count") or 1)
    results["notes"] += _load_notes(results["machine"])
    results["elapsed_s"] = round(time.perf_counter() - suite_start, 2)
    _write_json(results_path, results)
    from benchmarks._report import write_markdown

    write_markdown(results, out_dir / RESULTS_MD)
    return results


def _entry_load(machine: dict[str, Any]) -> dict[str, Any]:
    """The load averages of the run an entry came from (its ``machine`` block)."""
    return {"start": machine.get("load_average_at_start"), "end": machine.get("load_average_at_end")}


def _cpu_clock() -> tuple[float, float] | None:
    """(CPU seconds the whole machine has been busy, from ``/proc/stat``; CPU seconds of this process and its
    waited-for children), or ``None`` where ``/proc/stat`` is not readable."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait; the rest of user nice system idle iowait irq softirq steal is busy
    own = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK"), own


def _other_cpu_share(start: tuple[float, float] | None, end: tuple[float, float] | None, *, seconds: float,
                     cpus: int) -> float | None:
    """The share (0..1) of the machine's CPU time that processes other than this run used during it."""
    if start is None or end is None or seconds <= 0:
        return None
    others = (end[0] - start[0]) - (end[1] - start[1])
    return round(min(1.0, max(0.0, others / (seconds * cpus))), 3)


def _load_notes(machine: dict[str, Any]) -> list[str]:
    """A warning when other jobs competed for the CPUs: measured as the CPU time other processes used during the
    run where ``/proc/stat`` can be read (the load average also counts this run's own threads, and trails a job
    that ended a minute before), else a 1-minute load average clearly above one CPU's worth."""
    share = machine.get("other_cpu_share")
    if share is not None:
        if share <= 0.1:
            return []
        return [
            f"The machine was busy: other processes used {100 * share:.0f} % of the CPUs' time during the run, so "
            "absolute timings are pessimistic and ratios noisier."
        ]
    cpus = machine.get("cpu_count") or 1
    loads = [machine.get("load_average_at_start"), machine.get("load_average_at_end")]
    worst = max((load[0] for load in loads if load), default=0.0)
    if worst <= max(1.5, 0.75 * cpus):
        return []
    return [
        f"The machine was busy: 1-minute load average up to {worst:.1f} on {cpus} CPUs (this run counts for about "
        "1); other jobs competed for the cores, so absolute timings are pessimistic and ratios noisier."
    ]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_default) + "\n")
    tmp.replace(path)


def _default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="Run the GeoBridge benchmark suite.")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds); used by the smoke test")
    parser.add_argument("--only", metavar="NAME[,NAME]", help=f"run only these, from {', '.join(BENCHMARKS)}")
    parser.add_argument(
        "--out", default=str(Path(__file__).resolve().parent), help="output folder (default: benchmarks/)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--note", action="append", default=[], help="a note for results.md (e.g. machine state)")
    args = parser.parse_args(argv)
    names = parse_only(args.only)
    results = run_suite(names=names, quick=args.quick, out_dir=Path(args.out), verbose=not args.quiet, notes=args.note)
    ran = [results["benchmarks"][n] for n in names]
    print(f"wrote {Path(args.out) / RESULTS_JSON} and {Path(args.out) / RESULTS_MD} in {results['elapsed_s']:.0f} s")
    for entry in ran:
        print(f"  {entry['name']:<12s} {entry['status']:<8s} met={entry['met']}  ({entry['elapsed_s']:.0f} s)")
    return 1 if any(e["status"] == "error" for e in ran) else 0


if __name__ == "__main__":
    sys.exit(main())
