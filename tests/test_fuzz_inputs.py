"""Generated bad inputs for the image decoder and the HTTP request reader: clean errors, no crash, no silent acceptance.

Every test is derandomized (the same inputs in every run) and bounded by ``max_examples`` and a per-example
``deadline``. Image files (``geobridge.data.load_image``, the reader of the datasets, the tensor cache, ``data
check`` and ``GeoBridge.encode`` behind the CLI): 120 random byte strings under random extensions, 120 truncated or
bit-flipped PNG/JPEG/WebP files of random modes, 60 headers claiming huge dimensions = 300 files. HTTP
(``POST /locate`` on the test world of test_serve.py): 150 random JSON bodies, 40 nested JSON bodies, 120 random
multipart bodies, 60 urlencoded bodies, 60 content types, 80 uploaded image files = 510 requests. In all 810
generated inputs; the file takes 32-41 s (pytest's time, imports and the served world included) on a shared
2-core CPU, well under its 60 s bound.

An accepted image must be 8-bit RGB within the pixel limit; a refused one a ``DataError`` naming the file. An HTTP
answer must be 200 exactly when an oracle that restates the request rules predicts it, otherwise the 4xx JSON error
the oracle predicts, and ``/health`` must answer ok after every request.
"""

from __future__ import annotations

import io
import json
import string
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")

from _serve_world import build_served_world, png_bytes  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from geobridge.data import load_image  # noqa: E402
from geobridge.data.io import MAX_IMAGE_PIXELS  # noqa: E402
from geobridge.errors import DataError  # noqa: E402

FIELDS = ("views", "view", "text", "top_k", "fusion")
FUSIONS = ("auto", "score", "consensus", "max", "weighted")
IMAGE_VIEWS = ("drone", "satellite", "street")
MAX_UPLOAD = 200_000
SERVE_PIXELS = 1_000_000
# Pillow warns about headers over its own 89 MP default before our limit refuses them; the refusal is what is tested.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def _fuzz(examples: int):
    return settings(
        max_examples=examples,
        deadline=2000,  # ms per example
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    )


# ---------------------------------------------------------------------- image files
def _encoded(fmt: str, mode: str, size: tuple[int, int], seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode == "I;16":
        image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
    elif mode != "RGB":
        image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


_FORMAT_MODES = {"PNG": ("RGB", "L", "RGBA", "P", "LA", "I;16"), "JPEG": ("RGB", "L"), "WEBP": ("RGB", "RGBA")}
# Cuts that lose pixel data and must be refused: PNG may lose its zlib checksum and IEND (20 bytes) without
# losing pixels, a JPEG its end-of-image marker.
_MUST_REFUSE_BEFORE = {"PNG": 20, "JPEG": 2, "WEBP": 0}
_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".gif", ".bin", "")


def _check_decoded_or_named(path: Path) -> Image.Image | None:
    """Decode ``path``: an accepted image is upright RGB within the limit; a refusal is a DataError naming it."""
    try:
        image = load_image(path)
    except DataError as exc:
        assert str(path) in str(exc), exc
        return None
    assert image.mode == "RGB" and 0 < image.width * image.height <= MAX_IMAGE_PIXELS
    assert np.asarray(image).dtype == np.uint8
    return image


