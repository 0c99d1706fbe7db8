"""The index folder format for large galleries; the single ``.gbx`` file (``store.py``) stays for small ones.

A folder holds

* ``index.faiss``: the faiss index (``faiss.write_index``), read straight from the file: IVF indexes are
  memory-mapped (``faiss.IO_FLAG_MMAP``), so their inverted lists stay on disk and only the pages a search
  touches are read in;
* ``records.jsonl``: one metadata record per line (with its vector ``id``), in id order;
* ``ids.npy``, ``lat.npy``, ``lon.npy``, ``view.npy`` and ``offsets.npy`` (format version 2): the records' ids
  (int64), coordinates (float64), views (uint8 codes into the manifest's ``view_names``) and the byte offset of
  every line of ``records.jsonl`` (int64, one more: the file's size), so that a load keeps the records lazy
  (``index/records.py``: a line is parsed when it is read, filters and disc lookups use the columns);
* ``meta.json``: dim, factory, metric, model info, fusion weights, next id;
* ``manifest.json``: format, version, every file's size and SHA-256, the view names of ``view.npy`` and the
  summary ``info`` reports (distinct places, places per country), so that neither parses the records; written
  last.

A save writes a complete new folder beside the target and then swaps it in, so a save killed part-way leaves
the previous folder loadable (between the two renames the folder is briefly absent). Loading checks every file's
size and, unless ``verify=False``, its SHA-256 (streamed, so a checked IVF index is still not held in memory),
and bounds the metadata and the faiss header as ``GeoIndex.load`` does before faiss reads anything. A
memory-mapped index is read-only: ``add``, ``remove`` and ``train`` refuse it. A version-2 folder's columns are
memory-mapped (``np.load(mmap_mode="r")``) and validated as a whole at load; its records stay in
``records.jsonl`` until they are read, or until a change to the index parses them all into the plain dict.
Version-1 folders (no columns) are still read, by parsing every record at load.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from geobridge._atomic import atomic_write_bytes, atomic_write_chunks
from geobridge._hashing import file_sha256
from geobridge.errors import GeoBridgeError, IndexFormatError
from geobridge.index.checks import check_faiss_header, check_meta
from geobridge.index.records import LazyRecords
from geobridge.views import VIEWS

FOLDER_FORMAT = "geobridge-index-folder"
FOLDER_VERSION = 2
READ_VERSIONS = (1, 2)  # version 1: no columns; its records are parsed at load
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
RECORDS_FILE = "records.jsonl"
META_FILE = "meta.json"
COLUMNS: dict[str, str] = {"ids": "int64", "lat": "float64", "lon": "float64", "view": "uint8", "offsets": "int64"}
COLUMN_FILES = tuple(f"{name}.npy" for name in COLUMNS)
HEADER_BYTES = 4096  # enough of index.faiss for the header checks
WRITE_BLOCK_LINES = 4096  # records.jsonl is written in blocks of this many lines


def is_index_folder(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def save_folder(index: Any, folder: str | Path) -> Path:
    """Write ``index`` (a ``GeoIndex``) as the folder ``folder``, replacing a previous one only when complete."""
    folder = Path(folder)
    if folder.exists() and not (folder.is_dir() and (is_index_folder(folder) or not any(folder.iterdir()))):
        raise GeoBridgeError(f"{folder} exists and is not an index folder; refusing to replace it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".new"))
    try:
        meta = {"dim": index.dim, "factory": index.factory, "metric": index.metric, "model_info": index.model_info,
                "fusion_weights": index.fusion_weights, "next_id": index._next_id}
        try:
            meta_bytes = json.dumps(meta, sort_keys=True, allow_nan=False).encode()
            columns, summary = _write_records(index, staging / RECORDS_FILE)
        except (TypeError, ValueError) as exc:
            raise GeoBridgeError(f"index metadata or model_info is not JSON-compatible: {exc}") from exc
        atomic_write_bytes(staging / META_FILE, meta_bytes)
        for name, column in columns.items():
            buffer = io.BytesIO()
            np.save(buffer, column, allow_pickle=False)
            atomic_write_bytes(staging / f"{name}.npy", buffer.getvalue())
        if index._mapped_from is not None:  # read-only, so unchanged; faiss would write a reference to the file
            shutil.copyfile(index._mapped_from, staging / INDEX_FILE)
        else:
            faiss.write_index(index._index, str(staging / INDEX_FILE))
        files = {name: {"bytes": (staging / name).stat().st_size, "sha256": file_sha256(staging / name)}
                 for name in (INDEX_FILE, RECORDS_FILE, META_FILE, *COLUMN_FILES)}
        atomic_write_bytes(staging / MANIFEST, (json.dumps(
            {"format": FOLDER_FORMAT, "format_version": FOLDER_VERSION, "count": len(index), "files": files,
             "view_names": list(VIEWS), "summary": summary}, indent=2, sort_keys=True) + "\n").encode())
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".old"))
            os.replace(folder, old / "index")
        os.replace(staging, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _write_records(index: Any, path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Stream ``index``'s records (id order) as JSON lines to ``path``; returns the columns of a version-2 folder
    and the summary (distinct places; places per country, a place's country being its first record's) that
    ``info`` reports. Lines are written in blocks, never all held at once."""
    codes = {view: code for code, view in enumerate(VIEWS)}
    n = len(index._records)
    ids, lat, lon = np.empty(n, np.int64), np.empty(n, np.float64), np.empty(n, np.float64)
    view, offsets = np.empty(n, np.uint8), np.zeros(n + 1, np.int64)
    places: dict[str, Any] = {}

    def blocks() -> Iterator[bytes]:
        block, end = [], 0
        for row, (vector_id, record) in enumerate(index.records()):
            line = (json.dumps({"id": vector_id, **record}, sort_keys=True, allow_nan=False) + "\n").encode()
            ids[row], lat[row], lon[row], view[row] = vector_id, record["lat"], record["lon"], codes[record["view"]]
            end += len(line)
            offsets[row + 1] = end
            places.setdefault(record["place_id"], record.get("country"))
            block.append(line)
            if len(block) == WRITE_BLOCK_LINES:
                yield b"".join(block)
                block = []
        yield b"".join(block)

    atomic_write_chunks(path, blocks())
    countries = Counter(c for c in places.values() if c)
    summary = {"places": len(places), "countries": dict(sorted(countries.items()))}
    return {"ids": ids, "lat": lat, "lon": lon, "view": view, "offsets": offsets}, summary


