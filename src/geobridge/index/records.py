"""``LazyRecords``: the metadata records of an index folder, read on demand instead of held as Python dicts.

An index folder of format version 2 (``index/folder.py``) keeps, next to ``records.jsonl`` (one JSON record per
line, in id order), compact columns: ``ids.npy`` (int64, strictly increasing), ``lat.npy`` and ``lon.npy``
(float64 degrees), ``view.npy`` (uint8 codes into the manifest's view names) and ``offsets.npy`` (int64, N + 1:
the byte offset of each line in ``records.jsonl``, then the file's size). ``LazyRecords`` is a read-only
``Mapping[int, dict]`` over them: membership, length and iteration come from the ids column (``searchsorted``),
``records[i]`` parses that one line of the memory-mapped records file, and the coordinate and view columns serve
the disc lookups, view filters and view counts of ``GeoIndex`` without touching the records (as the saved
summary, distinct places and places per country, serves ``n_places`` and ``info``).

Validation happens twice: the columns are checked as a whole when the folder is loaded (dtypes, shapes, sorted
unique ids in ``[0, next_id)``, coordinates within range, known view codes, offsets increasing and ending at the
file's size), and each line is checked when it is read (``check_record``, as the dict path does, and its id,
lat, lon and view against the columns). A bad line raises ``IndexFormatError`` naming the file, the line and
the id, at the latest when it is read.
"""

from __future__ import annotations

import json
import mmap
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geobridge.errors import GeoBridgeError, IndexFormatError
from geobridge.index.checks import check_record
from geobridge.views import VIEWS


