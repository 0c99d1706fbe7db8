"""The index folder format for large galleries; the single ``.gbx`` file (``store.py``) stays for small ones.

A folder holds

* ``index.faiss``: the faiss index (``faiss.write_index``), read straight from the file: IVF indexes are
  memory-mapped (``faiss.IO_FLAG_MMAP``), so their inverted lists stay on disk and only the pages a search
  touches are read in;
* ``records.jsonl``: one metadata record per line (with its vector ``id``), in id order;
* ``meta.json``: dim, factory, metric, model info, fusion weights, next id;
* ``manifest.json``: format, version, and every file's size and SHA-256; written last.

A save writes a complete new folder beside the target and then swaps it in, so a save killed part-way leaves
the previous folder loadable (between the two renames the folder is briefly absent). Loading checks every file's
size and, unless ``verify=False``, its SHA-256 (streamed, so a checked IVF index is still not held in memory),
and bounds the metadata and the faiss header as ``GeoIndex.load`` does before faiss reads anything. A
memory-mapped index is read-only: ``add``, ``remove`` and ``train`` refuse it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import faiss

from geobridge._atomic import atomic_write_bytes
from geobridge._hashing import file_sha256
from geobridge.errors import GeoBridgeError, IndexFormatError
from geobridge.index.checks import check_faiss_header, check_meta

FOLDER_FORMAT = "geobridge-index-folder"
FOLDER_VERSION = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
RECORDS_FILE = "records.jsonl"
META_FILE = "meta.json"
HEADER_BYTES = 4096  # enough of index.faiss for the header checks


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
            lines = [json.dumps({"id": i, **r}, sort_keys=True, allow_nan=False) + "\n" for i, r in index.records()]
        except (TypeError, ValueError) as exc:
            raise GeoBridgeError(f"index metadata or model_info is not JSON-compatible: {exc}") from exc
        atomic_write_bytes(staging / META_FILE, meta_bytes)
        atomic_write_bytes(staging / RECORDS_FILE, "".join(lines).encode())
        if index._mapped_from is not None:  # read-only, so unchanged; faiss would write a reference to the file
            shutil.copyfile(index._mapped_from, staging / INDEX_FILE)
        else:
            faiss.write_index(index._index, str(staging / INDEX_FILE))
        files = {name: {"bytes": (staging / name).stat().st_size, "sha256": file_sha256(staging / name)}
                 for name in (INDEX_FILE, RECORDS_FILE, META_FILE)}
        atomic_write_bytes(staging / MANIFEST, (json.dumps(
            {"format": FOLDER_FORMAT, "format_version": FOLDER_VERSION, "count": len(index), "files": files},
            indent=2, sort_keys=True) + "\n").encode())
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


def load_folder(cls: Any, folder: str | Path, *, mmap: bool = True, verify: bool = True) -> Any:
    """Read an index folder into ``cls`` (``GeoIndex``); ``IndexFormatError`` naming the file on any problem."""

    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{folder / MANIFEST}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FOLDER_FORMAT:
        raise IndexFormatError(f"{folder / MANIFEST}: not a GeoBridge index folder (format != {FOLDER_FORMAT!r})")
    if manifest.get("format_version") != FOLDER_VERSION:
        raise IndexFormatError(f"{folder / MANIFEST}: unsupported format_version {manifest.get('format_version')!r} "
                               f"(this GeoBridge reads version {FOLDER_VERSION})")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != {INDEX_FILE, RECORDS_FILE, META_FILE}:
        raise IndexFormatError(f"{folder / MANIFEST}: files must list {INDEX_FILE}, {RECORDS_FILE} and {META_FILE}")
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            raise IndexFormatError(f"{path}: missing")
        if not isinstance(entry, dict) or path.stat().st_size != entry.get("bytes"):
            raise IndexFormatError(f"{path}: size does not match the manifest (truncated or replaced)")
        if (verify or name != INDEX_FILE) and file_sha256(path) != entry.get("sha256"):
            raise IndexFormatError(f"{path}: checksum mismatch (the file is corrupt)")
    try:
        meta = json.loads((folder / META_FILE).read_text())
        records = [json.loads(line) for line in (folder / RECORDS_FILE).read_text().splitlines() if line.strip()]
    except (OSError, ValueError, RecursionError) as exc:
        raise IndexFormatError(f"{folder}: metadata is not valid JSON lines: {exc}") from exc
    if not isinstance(meta, dict):
        raise IndexFormatError(f"{folder / META_FILE}: expected a JSON object")
    meta = {**meta, "records": records}
    index_path = folder / INDEX_FILE
    try:
        spec = check_meta(meta)
        with open(index_path, "rb") as fh:
            check_faiss_header(fh.read(HEADER_BYTES), dim=meta["dim"], count=len(records), spec=spec)
        mapped = mmap and bool(spec.nlist)
        index = faiss.read_index(str(index_path), faiss.IO_FLAG_MMAP if mapped else 0)
        out = cls._from_parts(meta, index)
    except (ValueError, KeyError, TypeError, RuntimeError, MemoryError, GeoBridgeError) as exc:
        raise IndexFormatError(f"{folder}: inconsistent index folder: {exc}") from exc
    out._mapped_from = index_path if mapped else None
    return out
