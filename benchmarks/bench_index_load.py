"""Load time and memory of a memory-mapped IVF index folder against the single-file ``.gbx`` of the same index.

One ``GeoIndex`` (``IVF1024,Flat`` over 1M clustered 256-d float32 vectors from ``benchmarks/_data.py``, one
coordinates/metadata record per vector) is saved both ways: ``save`` (one checksummed ``.gbx`` file, read whole
and deserialised) and ``save_folder`` (``index/folder.py``: the faiss file read with ``IO_FLAG_MMAP``, so the
inverted lists stay on disk and only pages a search touches are read in). ``IVF1024,Flat`` keeps every vector
uncompressed (~1 GiB of lists), so the difference between holding the lists and mapping them is plain to see;
1,024 lists of ~1,000 vectors make a search with nprobe 16 touch ~1.6% of them per query.

Each load runs in a fresh subprocess (like ``bench_eval_memory.py``), which reports

* the load time (``GeoIndex.load``: checks, checksums, records, faiss read);
* peak RSS (``VmHWM`` of /proc/self/status, the process's own high-water mark) and RSS after the load;
* the resident pages of the mapped ``index.faiss`` (``Rss`` of its mappings in /proc/self/smaps);
* the same after successive search batches (1, 10, 100 queries, nprobe 16), with the bytes of the inverted lists
  those queries probe, so the growth can be held against what the searches touched;
* a checksum of the search results (both layouts must return the same ids).

The folder is loaded twice: as the CLI does (``verify=True``: every file's SHA-256, streamed) and with
``verify=False`` (sizes only). All files are freshly written, so loads read from a warm page cache; from a cold
cache the ``.gbx`` must read the whole file from disk, the mapped folder only the touched pages (plus the
checksum pass unless ``verify=False``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import proc_status_mb

NAME = "index_load"
TITLE = "Index load: memory-mapped IVF index folder vs single-file .gbx (fresh subprocesses)"
TARGET = ("the memory-mapped folder's RSS stays far below the index size (RSS growth over the bare interpreter "
          "after the load <= 0.5x the index on disk; full size only)")
RSS_TARGET = 0.5
ROOT = Path(__file__).resolve().parents[1]
METHOD = "VmHWM / VmRSS of /proc/self/status and Rss of the index.faiss mappings in /proc/self/smaps"


def plan(*, quick: bool) -> dict[str, Any]:
    if quick:
        return {"n": 20000, "dim": 32, "factory": "IVF64,Flat", "n_train": 4096, "batches": [1, 10, 100],
                "nprobe": 4, "k": 10, "noverify_load": False}
    return {"n": 1_000_000, "dim": 256, "factory": "IVF1024,Flat", "n_train": 65536, "batches": [1, 10, 100],
            "nprobe": 16, "k": 10, "noverify_load": True}


# ---------------------------------------------------------------------------------------------------------------------
# the worker (a fresh subprocess per load)


def _mapped_rss_mb(path: str) -> float:
    """Resident MiB of this process's mappings of the file ``path`` (0 when it is not mapped)."""
    total_kb, inside = 0, False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split(maxsplit=5)
            if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
                inside = len(head) == 6 and head[5].strip() == path
            elif inside and line.startswith("Rss:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024


def _probed_bytes(base: Any, queries: np.ndarray, nprobe: int) -> tuple[int, int]:
    """The number of distinct inverted lists the queries probe and their bytes (codes + ids)."""
    import faiss

    ivf = faiss.extract_index_ivf(base)
    _, lists = ivf.quantizer.search(queries, nprobe)  # (Q, nprobe)
    unique = np.unique(lists[lists >= 0])
    per_vector = ivf.code_size + 8
    return int(unique.size), int(sum(ivf.invlists.list_size(int(i)) for i in unique) * per_vector)


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    import faiss  # noqa: F401  (imported before the baseline RSS: not part of the load)

    from geobridge.index import GeoIndex

    queries = np.load(spec["queries"])  # (Q, D)
    mapped_file = str(Path(spec["path"]) / "index.faiss") if spec["layout"] == "folder" else ""
    out: dict[str, Any] = {"layout": spec["layout"], "verify": spec["verify"],
                           "rss_before_mb": proc_status_mb("VmRSS"), "peak_before_mb": proc_status_mb("VmHWM")}
    start = time.perf_counter()
    index = GeoIndex.load(spec["path"], verify=spec["verify"])
    out["load_s"] = time.perf_counter() - start
    out["mapped"] = index._mapped_from is not None
    out["rss_after_load_mb"] = proc_status_mb("VmRSS")
    out["peak_after_load_mb"] = proc_status_mb("VmHWM")
    out["mapped_rss_after_load_mb"] = _mapped_rss_mb(mapped_file) if mapped_file else 0.0
    digest = hashlib.sha256()
    done, batches = 0, []
    for size in spec["batches"]:
        batch = queries[done : done + size]
        start = time.perf_counter()
        result = index.search(batch, k=spec["k"], nprobe=spec["nprobe"])
        seconds = time.perf_counter() - start
        done += size
        digest.update(np.ascontiguousarray(result.ids).tobytes())
        lists, probed = _probed_bytes(index._base, queries[:done], spec["nprobe"])
        batches.append({"queries": size, "queries_so_far": done, "search_s": seconds,
                        "rss_mb": proc_status_mb("VmRSS"), "peak_mb": proc_status_mb("VmHWM"),
                        "mapped_rss_mb": _mapped_rss_mb(mapped_file) if mapped_file else 0.0,
                        "lists_probed_so_far": lists, "probed_list_mb_so_far": probed / 2**20})
    out["batches"] = batches
    out["peak_mb"] = proc_status_mb("VmHWM")
    out["results_sha256"] = digest.hexdigest()[:16]
    return out


def _spawn(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    paths = [str(ROOT / "src"), str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_index_load", "--worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env, cwd=str(ROOT), check=False, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"index load worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------------------
# building the index (in the suite's process) and the record


def _records(n: int, *, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    lat, lon = rng.uniform(-60, 60, n).round(6).tolist(), rng.uniform(-180, 180, n).round(6).tolist()
    return [{"place_id": f"p{i:07d}", "view": "satellite", "lat": lat[i], "lon": lon[i], "path": f"tiles/{i:07d}.png"}
            for i in range(n)]


def _tree_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(ctx: Any, params: dict[str, Any], *, tmp: Path) -> dict[str, Any]:
    """Write the index as ``tmp/index.gbx`` and ``tmp/index`` (folder) and the queries; returns paths and sizes."""
    import gc

    from benchmarks._data import gallery_and_queries
    from geobridge.index import GeoIndex

    n, dim = params["n"], params["dim"]
    vectors, queries = gallery_and_queries(ctx.cache, n=n, n_queries=sum(params["batches"]), dim=dim)
    index = GeoIndex(dim, factory=params["factory"])
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    index.train(vectors[np.sort(rng.choice(n, size=min(n, params["n_train"]), replace=False))])
    index.add(vectors, _records(n, seed=2))
    build_s = time.perf_counter() - start
    ctx.log(NAME, f"built {params['factory']} over {n} x {dim} in {build_s:.0f} s; saving both layouts")
    start = time.perf_counter()
    index.save(tmp / "index.gbx")
    save_file_s = time.perf_counter() - start
    start = time.perf_counter()
    index.save_folder(tmp / "index")
    save_folder_s = time.perf_counter() - start
    del index
    gc.collect()
    np.save(tmp / "queries.npy", np.ascontiguousarray(queries, dtype=np.float32))
    return {
        "build_s": build_s, "save_file_s": save_file_s, "save_folder_s": save_folder_s,
        "file_bytes": _tree_bytes(tmp / "index.gbx"), "folder_bytes": _tree_bytes(tmp / "index"),
        "folder_files_bytes": {p.name: p.stat().st_size for p in sorted((tmp / "index").iterdir())},
        "raw_vectors_bytes": n * dim * 4,
    }


def disk_needed(params: dict[str, Any]) -> int:
    """Bytes both layouts and the queries take, with a 1.5x margin (vectors + ids + ~110 bytes of JSON a record
    + the folder's 33 bytes of columns a record)."""
    per_layout = params["n"] * (params["dim"] * 4 + 8 + 8 + 110 + 33)
    return int(1.5 * 2 * per_layout)


def bench(ctx: Any) -> dict[str, Any]:
    from benchmarks._common import Findings, ratio, size_label, skipped

    params = plan(quick=ctx.quick)
    base = Path(tempfile.gettempdir())
    free, needed = shutil.disk_usage(base).free, disk_needed(params)
    if free < needed:
        return skipped(NAME, title=TITLE, target=TARGET,
                       message=f"{base} has {free / 2**30:.1f} GiB free; the two layouts need ~{needed / 2**30:.1f}")
    with tempfile.TemporaryDirectory(prefix="gb-bench-index-load-", dir=base) as name:
        tmp = Path(name)
        sizes = build(ctx, params, tmp=tmp)
        common = {"queries": str(tmp / "queries.npy"), "batches": params["batches"], "nprobe": params["nprobe"],
                  "k": params["k"]}
        loads = {}
        variants = [("file", "file", tmp / "index.gbx", True), ("folder", "folder", tmp / "index", True)]
        if params["noverify_load"]:
            variants.append(("folder_noverify", "folder", tmp / "index", False))
        for key, layout, path, verify in variants:
            ctx.log(NAME, f"loading the {layout} layout (verify={verify}) in a fresh subprocess")
            loads[key] = _spawn({**common, "layout": layout, "path": str(path), "verify": verify})
    file, folder = loads["file"], loads["folder"]
    last, file_last = folder["batches"][-1], file["batches"][-1]
    same = len({run["results_sha256"] for run in loads.values()}) == 1
    index_mb = sizes["folder_bytes"] / 2**20
    faiss_mb = sizes["folder_files_bytes"]["index.faiss"] / 2**20
    label = f"{size_label(params['n'])} x {params['dim']} {params['factory']}"
    found = Findings(notes=[
        "One load per layout, each in a fresh subprocess (peak RSS is a high-water mark; no repetition median). "
        "RSS includes the interpreter, numpy, faiss and torch (rss_before) and the id maps; the .gbx holds the "
        "metadata records as Python dicts, the folder (format version 2) only their memory-mapped columns (ids, "
        "lat, lon, view, line offsets: 33 bytes a record), parsing a record's line when it is read; the mapped "
        "folder's index.faiss and column pages count only once touched.",
        f"Search results identical across the layouts: {same}.",
        "Warm page cache (files just written); see the module docstring for a cold cache.",
    ])
    for key, run in loads.items():
        store = found.baselines if key == "file" else found.medians
        store[f"{key}/load_s"] = run["load_s"]
        store[f"{key}/peak_rss_mb"] = run["peak_mb"]
        store[f"{key}/rss_after_load_mb"] = run["rss_after_load_mb"]
        store[f"{key}/rss_after_searches_mb"] = run["batches"][-1]["rss_mb"]
        store[f"{key}/rss_before_load_mb"] = run["rss_before_mb"]
    found.medians["folder/mapped_rss_after_load_mb"] = folder["mapped_rss_after_load_mb"]
    found.medians["folder/mapped_rss_after_searches_mb"] = last["mapped_rss_mb"]
    found.medians["folder/probed_list_mb"] = last["probed_list_mb_so_far"]
    found.medians["folder_on_disk_bytes"] = sizes["folder_bytes"]
    found.baselines["file_on_disk_bytes"] = sizes["file_bytes"]
    found.compare(f"{label}: load time, folder (mmap, checksums) vs .gbx", value=folder["load_s"],
                  baseline=file["load_s"], unit="s", key="folder_load_speedup_vs_file",
                  note=f"verify=False: {loads['folder_noverify']['load_s']:.2f} s" if "folder_noverify" in loads
                  else "")
    found.compare(f"{label}: peak RSS of the load, folder vs .gbx", value=folder["peak_after_load_mb"],
                  baseline=file["peak_after_load_mb"], unit="MiB", key="folder_peak_vs_file",
                  ratio_value=ratio(folder["peak_after_load_mb"], file["peak_after_load_mb"]),
                  ratio_name="memory ratio (folder / file)",
                  note=f"before the load {folder['rss_before_mb']:.0f} MiB (interpreter, numpy, faiss and torch, "
                  "which geobridge.index imports)")
    grown = folder["rss_after_load_mb"] - folder["rss_before_mb"]
    file_grown = file["rss_after_load_mb"] - file["rss_before_mb"]
    found.medians["folder/rss_growth_after_load_mb"] = grown
    found.baselines["file/rss_growth_after_load_mb"] = file_grown
    found.compare(f"{label}: folder RSS growth over the bare interpreter after the load vs the index size on disk",
                  value=grown, baseline=index_mb, unit="MiB", key="folder_rss_growth_vs_index_size",
                  ratio_value=ratio(grown, index_mb), ratio_name="fraction of the index size",
                  op=None if ctx.quick else "<=", threshold=None if ctx.quick else RSS_TARGET,
                  note=f"of it index.faiss pages {folder['mapped_rss_after_load_mb']:.1f} MiB (of {faiss_mb:.0f}); "
                  f"the rest is the id maps and the records' columns (lazy records); .gbx: {file_grown:.0f} MiB")
    per_record = (grown - folder["mapped_rss_after_load_mb"]) * 2**20 / params["n"]
    found.medians["folder/rss_growth_per_record_bytes"] = per_record
    found.notes.append(f"After the folder load {folder['mapped_rss_after_load_mb']:.1f} MiB of index.faiss is "
                       f"resident: the RSS growth ({grown:.0f} MiB, ~{per_record:.0f} bytes per vector) is the "
                       "id maps, the records' columns (ids, lat, lon, view, line offsets, memory-mapped; the "
                       "records stay in records.jsonl until read) and allocator slack; the .gbx parses every "
                       "record into a Python dict.")
    steps = "; ".join(f"{b['queries_so_far']} q: {b['mapped_rss_mb']:.1f} / {b['probed_list_mb_so_far']:.1f}"
                      for b in folder["batches"])
    found.compare(f"{label}: resident index.faiss pages after {last['queries_so_far']} searches (nprobe "
                  f"{params['nprobe']}) vs the lists they probe", value=last["mapped_rss_mb"],
                  baseline=last["probed_list_mb_so_far"], unit="MiB", key="mapped_rss_vs_probed_lists",
                  ratio_value=ratio(last["mapped_rss_mb"], last["probed_list_mb_so_far"]),
                  ratio_name="resident / probed",
                  note=f"{last['lists_probed_so_far']} of the lists probed; MiB resident / probed after "
                  f"{steps}; process RSS {last['rss_mb']:.0f} MiB (.gbx {file_last['rss_mb']:.0f})")
    if ctx.quick:
        found.notes.append("--quick: 20k x 32-d IVF64,Flat (a few MiB), no verify=False load: the numbers only "
                           "check the plumbing; no target.")
    return found.result(
        NAME, title=TITLE,
        parameters={**params, "method": METHOD, "queries": "fresh draws of the same clustered mixture",
                    "records": "place_id, view, lat, lon, path per vector", "loads": "one fresh subprocess each",
                    "tmp": str(base)},
        target=TARGET, details={"sizes": sizes, "loads": loads, "results_identical": same},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    parser.error("run it through the suite: python -m benchmarks --only index_load")
    return 2


if __name__ == "__main__":
    sys.exit(main())
