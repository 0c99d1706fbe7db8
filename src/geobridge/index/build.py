"""Build a ``GeoIndex`` from a model and places: embed reference images in batches and record their metadata."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geobridge.data.io import parse_jsonl
from geobridge.data.types import Place
from geobridge.errors import DataError, GeoBridgeError
from geobridge.index.store import GeoIndex
from geobridge.views import IMAGE_VIEWS, check_view

logger = logging.getLogger(__name__)

DEFAULT_VIEWS: tuple[str, ...] = ("drone", "satellite", "street")


def model_info_of(model: Any, *, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """What an index records about the model that embedded it (config name, embed dim, checkpoint path)."""
    config = getattr(model, "config", None)
    info: dict[str, Any] = {"embed_dim": int(model.embed_dim)}
    if config is not None:
        info["config"] = str(getattr(config, "name", "custom"))
        text = getattr(config, "text", None)
        if text is not None and getattr(text, "kind", None):
            info["text_tower"] = str(text.kind)
    if checkpoint is not None:
        info["checkpoint"] = str(Path(checkpoint).resolve())
    return info


def build_index(
    model: Any,
    places: Sequence[Any],
    *,
    views: Sequence[str] = DEFAULT_VIEWS,
    factory: str = "Flat",
    batch_size: int = 64,
    show_progress_bar: bool | None = None,
    model_info: Mapping[str, Any] | None = None,
) -> GeoIndex:
    """Embed every image of ``views`` of ``places`` with ``model.encode`` and index them with their metadata.

    ``places`` are ``geobridge.data.Place`` records (anything with ``place_id``, ``lat``, ``lon``, ``country``
    and ``images[view]``). Places without coordinates cannot be located and are skipped with a warning. All
    embeddings are computed before anything is added, so IVF/PQ indexes are trained on the whole gallery.
    """
    records = gallery_records(places, views=views)
    chunks: list[np.ndarray] = []
    for view in dict.fromkeys(r["view"] for r in records):
        paths = [Path(r["path"]) for r in records if r["view"] == view]
        chunks.append(model.encode(paths, view=view, batch_size=batch_size, show_progress_bar=show_progress_bar))
    vectors = np.concatenate(chunks)  # (N, D)
    info = model_info_of(model) if model_info is None else dict(model_info)
    index = GeoIndex(int(vectors.shape[1]), factory=factory, model_info=info)
    index.add(vectors, records)
    return index


def gallery_records(places: Sequence[Any], *, views: Sequence[str] = DEFAULT_VIEWS) -> list[dict[str, Any]]:
    """The index records of every image of ``views`` of ``places``, in index order (view by view, then place by
    place); ``build_index`` and sharded embedding (``index/shards.py``) both follow it.

    Places without coordinates cannot be located and are skipped with a warning.
    """
    views = tuple(check_view(v, allowed=IMAGE_VIEWS) for v in views)
    if not views:
        raise GeoBridgeError("views is empty; index at least one of drone, satellite, street")
    located = [p for p in places if p.lat is not None and p.lon is not None]
    if len(located) < len(places):
        logger.warning("skipping %d of %d places without coordinates", len(places) - len(located), len(places))
    records: list[dict[str, Any]] = []
    for view in views:
        for place in located:
            for path in place.images.get(view, ()):
                records.append(
                    {"place_id": str(place.place_id), "lat": float(place.lat), "lon": float(place.lon),
                     "view": view, "path": str(path), "country": place.country}
                )
    if not records:
        raise DataError(f"no images of views {list(views)} in {len(located)} located places; nothing to index")
    return records


def read_image_table(
    folder: str | Path, *, coords: str | Path | None = None, default_view: str = "satellite"
) -> list[Place]:
    """Places from a folder of images described by a CSV or JSON-lines table.

    The table is ``coords`` if given, else ``<folder>/coords.csv`` or ``<folder>/index.jsonl``. CSV columns:
    ``path,lat,lon`` and optionally ``place_id`` and ``view`` (a header row is required); JSON lines hold the
    same keys. ``path`` is relative to ``folder`` (or absolute); ``place_id`` defaults to the file stem and
    ``view`` to ``default_view``. Rows with the same ``place_id`` form one place. Every file must exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    table = Path(coords) if coords is not None else _default_table(folder)
    rows = _read_rows(table)
    grouped: dict[str, dict[str, Any]] = {}
    for line, row in rows:
        where = f"{table}:{line}"
        missing = [key for key in ("path", "lat", "lon") if row.get(key) in (None, "")]
        if missing:
            raise DataError(f"{where}: missing {', '.join(missing)} (columns are path,lat,lon[,place_id,view])")
        path = Path(str(row["path"]))
        path = path if path.is_absolute() else folder / path
        if not path.is_file():
            raise DataError(f"{where}: image not found: {path}")
        try:
            lat, lon = float(row["lat"]), float(row["lon"])
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: lat/lon must be numbers, got {row['lat']!r}, {row['lon']!r}") from exc
        if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
            raise DataError(f"{where}: lat/lon ({lat}, {lon}) out of range [-90, 90] x [-180, 180]")
        view = str(row.get("view") or default_view)
        if view not in IMAGE_VIEWS:
            raise DataError(f"{where}: unknown view {view!r}; expected one of {', '.join(IMAGE_VIEWS)}")
        place_id = str(row.get("place_id") or path.stem)
        entry = grouped.setdefault(place_id, {"lat": lat, "lon": lon, "country": row.get("country") or None,
                                              "images": {}})
        entry["images"].setdefault(view, []).append(path)
    if not grouped:
        raise DataError(f"{table} lists no images")
    return [
        Place(place_id=pid, lat=e["lat"], lon=e["lon"], country=e["country"],
              images={v: tuple(ps) for v, ps in e["images"].items()})
        for pid, e in grouped.items()
    ]


def _default_table(folder: Path) -> Path:
    for name in ("coords.csv", "index.jsonl"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder} has no coords.csv or index.jsonl; pass --coords CSV (path,lat,lon[,place_id,view])")


def _read_rows(table: Path) -> list[tuple[int, dict[str, Any]]]:
    if not table.is_file():
        raise DataError(f"coordinates file not found: {table}")
    try:
        text = table.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {table}: {exc}") from exc
    if table.suffix == ".jsonl":
        return parse_jsonl(text, source=table)
    reader = csv.DictReader(text.splitlines())
    fields = [f.strip() for f in reader.fieldnames or []]
    if not {"path", "lat", "lon"} <= set(fields):
        raise DataError(f"{table}: the header must name path,lat,lon (optional place_id,view); got {fields}")
    return [
        (number, {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k})
        for number, row in enumerate(reader, start=2)
    ]
