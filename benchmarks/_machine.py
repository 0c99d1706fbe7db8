"""What processor a result was measured on, and its fp32 FMA peak, so that every figure names its machine and a
compute-bound kernel's speed can be read as a fraction of what the silicon can do.

``cpu()`` reads ``/proc/cpuinfo`` (Linux): the model name, vendor, family and model, the clock and the vector
instruction sets that matter to a matmul (SSE4.2, AVX, AVX2, FMA, AVX-512 F/VNNI/BF16, AMX). ``fma_peak()`` is
the theoretical fp32 peak of the cores a kernel may use::

    peak FLOP/s = cores x clock x (FMA pipes x fp32 lanes per pipe x 2 FLOP per FMA)

The FLOP per cycle of one core come from the micro-architecture: AMD Zen 2-4 issue two 256-bit FMAs a cycle (32
fp32 FLOP; Zen 4 runs AVX-512 as two 256-bit halves), Zen 5 two 512-bit FMAs (64), Zen 1 two 128-bit (16); an
Intel core with AVX-512 is counted with two 512-bit FMA ports (64; some Xeon Silver/Bronze parts have one, so
there the true peak is half), with AVX2 + FMA two 256-bit ports (32). The clock is the nominal one the kernel
reports (``cpu MHz``; under a hypervisor that is the TSC rate), not a turbo clock, so a kernel running at turbo
can exceed "100 %" of this peak; ``measured_sgemm_gflops`` gives the achieved ceiling of a large BLAS sgemm on the
same cores, the practical limit.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu() -> dict[str, Any]:
    """Model, vendor, family/model numbers, nominal clock (GHz) and the matmul-relevant instruction sets."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    mhz = _float(fields.get("cpu MHz"))
    return {
        "model": fields.get("model name") or platform.processor() or "unknown",
        "vendor": fields.get("vendor_id", "unknown"),
        "family": _int(fields.get("cpu family")),
        "model_number": _int(fields.get("model")),
        "clock_ghz": round(mhz / 1000, 3) if mhz else None,
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }


def flops_per_cycle(info: dict[str, Any]) -> tuple[int, str]:
    """fp32 FLOP per cycle of one core, and how that number was decided (see the module docstring)."""
    isa, vendor, family, model = set(info["isa"]), info["vendor"], info["family"], info["model_number"]
    if vendor == "AuthenticAMD" and family is not None:
        if family >= 0x1A:
            return 64, "AMD Zen 5: 2 x 512-bit FMA"
        if family == 0x19:
            return 32, "AMD Zen 3/4: 2 x 256-bit FMA (Zen 4 AVX-512 double-pumped)"
        if family == 0x17:
            return (32, "AMD Zen 2: 2 x 256-bit FMA") if (model or 0) >= 0x30 else (16, "AMD Zen 1: 2 x 128-bit FMA")
    if "avx512f" in isa:
        return 64, "AVX-512: 2 x 512-bit FMA ports assumed (half on 1-port Xeon Silver/Bronze)"
    if "fma" in isa and "avx2" in isa:
        return 32, "AVX2 + FMA: 2 x 256-bit FMA ports"
    if "avx" in isa:
        return 16, "AVX without FMA: 256-bit add + multiply"
    return 8, "SSE: 128-bit add + multiply"


def fma_peak(*, threads: int | None = None) -> dict[str, Any]:
    """Theoretical fp32 GFLOP/s of ``threads`` cores (default: every core this process may use)."""
    info = cpu()
    per_cycle, basis = flops_per_cycle(info)
    cores = min(threads or info["cores"] or 1, info["cores"] or 1)
    peak = cores * info["clock_ghz"] * per_cycle if info["clock_ghz"] else None
    return {"gflops": round(peak, 1) if peak else None, "cores": cores, "clock_ghz": info["clock_ghz"],
            "flops_per_cycle": per_cycle, "basis": basis}


def measured_sgemm_gflops(*, size: int = 2048, repeat: int = 5) -> float:
    """GFLOP/s of torch's fp32 ``size x size`` matmul (best of ``repeat`` after a warm-up): the BLAS ceiling."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    with torch.inference_mode():
        a @ b
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def summary() -> dict[str, Any]:
    """The machine fields recorded beside every benchmark result."""
    info = cpu()
    return {"cpu_model": info["model"], "cpu_vendor": info["vendor"], "cpu_family": info["family"],
            "cpu_model_number": info["model_number"], "isa": info["isa"], "cores": info["cores"],
            "clock_ghz": info["clock_ghz"]}


def label(machine: dict[str, Any]) -> str:
    """A short name of the machine, for tables: ``AMD EPYC (family 25 model 17), 2 cores, avx2 fma avx512f``."""
    isa = " ".join(f for f in machine.get("isa", []) if f in ("avx2", "fma", "avx512f", "amx_tile")) or "no AVX2"
    return (f"{machine.get('cpu_model', '?')} (family {machine.get('cpu_family')} model "
            f"{machine.get('cpu_model_number')}), {machine.get('cores')} cores, {isa}")


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
