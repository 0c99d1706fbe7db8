"""What a report says about the run behind a checkpoint: dates, commits, seed, epochs, training time, and how the
image views were normalised.

Read from the run folder's files (``geobridge._provenance``): ``config.yaml`` for the seed and the epochs asked
for, ``run.json`` for the commit, the end of training and its duration, ``metrics.jsonl`` for the epochs done
(and the training time of runs without ``run.json``). A checkpoint that is not a run folder, or a run of an
older release, gives ``unknown`` where a file is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from geobridge._provenance import METRICS_LOG, RUN_CONFIG, UNKNOWN, code_commit, read_run_record, utc_now


def run_folder(checkpoint: str | Path) -> Path | None:
    """The training run folder of ``checkpoint`` (a run folder, or its ``model/``), or None."""
    path = Path(checkpoint)
    for folder in (path, path.parent):
        if (folder / RUN_CONFIG).is_file():
            return folder
    return None


def describe_run(checkpoint: str | Path) -> dict[str, str]:
    """Ordered ``{what: value}`` lines for a report's run section (values are strings, ``unknown`` if missing)."""
    folder = run_folder(checkpoint)
    record = read_run_record(folder) if folder is not None else {}
    config = _read_config(folder / RUN_CONFIG) if folder is not None else {}
    epochs = _read_epochs(folder / METRICS_LOG) if folder is not None else []
    train_s = record.get("train_s")
    if not isinstance(train_s, (int, float)) and epochs:
        train_s = epochs[-1].get("elapsed_s")
    asked = _get(config, "optim", "epochs")
    done = record.get("epochs", len(epochs) if epochs else None)
    return {
        "report written": utc_now(),
        "report commit": code_commit(),
        "training run": str(folder) if folder is not None else f"{checkpoint} (no run folder)",
        "training finished": str(record.get("finished") or UNKNOWN),
        "training commit": str(record.get("commit") or UNKNOWN),
        "seed": str(_get(config, "train", "seed") if _get(config, "train", "seed") is not None else UNKNOWN),
        "epochs": _epochs_text(done, asked),
        "training time": _duration(train_s) if isinstance(train_s, (int, float)) else UNKNOWN,
        "image normalisation": _image_norm(folder / "model" if folder is not None else Path(checkpoint)),
    }


def _image_norm(model_dir: Path) -> str:
    """``image.norm`` of the checkpoint's config.json; a config from before the option kept one set for all views."""
    try:
        image = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["model"]["image"]
    except (OSError, ValueError, KeyError, TypeError):
        return UNKNOWN
    if not isinstance(image, dict):
        return UNKNOWN
    if not image.get("share_backbone", True):
        return "one backbone per view"
    norm = image.get("norm", "batch")
    return {"view_batch": "view_batch (BatchNorm statistics per view)",
            "batch": "batch (one set of BatchNorm statistics for all views)",
            "group": "group (GroupNorm, no batch statistics)"}.get(str(norm), str(norm))


def _read_config(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_epochs(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _get(config: dict[str, Any], section: str, key: str) -> Any:
    part = config.get(section)
    return part.get(key) if isinstance(part, dict) else None


def _epochs_text(done: object, asked: object) -> str:
    if isinstance(done, int) and isinstance(asked, int):
        return f"{done} of {asked}"
    if isinstance(done, int):
        return str(done)
    return f"{UNKNOWN} of {asked}" if isinstance(asked, int) else UNKNOWN


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    return f"{seconds:.0f} s ({minutes:.1f} min)" if minutes < 120 else f"{seconds:.0f} s ({minutes / 60:.2f} h)"
