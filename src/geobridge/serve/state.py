"""What every route of the service shares: the model, the index, the request limits, the worker pool, and the
caches of thumbnails and raster overlays. ``create_app`` builds one ``ServiceState`` and keeps it in
``app.state.service``; the routes read it from their request."""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from fastapi import Request

from geobridge.errors import GeoBridgeError
from geobridge.serve.forms import FormLimits

logger = logging.getLogger(__name__)

THUMB_SIZE = 192


@dataclass
class ServiceState:
    """Everything the routes share; built once by ``create_app``."""

    model: Any  # a loaded GeoBridge (or its ONNX encoder)
    index: Any  # a loaded GeoIndex
    limits: FormLimits
    max_upload_bytes: int
    max_pixels: int
    max_images: int
    allowed_types: tuple[str, ...]
    allowed_formats: tuple[str, ...]
    root: Path | None  # relative reference paths resolve against it (thumbnails, overlays)
    workers: int
    world_bytes: bytes
    thumbs: ThumbnailRegistry
    overlays: dict[Any, Any] = field(default_factory=dict)  # "list", "paths", and overlay id -> PNG bytes
    _limiter: anyio.CapacityLimiter | None = None

    @property
    def model_name(self) -> str:
        return str(getattr(getattr(self.model, "config", None), "name", type(self.model).__name__))

    def limiter(self) -> anyio.CapacityLimiter:
        """The decode/inference thread pool's limiter, created on first use (inside the event loop)."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.workers)
        return self._limiter


def service_of(request: Request) -> ServiceState:
    """The state of the app that is answering ``request`` (``create_app`` put it there)."""
    return request.app.state.service


class ThumbnailRegistry:
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


def make_thumbnail(path: Path) -> bytes | None:
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
