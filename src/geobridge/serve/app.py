"""The GeoBridge HTTP service: ``POST /locate`` with images and/or text, a map page, thumbnails and health.

Build it with :func:`create_app`; the model and the index are loaded once by the caller and shared by every
request. Decoding and inference run in a bounded thread pool so the event loop never blocks, and every bad
input gets a 4xx JSON answer ``{"error": code, "detail": sentence, "file": name}``.

    uvicorn --factory geobridge.serve.app:app_from_env   # GEOBRIDGE_INDEX=... GEOBRIDGE_CHECKPOINT=...
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from geobridge.errors import GeoBridgeError
from geobridge.fusions import LOCATE_FUSIONS, fusion_help
from geobridge.images import MAX_IMAGE_PIXELS
from geobridge.serve.forms import FieldSpec, FormLimits, ParsedForm, read_form
from geobridge.serve.uploads import CONTENT_TYPE_FORMATS, ApiError, check_upload, decode_image
from geobridge.views import IMAGE_VIEWS

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_VIEW = "drone"
MAX_TOP_K = 100
MAX_TEXT_CHARS = 2000
THUMB_SIZE = 192
_LOCATE_FIELDS: dict[str, FieldSpec] = {
    "views": FieldSpec(repeated=True),
    "view": FieldSpec(),
    "text": FieldSpec(),
    "top_k": FieldSpec(kind="int"),
    "fusion": FieldSpec(),
    "near": FieldSpec(),
    "radius_km": FieldSpec(kind="float"),
}
_LOCATE_FILE_FIELDS = ("images",)

_TEXT_ONLY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": 10},
        "fusion": {"type": "string", "enum": list(LOCATE_FUSIONS), "default": "auto", "description": fusion_help()},
        "near": {"type": "string", "description": "LAT,LON: search only entries within radius_km of it (a prior)"},
        "radius_km": {"type": "number", "exclusiveMinimum": 0, "description": "the prior's radius in km"},
    },
}
_LOCATE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "images": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "query images (PNG, JPEG or WebP)",
                        },
                        "views": {
                            "type": "array",
                            "items": {"type": "string", "enum": list(IMAGE_VIEWS)},
                            "description": "one view per image, in upload order",
                        },
                        "view": {"type": "string", "enum": list(IMAGE_VIEWS), "description": "view of every image"},
                        "text": {"type": "string", "description": "a description of the place"},
                        "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": 10},
                        "fusion": {"type": "string", "enum": list(LOCATE_FUSIONS), "default": "auto",
                                   "description": fusion_help()},
                        "near": {"type": "string", "description": "LAT,LON: search within radius_km of it"},
                        "radius_km": {"type": "number", "exclusiveMinimum": 0, "description": "prior radius, km"},
                    },
                }
            },
            "application/x-www-form-urlencoded": {"schema": _TEXT_ONLY_SCHEMA},
            "application/json": {"schema": _TEXT_ONLY_SCHEMA},
        },
    },
    "responses": {
        "200": {"description": "the estimate (lat, lon, confidence in [0, 1]), the fusion used, score_meaning (what "
                "each match's score is under that fusion, and its range) and the ranked matches"},
        "400": {"description": "malformed body: bad or too deeply nested JSON, bad multipart, text not in UTF-8"},
        "413": {"description": "a file is over the byte or pixel limit"},
        "415": {"description": "wrong content type"},
        "422": {"description": "empty, corrupt or non-image file, unknown, repeated or mistyped field, bad option "
                "or empty request"},
    },
}


def create_app(
    *,
    model: Any,
    index: Any,
    max_upload_bytes: int = 8 * 1024 * 1024,
    max_pixels: int = MAX_IMAGE_PIXELS,
    allowed_types: Sequence[str] = ("image/png", "image/jpeg", "image/webp"),
    workers: int = 2,
    thumbnails_root: str | Path | None = None,
    max_images: int = 8,
    title: str = "GeoBridge",
) -> FastAPI:
    """A FastAPI app serving ``model`` (a loaded ``GeoBridge``) over ``index`` (a loaded ``GeoIndex``).

    ``max_upload_bytes`` bounds each uploaded file (refused while streaming), ``max_pixels`` each decoded
    image, ``workers`` the number of decode/inference threads. Relative reference paths recorded in the index
    are resolved against ``thumbnails_root`` (default: the working directory) for ``GET /thumb/{id}``.
    """
    from geobridge.index import locate

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if max_upload_bytes < 1 or max_pixels < 1 or max_images < 1:
        raise ValueError("max_upload_bytes, max_pixels and max_images must be positive")
    if max_pixels > MAX_IMAGE_PIXELS:
        raise ValueError(f"max_pixels may lower the image decoder's limit of {MAX_IMAGE_PIXELS:,}, not raise it")
    limits = FormLimits(max_file_bytes=max_upload_bytes, max_files=max_images)
    unknown = sorted(set(allowed_types) - set(CONTENT_TYPE_FORMATS))
    if unknown:
        raise ValueError(f"unsupported allowed_types {unknown}; choose from {', '.join(CONTENT_TYPE_FORMATS)}")
    allowed_types = tuple(allowed_types)
    allowed_formats = tuple(CONTENT_TYPE_FORMATS[t] for t in allowed_types)
    root = Path(thumbnails_root).resolve() if thumbnails_root is not None else None
    model_name = str(getattr(getattr(model, "config", None), "name", type(model).__name__))
    thumbs = _ThumbnailRegistry(root=root)

    from geobridge.serve.world import load_world_outline

    world_bytes = json.dumps(load_world_outline(), separators=(",", ":")).encode()

    app = FastAPI(
        title=title,
        version=_version(),
        description="Cross-view geo-localisation: upload drone, satellite or street images and/or a description.",
    )
    app.state.model, app.state.index = model, index
    app.state.limiter = None  # created on first use, inside the event loop

    def limiter() -> anyio.CapacityLimiter:
        if app.state.limiter is None:
            app.state.limiter = anyio.CapacityLimiter(workers)
        return app.state.limiter

    # ------------------------------------------------------------------ errors: always JSON
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        logger.info("%s %s -> %d %s: %s", request.method, request.url.path, exc.status, exc.code, exc.detail)
        return JSONResponse(exc.to_dict(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "detail": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"error": "invalid_request", "detail": problems}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"error": "internal_error", "detail": f"unexpected {type(exc).__name__}; see the server log"},
            status_code=500,
        )

    # ------------------------------------------------------------------ endpoints
    @app.get("/health", summary="Service status, index size and model name")
    async def health() -> dict[str, Any]:
        info: dict[str, Any] = {}
        try:
            info = dict(index.info())
        except Exception:  # health must answer even if info() is unhappy
            logger.exception("index.info() failed")
        return {
            "status": "ok",
            "model": model_name,
            "index_size": len(index),
            "index": info,
            "views": list(IMAGE_VIEWS),
            "fusions": list(LOCATE_FUSIONS),
            "limits": {
                "max_upload_bytes": max_upload_bytes,
                "max_pixels": max_pixels,
                "max_images": max_images,
                "allowed_types": list(allowed_types),
                "max_top_k": MAX_TOP_K,
            },
        }

    @app.post("/locate", summary="Estimate where images and/or a description were taken", openapi_extra=_LOCATE_OPENAPI)
    async def locate_endpoint(
        request: Request,
        format: str = Query("json", pattern="^(json|geojson)$", description="json or geojson"),
    ) -> Response:
        form = await read_form(
            request.headers, request.stream(), fields=_LOCATE_FIELDS, file_fields=_LOCATE_FILE_FIELDS, limits=limits
        )
        uploads = form.files
        views = _resolve_views(form, count=len(uploads))
        text = (form.get("text") or "").strip()
        if len(text) > MAX_TEXT_CHARS:
            raise ApiError(422, "text_too_long", f"text is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
        top_k = _parse_top_k(form.get("top_k"))
        fusion = (form.get("fusion") or "auto").strip()
        if fusion not in LOCATE_FUSIONS:
            raise ApiError(
                422, "unknown_fusion", f"unknown fusion {fusion!r}; expected one of {', '.join(LOCATE_FUSIONS)}"
            )
        near, radius_km = _parse_prior(form.get("near"), form.get("radius_km"))
        if not uploads and not text:
            raise ApiError(422, "empty_request", "send at least one image (field 'images') or a description ('text')")
        for upload in uploads:
            check_upload(upload, allowed_types=allowed_types)

        def work() -> tuple[dict[str, Any], dict[str, Any] | None]:
            images = [
                (view, decode_image(bytes(u.data), filename=u.filename, max_pixels=max_pixels,
                                    allowed_formats=allowed_formats))
                for u, view in zip(uploads, views, strict=True)
            ]
            result = locate(model, index, images=images, texts=[text] if text else [], top_k=top_k, fusion=fusion,
                            near=near, near_radius_km=radius_km)
            return result.to_dict(), (result.to_geojson() if format == "geojson" else None)

        try:
            payload, geojson = await anyio.to_thread.run_sync(work, limiter=limiter())
        except GeoBridgeError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from exc
        thumbs.annotate(payload.get("matches", []))
        if geojson is not None:
            thumbs.annotate([f.get("properties", {}) for f in geojson.get("features", [])])
            return JSONResponse(geojson, media_type="application/geo+json")
        return JSONResponse(payload)

    @app.get("/thumb/{thumb_id}", summary="A thumbnail of a reference image that the index recorded")
    async def thumbnail(thumb_id: str) -> Response:
        path = thumbs.lookup(thumb_id)
        if path is None:
            raise ApiError(404, "not_found", f"no reference image with id {thumb_id!r}")
        cached = thumbs.cached(thumb_id)
        if cached is None:
            cached = await anyio.to_thread.run_sync(_make_thumbnail, path, limiter=limiter())
            if cached is None:
                raise ApiError(404, "not_found", f"reference image {thumb_id!r} is missing or unreadable")
            thumbs.store(thumb_id, cached)
        return Response(cached, media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})

    overlays: dict[str, Any] = {}  # "list": the overlays' descriptions, int id -> PNG bytes

    def overlay_list() -> list[dict[str, Any]]:
        if "list" not in overlays:
            from geobridge.serve.overlay import raster_sources, wgs84_bounds

            sources = raster_sources((r for _, r in index.records()), root=root)
            overlays["paths"] = sources
            overlays["list"] = [{"id": k, "url": f"/overlay/{k}.png", "name": path.name, "bounds": wgs84_bounds(path)}
                                for k, path in enumerate(sources) if path.is_file()]
        return overlays["list"]

    @app.get("/overlays.json", summary="Quicklooks of the reference rasters: PNG URL and WGS84 bounds of each")
    async def overlay_index() -> dict[str, Any]:
        try:
            listed = await anyio.to_thread.run_sync(overlay_list, limiter=limiter())
        except ImportError:  # no rasterio: an index of raster tiles cannot have been built here; show none
            listed = []
        return {"overlays": listed}

    @app.get("/overlay/{overlay_id}.png", summary="A reference raster's quicklook, warped to WGS84 (lon/lat grid)")
    async def overlay_png(overlay_id: int) -> Response:
        from geobridge.serve.overlay import quicklook

        listed = await anyio.to_thread.run_sync(overlay_list, limiter=limiter())
        if not any(o["id"] == overlay_id for o in listed):
            raise ApiError(404, "not_found", f"no raster overlay with id {overlay_id}")
        if overlay_id not in overlays:
            png, _ = await anyio.to_thread.run_sync(quicklook, overlays["paths"][overlay_id], limiter=limiter())
            overlays[overlay_id] = png
        return Response(overlays[overlay_id], media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/world.geojson", summary="Offline world outline (GSHHG crude coastlines) for the map")
    async def world() -> Response:
        return Response(world_bytes, media_type="application/geo+json", headers={"Cache-Control": "max-age=86400"})

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: reads ``GEOBRIDGE_INDEX``, ``GEOBRIDGE_CHECKPOINT``, ``GEOBRIDGE_BACKEND``
    (torch or onnx) and limits from env."""
    from geobridge.export.backends import load_encoder
    from geobridge.index import GeoIndex

    index_path = os.environ.get("GEOBRIDGE_INDEX")
    if not index_path:
        raise GeoBridgeError("set GEOBRIDGE_INDEX to the index to serve")
    index = GeoIndex.load(index_path)
    checkpoint = os.environ.get("GEOBRIDGE_CHECKPOINT") or checkpoint_from_index(index)
    if not checkpoint:
        raise GeoBridgeError("set GEOBRIDGE_CHECKPOINT: the index does not record its checkpoint")
    return create_app(
        model=load_encoder(checkpoint, backend=os.environ.get("GEOBRIDGE_BACKEND", "torch")),
        index=index,
        max_upload_bytes=int(float(os.environ.get("GEOBRIDGE_MAX_UPLOAD_MB", "8")) * 1024 * 1024),
        workers=int(os.environ.get("GEOBRIDGE_WORKERS", "2")),
        thumbnails_root=os.environ.get("GEOBRIDGE_THUMBNAILS_ROOT") or None,
    )