@_fuzz(120)
@given(data=st.binary(max_size=2048), suffix=st.sampled_from(_SUFFIXES))
def test_random_bytes_are_refused_by_name(tmp_path, data, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    _check_decoded_or_named(path)


@st.composite
def _damaged_images(draw):
    fmt = draw(st.sampled_from(sorted(_FORMAT_MODES)))
    mode = draw(st.sampled_from(_FORMAT_MODES[fmt]))
    size = (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    data = _encoded(fmt, mode, size, seed=draw(st.integers(0, 1000)))
    damage = draw(st.sampled_from(("truncate", "flip", "none")))
    full, cut = len(data), len(data)
    if damage == "truncate":
        cut = draw(st.integers(0, len(data) - 1))
        data = data[:cut]
    elif damage == "flip":
        flipped = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            flipped[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        data = bytes(flipped)
    suffix = draw(st.sampled_from(_SUFFIXES))  # wrong extensions: the content decides
    return fmt, size, damage, (cut, full), data, suffix


@_fuzz(120)
@given(case=_damaged_images())
def test_truncated_and_damaged_images(tmp_path, case):
    fmt, size, damage, (cut, full), data, suffix = case
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(data)
    image = _check_decoded_or_named(path)
    if damage == "none":  # any extension: the content decides
        assert image is not None and image.size == size
    if damage == "truncate" and cut < full - _MUST_REFUSE_BEFORE[fmt]:
        assert image is None, f"{fmt} cut to {cut} of {full} bytes was accepted"
    if damage == "truncate" and image is not None:
        assert image.size == size


@st.composite
def _huge_headers(draw):
    width, height = draw(st.integers(1, 2**31 - 1)), draw(st.integers(1, 2**31 - 1))
    kind = draw(st.sampled_from(("png", "gif", "bmp")))
    if kind == "png":
        def chunk(tag: bytes, body: bytes) -> bytes:
            return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

        ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 32))
        return width, height, data
    if kind == "gif":
        width, height = width % 65536 or 1, height % 65536 or 1
        data = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b"\x2c" + struct.pack(
            "<HHHHB", 0, 0, width, height, 0
        ) + b"\x02\x02\x44\x01\x00\x3b"
        return width, height, data
    width, height = width % 2**31 or 1, height % 2**31 or 1
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    data = b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54) + header + b"\x00" * 64
    return width, height, data


@_fuzz(60)
@given(case=_huge_headers())
def test_huge_dimension_headers_are_refused_before_decoding(tmp_path, case):
    width, height, data = case
    path = tmp_path / "huge.img"
    path.write_bytes(data)
    image = _check_decoded_or_named(path)
    if width * height > MAX_IMAGE_PIXELS:
        assert image is None
        with pytest.raises(DataError, match="too large"):
            load_image(path)


# ---------------------------------------------------------------------- the HTTP service
@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_model_config):
    from geobridge.serve.app import create_app

    model, index, _ = build_served_world(tmp_path_factory.mktemp("fuzz"), tiny_model_config)
    app = create_app(model=model, index=index, max_upload_bytes=MAX_UPLOAD, max_pixels=SERVE_PIXELS, workers=1)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _expected_error(fields: dict[str, list[str]], *, images: int = 0) -> str | None:
    """The error code ``POST /locate`` must answer for these decoded fields, or None for a 200 (the rules restated)."""
    if set(fields) - set(FIELDS):
        return "unknown_field"
    if any(len(values) > 1 for name, values in fields.items() if name != "views"):
        return "repeated_field"
    single = lambda name: fields[name][-1] if fields.get(name) else None  # noqa: E731
    listed = [v.strip() for value in fields.get("views", []) for v in value.split(",") if v.strip()]
    view = (single("view") or "").strip()
    if any(name not in IMAGE_VIEWS for name in [*listed, *([view] if view else [])]):
        return "unknown_view"
    if listed and len(listed) != images:
        return "views_mismatch"
    text = (single("text") or "").strip()
    if len(text) > 2000:
        return "text_too_long"
    raw_top_k = single("top_k")
    if raw_top_k is not None and raw_top_k.strip():
        try:
            top_k = int(raw_top_k.strip())
        except ValueError:
            return "bad_top_k"
        if not 1 <= top_k <= 100:
            return "bad_top_k"
    fusion = (single("fusion") or "auto").strip()
    if fusion not in FUSIONS:
        return "unknown_fusion"
    if not images and not text:
        return "empty_request"
    if fusion == "weighted":  # the test index is not calibrated
        return "invalid_request"
    return None


def _check_answer(client: TestClient, response, expected: str | None) -> None:
    assert response.status_code != 500, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    if expected is None:
        assert response.status_code == 200, body
        assert "matches" in body
    else:
        assert 400 <= response.status_code < 500, body
        assert body["error"] == expected, (expected, body)
        assert isinstance(body["detail"], str) and body["detail"]
    assert client.get("/health").json()["status"] == "ok"


def _check_clean(client: TestClient, response) -> None:
    """No oracle: a 200 locate answer or any 4xx JSON error with a sentence, and a healthy service."""
    assert response.status_code != 500, response.text
    body = response.json()
    if response.status_code == 200:
        assert "matches" in body
    else:
        assert 400 <= response.status_code < 500 and body["error"] and body["detail"], body
    assert client.get("/health").json()["status"] == "ok"


