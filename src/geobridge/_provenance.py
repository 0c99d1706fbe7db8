"""Where a result came from: the code's git commit, UTC timestamps and a training run's record.

A training run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one line per epoch) and
``run.json`` (commit, start and end, training seconds, epochs and steps; written by the trainer). Light: no
torch import, so that reports can read a run without the trainer.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

UNKNOWN = "unknown"
RUN_CONFIG = "config.yaml"
METRICS_LOG = "metrics.jsonl"
RUN_RECORD = "run.json"


def code_commit() -> str:
    """``git describe --always --dirty --tags`` of the checkout holding this package, or ``"unknown"`` (an
    installed wheel, no git, or not a checkout)."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else UNKNOWN


def utc_now() -> str:
    """The current time in UTC, ISO 8601 to the second (``2026-12-01T11:34:42Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_run_record(run_dir: Path) -> dict[str, object]:
    """``run.json`` of a run folder; empty when it is missing or unreadable (runs of older releases)."""
    try:
        record = json.loads((Path(run_dir) / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
