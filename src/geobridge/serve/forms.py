"""The service's one request reader: multipart, urlencoded and JSON bodies become one checked :class:`ParsedForm`.

Every body is read under byte limits, every text value must be valid UTF-8, JSON nesting is bounded before it is
parsed, JSON values must have their field's type, and unknown or repeated fields are refused. Every failure is an
:class:`~geobridge.serve.uploads.ApiError` (a 4xx JSON answer) that names the problem and the field.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from geobridge.serve.uploads import ApiError, UploadedFile, human_bytes

FIELD_KINDS = ("str", "int", "float")
MAX_JSON_DEPTH = 8  # nesting of arrays and objects; a locate body needs 2
_JSON_TYPES = {dict: "an object", list: "an array", bool: "a boolean", float: "a number", int: "an integer"}


@dataclass(frozen=True)
class FieldSpec:
    """A text field of a form: ``kind`` ``"str"``, ``"int"`` (JSON may send an integer) or ``"float"`` (JSON may send
    any number), ``repeated`` if a list."""

    kind: str = "str"
    repeated: bool = False

    def __post_init__(self) -> None:
        if self.kind not in FIELD_KINDS:
            raise ValueError(f"unknown field kind {self.kind!r}; expected one of {', '.join(FIELD_KINDS)}")


@dataclass
class ParsedForm:
    files: list[UploadedFile] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)

    def get_all(self, name: str) -> list[str]:
        return self.fields.get(name, [])

    def get(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None


@dataclass(frozen=True)
class FormLimits:
    """Byte and count limits of one request."""

    max_file_bytes: int
    max_files: int
    max_field_bytes: int = 16 * 1024
    max_fields: int = 64
    max_body_bytes: int = 64 * 1024  # urlencoded and JSON bodies
    max_json_depth: int = MAX_JSON_DEPTH

    @property
    def ceiling(self) -> int:
        """The most a multipart body may declare: the files plus small text fields and part headers."""
        return self.max_files * self.max_file_bytes + 256 * 1024


async def read_form(
    headers: Mapping[str, str],
    stream: AsyncIterator[bytes],
    *,
    fields: Mapping[str, FieldSpec],
    file_fields: Sequence[str],
    limits: FormLimits,
) -> ParsedForm:
    """Read a request body of any accepted content type into a form with only known, well-typed fields."""
    content_type = headers.get("content-type", "")
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.ceiling:
        raise ApiError(
            413, "body_too_large", f"the request body ({int(declared):,} bytes) is over {limits.ceiling:,} bytes"
        )
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded":  # a text-only form without files
        form = _parse_urlencoded(await read_bounded(stream, max_bytes=limits.max_body_bytes), limits=limits)
    elif media_type == "application/json":
        body = await read_bounded(stream, max_bytes=limits.max_body_bytes)
        form = _parse_json(body, fields=fields, max_depth=limits.max_json_depth)
    else:
        form = await parse_multipart(content_type, stream, limits=limits)
    _check_fields(form, fields=fields, file_fields=file_fields)
    return form


async def read_bounded(stream: AsyncIterator[bytes], *, max_bytes: int) -> bytes:
    """Read a whole (non-multipart) body, refusing it with 413 as soon as it passes ``max_bytes``."""
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, "body_too_large", f"the request body is larger than {human_bytes(max_bytes)}")
    return bytes(body)


def _check_fields(form: ParsedForm, *, fields: Mapping[str, FieldSpec], file_fields: Sequence[str]) -> None:
    unknown = sorted(set(form.fields) - set(fields))
    if unknown:
        raise ApiError(422, "unknown_field", f"unknown form field(s) {unknown}; expected {', '.join(fields)}")
    stray = sorted({f.field for f in form.files if f.field not in file_fields})
    if stray:
        raise ApiError(
            422, "unknown_field", f"files must be sent in the field(s) {', '.join(map(repr, file_fields))}, got {stray}"
        )
    for name, values in form.fields.items():
        if len(values) > 1 and not fields[name].repeated:
            raise ApiError(422, "repeated_field", f"field {name!r} was sent {len(values)} times; send it once")


def _utf8(raw: bytes, *, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1]
        detail = f"form field {name!r} is not valid UTF-8 (byte {exc.start}: {bad!r})"
        raise ApiError(400, "bad_encoding", detail) from None


# ---------------------------------------------------------------------- urlencoded
def _parse_urlencoded(body: bytes, *, limits: FormLimits) -> ParsedForm:
    form = ParsedForm()
    try:  # latin-1 maps each (percent-decoded) byte to one character, so the raw bytes can be checked below
        pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True, max_num_fields=limits.max_fields,
                          encoding="latin-1")
    except ValueError as exc:
        raise ApiError(400, "bad_form", f"the form body does not parse: {exc}") from exc
    for raw_name, raw_value in pairs:
        name = _utf8(raw_name.encode("latin-1"), name=raw_name)
        form.fields.setdefault(name, []).append(_utf8(raw_value.encode("latin-1"), name=name))
    return form


# ---------------------------------------------------------------------- JSON
def _parse_json(body: bytes, *, fields: Mapping[str, FieldSpec], max_depth: int) -> ParsedForm:
    depth = _json_depth(body)
    if depth > max_depth:
        raise ApiError(400, "bad_json", f"the JSON body is nested {depth} levels deep; at most {max_depth} are allowed")
    try:
        data = json.loads(body or b"{}", object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, over-long integers
        raise ApiError(400, "bad_json", f"the JSON body does not parse: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", f"the JSON body must be an object, got {_json_type(data)}")
    form = ParsedForm()
    for name, value in data.items():
        spec = fields.get(name)
        if spec is None:
            form.fields[name] = []  # refused as unknown by _check_fields
            continue
        if value is None:
            continue  # null: the field is not set
        values = value if spec.repeated and isinstance(value, list) else [value]
        form.fields[name] = [_json_text(v, name=name, spec=spec) for v in values]
    return form


def _json_text(value: Any, *, name: str, spec: FieldSpec) -> str:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate escape such as "\ud800"
            detail = f"field {name!r} is not valid Unicode (lone surrogate {value[exc.start]!r})"
            raise ApiError(422, "invalid_field", detail) from None
        return value
    if spec.kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if spec.kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    wanted = {"int": "an integer", "float": "a number"}.get(spec.kind, "a string")
    if spec.repeated:
        wanted += " or an array of them"
    raise ApiError(422, "invalid_field", f"field {name!r} must be {wanted}, got {_json_type(value)}")


def _json_type(value: Any) -> str:
    return next((label for kind, label in _JSON_TYPES.items() if isinstance(value, kind)), type(value).__name__)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"duplicate key {key!r}")
        data[key] = value
    return data


def _json_depth(body: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` outside strings, found in one pass before parsing."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


# ---------------------------------------------------------------------- multipart
@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    file: UploadedFile | None = None
    value: bytearray = field(default_factory=bytearray)


async def parse_multipart(content_type_header: str, stream: AsyncIterator[bytes], *, limits: FormLimits) -> ParsedForm:
    """Parse ``multipart/form-data`` as it streams in, stopping as soon as a limit is passed.

    A file larger than ``limits.max_file_bytes`` is refused (413) while it is still being received, so no request
    is ever read past ``max_files * max_file_bytes`` plus the small text fields.
    """
    from python_multipart import MultipartParser
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import parse_options_header

    media_type, options = parse_options_header(content_type_header)
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise ApiError(415, "unsupported_media_type", "send the request as multipart/form-data with a boundary")
    collector = _PartCollector(limits)
    try:  # the constructor refuses over-long boundaries, so it is inside the try as well
        parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
        async for chunk in stream:
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise ApiError(400, "bad_multipart", f"malformed multipart body: {exc}") from exc
    return collector.form


class _PartCollector:
    """The multipart parser's callbacks: each part's headers, then its bytes into a file or a text field, with
    every limit checked as the bytes arrive."""

    def __init__(self, limits: FormLimits) -> None:
        self.limits = limits
        self.form = ParsedForm()
        self.part = _Part()
        self.header_name, self.header_value = b"", b""

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers[self.header_name.lower()] = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        part, form, limits = self.part, self.form, self.limits
        _, disposition = parse_options_header(part.headers.get(b"content-disposition", b""))
        if b"name" not in disposition:
            raise ApiError(400, "bad_multipart", "a multipart part has no Content-Disposition name")
        part.name = _utf8(disposition[b"name"], name=disposition[b"name"].decode("latin-1"))
        if b"filename" in disposition:
            if len(form.files) >= limits.max_files:
                raise ApiError(413, "too_many_files", f"at most {limits.max_files} files per request")
            # The filename is only a label in answers; undecodable bytes are shown as U+FFFD.
            filename = disposition[b"filename"].decode("utf-8", "replace").replace("\\", "/").split("/")[-1]
            ctype = part.headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
            part.file = UploadedFile(field=part.name, filename=filename or "(unnamed)", content_type=ctype)
            form.files.append(part.file)
        elif sum(len(v) for v in form.fields.values()) >= limits.max_fields:
            raise ApiError(413, "too_many_fields", f"at most {limits.max_fields} form fields per request")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part, limits = self.part, self.limits
        if part.file is not None:
            if len(part.file.data) + (end - start) > limits.max_file_bytes:
                raise ApiError(
                    413,
                    "file_too_large",
                    f"{part.file.filename!r} is larger than the {human_bytes(limits.max_file_bytes)} upload limit",
                    file=part.file.filename,
                )
            part.file.data += data[start:end]
        else:
            if len(part.value) + (end - start) > limits.max_field_bytes:
                raise ApiError(
                    413, "field_too_large", f"form field {part.name!r} is longer than {limits.max_field_bytes} bytes"
                )
            part.value += data[start:end]

    def on_part_end(self) -> None:
        if self.part.file is None:
            self.form.fields.setdefault(self.part.name, []).append(_utf8(bytes(self.part.value), name=self.part.name))
