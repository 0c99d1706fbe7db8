"""Index georeferenced rasters (GeoTIFF orthophotos, satellite mosaics) as tiles of a fixed ground size.

A raster in any CRS (projected such as UTM or Web Mercator, or geographic such as EPSG:4326) is cut into square
tiles of ``tile_m`` ground metres every ``stride_m`` metres, at each of ``scales`` (a scale ``s`` gives tiles of
``s * tile_m`` metres every ``s * stride_m``). Every tile is read on its own window and resampled by GDAL straight
to ``tile_px`` pixels (``out_shape``, average resampling), so the raster is never in memory and a coarse scale is
read from the raster's overviews when it has them. Tiles whose share of nodata pixels exceeds ``max_nodata`` are
skipped.

Ground metres are geodesic metres on the WGS84 ellipsoid, measured with ``pyproj.Geod`` around each row of tiles:
a Web Mercator "metre" is ``1 / cos(lat)`` ground metres and a degree of longitude ``cos(lat)`` times a degree of
latitude, so tile sizes in pixels are worked out per row, not from the CRS's nominal unit.

Each tile becomes one ``GeoIndex`` entry (view ``satellite``) whose record holds, besides ``lat``/``lon`` (the
centre in WGS84): ``crs`` (``"EPSG:<code>"`` or WKT), ``native_bounds`` ``[minx, miny, maxx, maxy]`` and
``native_center`` ``[x, y]`` in that CRS, ``footprint`` (a closed counter-clockwise ``[[lon, lat], ...]`` ring of
the window's corners in WGS84), ``window`` ``[col_off, row_off, width, height]`` in raster pixels, ``gsd_m`` (ground
metres per pixel of the embedded tile), ``native_gsd_m`` (``[x, y]`` metres per raster pixel there), ``tile_m``,
``scale`` and ``nodata_fraction``.

rasterio and pyproj (the ``geo`` extra) are imported only when a raster is read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geobridge.errors import DataError, GeoBridgeError
from geobridge.index.store import GeoIndex

logger = logging.getLogger(__name__)

DEFAULT_TILE_PX = 256
DEFAULT_MAX_NODATA = 0.5
GDAL_CACHE_MB = 64  # GDAL's block cache while tiling: the reader's memory stays bounded whatever the raster size
GSD_PROBE_PX = 16  # pixels between the probe points that measure the local ground sampling distance


@dataclass(frozen=True)
class TileWindow:
    """One tile of one raster at one scale: its pixel window and its ground size."""

    col_off: int
    row_off: int
    width: int
    height: int
    scale: float
    tile_m: float
    native_gsd_m: tuple[float, float]  # (x, y) ground metres per raster pixel around this tile


def _geo_modules() -> tuple[Any, Any]:
    try:
        import pyproj
        import rasterio
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise GeoBridgeError(
            f"indexing rasters needs rasterio and pyproj: pip install 'geobridge[geo]' ({exc})"
        ) from exc
    return rasterio, pyproj


def crs_name(crs: Any) -> str:
    """``"EPSG:<code>"`` when the CRS has an EPSG code, else its WKT."""
    code = crs.to_epsg()
    return f"EPSG:{code}" if code is not None else crs.to_wkt()


def pixel_to_crs(transform: Any, cols: Any, rows: Any) -> tuple[np.ndarray, np.ndarray]:
    """Pixel corner coordinates (``cols``, ``rows``) -> (x, y) arrays in the raster's CRS by its affine transform."""
    cols, rows = np.asarray(cols, dtype=np.float64), np.asarray(rows, dtype=np.float64)
    return (transform.a * cols + transform.b * rows + transform.c,
            transform.d * cols + transform.e * rows + transform.f)