class LazyRecords(Mapping[int, dict[str, Any]]):
    """Read-only id -> metadata record mapping over an index folder's columns and memory-mapped records file.

    ``ids`` (N,) int64 sorted, ``lat``/``lon`` (N,) float64, ``view_codes`` (N,) uint8 into ``view_names``,
    ``offsets`` (N + 1,) int64 into ``records_path``; ``n_places`` and ``countries`` (places per country) are the
    summary saved with them. Use ``check`` (or ``open``) to validate the columns.
    """

    def __init__(
        self,
        records_path: str | Path,
        *,
        ids: np.ndarray,
        lat: np.ndarray,
        lon: np.ndarray,
        view_codes: np.ndarray,
        view_names: Sequence[str],
        offsets: np.ndarray,
        n_places: int,
        countries: Mapping[str, int],
    ) -> None:
        self.path = Path(records_path)
        self.ids, self.lat, self.lon = ids, lat, lon  # (N,) int64, float64, float64
        self.view_codes, self.view_names = view_codes, tuple(view_names)  # (N,) uint8, names of the codes
        self.offsets = offsets  # (N + 1,) int64
        self.n_places, self.countries = int(n_places), dict(countries)  # the saved summary (distinct places)
        with open(self.path, "rb") as fh:
            size = fh.seek(0, 2)
            self._data: mmap.mmap | bytes = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""

    @classmethod
    def open(cls, records_path: str | Path, columns: Mapping[str, np.ndarray], *, view_names: Sequence[str],
             next_id: int, n_places: int, countries: Mapping[str, int]) -> LazyRecords:
        """Build from the columns ``ids``, ``lat``, ``lon``, ``view`` and ``offsets`` and check them."""
        out = cls(records_path, ids=columns["ids"], lat=columns["lat"], lon=columns["lon"],
                  view_codes=columns["view"], view_names=view_names, offsets=columns["offsets"],
                  n_places=n_places, countries=countries)
        out.check(next_id=next_id)
        return out

    def check(self, *, next_id: int) -> None:
        """Validate the columns as a whole; IndexFormatError naming the column otherwise."""
        n = int(self.ids.shape[0]) if self.ids.ndim == 1 else -1
        expected = {"ids": (self.ids, np.int64, n), "lat": (self.lat, np.float64, n), "lon": (self.lon, np.float64, n),
                    "view": (self.view_codes, np.uint8, n), "offsets": (self.offsets, np.int64, n + 1)}
        for name, (column, dtype, length) in expected.items():
            if column.dtype != np.dtype(dtype) or column.ndim != 1 or column.shape[0] != length:
                raise IndexFormatError(f"{self.path.parent / (name + '.npy')}: expected a ({length},) "
                                       f"{np.dtype(dtype)} column, got {column.shape} {column.dtype}")
        problems = []
        if n and (self.ids[0] < 0 or self.ids[-1] >= next_id or not bool((np.diff(self.ids) > 0).all())):
            problems.append(("ids", f"ids must be strictly increasing within [0, next_id={next_id})"))
        for name, column, limit in (("lat", self.lat, 90.0), ("lon", self.lon, 180.0)):
            if not bool((np.abs(column) <= limit).all()):  # NaN compares False
                problems.append((name, f"{name} values must be finite and within [-{limit:g}, {limit:g}]"))
        unknown = [v for v in self.view_names if v not in VIEWS]
        if unknown or len(set(self.view_names)) != len(self.view_names):
            problems.append(("view", f"view names {list(self.view_names)} must be distinct names of {list(VIEWS)}"))
        elif n and int(self.view_codes.max()) >= len(self.view_names):
            problems.append(("view", f"view codes must be below {len(self.view_names)}"))
        size = len(self._data)
        if self.offsets[0] != 0 or self.offsets[-1] != size or not bool((np.diff(self.offsets) > 0).all()):
            problems.append(("offsets", f"offsets must increase from 0 to the records file's size {size}"))
        if problems:
            name, message = problems[0]
            raise IndexFormatError(f"{self.path.parent / (name + '.npy')}: {message}")

    # ------------------------------------------------------------------ Mapping
    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __iter__(self) -> Iterator[int]:
        return iter(self.ids.tolist())

    def __contains__(self, key: object) -> bool:
        return self._position(key) is not None

    def __getitem__(self, key: int) -> dict[str, Any]:
        at = self._position(key)
        if at is None:
            raise KeyError(key)
        return self._parse(at)

    def __repr__(self) -> str:
        return f"LazyRecords({self.path}, count={len(self)})"

    def iter_items(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(id, record)`` for every record, in id order (one pass over the file, no lookups)."""
        for at, vector_id in enumerate(self.ids.tolist()):
            yield vector_id, self._parse(at)

    def to_dict(self) -> dict[int, dict[str, Any]]:
        """Every record parsed, as the plain dict ``GeoIndex`` keeps for an index it changes."""
        return dict(self.iter_items())

    # ------------------------------------------------------------------ columns
    def view_mask(self, views: set[str] | frozenset[str]) -> np.ndarray:
        """(N,) bool: which records have one of ``views``."""
        codes = [code for code, name in enumerate(self.view_names) if name in views]
        return np.isin(self.view_codes, np.asarray(codes, dtype=np.uint8))

    def view_counts(self) -> Counter[str]:
        """How many records each view has (views without records left out)."""
        counts = np.bincount(self.view_codes, minlength=len(self.view_names))
        return Counter({self.view_names[code]: int(c) for code, c in enumerate(counts.tolist()) if c})

    # ------------------------------------------------------------------ internals
    def _position(self, key: object) -> int | None:
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or not len(self):
            return None
        at = int(np.searchsorted(self.ids, key))
        return at if at < len(self) and int(self.ids[at]) == int(key) else None

    def _parse(self, at: int) -> dict[str, Any]:
        vector_id = int(self.ids[at])
        where = f"{self.path}: line {at + 1} (id {vector_id})"
        line = self._data[int(self.offsets[at]) : int(self.offsets[at + 1])]
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise IndexFormatError(f"{where}: not a JSON record: {exc}") from exc
        if not isinstance(row, dict) or row.get("id") != vector_id or isinstance(row.get("id"), bool):
            found = row.get("id") if isinstance(row, dict) else type(row).__name__
            raise IndexFormatError(f"{where}: the line holds id {found!r}, the ids column {vector_id}")
        try:
            record = check_record(row, at)
        except GeoBridgeError as exc:
            raise IndexFormatError(f"{where}: {exc}") from exc
        view = self.view_names[int(self.view_codes[at])]
        if record["lat"] != float(self.lat[at]) or record["lon"] != float(self.lon[at]) or record["view"] != view:
            raise IndexFormatError(f"{where}: lat/lon/view {record['lat']}, {record['lon']}, {record['view']!r} "
                                   f"differ from the columns ({float(self.lat[at])}, {float(self.lon[at])}, {view!r})")
        return record
