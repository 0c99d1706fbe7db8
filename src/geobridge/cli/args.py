"""Typed command-line arguments: the one place where option values are checked, at the door.

Every option that takes a value gets its ``type=`` from here (or argparse ``choices=``): a small frozen dataclass
whose ``__call__`` turns the text into a value or raises ``argparse.ArgumentTypeError``, which argparse prints as
``geobridge <command>: error: argument --batch-size: expected an int in [1, 65536], got '0'`` with exit code 2,
before any work starts. Numbers are bounded on both sides and finite; names are among the known ones; input paths
exist and are of the right kind. The classes are plain data, so the CLI fuzz tests read their bounds.

``--out`` follows one rule (:func:`check_output`), applied by ``cli.main.parse`` once the command line is parsed:
a ``file`` output may exist only as a regular file (replaced atomically), a ``folder`` output only as a folder (to
fill), a ``new-folder`` output not at all; in every case the nearest existing parent is a writable folder.
Light on purpose: nothing heavy is imported to build the parser.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from geobridge.errors import GeoBridgeError
from geobridge.schema import Range

OUT_KINDS = ("file", "folder", "new-folder")
MAX_BATCH = 65536
MAX_COUNT = 10_000_000  # places, images, shard sizes: far above any real dataset, far below a runaway
MAX_SEED = 2**32 - 1  # numpy's seed range
HALF_EARTH_KM = 20037.5  # no two points on Earth are further apart
_COUNTRY = re.compile(r"[A-Z]{2}")
_DEVICE = re.compile(r"cpu|mps|cuda(:\d{1,2})?")


def _refuse(expected: str, text: str) -> argparse.ArgumentTypeError:
    shown = text if len(text) <= 300 else text[:297] + "..."  # a path in full; a runaway value cut
    return argparse.ArgumentTypeError(f"expected {expected}, got {shown!r}")


@dataclass(frozen=True)
class Integer:
    """An int in ``[lo, hi]``."""

    lo: int
    hi: int

    def describe(self) -> str:
        return f"an int in [{self.lo}, {self.hi}]"

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise _refuse(self.describe(), text) from None
        if not self.lo <= value <= self.hi:
            raise _refuse(self.describe(), text)
        return value


@dataclass(frozen=True)
class Number:
    """A finite float in ``range`` (a :class:`geobridge.schema.Range` with both sides set)."""

    range: Range

    def describe(self) -> str:
        return f"a finite number {self.range.describe()}"

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise _refuse(self.describe(), text) from None
        if not math.isfinite(value) or not self.range.contains(value):
            raise _refuse(self.describe(), text)
        return value


@dataclass(frozen=True)
class NumberList:
    """Comma-separated finite floats, each in ``item.range``; at least one."""

    item: Number

    def describe(self) -> str:
        return f"comma-separated numbers {self.item.range.describe()}"

    def __call__(self, text: str) -> tuple[float, ...]:
        parts = [part.strip() for part in text.split(",")]
        try:
            values = tuple(self.item(part) for part in parts)
        except argparse.ArgumentTypeError:
            raise _refuse(self.describe(), text) from None
        return values


@dataclass(frozen=True)
class Names:
    """Comma-separated names, each among ``known()``; at least one, duplicates dropped (``single``: exactly one)."""

    known: Callable[[], tuple[str, ...]]
    what: str
    single: bool = False

    def describe(self) -> str:
        names = ", ".join(self.known())
        return f"one {self.what} of {names}" if self.single else f"comma-separated {self.what}s among {names}"

    def __call__(self, text: str) -> tuple[str, ...] | str:
        names = tuple(dict.fromkeys(part.strip() for part in text.split(",")))
        known = self.known()
        if not names or any(name not in known for name in names) or (self.single and len(names) != 1):
            raise _refuse(self.describe(), text)
        return names[0] if self.single else names


@dataclass(frozen=True)
class CountryCodes:
    """Comma-separated two-letter country codes (any case, given upper-case), among ``known()`` when set."""

    known: Callable[[], tuple[str, ...]] | None = None

    def describe(self) -> str:
        among = f" among {', '.join(self.known())}" if self.known else ""
        return f"comma-separated two-letter country codes{among}"

    def __call__(self, text: str) -> tuple[str, ...]:
        codes = tuple(dict.fromkeys(part.strip().upper() for part in text.split(",")))
        known = self.known() if self.known else None
        if not codes or any(not _COUNTRY.fullmatch(c) or (known is not None and c not in known) for c in codes):
            raise _refuse(self.describe(), text)
        return codes


@dataclass(frozen=True)
class LatLon:
    """``LAT,LON`` in degrees, latitude in [-90, 90] and longitude in [-180, 180]."""

    def describe(self) -> str:
        return "LAT,LON in degrees (e.g. 50.08,14.42), latitude in [-90, 90], longitude in [-180, 180]"

    def __call__(self, text: str) -> tuple[float, float]:
        parts = text.split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            lat = Number(Range(-90.0, 90.0))(parts[0])
            lon = Number(Range(-180.0, 180.0))(parts[1])
        except (ValueError, argparse.ArgumentTypeError):
            raise _refuse(self.describe(), text) from None
        return lat, lon


@dataclass(frozen=True)
class Device:
    """A torch device name: cpu, cuda, cuda:N or mps (and ``auto`` when allowed). Availability is the model's
    loader's to check (a one-line error there)."""

    auto: bool = False

    def describe(self) -> str:
        return f"{'auto, ' if self.auto else ''}cpu, cuda, cuda:N or mps"

    def __call__(self, text: str) -> str:
        if not (_DEVICE.fullmatch(text) or (self.auto and text == "auto")):
            raise _refuse(self.describe(), text)
        return text


