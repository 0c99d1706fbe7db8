"""Uploaded files: the service's error type, content-type checks and image decoding with the project's decoder.

The request body itself is read by :mod:`geobridge.serve.forms`. Every failure is an :class:`ApiError` carrying an
HTTP status, a short error code, a sentence for the user and, where one is involved, the name of the offending file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from geobridge.images import ImageError, decode_image_bytes

# Pillow's format names of the content types we accept.
CONTENT_TYPE_FORMATS: dict[str, str] = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
# geobridge.images.ImageError kinds -> (HTTP status, error code)
_IMAGE_ERRORS: dict[str, tuple[int, str]] = {
    "too_large": (413, "image_too_large"),
    "unsupported_format": (415, "unsupported_image_format"),
    "not_an_image": (422, "not_an_image"),
    "corrupt": (422, "corrupt_image"),
}


class ApiError(Exception):
    """A client error, rendered as ``{"error": code, "detail": message, "file": name}`` with ``status``."""

    def __init__(self, status: int, code: str, detail: str, *, file: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.file = file

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "detail": self.detail}
        if self.file is not None:
            body["file"] = self.file
        return body


@dataclass
class UploadedFile:
    """One file part of a multipart request, read fully into memory (it is bounded by the byte limit)."""

    field: str
    filename: str
    content_type: str
    data: bytearray = field(default_factory=bytearray)


def check_upload(upload: UploadedFile, *, allowed_types: Sequence[str]) -> None:
    """Refuse empty files and content types outside ``allowed_types`` before any decoding."""
    if upload.content_type not in allowed_types:
        got = upload.content_type or "no content type"
        raise ApiError(
            415,
            "unsupported_media_type",
            f"{upload.filename!r} has {got}; allowed: {', '.join(allowed_types)}",
            file=upload.filename,
        )
    if not upload.data:
        raise ApiError(422, "empty_file", f"{upload.filename!r} is empty (0 bytes)", file=upload.filename)


def decode_image(data: bytes, *, filename: str, max_pixels: int, allowed_formats: Sequence[str]) -> Image.Image:
    """Decode uploaded bytes with the project's one decoder (:mod:`geobridge.images`), as a 4xx on failure."""
    try:
        return decode_image_bytes(data, name=filename, max_pixels=max_pixels, formats=allowed_formats)
    except ImageError as exc:
        status, code = _IMAGE_ERRORS.get(exc.kind, (422, "corrupt_image"))
        raise ApiError(status, code, str(exc), file=filename) from exc  # the message names the file


def human_bytes(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):g} MiB"
    if n >= 1024:
        return f"{n / 1024:g} KiB"
    return f"{n} bytes"
