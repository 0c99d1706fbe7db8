"""The single-file index format: one ``.gbx`` file, written atomically through a temporary file and ``os.replace``::

    GEOBRIDGE-INDEX\\n
    {"format": "geobridge-index", "format_version": 1, "meta_bytes": M, "index_bytes": N, "sha256": "..."}\\n
    <M bytes: metadata JSON (utf-8)><N bytes: faiss.serialize_index>

``sha256`` is the hex digest of the payload (the M + N bytes after the header line). ``GeoIndex.load`` checks
the magic line, the version, the lengths and the checksum before anything is parsed; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from geobridge._atomic import atomic_write_chunks
from geobridge.errors import GeoBridgeError, IndexFormatError
from geobridge.index.checks import check_faiss_header, check_meta

FORMAT = "geobridge-index"
FORMAT_VERSION = 1
MAGIC = b"GEOBRIDGE-INDEX\n"
MAX_HEADER_BYTES = 4096
FAISS_HEAD_BYTES = 4096  # check_faiss_header reads the serialised index's first bytes only


def save_file(index: Any, path: str | Path) -> Path:
    """Write ``index`` (a ``GeoIndex``) to the single file ``path`` atomically; returns the path."""
    path = Path(path)
    if path.is_dir():
        raise GeoBridgeError(f"{path} is a folder; an index is saved as a single file (e.g. {path}/index.gbx), "
                             "or as an index folder with save_folder")
    try:
        meta_bytes = json.dumps(index._meta(), sort_keys=True, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise GeoBridgeError(f"index metadata or model_info is not JSON-compatible: {exc}") from exc
    index_bytes = faiss.serialize_index(_serialisable(index)).tobytes()
    payload = meta_bytes + index_bytes
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta_bytes": len(meta_bytes),
        "index_bytes": len(index_bytes),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    atomic_write_chunks(path, [MAGIC, json.dumps(header, sort_keys=True).encode() + b"\n", payload])
    return path


def load_file(cls: Any, path: Path) -> Any:
    """A ``cls`` (``GeoIndex``) read from the single file ``path``, every check made before anything is parsed;
    IndexFormatError naming ``path`` on any problem."""
    if path.is_dir():
        raise IndexFormatError(f"{path} is a folder; pass the index file written by GeoIndex.save")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IndexFormatError(f"cannot read index file {path}: {exc}") from exc
    if data[:1] == b"\x80" or data[:2] == b"PK" or path.suffix in (".pkl", ".pickle", ".pt", ".pth"):
        raise IndexFormatError(
            f"refusing to load {path}: it looks like a pickle, and unpickling can run arbitrary code; "
            "GeoBridge indexes are written by GeoIndex.save"
        )
    if not data.startswith(MAGIC):
        raise IndexFormatError(f"{path} is not a GeoBridge index file (missing {MAGIC.strip().decode()} header)")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER_BYTES)
    if end < 0:
        raise IndexFormatError(f"{path}: truncated or corrupt header")
    try:
        header = json.loads(data[len(MAGIC) : end])
    except (ValueError, RecursionError) as exc:
        raise IndexFormatError(f"{path}: corrupt header: {exc}") from exc
    problem = _header_problem(header)
    if problem:
        raise IndexFormatError(f"{path}: corrupt header: {problem}")
    version, meta_len, index_len = header["format_version"], header["meta_bytes"], header["index_bytes"]
    if header.get("format") != FORMAT:
        raise IndexFormatError(f"{path}: format is {header.get('format')!r}, expected {FORMAT!r}")
    if version != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: unsupported index format_version {version} (this GeoBridge reads version {FORMAT_VERSION})"
        )
    payload = memoryview(data)[end + 1 :]  # views, not copies: a 1 GB file must not be held three times
    if len(payload) != meta_len + index_len:
        raise IndexFormatError(
            f"{path}: truncated or padded file: payload is {len(payload)} bytes, header says {meta_len + index_len}"
        )
    if hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise IndexFormatError(f"{path}: checksum mismatch (the file is corrupt)")
    try:
        meta = json.loads(bytes(payload[:meta_len]))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise IndexFormatError(f"{path}: metadata is not valid JSON: {exc}") from exc
    index_bytes = payload[meta_len:]
    try:
        # the checksum proves integrity, not trust: bound what the metadata and the faiss header ask for
        # before faiss builds or reads anything
        spec = check_meta(meta)
        check_faiss_header(bytes(index_bytes[:FAISS_HEAD_BYTES]), dim=meta["dim"], count=len(meta["records"]),
                           spec=spec)
        index = faiss.deserialize_index(np.frombuffer(index_bytes, dtype=np.uint8))  # faiss copies what it keeps
        del payload, index_bytes, data  # the file's bytes go before the records are built
        return cls._from_parts(meta, index)
    except (ValueError, KeyError, TypeError, RuntimeError, MemoryError, GeoBridgeError) as exc:
        raise IndexFormatError(f"{path}: inconsistent index file: {exc}") from exc


def _header_problem(header: Any) -> str | None:
    """What is wrong with a file's header line (types and ranges), or None."""
    if not isinstance(header, dict):
        return f"expected a JSON object, got {type(header).__name__}"
    for key in ("format_version", "meta_bytes", "index_bytes"):
        value = header.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{key}: expected an int >= 0, got {value!r}"
    digest = header.get("sha256")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        return f"sha256: expected 64 hex digits, got {digest!r}"
    return None


def _serialisable(index: Any) -> Any:
    """The faiss index to serialise into a single file: a memory-mapped one would serialise a reference to its
    folder's file, so that file is read whole instead (read-only, so unchanged), with this index's nprobe."""
    if index._mapped_from is None:
        return index._index
    whole = faiss.read_index(str(index._mapped_from))
    faiss.extract_index_ivf(whole).nprobe = faiss.extract_index_ivf(index._index).nprobe
    return whole
