"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder ``ckpt-<epoch>`` holding the model (``model/``), ``train_state.safetensors`` and
``train_state.json``; for fp16 runs the latter also holds the GradScaler's state (``grad_scaler``: loss scale,
growth tracker and factors, plain numbers), so a resumed run continues with the loss scale it had reached.
``latest.json`` in the run folder names the newest complete checkpoint and is replaced atomically after the
folder is fully written, so a run killed mid-save resumes from the previous checkpoint.

``metrics.jsonl`` gets an epoch's line just before that epoch's checkpoint is committed, so a run killed in
between has logged an epoch that its newest checkpoint does not hold; :func:`truncate_metrics` drops such
lines (and a torn last line) before a resumed run logs the epoch again.

``run.json`` records the run's provenance for reports: the code's commit, when it started and finished, its
training time (seconds, summed over resumes), the epochs and steps done.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from geobridge._atomic import atomic_write_json, atomic_write_text
from geobridge._provenance import METRICS_LOG, RUN_RECORD, code_commit, read_run_record, utc_now
from geobridge.errors import CheckpointError
from geobridge.models.checkpoint import load_tensors, read_json, save_tensors

LATEST = "latest.json"
METRICS = METRICS_LOG
SCALER_KEYS = {"scale": float, "growth_factor": float, "backoff_factor": float, "growth_interval": int,
               "_growth_tracker": int}  # torch.amp.GradScaler.state_dict()


def optimizer_to_flat(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (safetensors) and JSON-able metadata."""
    tensors: dict[str, torch.Tensor] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for param_id, entry in state["state"].items():
        meta: dict[str, Any] = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                name = f"optimizer/{param_id}/{key}"
                tensors[name] = value
                meta[key] = {"tensor": name}
            else:
                meta[key] = value
        per_param[str(param_id)] = meta
    return tensors, {"state": per_param, "param_groups": state["param_groups"]}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for param_id, entry in meta["state"].items():
        state[int(param_id)] = {
            key: tensors[value["tensor"]] if isinstance(value, dict) and "tensor" in value else value
            for key, value in entry.items()
        }
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    run_dir: Path,
    *,
    model: Any,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    step: int,
    extra: dict[str, Any],
    grad_scaler: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write ``ckpt-<epoch>`` completely, then point ``latest.json`` at it, then prune old checkpoints.

    ``grad_scaler`` is ``GradScaler.state_dict()`` of an fp16 run (None otherwise: nothing is written for it)."""
    folder = run_dir / f"ckpt-{epoch:04d}"
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder / "model")
    tensors, optim_meta = optimizer_to_flat(optimizer.state_dict())
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda{i}"] = s
    save_tensors(folder / "train_state.safetensors", tensors)
    state: dict[str, Any] = {"epoch": epoch, "step": step, "optimizer": optim_meta, "extra": extra}
    if grad_scaler:  # a disabled scaler's state_dict() is empty
        state["grad_scaler"] = _scaler_state(grad_scaler, where="grad_scaler")
    atomic_write_json(folder / "train_state.json", state)
    atomic_write_json(run_dir / LATEST, {"checkpoint": folder.name, "epoch": epoch, "step": step})
    old = sorted(p for p in run_dir.glob("ckpt-*") if p.is_dir() and p != folder)
    for stale in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    return folder


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / LATEST
    if not pointer.is_file():
        return None
    folder = run_dir / str(read_json(pointer).get("checkpoint", ""))
    if not (folder / "train_state.json").is_file():
        raise CheckpointError(f"{pointer} names {folder}, which is incomplete or missing")
    return folder


def load_train_state(folder: Path) -> dict[str, Any]:
    """Read a checkpoint's training state: ``epoch``, ``step``, ``optimizer`` (a state dict), ``rng``, ``extra``
    and ``grad_scaler`` (a GradScaler state dict, or None for checkpoints of runs without one or written before
    the scaler was saved)."""
    meta = read_json(folder / "train_state.json")
    scaler = meta.get("grad_scaler")
    if scaler is not None:
        scaler = _scaler_state(scaler, where=f"{folder / 'train_state.json'}: grad_scaler")
    tensors = load_tensors(folder / "train_state.safetensors")
    try:
        optimizer = optimizer_from_flat(tensors, meta["optimizer"])
        return {
            "epoch": int(meta["epoch"]),
            "step": int(meta["step"]),
            "optimizer": optimizer,
            "rng_torch": tensors["rng/torch"],
            "rng_cuda": [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda")],
            "extra": meta.get("extra", {}),
            "grad_scaler": scaler,
        }
    except KeyError as exc:
        raise CheckpointError(f"incomplete training state in {folder}: missing {exc}") from exc


def _scaler_state(state: Any, *, where: str) -> dict[str, Any]:
    """A GradScaler state dict checked to hold its numbers (``scale`` > 0 and finite); CheckpointError naming
    ``where`` and the key otherwise."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{where} must be a GradScaler state dict, got {type(state).__name__}")
    out: dict[str, Any] = {}
    for key, kind in SCALER_KEYS.items():
        value = state.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CheckpointError(f"{where}.{key} must be a finite number, got {value!r}")
        out[key] = kind(value)
    if out["scale"] <= 0:
        raise CheckpointError(f"{where}.scale must be > 0, got {out['scale']}")
    return out


def truncate_metrics(path: Path, *, before_epoch: int) -> int:
    """Keep only the lines of ``path`` (a ``metrics.jsonl``) for epochs before ``before_epoch``, the first epoch
    a (resumed) run trains; drop the others and any line that is not a JSON record. Returns the lines dropped."""
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    kept = [line for line in lines if _epoch_of(line) is not None and _epoch_of(line) < before_epoch]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


def _epoch_of(line: str) -> int | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    epoch = record.get("epoch") if isinstance(record, dict) else None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def start_run_record(run_dir: Path, *, resumed: bool) -> dict[str, Any]:
    """Write ``run.json`` as a run (re)starts: a resumed run keeps its start time and commit."""
    record = read_run_record(run_dir) if resumed else {}
    record.setdefault("started", utc_now())
    record.setdefault("commit", code_commit())
    record.pop("finished", None)
    atomic_write_json(run_dir / RUN_RECORD, record)
    return record


def finish_run_record(
    run_dir: Path,
    *,
    train_s: float,
    epochs: int,
    steps: int,
    norm_recalibration: dict[str, int] | None = None,
    text_align: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Complete ``run.json`` when training ends (``norm_recalibration``: images per view of precise BN;
    ``text_align``: the text alignment's record, when it ran)."""
    record = read_run_record(run_dir)
    record.setdefault("commit", code_commit())
    record.update(finished=utc_now(), train_s=round(train_s, 2), epochs=epochs, steps=steps,
                  norm_recalibration=norm_recalibration or {})
    if text_align:
        record["text_align"] = text_align
    atomic_write_json(run_dir / RUN_RECORD, record)
    return record


# settings that change how a model is run, not what it is: a run may resume with another value
RESUMABLE_CHANGES = ("image.grad_checkpointing",)


def config_changes(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: <saved> in the checkpoint, <current> now`` for each dotted key whose value differs (except
    ``RESUMABLE_CHANGES``)."""
    out = []
    for key in sorted(set(saved) | set(current), key=str):
        dotted = f"{prefix}{key}"
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out.extend(config_changes(old, new, prefix=f"{dotted}."))
        elif old != new and dotted not in RESUMABLE_CHANGES:
            out.append(f"{dotted}: {old!r} in the checkpoint, {new!r} now")
    return out
