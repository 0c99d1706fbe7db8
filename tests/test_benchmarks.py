"""Smoke test of the benchmark suite: ``--quick`` sizes, results.json structure, positive ratios, the report."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # ``benchmarks`` is a top-level folder of the repository, not an installed package

pytest.importorskip("faiss")

# eval_memory, synth and serve start subprocesses (seconds of imports each); they have their own tests. embed and
# index_load (torchrun launches, fresh load subprocesses) run in quick mode in test_quick_embed_and_index_load.
SMOKE = ["search", "scaling", "ann", "encode", "train", "train_step", "clip_step"]
ENTRY_KEYS = {"name", "title", "status", "parameters", "medians", "baseline_medians", "ratios", "target", "met", "rows"}


def test_quick_suite_writes_results(tmp_path):
    from benchmarks.__main__ import main

    code = main(["--quick", "--quiet", "--only", ",".join(SMOKE), "--out", str(tmp_path)])
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    machine = results["machine"]
    for key in ("cpu_count", "torch", "faiss", "numpy", "date"):
        assert machine[key], key
    assert list(results["benchmarks"]) == SMOKE
    for name, entry in results["benchmarks"].items():
        assert ENTRY_KEYS <= set(entry), name
        assert entry["status"] == "ok", (name, entry.get("message"), entry.get("details", {}).get("traceback"))
        assert entry["met"] in (True, False, None)
        assert entry["medians"], name
        assert entry["rows"], name
        for key, value in entry["ratios"].items():
            if value is not None:
                assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (name, key, value)
        for key, value in {**entry["medians"], **entry["baseline_medians"]}.items():
            if isinstance(value, (int, float)):
                assert math.isfinite(value), (name, key)
        for row in entry["rows"]:
            assert row["met"] in (True, False, None)
            if row["target"] is not None:
                assert row["met"] is not None or row["ratio"] is None
    for name, entry in results["benchmarks"].items():  # every entry names its machine (merged runs keep theirs)
        assert entry["machine"]["cpu_model"] and isinstance(entry["machine"]["isa"], list), name
    search = results["benchmarks"]["search"]
    assert any(key.endswith("/numpy_s") for key in search["baseline_medians"])
    assert search["details"]["fma_peak"]["flops_per_cycle"] >= 8 and search["details"]["sgemm_gflops"] > 0
    assert all(m["geoindex_kernels"] for m in search["details"]["per_size"].values())  # the kernels it chose
    assert any(row["ratio_name"] == "fraction of FMA peak" for row in search["rows"])
    assert all(v > 0.99 for m in search["details"]["per_size"].values() for v in m["recall_at_k_vs_faiss"].values())
    markdown = (tmp_path / "results.md").read_text()
    assert "| Benchmark | Measurement |" in markdown
    for name in SMOKE:
        assert f"| {name} |" in markdown
    assert (tmp_path / "scaling.png").stat().st_size > 0
    assert (tmp_path / "ann_tradeoff.png").stat().st_size > 0


@pytest.mark.parametrize(("vendor", "family", "model", "isa", "expected"), [
    ("AuthenticAMD", 25, 17, ["avx2", "fma", "avx512f"], 32),  # Zen 4: AVX-512 on 256-bit pipes
    ("AuthenticAMD", 26, 2, ["avx2", "fma", "avx512f"], 64),  # Zen 5
    ("AuthenticAMD", 23, 49, ["avx2", "fma"], 32),  # Zen 2
    ("AuthenticAMD", 23, 1, ["avx2", "fma"], 16),  # Zen 1
    ("GenuineIntel", 6, 143, ["avx2", "fma", "avx512f", "amx_tile"], 64),
    ("GenuineIntel", 6, 85, ["avx2", "fma"], 32),
    ("GenuineIntel", 6, 42, ["sse4_2"], 8),
])
def test_fma_peak_per_cycle_follows_the_microarchitecture(vendor, family, model, isa, expected):
    from benchmarks._machine import flops_per_cycle, label

    info = {"vendor": vendor, "family": family, "model_number": model, "isa": isa}
    per_cycle, basis = flops_per_cycle(info)
    assert per_cycle == expected and basis
    assert label({"cpu_model": "X", "cpu_family": family, "cpu_model_number": model, "cores": 2, "isa": isa}) \
        .startswith(f"X (family {family} model {model}), 2 cores")


def test_only_rejects_unknown_names():
    from benchmarks.__main__ import parse_only

    assert parse_only("ann,search") == ["search", "ann"]  # suite order
    with pytest.raises(SystemExit, match="unknown benchmark"):
        parse_only("search,nope")


def test_report_renders_skipped_and_failed_entries():
    from benchmarks._common import make_result, skipped, target_row
    from benchmarks._report import render_markdown

    ok = make_result(
        "demo",
        title="Demo",
        medians={"a_s": 1.0},
        baseline_medians={"b_s": 2.0},
        ratios={"speedup": 2.0},
        rows=[target_row(metric="a vs b", value=1.0, baseline=2.0, unit="s", ratio_value=2.0, op=">=", threshold=3.0)],
    )
    assert ok["met"] is False
    results = {
        "machine": {"date": "today"},
        "benchmarks": {
            "demo": ok,
            "synth": skipped("synth", title="Synth", message="benchmarks/bench_synth.py is not there yet"),
            "boom": make_result("boom", title="Boom", status="error", message="RuntimeError: x"),
        },
    }
    text = render_markdown(results)
    assert "| demo | a vs b | 1.00 s | 2.00 s | 2x | >= 3 | **no** |" in text
    assert "not there yet" in text and "RuntimeError: x" in text


def test_findings_collect_rows_ratios_and_the_record():
    from benchmarks._common import Findings

    found = Findings(medians={"a_s": 1.0})
    assert found.compare("a vs b", value=0.5, baseline=2.0, unit="s", key="a_speedup", op=">=", threshold=3.0) == 4.0
    assert found.compare("qps", value=300.0, baseline=100.0, unit="q/s") == 3.0  # throughput: value / baseline
    assert found.compare("info", value=1.0, baseline=None, unit="", ratio_value=None) is None
    found.notes.append("collected")
    record = found.result("demo", title="Demo", target="x", notes=["given"])
    assert record["ratios"] == {"a_speedup": 4.0} and record["medians"] == {"a_s": 1.0}
    assert [r["ratio"] for r in record["rows"]] == [4.0, 3.0, None]
    assert [r["ratio_name"] for r in record["rows"]] == ["speed-up", "speed-up", ""]
    assert record["rows"][0]["target"] == ">= 3" and record["rows"][0]["met"] is True and record["met"] is True
    assert record["notes"] == ["collected", "given"] and record["target"] == "x"


def test_quick_prior_benchmark_compares_the_prior_with_no_prior_and_the_old_path(tmp_path):
    from benchmarks.__main__ import main

    assert main(["--quick", "--quiet", "--only", "prior", "--out", str(tmp_path)]) == 0
    entry = json.loads((tmp_path / "results.json").read_text())["benchmarks"]["prior"]
    assert entry["status"] == "ok", (entry.get("message"), entry.get("details", {}).get("traceback"))
    for gallery in entry["details"]["per_gallery"]:
        assert gallery["same_ids_as_old"] is True  # the new path returns what the old one did
        assert 0 < gallery["disc_entries"] < gallery["n"]
        assert all(v > 0 and math.isfinite(v) for v in gallery["s"].values())
    labels = {row["metric"].split(":")[0] for row in entry["rows"]}
    assert labels == {"Flat 4000", "IVF16,Flat 4000"}
    assert {"Flat 4000/prior_speedup_vs_no_prior", "Flat 4000/lookup_speedup_vs_full_haversine",
            "Flat 4000/share0.1_subset_speedup_vs_selector"} <= set(entry["ratios"])
    assert "| prior |" in (tmp_path / "results.md").read_text()


@pytest.mark.slow  # ~25 s on a free 2-core machine: two torchrun launches and two fresh index-load subprocesses
def test_quick_embed_and_index_load(tmp_path):
    from benchmarks.__main__ import main

    assert main(["--quick", "--quiet", "--only", "embed,index_load", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())["benchmarks"]
    assert list(results) == ["embed", "index_load"]
    for name, entry in results.items():
        assert entry["status"] == "ok", (name, entry.get("message"), entry.get("details", {}).get("traceback"))
        assert entry["rows"] and all(math.isfinite(v) and v > 0 for v in entry["ratios"].values() if v is not None)

    embed = results["embed"]
    (config,) = embed["details"]["per_config"]
    assert config["same_records"] and config["max_abs_diff"] <= 1e-5  # a shard's batches never depend on the ranks
    assert config["shape"] == [16, 128]
    assert [v["ranks"] for v in config["variants"].values()] == [1, 2]  # the diagnosis run is full size only
    for key, runs in config["runs"].items():
        (run,) = runs
        assert run["summary"]["count"] == 16
        assert run["summary"]["ranks"] == run["ranks"] == config["variants"][key]["ranks"]
        assert len(run["rank_embed_s"]) == run["ranks"] and 0 < run["embed_s"] < run["wall_s"]
        assert 0 < run["startup_s"] < run["wall_s"]
    assert embed["parameters"]["threads_per_rank"]["1 rank"] >= embed["parameters"]["threads_per_rank"]["2 ranks"]

    load = results["index_load"]
    details = load["details"]
    assert details["results_identical"]
    file, folder = details["loads"]["file"], details["loads"]["folder"]
    assert folder["mapped"] and not file["mapped"]
    faiss_mb = details["sizes"]["folder_files_bytes"]["index.faiss"] / 2**20
    assert folder["mapped_rss_after_load_mb"] < 0.25 * faiss_mb  # loading reads no inverted list
    resident = [batch["mapped_rss_mb"] for batch in folder["batches"]]
    assert resident == sorted(resident) and 0 < resident[-1] <= faiss_mb + 0.1  # grows with the probed lists
    assert all(batch["mapped_rss_mb"] == 0 for batch in file["batches"])
    assert file["peak_mb"] >= file["rss_before_mb"] and details["sizes"]["file_bytes"] > 0


def test_busy_note_counts_other_processes_not_the_run_itself():
    import subprocess
    import sys
    import time

    from benchmarks.__main__ import _cpu_clock, _load_notes, _other_cpu_share

    def share_while(work) -> float:
        start, t0 = _cpu_clock(), time.perf_counter()
        after = work()
        end, seconds = _cpu_clock(), time.perf_counter() - t0
        if after is not None:
            after()
        return _other_cpu_share(start, end, seconds=seconds, cpus=os.cpu_count() or 1)

    def own_work():  # this process and its waited-for child keep a core busy: not "other processes"
        end = time.perf_counter() + 0.6
        while time.perf_counter() < end:
            pass
        subprocess.run([sys.executable, "-c", "import time\nend = time.time() + 0.4\nwhile time.time() < end: pass"],
                       check=True)

    def others_work():  # another process keeps a core busy while this one sleeps; reaped after the snapshot
        other = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)
        other.kill()
        return other.wait

    if _cpu_clock() is None:
        pytest.skip("/proc/stat is not readable here")
    cpus = os.cpu_count() or 1
    if share_while(lambda: time.sleep(0.5)) > 0.3 / cpus:  # what this test measures is the machine's own quiet
        pytest.skip("other processes keep this machine busy: the busy note's share cannot be checked against it")
    assert share_while(own_work) < 0.5 / cpus  # background noise of the machine only
    busy = share_while(others_work)
    assert busy > 0.6 / cpus
    assert "other processes used" in _load_notes({"other_cpu_share": busy, "cpu_count": cpus})[0]
    assert _load_notes({"other_cpu_share": 0.02, "load_average_at_start": [2.0, 2.0, 2.0], "cpu_count": 2}) == []
    assert "load average" in _load_notes({"load_average_at_start": [2.0, 2.0, 2.0], "cpu_count": 2})[0]
