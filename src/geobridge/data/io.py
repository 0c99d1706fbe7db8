"""Reading dataset files with errors that name the file: images (via :mod:`geobridge.images`) and JSON lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from geobridge.errors import DataError
from geobridge.images import MAX_IMAGE_PIXELS, load_image

__all__ = ["IMAGE_SUFFIXES", "MAX_IMAGE_PIXELS", "list_images", "load_image", "parse_jsonl", "read_json", "read_jsonl"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_images(folder: Path) -> tuple[Path, ...]:
    """Image files directly inside ``folder``, sorted by name; () for a missing folder."""
    if not folder.is_dir():
        return ()
    return tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"missing file: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"invalid JSON in {path}: {exc}") from exc


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Objects of a JSON-lines file; blank lines are skipped, a bad line is an error naming its number."""
    if not path.is_file():
        raise DataError(f"missing file: {path}")
    return [row for _, row in parse_jsonl(path.read_text(), source=path)]


def parse_jsonl(text: str, *, source: Path | str) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of each non-blank line; a bad line is a DataError naming ``source:line``."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{source}:{number}: invalid JSON: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise DataError(f"{source}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append((number, row))
    return rows