_WORDS = st.sampled_from(["", " ", "drone", "street", "satellite", "text", "drone,street", "auto", "max", "weighted",
                          "vote", "3", "0", "101", " 7 ", "1e3", "-2", "a church by a lake", "x" * 2001])
_STRINGS = st.one_of(_WORDS, st.text(max_size=12))
_JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=True),
                          _STRINGS)
_JSON_VALUES = st.recursive(_JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
_KEYS = st.one_of(st.sampled_from([*FIELDS, "images", "topk", ""]), st.text(max_size=6))


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _json_expected(data: object) -> tuple[int, str | None]:
    """(status, code) for a parsed JSON body: the reader's type rules, then the request rules."""
    if _depth(data) > 8 or not isinstance(data, dict):
        return 400, "bad_json"
    fields: dict[str, list[str]] = {}
    for name, value in data.items():
        if name not in FIELDS:
            fields[name] = []
            continue
        if value is None:
            continue
        values = value if name == "views" and isinstance(value, list) else [value]
        for item in values:
            ok = isinstance(item, str) or (name == "top_k" and isinstance(item, int) and not isinstance(item, bool))
            if not ok:
                return 422, "invalid_field"
        fields[name] = [item if isinstance(item, str) else str(item) for item in values]
    code = _expected_error(fields)
    return (200, None) if code is None else (422, code)


@_fuzz(150)
@given(data=st.one_of(st.dictionaries(_KEYS, st.one_of(_JSON_SCALARS, _JSON_VALUES), max_size=5), _JSON_VALUES))
def test_random_json_bodies(client, data):
    response = client.post("/locate", content=json.dumps(data).encode(), headers={"content-type": "application/json"})
    _, code = _json_expected(data)
    _check_answer(client, response, code)


@_fuzz(40)
@given(depth=st.integers(1, 60_000), opener=st.sampled_from(["[", "{\"a\":", "{\"text\":"]),
       closed=st.booleans())
def test_nested_json_bodies(client, depth, opener, closed):
    closer = {"[": "]", "{\"a\":": "}", "{\"text\":": "}"}[opener]
    body = (opener * depth + ("1" + closer * depth if closed else "")).encode()
    if len(body) > 64 * 1024:
        body = body[: 64 * 1024]  # the body limit; the depth scan must still refuse it
    response = client.post("/locate", content=body, headers={"content-type": "application/json"})
    try:
        expected = _json_expected(json.loads(body))[1] if depth <= 8 else "bad_json"
    except (ValueError, RecursionError):
        expected = "bad_json"
    _check_answer(client, response, expected)


_BOUNDARY_CHARS = string.ascii_letters + string.digits + "'()+_-./:=?"


@st.composite
def _multipart_bodies(draw):
    boundary = draw(st.one_of(st.text(_BOUNDARY_CHARS, min_size=1, max_size=40),
                              st.text(_BOUNDARY_CHARS, min_size=250, max_size=400)))
    parts = draw(st.lists(st.tuples(st.one_of(st.sampled_from([*FIELDS, "images", "x"]), st.text(max_size=5)),
                                    st.one_of(_STRINGS.map(str.encode), st.binary(max_size=16))), max_size=4))
    body = b"".join(
        b"--" + boundary.encode() + b'\r\nContent-Disposition: form-data; name="' + name.encode()
        + b'"\r\n\r\n' + value + b"\r\n" for name, value in parts
    ) + b"--" + boundary.encode() + b"--\r\n"
    damage = draw(st.sampled_from(("none", "none", "truncate", "junk", "other_boundary")))
    if damage == "truncate" and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif damage == "junk":
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.binary(min_size=1, max_size=32)) + body[at:]
    header = f"multipart/form-data; boundary={boundary if damage != 'other_boundary' else boundary + 'X'}"
    return boundary, parts, damage, body, header


def _multipart_expected(boundary: str, parts: list[tuple[str, bytes]]) -> tuple[int, str | None]:
    if len(boundary) > 256:
        return 400, "bad_multipart"
    fields: dict[str, list[str]] = {}
    for name, value in parts:
        if '"' in name or "\r" in name or "\n" in name or "\\" in name:
            return 0, "?"  # a name that breaks its header: the reader may refuse it in several ways
        try:
            fields.setdefault(name, []).append(value.decode("utf-8"))
        except UnicodeDecodeError:
            return 400, "bad_encoding"
    code = _expected_error(fields)
    return (200, None) if code is None else (422, code)


