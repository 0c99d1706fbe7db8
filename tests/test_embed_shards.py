"""Sharded gallery embedding: ranks agree with one process, and a killed run resumes without redoing shards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from geobridge.cli.main import main
from geobridge.errors import IndexFormatError
from geobridge.index import GeoIndex
from geobridge.index.shards import MANIFEST, load_embeddings

TORCHRUN = Path(sys.executable).with_name("torchrun")


def _embed_args(world, out: Path, *extra: str) -> list[str]:
    return ["embed", "--checkpoint", str(world["run"]), "--data", str(world["data"]), "--views", "drone,satellite",
            "--out", str(out), "--shard-size", "2", "--batch-size", "2", "--num-workers", "0", "--no-progress",
            *extra]


def _run(args: list[str], capsys) -> dict:
    capsys.readouterr()
    assert main(args) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed")
def test_two_ranks_give_the_embeddings_of_one_process_and_of_encode(world, tmp_path, capsys):
    single = _run(_embed_args(world, tmp_path / "one"), capsys)
    assert single == {"out": str(tmp_path / "one"), "count": 12, "shards": 6, "embedded": 6, "skipped": 0,
                      "ranks": 1}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = _embed_args(world, tmp_path / "two")
    args[args.index("--num-workers") + 1] = "1"  # and decode in a loader worker
    ddp = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "geobridge.cli.main", *args],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert json.loads(ddp.stdout.strip().splitlines()[-1])["embedded"] == 6
    one, records_one, manifest = load_embeddings(tmp_path / "one")
    two, records_two, _ = load_embeddings(tmp_path / "two")
    assert records_one == records_two and [r["view"] for r in records_one] == ["drone"] * 6 + ["satellite"] * 6
    assert one.shape == (12, world["model"].embed_dim) and manifest["complete"]
    np.testing.assert_allclose(two, one, rtol=0, atol=1e-6)
    for view in ("drone", "satellite"):  # the same vectors as model.encode, which index build uses
        rows = [i for i, r in enumerate(records_one) if r["view"] == view]
        expected = world["model"].encode([records_one[i]["path"] for i in rows], view=view, show_progress_bar=False)
        np.testing.assert_allclose(one[rows], expected, rtol=0, atol=1e-5)

    built = _run(["index", "build", "--from-embeddings", str(tmp_path / "two"), "--out", str(tmp_path / "x.gbx")],
                 capsys)
    assert built["count"] == 12 and built["places"] == 6
    index = GeoIndex.load(tmp_path / "x.gbx")
    hits = index.search(one[:3], k=1)
    assert [hits.metadata(q)[0]["path"] for q in range(3)] == [r["path"] for r in records_one[:3]]  # itself


def test_killed_embed_resumes_without_redoing_finished_shards(world, tmp_path, capsys):
    out = tmp_path / "shards"
    _run(_embed_args(world, out), capsys)
    reference, _, _ = load_embeddings(out)
    # what a kill -9 during shards 1 and 3 leaves: shard 1's file never renamed into place, shard 3's marker
    # never written after its file, a torn temporary file, and the manifest not yet complete
    (out / "shard-00001.npy").unlink()
    (out / "shard-00003.json").unlink()
    (out / ".shard-00001.npy.999999.abcdefgh.tmp").write_bytes(b"torn")
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "complete": False, "sha256": None}))
    with pytest.raises(IndexFormatError, match="incomplete"):
        load_embeddings(out)
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.npy")}
    assert len(kept) == 5
    resumed = _run(_embed_args(world, out), capsys)
    assert resumed["embedded"] == 2 and resumed["skipped"] == 4
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.npy")}
    assert {name: after[name] for name in kept if name != "shard-00003.npy"} == {
        name: t for name, t in kept.items() if name != "shard-00003.npy"}  # finished shards were not rewritten
    assert after["shard-00003.npy"] != kept["shard-00003.npy"] and "shard-00001.npy" in after
    vectors, _, manifest = load_embeddings(out)
    np.testing.assert_allclose(vectors, reference, rtol=0, atol=1e-6)
    assert manifest["complete"] and not list(out.glob(".*.tmp"))
    again = _run(_embed_args(world, out), capsys)  # a finished folder: nothing to do
    assert again["embedded"] == 0 and again["skipped"] == 6
    built = _run(["index", "build", "--from-embeddings", str(out), "--layout", "folder", "--factory", "IVF2,Flat",
                  "--out", str(tmp_path / "idx")], capsys)
    assert built["count"] == 12 and (tmp_path / "idx" / "manifest.json").is_file()
    assert main(["index", "info", str(tmp_path / "idx")]) == 0
    info = json.loads(capsys.readouterr().out)  # indented JSON
    assert info["count"] == 12 and info["factory"] == "IVF2,Flat"


def test_embed_refuses_a_folder_of_other_embeddings_and_corrupt_shards(world, tmp_path, capsys):
    out = tmp_path / "shards"
    _run(_embed_args(world, out), capsys)
    capsys.readouterr()
    assert main(_embed_args(world, out, "--shard-size", "3")) == 2  # the last --shard-size wins
    assert "shard_size" in capsys.readouterr().err
    shard = out / "shard-00002.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="shard-00002.npy: checksum"):
        load_embeddings(out)
    assert main(["index", "build", "--from-embeddings", str(out), "--checkpoint", str(world["run"]),
                 "--out", str(tmp_path / "x.gbx")]) == 2
    shutil.rmtree(out)
    with pytest.raises(IndexFormatError, match="no manifest.json"):
        load_embeddings(out)
