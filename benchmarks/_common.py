"""Shared helpers of the benchmark suite: timing, machine information, the result record and progress output."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from benchmarks import _machine

STATUSES = ("ok", "skipped", "error")


@dataclass
class Context:
    """What the runner hands to every benchmark: the size mode, a shared cache and the progress printer.

    ``cache`` lets one benchmark reuse another's data or measurements within the same run (the scaling curve
    reuses the exact-search timings, the ANN benchmark reuses the exact top-10 as ground truth).
    """

    quick: bool = False
    out_dir: str = "benchmarks"
    cache: dict[str, Any] = field(default_factory=dict)
    verbose: bool = True

    def log(self, name: str, message: str) -> None:
        if self.verbose:
            stamp = time.strftime("%H:%M:%S")
            print(f"[{stamp}] {name:<12s} {message}", file=sys.stderr, flush=True)


@dataclass
class Timing:
    median_s: float
    times_s: list[float]
    warmup: int

    def to_dict(self) -> dict[str, Any]:
        return {"median_s": self.median_s, "times_s": [round(t, 6) for t in self.times_s], "warmup": self.warmup}


def time_it(
    fn: Callable[[], Any],
    *,
    repeat: int = 3,
    warmup: int = 1,
    warmup_fn: Callable[[], Any] | None = None,
) -> Timing:
    """Run ``warmup`` untimed calls (of ``warmup_fn`` if given, e.g. a smaller problem), then ``repeat`` timed calls.

    Returns the median wall-clock time (``time.perf_counter``) and every timed repetition.
    """
    for _ in range(warmup):
        (warmup_fn or fn)()
    times = []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return Timing(median_s=statistics.median(times), times_s=times, warmup=warmup)


def interleaved(functions: dict[str, Callable[[int], Any]], *, calls: int) -> dict[str, float]:
    """Median seconds per call of each function, method after method per call, so that load changes on a shared
    machine hit every method alike. Each is called with the call number (0 for its one untimed warm-up)."""
    for fn in functions.values():
        fn(0)  # warm-up
    times: dict[str, list[float]] = {key: [] for key in functions}
    for call in range(calls):
        for key, fn in functions.items():
            start = time.perf_counter()
            fn(call)
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(value) for key, value in times.items()}


def proc_status_mb(field: str) -> float:
    """A ``kB`` field of /proc/self/status (``VmRSS``, ``VmHWM``, ...) in MiB; NaN where it is absent."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return float(numerator) / float(denominator)


def check(op: str, value: float | None, threshold: float) -> bool | None:
    """``value op threshold`` for op in >=, <=, >, <; None when the value is missing."""
    if value is None:
        return None
    return {">=": value >= threshold, "<=": value <= threshold, ">": value > threshold, "<": value < threshold}[op]


def target_row(
    *,
    metric: str,
    value: float | None,
    baseline: float | None,
    ratio_value: float | None,
    unit: str,
    op: str | None = None,
    threshold: float | None = None,
    ratio_name: str = "",
    note: str = "",
) -> dict[str, Any]:
    """One line of the summary table. ``op``/``threshold`` apply to the ratio; without them the row is informational."""
    met = check(op, ratio_value, threshold) if op is not None and threshold is not None else None
    return {
        "metric": metric,
        "value": value,
        "baseline": baseline,
        "unit": unit,
        "ratio": ratio_value,
        "ratio_name": ratio_name,
        "target": f"{op} {threshold:g}" if op is not None and threshold is not None else None,
        "met": met,
        "note": note,
    }


@dataclass
class Findings:
    """What one benchmark reports, collected as it measures: medians, baseline medians, ratios, the summary rows
    and notes; :meth:`result` turns them into the results.json record."""

    medians: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def compare(
        self,
        metric: str,
        *,
        value: float | None,
        baseline: float | None,
        unit: str,
        key: str | None = None,
        ratio_value: float | None | Literal["speed-up"] = "speed-up",
        ratio_name: str | None = None,
        op: str | None = None,
        threshold: float | None = None,
        note: str = "",
    ) -> float | None:
        """Add the summary row ``metric`` (``value`` against ``baseline``) and, with ``key``, its ratio to
        ``ratios``; returns the ratio. By default the ratio is the speed-up (and named so): baseline / value for
        times (``unit="s"``), value / baseline for throughputs."""
        if isinstance(ratio_value, str):
            ratio_value = ratio(baseline, value) if unit == "s" else ratio(value, baseline)
            ratio_name = "speed-up" if ratio_name is None else ratio_name
        if key is not None:
            self.ratios[key] = ratio_value
        self.rows.append(
            target_row(metric=metric, value=value, baseline=baseline, ratio_value=ratio_value, unit=unit, op=op,
                       threshold=threshold, ratio_name=ratio_name or "", note=note)
        )
        return ratio_value

    def result(self, name: str, *, title: str, **fields: Any) -> dict[str, Any]:
        """The record (:func:`make_result`) of what was collected, plus ``fields`` (parameters, target, ...;
        ``notes`` there come after the collected ones)."""
        notes = [*self.notes, *fields.pop("notes", [])]
        return make_result(name, title=title, medians=self.medians, baseline_medians=self.baselines,
                           ratios=self.ratios, rows=self.rows, notes=notes, **fields)


