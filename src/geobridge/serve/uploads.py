"""Bounded reading of uploads: a streaming multipart parser with byte limits, and safe image decoding.

Every failure is an :class:`ApiError` carrying an HTTP status, a short error code, a sentence for the user and,
where one is involved, the name of the offending file.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError

# Pillow's format names of the content types we accept.
CONTENT_TYPE_FORMATS: dict[str, str] = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}


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


@dataclass
class ParsedForm:
    files: list[UploadedFile] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)

    def get_all(self, name: str) -> list[str]:
        return self.fields.get(name, [])

    def get(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    file: UploadedFile | None = None
    value: bytearray = field(default_factory=bytearray)


async def parse_multipart(
    content_type_header: str,
    stream: AsyncIterator[bytes],
    *,
    max_file_bytes: int,
    max_files: int,
    max_field_bytes: int = 16 * 1024,
    max_fields: int = 64,
) -> ParsedForm:
    """Parse ``multipart/form-data`` as it streams in, stopping as soon as a limit is passed.

    A file larger than ``max_file_bytes`` is refused (413) while it is still being received, so no request
    is ever read past ``max_files * max_file_bytes`` plus the small text fields.
    """
    from python_multipart import MultipartParser
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import parse_options_header

    media_type, options = parse_options_header(content_type_header)
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise ApiError(415, "unsupported_media_type", "send the request as multipart/form-data with a boundary")

    form = ParsedForm()
    state: dict[str, Any] = {"part": _Part(), "header_name": b"", "header_value": b""}

    def on_part_begin() -> None:
        state["part"] = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header_name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["header_value"] += data[start:end]

    def on_header_end() -> None:
        state["part"].headers[state["header_name"].lower()] = state["header_value"]
        state["header_name"], state["header_value"] = b"", b""

    def on_headers_finished() -> None:
        part: _Part = state["part"]
        _, disposition = parse_options_header(part.headers.get(b"content-disposition", b""))
        if b"name" not in disposition:
            raise ApiError(400, "bad_multipart", "a multipart part has no Content-Disposition name")
        part.name = disposition[b"name"].decode("utf-8", "replace")
        if b"filename" in disposition:
            if len(form.files) >= max_files:
                raise ApiError(413, "too_many_files", f"at most {max_files} files per request")
            filename = disposition[b"filename"].decode("utf-8", "replace").replace("\\", "/").split("/")[-1]
            ctype = part.headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
            part.file = UploadedFile(field=part.name, filename=filename or "(unnamed)", content_type=ctype)
            form.files.append(part.file)
        elif sum(len(v) for v in form.fields.values()) >= max_fields:
            raise ApiError(413, "too_many_fields", f"at most {max_fields} form fields per request")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part: _Part = state["part"]
        if part.file is not None:
            if len(part.file.data) + (end - start) > max_file_bytes:
                raise ApiError(
                    413,
                    "file_too_large",
                    f"{part.file.filename!r} is larger than the {_human_bytes(max_file_bytes)} upload limit",
                    file=part.file.filename,
                )
            part.file.data += data[start:end]
        else:
            if len(part.value) + (end - start) > max_field_bytes:
                raise ApiError(
                    413, "field_too_large", f"form field {part.name!r} is longer than {max_field_bytes} bytes"
                )
            part.value += data[start:end]

    def on_part_end() -> None:
        part: _Part = state["part"]
        if part.file is None:
            form.fields.setdefault(part.name, []).append(part.value.decode("utf-8", "replace"))

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in stream:
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise ApiError(400, "bad_multipart", f"malformed multipart body: {exc}") from exc
    return form


async def read_bounded(stream: AsyncIterator[bytes], *, max_bytes: int) -> bytes:
    """Read a whole (non-multipart) body, refusing it with 413 as soon as it passes ``max_bytes``."""
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, "body_too_large", f"the request body is larger than {_human_bytes(max_bytes)}")
    return bytes(body)


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
    """Decode uploaded bytes into an RGB image, checking the format and the pixel count before decoding."""
    try:
        # Image.open reads only the header; the pixel count is checked before any decoding.
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ApiError(
                    413,
                    "image_too_large",
                    f"{filename!r} is {width}x{height} pixels; the limit is {max_pixels:,} pixels",
                    file=filename,
                )
            if img.format not in allowed_formats:
                raise ApiError(
                    415,
                    "unsupported_image_format",
                    f"{filename!r} is a {img.format} image; allowed formats: {', '.join(allowed_formats)}",
                    file=filename,
                )
            img.load()
            return img.convert("RGB")
    except ApiError:
        raise
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "image_too_large", f"{filename!r} is too large to decode: {exc}", file=filename) from exc
    except UnidentifiedImageError as exc:
        raise ApiError(422, "not_an_image", f"{filename!r} is not a readable image", file=filename) from exc
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise ApiError(
            422, "corrupt_image", f"{filename!r} is truncated or corrupt: {exc}", file=filename
        ) from exc


def _human_bytes(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):g} MiB"
    if n >= 1024:
        return f"{n / 1024:g} KiB"
    return f"{n} bytes"