def load_folder(cls: Any, folder: str | Path, *, mmap: bool = True, verify: bool = True) -> Any:
    """Read an index folder into ``cls`` (``GeoIndex``); ``IndexFormatError`` naming the file on any problem."""

    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{folder / MANIFEST}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FOLDER_FORMAT:
        raise IndexFormatError(f"{folder / MANIFEST}: not a GeoBridge index folder (format != {FOLDER_FORMAT!r})")
    version = manifest.get("format_version")
    if isinstance(version, bool) or version not in READ_VERSIONS:
        raise IndexFormatError(f"{folder / MANIFEST}: unsupported format_version {version!r} "
                               f"(this GeoBridge reads versions {', '.join(map(str, READ_VERSIONS))})")
    names = {INDEX_FILE, RECORDS_FILE, META_FILE, *(COLUMN_FILES if version >= 2 else ())}
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != names:
        raise IndexFormatError(f"{folder / MANIFEST}: files must list {', '.join(sorted(names))}")
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            raise IndexFormatError(f"{path}: missing")
        if not isinstance(entry, dict) or path.stat().st_size != entry.get("bytes"):
            raise IndexFormatError(f"{path}: size does not match the manifest (truncated or replaced)")
        if (verify or name != INDEX_FILE) and file_sha256(path) != entry.get("sha256"):  # streamed, 1 MiB blocks
            raise IndexFormatError(f"{path}: checksum mismatch (the file is corrupt)")
    try:
        meta = json.loads((folder / META_FILE).read_text())
        records = [] if version >= 2 else [
            json.loads(line) for line in (folder / RECORDS_FILE).read_text().splitlines() if line.strip()]
    except (OSError, ValueError, RecursionError) as exc:
        raise IndexFormatError(f"{folder}: metadata is not valid JSON lines: {exc}") from exc
    if not isinstance(meta, dict):
        raise IndexFormatError(f"{folder / META_FILE}: expected a JSON object")
    meta = {**meta, "records": records}
    try:
        spec = check_meta(meta)
    except GeoBridgeError as exc:
        raise IndexFormatError(f"{folder}: inconsistent index folder: {exc}") from exc
    lazy = _lazy_records(folder, manifest, next_id=meta["next_id"]) if version >= 2 else None
    count = len(records) if lazy is None else len(lazy)
    index_path = folder / INDEX_FILE
    try:
        with open(index_path, "rb") as fh:
            check_faiss_header(fh.read(HEADER_BYTES), dim=meta["dim"], count=count, spec=spec)
        mapped = mmap and bool(spec.nlist)
        index = faiss.read_index(str(index_path), faiss.IO_FLAG_MMAP if mapped else 0)
        out = cls._from_parts(meta, index, lazy=lazy)
    except (ValueError, KeyError, TypeError, RuntimeError, MemoryError, GeoBridgeError) as exc:
        raise IndexFormatError(f"{folder}: inconsistent index folder: {exc}") from exc
    out._mapped_from = index_path if mapped else None
    return out


def _lazy_records(folder: Path, manifest: dict[str, Any], *, next_id: int) -> LazyRecords:
    """The memory-mapped columns of a version-2 folder over its records file, checked as a whole."""
    view_names = manifest.get("view_names")
    if not isinstance(view_names, list) or not all(isinstance(v, str) for v in view_names):
        raise IndexFormatError(f"{folder / MANIFEST}: view_names must be a list of view names, got {view_names!r}")
    summary = manifest.get("summary")
    countries = summary.get("countries") if isinstance(summary, dict) else None
    places = summary.get("places") if isinstance(summary, dict) else None
    count = manifest.get("count")
    count = count if isinstance(count, int) and not isinstance(count, bool) else -1
    if (isinstance(places, bool) or not isinstance(places, int) or not 0 <= places <= count
            or not isinstance(countries, dict) or not all(isinstance(k, str) and k for k in countries)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in countries.values())
            or sum(countries.values()) > places):
        raise IndexFormatError(f"{folder / MANIFEST}: summary must hold places (0..count) and countries "
                               f"(name -> places), got {summary!r}")
    columns = {}
    for name in COLUMNS:
        path = folder / f"{name}.npy"
        try:
            columns[name] = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise IndexFormatError(f"{path}: not a readable .npy column: {exc}") from exc
    try:
        return LazyRecords.open(folder / RECORDS_FILE, columns, view_names=view_names, next_id=next_id,
                                n_places=places, countries=countries)
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{folder / RECORDS_FILE}: cannot map the records: {exc}") from exc
