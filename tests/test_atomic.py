from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from geobridge._atomic import STALE_AFTER_S, atomic_write_bytes, atomic_write_chunks, stale_temporaries
from geobridge.models.checkpoint import load_tensors, save_tensors

# a save that writes one chunk, says so, then hangs until it is killed
_HANGING_SAVE = """
import sys, time
from geobridge._atomic import atomic_write_chunks
def chunks():
    yield b"half of the new file"
    print("writing", flush=True)
    time.sleep(600)
    yield b"never"
atomic_write_chunks(sys.argv[1], chunks())
"""


def _start_hanging_save(target: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-c", _HANGING_SAVE, str(target)], env=env, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    return proc


def _temporaries(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def test_a_save_removes_what_a_killed_save_left_but_not_a_live_save(tmp_path):
    target = tmp_path / "index.gbx"
    atomic_write_bytes(target, b"old")
    killed = _start_hanging_save(target)
    os.kill(killed.pid, signal.SIGKILL)  # kill -9 mid-save
    killed.wait()
    left = _temporaries(tmp_path)
    assert len(left) == 1 and f".index.gbx.{killed.pid}." in left[0].name
    assert target.read_bytes() == b"old"  # the killed save kept the old file
    assert stale_temporaries(target) == left
    live = _start_hanging_save(target)  # the next save, in another process, removes it as it starts
    try:
        live_tmp = _temporaries(tmp_path)
        assert len(live_tmp) == 1 and f".index.gbx.{live.pid}." in live_tmp[0].name
        assert stale_temporaries(target) == []
        atomic_write_chunks(target, [b"new", b" file"])
        assert target.read_bytes() == b"new file"
        assert _temporaries(tmp_path) == live_tmp  # a live save's file stays
    finally:
        live.kill()
        live.wait()
    assert stale_temporaries(target) == live_tmp  # and once its writer is dead it is stale too


def test_old_temporaries_and_other_targets(tmp_path):
    target = tmp_path / "model.safetensors"
    legacy = tmp_path / ".model.safetensors.abcd1234.tmp"  # an older release's name, without a pid
    recent = tmp_path / ".model.safetensors.efgh5678.tmp"
    other = tmp_path / f".model.safetensors.bak.{os.getpid() + 10**7}.abcd1234.tmp"  # of "model.safetensors.bak"
    unrelated = tmp_path / ".model.safetensors.notes.tmp"
    for path in (legacy, recent, other, unrelated):
        path.write_bytes(b"x")
    old = time.time() - STALE_AFTER_S - 60
    os.utime(legacy, (old, old))
    save_tensors(target, {"w": torch.arange(6.0).reshape(2, 3)})
    assert torch.equal(load_tensors(target)["w"], torch.arange(6.0).reshape(2, 3))
    assert not legacy.exists()
    assert recent.exists() and other.exists() and unrelated.exists()
    assert stale_temporaries(target, now=time.time() + 2 * STALE_AFTER_S) == [recent]
