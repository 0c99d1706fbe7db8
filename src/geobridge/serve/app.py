"""The GeoBridge HTTP service: ``POST /locate`` with images and/or text, a map page, thumbnails and health.

Build it with :func:`create_app`; the model and the index are loaded once by the caller and shared by every
request (``serve/state.py``). The routes live in ``serve/routes_locate.py`` and ``serve/routes_map.py``. Decoding
and inference run in a bounded thread pool so the event loop never blocks, and every bad input gets a 4xx JSON
answer ``{"error": code, "detail": sentence, "file": name}`` (``serve/errors.py``).

    uvicorn --factory geobridge.serve.app:app_from_env   # GEOBRIDGE_INDEX=... GEOBRIDGE_CHECKPOINT=...
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from geobridge.errors import GeoBridgeError
from geobridge.images import MAX_IMAGE_PIXELS
from geobridge.serve import routes_locate, routes_map
from geobridge.serve.errors import install_error_handlers
from geobridge.serve.forms import FormLimits
from geobridge.serve.state import ServiceState, ThumbnailRegistry
from geobridge.serve.uploads import CONTENT_TYPE_FORMATS
from geobridge.version import __version__


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
    from geobridge.serve.world import load_world_outline

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if max_upload_bytes < 1 or max_pixels < 1 or max_images < 1:
        raise ValueError("max_upload_bytes, max_pixels and max_images must be positive")
    if max_pixels > MAX_IMAGE_PIXELS:
        raise ValueError(f"max_pixels may lower the image decoder's limit of {MAX_IMAGE_PIXELS:,}, not raise it")
    unknown = sorted(set(allowed_types) - set(CONTENT_TYPE_FORMATS))
    if unknown:
        raise ValueError(f"unsupported allowed_types {unknown}; choose from {', '.join(CONTENT_TYPE_FORMATS)}")
    root = Path(thumbnails_root).resolve() if thumbnails_root is not None else None
    service = ServiceState(
        model=model,
        index=index,
        limits=FormLimits(max_file_bytes=max_upload_bytes, max_files=max_images),
        max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels,
        max_images=max_images,
        allowed_types=tuple(allowed_types),
        allowed_formats=tuple(CONTENT_TYPE_FORMATS[t] for t in allowed_types),
        root=root,
        workers=workers,
        world_bytes=json.dumps(load_world_outline(), separators=(",", ":")).encode(),
        thumbs=ThumbnailRegistry(root=root),
    )
    app = FastAPI(
        title=title,
        version=__version__,
        description="Cross-view geo-localisation: upload drone, satellite or street images and/or a description.",
    )
    app.state.service = service
    app.state.model, app.state.index = model, index
    install_error_handlers(app)
    app.include_router(routes_locate.router)
    app.include_router(routes_map.router)
    app.mount("/static", StaticFiles(directory=routes_map.STATIC_DIR), name="static")
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
