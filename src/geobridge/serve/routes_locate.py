"""The localisation routes: ``POST /locate`` (images and/or a description -> an estimate and ranked matches) and
``GET /health``."""

from __future__ import annotations

import logging
import math
from typing import Any

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from geobridge.errors import GeoBridgeError
from geobridge.fusions import LOCATE_FUSIONS, fusion_help
from geobridge.serve.forms import FieldSpec, ParsedForm, read_form
from geobridge.serve.state import service_of
from geobridge.serve.uploads import ApiError, check_upload, decode_image
from geobridge.views import IMAGE_VIEWS

logger = logging.getLogger(__name__)

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

router = APIRouter()


@router.get("/health", summary="Service status, index size and model name")
async def health(request: Request) -> dict[str, Any]:
    service = service_of(request)
    info: dict[str, Any] = {}
    try:
        info = dict(service.index.info())
    except Exception:  # health must answer even if info() is unhappy
        logger.exception("index.info() failed")
    return {
        "status": "ok",
        "model": service.model_name,
        "index_size": len(service.index),
        "index": info,
        "views": list(IMAGE_VIEWS),
        "fusions": list(LOCATE_FUSIONS),
        "limits": {
            "max_upload_bytes": service.max_upload_bytes,
            "max_pixels": service.max_pixels,
            "max_images": service.max_images,
            "allowed_types": list(service.allowed_types),
            "max_top_k": MAX_TOP_K,
        },
    }


@router.post("/locate", summary="Estimate where images and/or a description were taken", openapi_extra=_LOCATE_OPENAPI)
async def locate_endpoint(
    request: Request,
    format: str = Query("json", pattern="^(json|geojson)$", description="json or geojson"),
) -> Response:
    from geobridge.index import Prior, locate

    service = service_of(request)
    form = await read_form(request.headers, request.stream(), fields=_LOCATE_FIELDS,
                           file_fields=_LOCATE_FILE_FIELDS, limits=service.limits)
    uploads = form.files
    views = _resolve_views(form, count=len(uploads))
    text = (form.get("text") or "").strip()
    if len(text) > MAX_TEXT_CHARS:
        raise ApiError(422, "text_too_long", f"text is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    top_k = _parse_top_k(form.get("top_k"))
    fusion = (form.get("fusion") or "auto").strip()
    if fusion not in LOCATE_FUSIONS:
        raise ApiError(422, "unknown_fusion", f"unknown fusion {fusion!r}; expected one of {', '.join(LOCATE_FUSIONS)}")
    near, radius_km = _parse_prior(form.get("near"), form.get("radius_km"))
    if not uploads and not text:
        raise ApiError(422, "empty_request", "send at least one image (field 'images') or a description ('text')")
    for upload in uploads:
        check_upload(upload, allowed_types=service.allowed_types)

    def work() -> tuple[dict[str, Any], dict[str, Any] | None]:
        images = [
            (view, decode_image(bytes(u.data), filename=u.filename, max_pixels=service.max_pixels,
                                allowed_formats=service.allowed_formats))
            for u, view in zip(uploads, views, strict=True)
        ]
        prior = Prior(*near, radius_km=radius_km) if near is not None else None
        result = locate(service.model, service.index, images=images, texts=[text] if text else [], top_k=top_k,
                        fusion=fusion, prior=prior)
        return result.to_dict(), (result.to_geojson() if format == "geojson" else None)

    try:
        payload, geojson = await anyio.to_thread.run_sync(work, limiter=service.limiter())
    except GeoBridgeError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from exc
    service.thumbs.annotate(payload.get("matches", []))
    if geojson is not None:
        service.thumbs.annotate([f.get("properties", {}) for f in geojson.get("features", [])])
        return JSONResponse(geojson, media_type="application/geo+json")
    return JSONResponse(payload)


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