@dataclass(frozen=True)
class Existing:
    """An input path that exists: a ``file``, a ``folder`` or ``any`` (either). Returned as given."""

    kind: str

    def describe(self) -> str:
        return {"file": "an existing file", "folder": "an existing folder"}.get(self.kind, "an existing path")

    def __call__(self, text: str) -> str:
        path = Path(text)
        found = path.is_file() if self.kind == "file" else path.is_dir() if self.kind == "folder" else path.exists()
        if not text or not found:
            raise _refuse(self.describe(), text)
        return text


@dataclass(frozen=True)
class Output:
    """An output path (the kind-specific part of the rule is :func:`check_output`): non-empty text. Returned as
    given."""

    def describe(self) -> str:
        return "an output path"

    def __call__(self, text: str) -> str:
        if not text.strip() or "\0" in text:
            raise _refuse(self.describe(), text)
        return text


# ------------------------------------------------------------------------------------------------------ factories
def integer(*, lo: int, hi: int) -> Integer:
    return Integer(lo, hi)


def count(*, lo: int = 1, hi: int = MAX_COUNT) -> Integer:
    """A number of things: at least ``lo`` (1), at most ``hi``."""
    return Integer(lo, hi)


def batch_size(*, lo: int = 1) -> Integer:
    return Integer(lo, MAX_BATCH)


def seed() -> Integer:
    return Integer(0, MAX_SEED)


def port() -> Integer:
    """A TCP port; 0 lets the system pick a free one."""
    return Integer(0, 65535)


def number(*, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Number:
    return Number(Range(lo, hi, lo_open=lo_open, hi_open=hi_open))


def positive(*, hi: float) -> Number:
    """A finite float in ``(0, hi]``."""
    return number(lo=0.0, hi=hi, lo_open=True)


def positives(*, hi: float) -> NumberList:
    """Comma-separated finite floats, each in ``(0, hi]``."""
    return NumberList(positive(hi=hi))


def fraction(*, hi_open: bool = False) -> Number:
    """A finite float in ``[0, 1]`` (``[0, 1)`` with ``hi_open``)."""
    return number(lo=0.0, hi=1.0, hi_open=hi_open)


def names(known: tuple[str, ...] | Callable[[], tuple[str, ...]], *, what: str, single: bool = False) -> Names:
    """Comma-separated names among ``known`` (a tuple, or a function for a list that is costly to import)."""
    return Names(known if callable(known) else (lambda: known), what=what, single=single)


def country_codes(*, known: Callable[[], tuple[str, ...]] | None = None) -> CountryCodes:
    return CountryCodes(known)


def existing(kind: str = "any") -> Existing:
    return Existing(kind)


def output() -> Output:
    return Output()


# ------------------------------------------------------------------------------------------------------ --out rule
def check_output(path: str | os.PathLike[str], *, kind: str, option: str = "--out") -> Path:
    """``path`` if an output of ``kind`` may be written there, else a GeoBridgeError naming ``option`` and the path.

    ``file``: absent or a regular file (then replaced atomically); ``folder``: absent or a folder (filled);
    ``new-folder``: absent. The nearest existing parent must be a folder this process can write to.
    """
    if kind not in OUT_KINDS:
        raise ValueError(f"unknown output kind {kind!r}; expected one of {', '.join(OUT_KINDS)}")
    out = Path(path)
    if os.path.lexists(out):
        if kind == "new-folder":
            raise GeoBridgeError(f"{option} {out} exists; choose a new folder")
        if kind == "file" and not out.is_file():
            what = "a folder" if out.is_dir() else "not a regular file"
            raise GeoBridgeError(f"{option} {out} is {what}; give a file path (an existing file is replaced)")
        if kind == "folder" and not out.is_dir():
            raise GeoBridgeError(f"{option} {out} exists and is not a folder; give a folder path")
    parent = _nearest_existing(out)
    if not parent.is_dir():
        raise GeoBridgeError(f"{option} {out}: {parent} is not a folder, so nothing can be written under it")
    writable = out if out.is_dir() else parent
    if not os.access(writable, os.W_OK | os.X_OK):
        raise GeoBridgeError(f"{option} {out}: {writable} is not writable")
    return out


def check_outputs(args: argparse.Namespace) -> None:
    """Apply :func:`check_output` to ``args.out`` with the command's ``out_kind`` (a kind, or a function of the
    options for a command whose output kind depends on them, e.g. ``index build --layout``)."""
    kind = getattr(args, "out_kind", None)
    out = getattr(args, "out", None)
    if kind is None or out is None:
        return
    check_output(out, kind=kind(args) if callable(kind) else kind)


def _nearest_existing(path: Path) -> Path:
    """``path``'s nearest ancestor that exists (``.`` for a relative path with none)."""
    for parent in path.parents:
        if os.path.lexists(parent):
            return parent
    return Path(".")
