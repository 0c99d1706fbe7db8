"""Single-file index (.gbx) parts for the corruption tests: a small saved index split into its header, metadata and
faiss bytes, and a writer that puts (changed) parts back together with a valid checksum."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def index_parts(folder: Path) -> tuple[dict, object, bytes, bytes]:
    """Save a 5-vector, 16-d index in ``folder``; its header, metadata, faiss bytes and the whole file."""
    from geobridge.index import GeoIndex
    from geobridge.index.single_file import MAGIC

    index = GeoIndex(16)
    index.add(np.random.default_rng(0).normal(size=(5, 16)), [
        {"place_id": f"p{i}", "lat": 1.0, "lon": 2.0, "view": "satellite", "path": None} for i in range(5)
    ])
    data = index.save(folder / "a.gbx").read_bytes()
    end = data.index(b"\n", len(MAGIC))
    header = json.loads(data[len(MAGIC) : end])
    payload = data[end + 1 :]
    return header, json.loads(payload[: header["meta_bytes"]]), payload[header["meta_bytes"] :], data


def write_index(path: Path, header: dict, meta: object, index_bytes: bytes) -> Path:
    """An index file whose checksum is valid whatever the metadata says."""
    from geobridge.index.single_file import MAGIC

    meta_bytes = json.dumps(meta).encode()
    payload = meta_bytes + index_bytes
    header = {**header, "meta_bytes": len(meta_bytes), "index_bytes": len(index_bytes),
              "sha256": hashlib.sha256(payload).hexdigest()}
    path.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + payload)
    return path
