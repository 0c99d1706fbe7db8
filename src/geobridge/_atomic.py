"""Atomic file writes: a temporary file beside the target, fsync, then ``os.replace``.

A write that is interrupted at any point leaves the previous file untouched. The temporary file is
``.<name>.<pid>.<random>.tmp``; an interrupted write removes its own, and one killed outright (kill -9, power
loss) leaves it behind. Every later write of the same target therefore first removes the temporary files of
that target left by dead writers: those whose pid is no longer running, and any not modified for
``STALE_AFTER_S`` (a temporary file of an older release without a pid, or a pid since reused). A live write
of the same target by another process, or by another thread of this one, is never touched. Light on
purpose: no torch or faiss import.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

STALE_AFTER_S = 3600.0  # a temporary file unmodified this long belongs to no live write
_TMP_TAIL = re.compile(r"^(?:(?P<pid>\d+)\.)?[A-Za-z0-9_]{8}\.tmp$")  # after ".<name>."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write the new file to; on a clean exit it is fsynced and
    renamed over ``path`` (and the rename made durable); on an exception it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def atomic_write_chunks(path: str | os.PathLike[str], chunks: Iterable[bytes]) -> Path:
    """Write ``chunks`` in order to ``path`` atomically and make the rename durable; return the path."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write_chunks(path, (data,))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_chunks(path, (text.encode("utf-8"),))


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def stale_temporaries(path: str | os.PathLike[str], *, now: float | None = None) -> list[Path]:
    """The temporary files of ``path``'s atomic writes whose writer is dead (see the module docstring)."""
    path = Path(path)
    prefix = f".{path.name}."
    now = time.time() if now is None else now
    stale = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        match = _TMP_TAIL.match(entry.name[len(prefix) :])
        if match is None:  # another target whose name extends this one (".a.b.<pid>...tmp" for "a")
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:  # removed meanwhile
            continue
        pid = match.group("pid")
        if age > STALE_AFTER_S or (pid is not None and not _alive(int(pid))):
            stale.append(Path(entry.path))
    return sorted(stale)


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove what :func:`stale_temporaries` finds for ``path``; return what was removed."""
    removed = []
    for tmp in stale_temporaries(path):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may be writing
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists under another user, or cannot tell: keep its file
        return True
    return True


def _fsync_folder(folder: Path) -> None:
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on this platform / file system
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
