"""Reading dataset files with errors that name the file: images (via :mod:`geobridge.images`) and JSON lines."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from geobridge.errors import DataError
from geobridge.images import MAX_IMAGE_PIXELS, load_image

__all__ = [
    "IMAGE_SUFFIXES", "MAX_IMAGE_PIXELS", "list_images", "load_image", "parse_jsonl", "read_json", "read_jsonl",
    "scan_images",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_images(folder: Path) -> tuple[Path, ...]:
    """Image files directly inside ``folder``, sorted by name; () for a missing folder. An entry that is not a
    regular readable file (see :func:`scan_images`) is a DataError naming it, never skipped."""
    images, bad = scan_images(folder)
    if bad:
        path, reason = bad[0]
        more = f" (and {len(bad) - 1} more entries in {folder})" if len(bad) > 1 else ""
        raise DataError(f"{path}: {reason}{more}")
    return images


def scan_images(folder: Path) -> tuple[tuple[Path, ...], list[tuple[Path, str]]]:
    """``(image files, bad entries)`` of ``folder``, both sorted by name; ``((), [])`` for a missing folder.

    Image files are regular files with an image suffix. Bad entries are ``(path, reason)``: ``folder`` itself when
    it exists but is not a readable folder; inside it, a dangling or looping symlink, a FIFO, socket or device, a
    folder with an image suffix, or an image file that cannot be read. Other regular files (notes, thumbnails
    databases) and sub-folders are not images and are left alone.
    """
    if not os.path.lexists(folder):
        return (), []
    if not folder.is_dir():
        return (), [(folder, f"expected a folder of images, found {_kind(folder)}")]
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        return (), [(folder, f"cannot list the folder: {exc.strerror or exc}")]
    images, bad = [], []
    for entry in entries:
        path = Path(entry.path)
        is_image = path.suffix.lower() in IMAGE_SUFFIXES
        try:
            mode = entry.stat().st_mode  # follows symlinks: a dangling or looping one raises
        except OSError as exc:
            what = "a symlink loop" if exc.errno == errno.ELOOP else "a dangling symlink"
            bad.append((path, f"{what}, not a readable file" if entry.is_symlink() else f"cannot stat: {exc}"))
            continue
        if stat.S_ISDIR(mode):
            if is_image:
                bad.append((path, "a folder with an image suffix, not an image file"))
        elif not stat.S_ISREG(mode):
            bad.append((path, f"{_kind(path)}, not a regular file"))
        elif is_image:
            if os.access(path, os.R_OK):
                images.append(path)
            else:
                bad.append((path, "not readable (permissions)"))
    return tuple(images), bad


def _kind(path: Path) -> str:
    """What ``path`` is, in words, for messages about entries that should be files or folders."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "a dangling or looping symlink" if path.is_symlink() else "an unreadable entry"
    for test, word in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISREG, "a file"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return word
    return "a special file"


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