def ground_gsd_m(transform: Any, to_wgs84: Any, geod: Any, *, col: float, row: float) -> tuple[float, float]:
    """(x, y) geodesic metres per pixel around pixel (``col``, ``row``) of a raster with affine ``transform``."""
    d = float(GSD_PROBE_PX)
    xs, ys = pixel_to_crs(transform, [col, col + d, col], [row, row, row + d])
    lon, lat = to_wgs84.transform(xs, ys)
    _, _, along_x = geod.inv(lon[0], lat[0], lon[1], lat[1])
    _, _, along_y = geod.inv(lon[0], lat[0], lon[2], lat[2])
    return float(along_x) / d, float(along_y) / d


def tile_windows(
    dataset: Any,
    *,
    tile_m: float,
    stride_m: float,
    scales: Sequence[float] = (1.0,),
) -> list[TileWindow]:
    """Every tile window of an open rasterio ``dataset`` that lies wholly inside it, scale by scale, row by row.

    Tile sizes in pixels are worked out per row of tiles from the local geodesic GSD (module docstring).
    """
    rasterio, pyproj = _geo_modules()
    del rasterio
    if dataset.crs is None:
        raise DataError(f"{dataset.name}: the raster has no CRS; georeference it (e.g. gdal_edit.py -a_srs)")
    to_wgs84 = pyproj.Transformer.from_crs(dataset.crs, "EPSG:4326", always_xy=True)
    geod = pyproj.Geod(ellps="WGS84")
    transform, width, height = dataset.transform, int(dataset.width), int(dataset.height)
    out: list[TileWindow] = []
    for scale in scales:
        size_m, step_m = tile_m * scale, stride_m * scale
        row = 0
        while row < height:
            gsd_x, gsd_y = ground_gsd_m(transform, to_wgs84, geod, col=width / 2.0, row=row)
            tile_h, tile_w = max(1, round(size_m / gsd_y)), max(1, round(size_m / gsd_x))
            if row + tile_h > height or tile_w > width:
                break
            step_w = max(1, round(step_m / gsd_x))
            for col in range(0, width - tile_w + 1, step_w):
                out.append(TileWindow(col, row, tile_w, tile_h, float(scale), float(size_m), (gsd_x, gsd_y)))
            row += max(1, round(step_m / gsd_y))
    return out


def tile_record(
    dataset: Any, window: TileWindow, *, path: str, tile_px: int, to_wgs84: Any, nodata_fraction: float
) -> dict[str, Any]:
    """The ``GeoIndex`` metadata record of one tile (module docstring)."""
    transform = dataset.transform
    c0, r0 = window.col_off, window.row_off
    c1, r1 = c0 + window.width, r0 + window.height
    # corners TL, BL, BR, TR (counter-clockwise on a north-up raster), then the centre
    xs, ys = pixel_to_crs(transform, [c0, c0, c1, c1, (c0 + c1) / 2.0], [r0, r1, r1, r0, (r0 + r1) / 2.0])
    lon, lat = to_wgs84.transform(xs, ys)
    ring = [[float(lon[i]), float(lat[i])] for i in range(4)]
    stem = Path(path).stem
    return {
        "place_id": f"{stem}:s{window.scale:g}:r{r0}:c{c0}",
        "lat": float(lat[4]),
        "lon": float(lon[4]),
        "view": "satellite",
        "path": path,
        "kind": "raster_tile",
        "crs": crs_name(dataset.crs),
        "native_bounds": [float(xs[:4].min()), float(ys[:4].min()), float(xs[:4].max()), float(ys[:4].max())],
        "native_center": [float(xs[4]), float(ys[4])],
        "footprint": [*ring, ring[0]],
        "window": [c0, r0, window.width, window.height],
        "gsd_m": window.tile_m / tile_px,
        "native_gsd_m": [window.native_gsd_m[0], window.native_gsd_m[1]],
        "tile_m": window.tile_m,
        "scale": window.scale,
        "nodata_fraction": float(nodata_fraction),
    }


