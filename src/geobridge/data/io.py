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
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from exc
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DataError(f"invalid JSON in {path}: {exc}") from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Objects of a JSON-lines file; blank lines are skipped, a bad line is an error naming its number."""
    return [row for _, row in read_jsonl_numbered(path)]


def read_jsonl_numbered(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of each non-blank line of a UTF-8 JSON-lines file; DataError naming ``path:line``."""
    return [(number, parse_jsonl_line(line, where=f"{path}:{number}")) for number, line in read_lines(path)]


def read_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of each non-blank line of a UTF-8 text file (lines end at ``\\n``)."""
    return [(number, decode_line(raw, where=f"{path}:{number}")) for number, raw in raw_lines(path)]


def raw_lines(path: Path) -> list[tuple[int, bytes]]:
    """``(line number, bytes)`` of each non-blank line; DataError for a missing or unreadable file."""
    if not path.is_file():
        raise DataError(f"missing file: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return [(n, raw) for n, raw in enumerate(data.split(b"\n"), start=1) if raw.strip()]


def decode_line(raw: bytes, *, where: str) -> str:
    """One line as text; a byte that is not UTF-8 is a DataError naming ``where`` (never replaced silently)."""
    try:
        return raw.decode("utf-8").removesuffix("\r")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{where}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); save the file as UTF-8"
        ) from exc


def parse_jsonl(text: str, *, source: Path | str) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of each non-blank line; a bad line is a DataError naming ``source:line``."""
    lines = enumerate(text.split("\n"), start=1)
    return [(n, parse_jsonl_line(line, where=f"{source}:{n}")) for n, line in lines if line.strip()]


def parse_jsonl_line(line: str, *, where: str) -> dict[str, Any]:
    """One JSON-lines record, which must be an object; DataError naming ``where`` otherwise."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: invalid JSON: {exc.msg}") from exc
    except RecursionError as exc:
        raise DataError(f"{where}: invalid JSON: nested too deeply") from exc
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row