@_fuzz(120)
@given(case=_multipart_bodies())
def test_random_multipart_bodies(client, case):
    boundary, parts, damage, body, header = case
    response = client.post("/locate", content=body, headers={"content-type": header})
    assert response.status_code != 500, response.text
    _, code = _multipart_expected(boundary, parts)
    if damage == "none" and code != "?":
        _check_answer(client, response, code)
    else:  # a damaged body may still hold a valid request (junk inside a value); it must never crash
        _check_clean(client, response)
    if len(boundary) > 256 and damage != "other_boundary":
        assert response.status_code == 400 and response.json()["error"] == "bad_multipart"


@_fuzz(60)
@given(pairs=st.lists(st.tuples(st.one_of(st.sampled_from(FIELDS), st.text(max_size=4)),
                                st.one_of(_STRINGS.map(str.encode), st.binary(max_size=12))), max_size=4))
def test_urlencoded_bodies(client, pairs):
    from urllib.parse import quote_from_bytes

    body = "&".join(f"{quote_from_bytes(k.encode())}={quote_from_bytes(v)}" for k, v in pairs).encode()
    response = client.post("/locate", content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    fields: dict[str, list[str]] = {}
    expected: str | None = None
    for name, value in pairs:
        try:
            fields.setdefault(name, []).append(value.decode("utf-8"))
        except UnicodeDecodeError:
            expected = "bad_encoding"
            break
    if expected is None:
        expected = _expected_error(fields)
    _check_answer(client, response, expected)


_MEDIA_TYPES = st.sampled_from(["text/plain", "application/xml", "image/png", "multipart/mixed", "", "json",
                                "application/json", "multipart/form-data", "application/x-www-form-urlencoded"])


@_fuzz(60)
@given(media=_MEDIA_TYPES, params=st.text(string.printable.strip() + " ", max_size=30),
       body=st.binary(max_size=200))
def test_bad_content_types(client, media, params, body):
    header = f"{media};{params}" if params else media
    response = client.post("/locate", content=body, headers={"content-type": header})
    assert response.status_code != 500, response.text
    status = response.status_code
    if media not in ("application/json", "multipart/form-data", "application/x-www-form-urlencoded"):
        assert status == 415, response.text
    _check_clean(client, response)
    if status == 200:  # only a well-formed request is served
        assert media in ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")


@st.composite
def _uploads(draw):
    kind = draw(st.sampled_from(("random", "damaged", "huge")))
    if kind == "random":
        return kind, draw(st.binary(min_size=1, max_size=1024))
    if kind == "huge":
        width, height, data = draw(_huge_headers())
        return ("huge-over" if width * height > SERVE_PIXELS and data.startswith(b"\x89PNG") else kind), data
    fmt, size, damage, _, data, _ = draw(_damaged_images())
    return f"{kind}-{damage}-{fmt}", data


@_fuzz(80)
@given(case=_uploads(), ctype=st.sampled_from(["image/png", "image/jpeg", "image/webp"]))
def test_uploaded_files(client, case, ctype):
    kind, data = case
    response = client.post("/locate", files=[("images", ("up.bin", data, ctype))], data={"top_k": "3"})
    assert response.status_code != 500, response.text
    if response.status_code == 200:
        assert kind.startswith("damaged"), f"{kind} upload was accepted"
        _check_answer(client, response, None)
        return
    body = response.json()
    assert body["error"] in {"not_an_image", "corrupt_image", "image_too_large", "unsupported_image_format",
                             "empty_file"}, body
    assert body["file"] == "up.bin" and "up.bin" in body["detail"]
    assert client.get("/health").json()["status"] == "ok"
    if kind == "huge-over":
        assert response.status_code == 413 and body["error"] == "image_too_large", body


def test_service_still_locates_after_the_fuzzing(client):
    response = client.post("/locate", files=[("images", ("ok.png", png_bytes(), "image/png"))], data={"top_k": "2"})
    assert response.status_code == 200 and len(response.json()["matches"]) == 2