def read_tile(dataset: Any, window: TileWindow, *, tile_px: int) -> tuple[np.ndarray, float]:
    """``(pixels, nodata_fraction)``: the tile as a (tile_px, tile_px, 3) uint8 array and its share of nodata."""
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    bands = (1, 2, 3) if dataset.count >= 3 else (1,)
    data = dataset.read(
        bands, window=Window(window.col_off, window.row_off, window.width, window.height),
        out_shape=(len(bands), tile_px, tile_px), resampling=Resampling.average, masked=True,
    )  # (C, P, P) masked
    mask = np.ma.getmaskarray(data)  # (C, P, P) True = nodata
    nodata_fraction = float(mask.all(axis=0).mean())
    pixels = _to_uint8(np.ma.filled(data, 0), dtype=dataset.dtypes[0])  # (C, P, P)
    if pixels.shape[0] == 1:
        pixels = np.repeat(pixels, 3, axis=0)
    return np.ascontiguousarray(pixels.transpose(1, 2, 0)), nodata_fraction  # (P, P, 3)


def _to_uint8(data: np.ndarray, *, dtype: str) -> np.ndarray:
    """Raster samples to 8 bits: integers scaled by their type's range, floats by [0, 1] (clipped)."""
    kind = np.dtype(dtype)
    if kind == np.uint8:
        return data.astype(np.uint8, copy=False)
    if np.issubdtype(kind, np.integer):
        info = np.iinfo(kind)
        scaled = (data.astype(np.float64) - info.min) * (255.0 / (info.max - info.min))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return np.clip(np.rint(np.nan_to_num(data.astype(np.float64)) * 255.0), 0, 255).astype(np.uint8)


def iter_raster_tiles(
    path: str | Path,
    *,
    tile_m: float,
    stride_m: float,
    scales: Sequence[float] = (1.0,),
    tile_px: int = DEFAULT_TILE_PX,
    max_nodata: float = DEFAULT_MAX_NODATA,
) -> Iterator[tuple[dict[str, Any] | None, np.ndarray | None]]:
    """``(record, pixels)`` for each tile window of the raster at ``path``; ``(None, None)`` for a skipped tile
    (more than ``max_nodata`` of it nodata), so a caller can count progress over every window."""
    rasterio, pyproj = _geo_modules()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"raster not found: {path}")
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        try:
            dataset = rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise DataError(f"cannot read raster {path}: {exc}") from exc
        with dataset:
            to_wgs84 = pyproj.Transformer.from_crs(dataset.crs, "EPSG:4326", always_xy=True) if dataset.crs else None
            for window in tile_windows(dataset, tile_m=tile_m, stride_m=stride_m, scales=scales):
                pixels, nodata_fraction = read_tile(dataset, window, tile_px=tile_px)
                if nodata_fraction > max_nodata:
                    yield None, None
                    continue
                record = tile_record(dataset, window, path=str(path), tile_px=tile_px, to_wgs84=to_wgs84,
                                     nodata_fraction=nodata_fraction)
                yield record, pixels


def count_raster_tiles(path: str | Path, *, tile_m: float, stride_m: float, scales: Sequence[float]) -> int:
    """How many tile windows ``iter_raster_tiles`` visits (skipped ones included), without reading pixels."""
    rasterio, _ = _geo_modules()
    try:
        with rasterio.open(path) as dataset:
            return len(tile_windows(dataset, tile_m=tile_m, stride_m=stride_m, scales=scales))
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"cannot read raster {path}: {exc}") from exc