def make_result(
    name: str,
    *,
    title: str,
    status: str = "ok",
    message: str | None = None,
    parameters: dict[str, Any] | None = None,
    medians: dict[str, float] | None = None,
    baseline_medians: dict[str, float] | None = None,
    ratios: dict[str, float | None] | None = None,
    target: str | None = None,
    rows: list[dict[str, Any]] | None = None,
    notes: list[str] | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of one benchmark in results.json (see benchmarks/README.md for every field).

    ``met`` is True when every row that has a target met it, False when any missed, None when nothing was
    checked (no target, skipped or failed).
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    rows = rows or []
    verdicts = [r["met"] for r in rows if r.get("met") is not None]
    met = (all(verdicts) if verdicts else None) if status == "ok" else None
    return {
        "name": name,
        "title": title,
        "status": status,
        "message": message,
        "parameters": parameters or {},
        "medians": _clean(medians or {}),
        "baseline_medians": _clean(baseline_medians or {}),
        "ratios": _clean(ratios or {}),
        "target": target,
        "met": met,
        "rows": rows,
        "notes": notes or [],
        "details": details or {},
    }


def skipped(name: str, *, title: str, message: str, target: str | None = None) -> dict[str, Any]:
    return make_result(name, title=title, status="skipped", message=message, target=target)


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, float):
            out[key] = float(f"{value:.6g}")
        else:
            out[key] = value
    return out


def make_model(name: str) -> Any:
    """The untrained model ``name`` (seed 0, eval mode) with the hashing text tower: the text tower is not
    benchmarked, and this avoids loading MiniLM."""
    import torch

    from geobridge.models import GeoBridge, get_model_config

    config = get_model_config(name)
    config.text.kind = "hashing"
    torch.manual_seed(0)
    return GeoBridge(config).eval()


def make_images(n: int, *, size: tuple[int, int], seed: int = 0) -> list[Any]:
    """Random RGB PIL images with some structure (smooth gradients plus noise) at ``size`` = (W, H)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    images = []
    for _ in range(n):
        base = (np.sin(xx / rng.uniform(5, 40)) + np.cos(yy / rng.uniform(5, 40)))[..., None] * rng.uniform(20, 60, 3)
        pixels = np.clip(128 + base + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels))
    return images


def machine_info() -> dict[str, Any]:
    """CPU count, model, library versions, date and the load average when the run started."""
    import numpy as np
    import torch

    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        **{key: value for key, value in _machine.summary().items() if key != "cpu_model"},
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "niceness": os.nice(0) if hasattr(os, "nice") else None,
    }
    try:
        import faiss

        info["faiss"] = faiss.__version__
        info["faiss_omp_threads"] = faiss.omp_get_max_threads()
    except ImportError:
        info["faiss"] = None
    try:
        import timm

        info["timm"] = timm.__version__
    except ImportError:
        info["timm"] = None
    try:
        with open("/proc/meminfo") as fh:
            info["memory_gb"] = round(int(fh.readline().split()[1]) / 2**20, 1)
    except OSError:
        info["memory_gb"] = None
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fmt_number(value: Any, unit: str = "") -> str:
    """Human-readable number for the Markdown table."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if not isinstance(value, (int, float)):
        return str(value)
    if unit == "s":
        if value < 1e-3:
            return f"{value * 1e6:.0f} µs"
        if value < 1:
            return f"{value * 1e3:.1f} ms"
        return f"{value:.2f} s"
    magnitude = abs(value)
    if magnitude >= 1e6:
        text = f"{value / 1e6:.2f}M"
    elif magnitude >= 1e4:
        text = f"{value / 1e3:.1f}k"
    elif magnitude >= 100:
        text = f"{value:.0f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def size_label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)