def checkpoint_from_index(index: Any) -> str | None:
    """The checkpoint an index was built with, if its ``model_info`` records one."""
    info = getattr(index, "model_info", None) or {}
    for key in ("checkpoint", "checkpoint_path", "path"):
        value = info.get(key) if isinstance(info, dict) else None
        if value:
            return str(value)
    return None


# ---------------------------------------------------------------------- helpers
def _resolve_views(form: ParsedForm, *, count: int) -> list[str]:
    listed = [v.strip() for value in form.get_all("views") for v in value.split(",") if v.strip()]
    single = (form.get("view") or "").strip()
    for name in [*listed, *([single] if single else [])]:
        if name not in IMAGE_VIEWS:
            raise ApiError(422, "unknown_view", f"unknown view {name!r}; expected one of {', '.join(IMAGE_VIEWS)}")
    if listed:
        if len(listed) != count:
            raise ApiError(
                422, "views_mismatch", f"got {len(listed)} view(s) for {count} image(s); send one 'views' per image"
            )
        return listed
    return [single or DEFAULT_VIEW] * count


def _parse_prior(near: str | None, radius: str | None) -> tuple[tuple[float, float] | None, float | None]:
    """The ``near`` ("LAT,LON") and ``radius_km`` fields as a prior, both or neither."""
    near = (near or "").strip() or None
    radius = (radius or "").strip() or None
    if (near is None) != (radius is None):
        raise ApiError(422, "bad_prior", "a prior needs both 'near' (LAT,LON) and 'radius_km'")
    if near is None:
        return None, None
    try:
        lat, lon = (float(v) for v in near.split(","))
    except ValueError:
        raise ApiError(422, "bad_prior", f"near must be LAT,LON in degrees, got {near!r}") from None
    try:
        radius_km = float(radius)
    except ValueError:
        raise ApiError(422, "bad_prior", f"radius_km must be a number of km, got {radius!r}") from None
    if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        raise ApiError(422, "bad_prior", f"near=({lat}, {lon}) is outside [-90, 90] x [-180, 180]")
    if not (math.isfinite(radius_km) and radius_km > 0):
        raise ApiError(422, "bad_prior", f"radius_km must be a positive number of km, got {radius_km}")
    return (lat, lon), radius_km