def _check_tiling(
    model: Any,
    rasters: Sequence[str | Path],
    *,
    tile_m: float,
    stride_m: float,
    scales: tuple[float, ...],
    tile_px: int | None,
    max_nodata: float,
) -> int:
    """Refuse empty or non-positive tiling settings; returns the tile size in pixels (default: the model's
    satellite input width)."""
    if not rasters:
        raise GeoBridgeError("no rasters given; pass at least one GeoTIFF")
    for name, value in (("tile_m", tile_m), ("stride_m", stride_m), *((f"scale {s}", s) for s in scales)):
        if not math.isfinite(value) or value <= 0:
            raise GeoBridgeError(f"{name} must be a positive number, got {value}")
    if not scales:
        raise GeoBridgeError("scales is empty; pass at least one scale (e.g. 1)")
    if not 0.0 <= max_nodata <= 1.0:
        raise GeoBridgeError(f"max_nodata must be in [0, 1], got {max_nodata}")
    if tile_px is None:
        config = getattr(model, "config", None)
        tile_px = int(config.image.input_size["satellite"][1]) if config is not None else DEFAULT_TILE_PX
    if tile_px < 1:
        raise GeoBridgeError(f"tile_px must be >= 1, got {tile_px}")
    return tile_px


def build_raster_index(
    model: Any,
    rasters: Sequence[str | Path],
    *,
    tile_m: float,
    stride_m: float | None = None,
    scales: Sequence[float] = (1.0,),
    tile_px: int | None = None,
    max_nodata: float = DEFAULT_MAX_NODATA,
    factory: str = "Flat",
    batch_size: int = 64,
    show_progress_bar: bool | None = None,
    model_info: Mapping[str, Any] | None = None,
) -> GeoIndex:
    """Tile ``rasters`` (module docstring), embed the tiles in batches of ``batch_size`` as ``satellite`` images
    and return a ``GeoIndex`` with one entry per kept tile.

    ``stride_m`` defaults to ``tile_m`` (no overlap); ``tile_px`` to the model's satellite input width. Only one
    batch of tiles is held in memory at a time (plus the (N, D) embeddings).
    """
    from tqdm.auto import tqdm

    from geobridge.index.build import model_info_of

    stride_m = tile_m if stride_m is None else stride_m
    scales = tuple(float(s) for s in scales)
    tile_px = _check_tiling(model, rasters, tile_m=tile_m, stride_m=stride_m, scales=scales, tile_px=tile_px,
                            max_nodata=max_nodata)
    total = sum(count_raster_tiles(p, tile_m=tile_m, stride_m=stride_m, scales=scales) for p in rasters)
    if show_progress_bar is None:
        show_progress_bar = logger.getEffectiveLevel() <= logging.INFO
    chunks: list[np.ndarray] = []
    records: list[dict[str, Any]] = []
    batch: list[np.ndarray] = []
    skipped = 0

    def flush() -> None:
        from PIL import Image

        if batch:
            images = [Image.fromarray(p) for p in batch]
            chunks.append(model.encode(images, view="satellite", batch_size=batch_size, show_progress_bar=False))
            batch.clear()

    with tqdm(total=total, desc="tiles", unit="tile", disable=not show_progress_bar) as bar:
        for raster in rasters:
            for record, pixels in iter_raster_tiles(raster, tile_m=tile_m, stride_m=stride_m, scales=scales,
                                                    tile_px=tile_px, max_nodata=max_nodata):
                bar.update(1)
                if record is None:
                    skipped += 1
                    continue
                records.append(record)
                batch.append(pixels)
                if len(batch) >= batch_size:
                    flush()
        flush()
    if skipped:
        logger.info("skipped %d of %d tiles with more than %.0f%% nodata", skipped, total, 100 * max_nodata)
    if not records:
        raise DataError(
            f"no tiles to index in {', '.join(str(p) for p in rasters)}: {total} windows of {tile_m:g} m, "
            f"{skipped} skipped as nodata (is --tile-m larger than the raster, or --max-nodata too low?)"
        )
    vectors = np.concatenate(chunks)  # (N, D)
    info = model_info_of(model) if model_info is None else dict(model_info)
    info["rasters"] = [str(Path(p)) for p in rasters]
    info["tiling"] = {"tile_m": tile_m, "stride_m": stride_m, "scales": list(scales), "tile_px": tile_px,
                      "max_nodata": max_nodata}
    index = GeoIndex(int(vectors.shape[1]), factory=factory, model_info=info)
    index.add(vectors, records)
    return index
