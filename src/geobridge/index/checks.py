"""Checks of an index's metadata and of the head of its serialised faiss data, before faiss reads anything.

Shared by the single-file format (:mod:`geobridge.index.store`) and the folder format
(:mod:`geobridge.index.folder`): what metadata may ask for is bounded here (see :mod:`geobridge.index.factory`).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from geobridge.errors import GeoBridgeError
from geobridge.index.factory import FactorySpec, parse_factory
from geobridge.views import VIEWS

METRICS: tuple[str, ...] = ("ip",)
REQUIRED_KEYS: tuple[str, ...] = ("place_id", "lat", "lon", "view", "path")
META_KEYS = frozenset({"dim", "factory", "metric", "model_info", "fusion_weights", "next_id", "records"})
MAX_VECTORS = 1 << 40


def check_meta(meta: Any) -> FactorySpec:
    """Types, bounds and consistency of an index file's metadata; GeoBridgeError naming the key otherwise."""
    if not isinstance(meta, dict):
        raise GeoBridgeError(f"metadata: expected a JSON object, got {type(meta).__name__}")
    missing = sorted({"dim", "factory", "metric", "next_id", "records"} - set(meta))
    unknown = sorted(set(meta) - META_KEYS)
    if missing or unknown:
        raise GeoBridgeError(f"metadata: missing keys {missing}, unknown keys {unknown}")
    spec = parse_factory(meta["factory"], meta["dim"])
    if meta["metric"] not in METRICS:
        raise GeoBridgeError(f"metric: expected one of {', '.join(METRICS)}, got {meta['metric']!r}")
    records, next_id = meta["records"], meta["next_id"]
    if not isinstance(records, list):
        raise GeoBridgeError(f"records: expected a list, got {type(records).__name__}")
    if isinstance(next_id, bool) or not isinstance(next_id, int) or not 0 <= next_id <= MAX_VECTORS:
        raise GeoBridgeError(f"next_id: expected an int in [0, 2^40], got {next_id!r}")
    seen: set[int] = set()
    for row, record in enumerate(records):
        vector_id = record.get("id") if isinstance(record, dict) else None
        if isinstance(vector_id, bool) or not isinstance(vector_id, int) or not 0 <= vector_id < next_id:
            raise GeoBridgeError(f"records[{row}].id: expected an int in [0, next_id={next_id}), got {vector_id!r}")
        if vector_id in seen:
            raise GeoBridgeError(f"records[{row}].id: {vector_id} appears twice")
        seen.add(vector_id)
    if not isinstance(meta.get("model_info") or {}, dict):
        raise GeoBridgeError(f"model_info: expected an object, got {type(meta['model_info']).__name__}")
    if meta.get("fusion_weights") is not None and not isinstance(meta["fusion_weights"], dict):
        raise GeoBridgeError(f"fusion_weights: expected an object or null, got {type(meta['fusion_weights']).__name__}")
    return spec


def check_faiss_header(data: bytes, *, dim: int, count: int, spec: FactorySpec) -> None:
    """Compare the first bytes of the serialised faiss index with the checked metadata, before faiss reads it.

    Layout (faiss/impl/index_write.cpp): fourcc ``IxM2``, then the index header (d int32, ntotal int64, two int64,
    is_trained uint8, metric int32[, metric_arg float32]), then the wrapped index: ``IxRF`` + header + base for a
    re-ranked index; an IVF index (fourcc ``Iw..``/``Iv..``) + header + ``nlist`` uint64.
    """
    header_size = 33
    if len(data) < 4 + header_size + 4 or data[:4] != b"IxM2":
        raise GeoBridgeError("faiss index: not an IndexIDMap2")
    d, ntotal = struct.unpack_from("<iq", data, 4)
    if d != dim or ntotal != count:
        raise GeoBridgeError(f"faiss index holds {ntotal} vectors of dim {d}; metadata says {count} of dim {dim}")
    pos = _after_header(data, 4)
    if data[pos : pos + 4] == b"IxRF":
        if not spec.refine:
            raise GeoBridgeError("faiss index is re-ranked (RFlat) but the factory string says otherwise")
        pos = _after_header(data, pos + 4)
    elif spec.refine:
        raise GeoBridgeError("factory string says RFlat but the faiss index is not re-ranked")
    if spec.hnsw_m and not spec.nlist and data[pos : pos + 3] != b"IHN":
        raise GeoBridgeError(f"faiss index type {data[pos:pos + 4]!r} is not HNSW as the factory string says")
    is_ivf = data[pos : pos + 2] in (b"Iw", b"Iv")
    if is_ivf != bool(spec.nlist):
        raise GeoBridgeError(f"faiss index type {data[pos:pos + 4]!r} does not match the factory string")
    if is_ivf:
        at = _after_header(data, pos + 4)
        if len(data) < at + 8:
            raise GeoBridgeError("faiss index: truncated IVF header")
        (nlist,) = struct.unpack_from("<Q", data, at)
        if nlist != spec.nlist:
            raise GeoBridgeError(f"faiss index has {nlist} inverted lists; the factory string says {spec.nlist}")


def _after_header(data: bytes, pos: int) -> int:
    """The offset just after the faiss index header starting at ``pos``."""
    if len(data) < pos + 33:
        raise GeoBridgeError("faiss index: truncated header")
    (metric,) = struct.unpack_from("<i", data, pos + 29)
    return pos + 33 + (4 if metric > 1 else 0)


def check_record(record: Mapping[str, Any], row: int) -> dict[str, Any]:
    """A checked copy of one metadata record (``id`` and ``score`` dropped, lat/lon as floats); GeoBridgeError
    naming ``row`` otherwise. Shared by ``GeoIndex.add``, both file formats and ``LazyRecords``."""
    if not isinstance(record, Mapping):
        raise GeoBridgeError(f"metadata record {row} must be a mapping, got {type(record).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise GeoBridgeError(f"metadata record {row} lacks {missing}; every record needs {list(REQUIRED_KEYS)}")
    out = {str(k): (str(v) if isinstance(v, Path) else v) for k, v in record.items() if k not in ("id", "score")}
    if not isinstance(out["place_id"], str) or not out["place_id"]:
        raise GeoBridgeError(f"metadata record {row}: place_id must be a non-empty string, got {out['place_id']!r}")
    for key, limit in (("lat", 90.0), ("lon", 180.0)):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise GeoBridgeError(f"metadata record {row} ({out['place_id']}): {key} must be a number, got {value!r}")
        if not math.isfinite(float(value)) or abs(float(value)) > limit:
            raise GeoBridgeError(
                f"metadata record {row} ({out['place_id']}): {key}={value} is outside [-{limit:g}, {limit:g}]"
            )
        out[key] = float(value)
    if out["view"] not in VIEWS:
        raise GeoBridgeError(f"metadata record {row}: unknown view {out['view']!r}; expected one of {', '.join(VIEWS)}")
    if out["path"] is not None and not isinstance(out["path"], str):
        raise GeoBridgeError(f"metadata record {row}: path must be a string or None, got {out['path']!r}")
    return out