def _parse_top_k(raw: str | None) -> int:
    if raw is None or not raw.strip():
        return 10
    try:
        top_k = int(raw.strip())
    except ValueError:
        raise ApiError(422, "bad_top_k", f"top_k must be an integer, got {raw!r}") from None
    if not 1 <= top_k <= MAX_TOP_K:
        raise ApiError(422, "bad_top_k", f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
    return top_k


class _ThumbnailRegistry:
    """Ids of reference images that the index has returned in a match: only those can be served.

    A path is registered when it appears in a match (so it was recorded in the index), and the id is a
    hash of it; unknown ids are 404. Thumbnails are re-encoded PNGs, never the raw file.
    """

    def __init__(self, *, root: Path | None, max_cached: int = 512) -> None:
        self.root = root
        self.max_cached = max_cached
        self._paths: dict[str, str] = {}
        self._cache: dict[str, bytes] = {}

    def annotate(self, matches: Sequence[dict[str, Any]]) -> None:
        for match in matches:
            path = match.get("path")
            if not path:
                match["thumbnail_url"] = None
                continue
            thumb_id = hashlib.sha256(str(path).encode()).hexdigest()[:24]
            self._paths[thumb_id] = str(path)
            match["thumbnail_url"] = f"/thumb/{thumb_id}"

    def lookup(self, thumb_id: str) -> Path | None:
        recorded = self._paths.get(thumb_id)
        if recorded is None:
            return None
        path = Path(recorded)
        if not path.is_absolute():
            path = (self.root or Path.cwd()) / path
        return path

    def cached(self, thumb_id: str) -> bytes | None:
        return self._cache.get(thumb_id)

    def store(self, thumb_id: str, data: bytes) -> None:
        if len(self._cache) >= self.max_cached:
            self._cache.pop(next(iter(self._cache)))
        self._cache[thumb_id] = data


def _make_thumbnail(path: Path) -> bytes | None:
    from geobridge.images import load_image

    if not path.is_file():
        return None
    try:
        image = load_image(path)
    except GeoBridgeError:
        logger.warning("cannot read reference image %s", path)
        return None
    image.thumbnail((THUMB_SIZE, THUMB_SIZE))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _version() -> str:
    from geobridge.version import __version__

    return __version__
