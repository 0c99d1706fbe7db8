"""The HTTP service: locate with images and text, and a clean 4xx JSON answer for every kind of bad input."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")

from _serve_world import build_served_world, png_bytes  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

MAX_UPLOAD = 200_000


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_config):
    return build_served_world(tmp_path_factory.mktemp("serve"), tiny_model_config)


@pytest.fixture(scope="module")
def client(served):
    from geobridge.serve.app import create_app

    model, index, _ = served
    app = create_app(model=model, index=index, max_upload_bytes=MAX_UPLOAD, max_pixels=1_000_000, workers=2)
    with TestClient(app) as test_client:
        yield test_client


def _noise_png(size: int = 96) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's signature)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _assert_error(response, status: int, code: str, *, file: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    if file is not None:
        assert body["file"] == file
        assert file in body["detail"]
    return body


def _check_matches(body: dict, *, top_k: int) -> None:
    assert -90 <= body["lat"] <= 90 and -180 <= body["lon"] <= 180
    assert 0 <= body["confidence"] <= 1
    matches = body["matches"]
    assert 1 <= len(matches) <= top_k
    assert [m["rank"] for m in matches] == list(range(1, len(matches) + 1))
    for m in matches:
        assert {"place_id", "lat", "lon", "view", "path", "score", "distance_km", "thumbnail_url"} <= set(m)


def test_health(client, served):
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["index_size"] == len(served[1]) == 16
    assert body["model"] == "gb-tiny"
    assert body["views"] == ["drone", "satellite", "street"]


def test_locate_with_a_png_returns_matches(client, served):
    world = served[2]
    drone = (world / "drone" / "p00000" / "00.png").read_bytes()
    response = client.post(
        "/locate", files=[("images", ("drone.png", drone, "image/png"))], data={"views": "drone", "top_k": "5"}
    )
    assert response.status_code == 200, response.text
    _check_matches(response.json(), top_k=5)


def test_text_only_multipart_and_json(client):
    response = client.post("/locate", data={"text": "a church in a forest", "top_k": "3"})
    assert response.status_code == 200, response.text
    _check_matches(response.json(), top_k=3)
    response = client.post("/locate", json={"text": "a church in a forest", "top_k": 3, "fusion": "max"})
    assert response.status_code == 200, response.text
    _check_matches(response.json(), top_k=3)
    assert response.json()["score_meaning"].startswith("max fusion: ")
    schema = client.get("/openapi.json").json()["paths"]["/locate"]["post"]
    fusion = schema["requestBody"]["content"]["application/json"]["schema"]["properties"]["fusion"]
    assert "weighted: a logit" in fusion["description"] and "score_meaning" in schema["responses"]["200"]["description"]


def test_multiple_images_with_views_and_text(client, served):
    world = served[2]
    files = [
        ("images", ("d.png", (world / "drone" / "p00001" / "00.png").read_bytes(), "image/png")),
        ("images", ("s.png", (world / "street" / "p00001" / "0.png").read_bytes(), "image/png")),
    ]
    data = {"views": ["drone", "street"], "text": "fields and a road", "fusion": "consensus", "top_k": "4"}
    response = client.post("/locate", files=files, data=data)
    assert response.status_code == 200, response.text
    _check_matches(response.json(), top_k=4)


def test_jpeg_and_single_view_field(client):
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (120, 100, 80)).save(out, format="JPEG")
    files = [("images", ("a.jpg", out.getvalue(), "image/jpeg")), ("images", ("b.png", png_bytes(), "image/png"))]
    response = client.post("/locate", files=files, data={"view": "satellite"})
    assert response.status_code == 200, response.text


def test_geojson_format(client):
    response = client.post("/locate?format=geojson", data={"text": "desert"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "FeatureCollection" and body["features"]
    _assert_error(client.post("/locate?format=xml", data={"text": "desert"}), 422, "invalid_request")


def test_thumbnails_only_for_recorded_paths(client):
    body = client.post("/locate", data={"text": "a town", "top_k": "2"}).json()
    url = body["matches"][0]["thumbnail_url"]
    assert url.startswith("/thumb/")
    response = client.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size[0] <= 192
    _assert_error(client.get("/thumb/0123456789abcdef01234567"), 404, "not_found")
    assert client.get("/thumb/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert client.get("/thumb/../../etc/passwd").status_code == 404


def _bad_requests() -> list[tuple[str, dict, int, str, str | None]]:
    truncated = _noise_png()[:-400]
    corrupt = bytearray(_noise_png())
    corrupt[200:260] = b"\x00" * 60  # inside the compressed image data: CRC and zlib errors
    return [
        ("corrupt", {"files": [("images", ("c.png", bytes(corrupt), "image/png"))]}, 422, "corrupt_image", "c.png"),
        ("truncated", {"files": [("images", ("t.png", truncated, "image/png"))]}, 422, "corrupt_image", "t.png"),
        (
            "over_byte_limit",
            {"files": [("images", ("big.png", b"\x89PNG" + b"\x00" * (MAX_UPLOAD + 10), "image/png"))]},
            413,
            "file_too_large",
            "big.png",
        ),
        ("bomb", {"files": [("images", ("bomb.png", _png_claiming(100_000, 100_000), "image/png"))]}, 413,
         "image_too_large", "bomb.png"),
        ("over_pixel_limit", {"files": [("images", ("wide.png", _png_claiming(2000, 1000), "image/png"))]}, 413,
         "image_too_large", "wide.png"),
        ("non_image", {"files": [("images", ("notes.png", b"just some text, not pixels", "image/png"))]}, 422,
         "not_an_image", "notes.png"),
        ("zero_bytes", {"files": [("images", ("empty.png", b"", "image/png"))]}, 422, "empty_file", "empty.png"),
        ("wrong_type", {"files": [("images", ("x.txt", png_bytes(), "text/plain"))]}, 415, "unsupported_media_type",
         "x.txt"),
        ("gif_not_allowed", {"files": [("images", ("g.gif", _gif(), "image/png"))]}, 415, "unsupported_image_format",
         "g.gif"),
        ("unknown_view", {"files": [("images", ("a.png", png_bytes(), "image/png"))], "data": {"views": "helicopter"}},
         422, "unknown_view", None),
        ("text_view", {"files": [("images", ("a.png", png_bytes(), "image/png"))], "data": {"view": "text"}}, 422,
         "unknown_view", None),
        ("views_mismatch", {"files": [("images", ("a.png", png_bytes(), "image/png"))],
                            "data": {"views": ["drone", "street"]}}, 422, "views_mismatch", None),
        ("empty_request", {"data": {"top_k": "3"}}, 422, "empty_request", None),
        ("blank_text", {"data": {"text": "   "}}, 422, "empty_request", None),
        ("no_body", {}, 415, "unsupported_media_type", None),
        ("top_k_text", {"data": {"text": "x", "top_k": "ten"}}, 422, "bad_top_k", None),
        ("top_k_zero", {"data": {"text": "x", "top_k": "0"}}, 422, "bad_top_k", None),
        ("top_k_huge", {"data": {"text": "x", "top_k": "100000"}}, 422, "bad_top_k", None),
        ("bad_fusion", {"data": {"text": "x", "fusion": "vote"}}, 422, "unknown_fusion", None),
        ("weighted_uncalibrated", {"data": {"text": "x", "fusion": "weighted"}}, 422, "invalid_request", None),
        ("unknown_field", {"data": {"text": "x", "topk": "3"}}, 422, "unknown_field", None),
        ("file_in_wrong_field", {"files": [("image", ("a.png", png_bytes(), "image/png"))]}, 422, "unknown_field",
         None),
        ("bad_json", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "bad_json",
         None),
        ("bad_multipart", {"content": b"garbage", "headers": {"content-type": "multipart/form-data"}}, 415,
         "unsupported_media_type", None),
    ]


def _gif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="GIF")
    return out.getvalue()


@pytest.mark.parametrize("case", _bad_requests(), ids=lambda case: case[0])
def test_bad_input_is_a_clean_4xx_and_the_service_keeps_serving(client, case):
    _, kwargs, status, code, file = case
    _assert_error(client.post("/locate", **kwargs), status, code, file=file)
    good = client.post("/locate", files=[("images", ("ok.png", png_bytes(), "image/png"))], data={"top_k": "2"})
    assert good.status_code == 200, good.text


def test_declared_body_over_the_ceiling_is_refused_before_reading(served):
    from geobridge.serve.app import create_app

    model, index, _ = served
    app = create_app(model=model, index=index, max_upload_bytes=1000, max_images=1)
    with TestClient(app) as small:
        response = small.post(
            "/locate", content=b"x" * 400_000, headers={"content-type": "multipart/form-data; boundary=zz"}
        )
        _assert_error(response, 413, "body_too_large")
        files = [("images", (f"{i}.png", png_bytes((4, 4)), "image/png")) for i in range(2)]
        _assert_error(small.post("/locate", files=files), 413, "too_many_files")


def test_unexpected_errors_are_logged_json_500_and_serving_continues(served, monkeypatch):
    import geobridge.index
    from geobridge.serve.app import create_app

    real_locate = geobridge.index.locate
    calls = {"n": 0}

    def flaky_locate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real_locate(*args, **kwargs)

    monkeypatch.setattr(geobridge.index, "locate", flaky_locate)
    model, index, _ = served
    with TestClient(create_app(model=model, index=index), raise_server_exceptions=False) as flaky:
        response = flaky.post("/locate", data={"text": "a lake"})
        assert response.status_code == 500
        assert response.json()["error"] == "internal_error"
        assert flaky.post("/locate", data={"text": "a lake"}).status_code == 200


def test_other_routes_errors_are_json(client):
    _assert_error(client.get("/nope"), 404, "not_found")
    _assert_error(client.get("/locate"), 405, "method_not_allowed")


def test_page_static_world_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # offline: no CDN, no tiles
    for name in ("app.js", "style.css"):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200
        assert "https://" not in asset.text
    world = client.get("/world.geojson").json()
    assert world["type"] == "FeatureCollection"
    spec = client.get("/openapi.json").json()
    assert "/locate" in spec["paths"] and "/health" in spec["paths"]
    body = spec["paths"]["/locate"]["post"]["requestBody"]["content"]
    assert "images" in body["multipart/form-data"]["schema"]["properties"]


def test_create_app_rejects_bad_options(served):
    from geobridge.serve.app import create_app

    model, index, _ = served
    with pytest.raises(ValueError, match="workers"):
        create_app(model=model, index=index, workers=0)
    with pytest.raises(ValueError, match="allowed_types"):
        create_app(model=model, index=index, allowed_types=("image/gif",))


def test_serve_cli_is_registered(tmp_path):
    from geobridge.cli.main import build_parser

    index = tmp_path / "idx.gbx"
    index.write_bytes(b"")  # the parser checks that it exists; its content is the loader's
    args = build_parser().parse_args(["serve", "--index", str(index), "--port", "8123"])
    assert args.port == 8123 and args.host == "127.0.0.1" and args.checkpoint is None


# ---------------------------------------------------------------------- the one decoder and the one request reader
def _scores(response) -> list[tuple[str, float]]:
    assert response.status_code == 200, response.text
    return [(m["place_id"], round(m["score"], 5)) for m in response.json()["matches"]]


def test_uploads_use_the_one_decoder(client):
    from _image_files import encode, expected8, gradient16, gradient16_png, palette_png, rgba_png, rotated_jpeg

    def located(name: str, data: bytes, ctype: str = "image/png") -> list[tuple[str, float]]:
        return _scores(client.post("/locate", files=[("images", (name, data, ctype))], data={"top_k": "8"}))

    as_png = lambda array: encode(Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)))  # noqa: E731
    assert located("g16.png", gradient16_png(64, 64)) == located("g8.png", as_png(expected8(gradient16(64, 64))))
    jpeg, upright = rotated_jpeg(6)
    assert located("r.jpg", jpeg, "image/jpeg") == located("u.png", as_png(upright))
    palette, palette_rgb = palette_png()
    assert located("p.png", palette) == located("p8.png", as_png(palette_rgb))
    rgba, rgba_rgb = rgba_png(alpha=255)
    assert located("a.png", rgba) == located("a8.png", as_png(rgba_rgb))


def test_the_service_uses_the_one_pixel_limit(served):
    from geobridge.images import MAX_IMAGE_PIXELS
    from geobridge.serve.app import create_app

    model, index, _ = served
    with TestClient(create_app(model=model, index=index)) as default:
        assert default.get("/health").json()["limits"]["max_pixels"] == MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match="max_pixels"):
        create_app(model=model, index=index, max_pixels=MAX_IMAGE_PIXELS + 1)


def _multipart(boundary: bytes, parts: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(
        b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"" + name + b"\"\r\n\r\n" + value + b"\r\n"
        for name, value in parts
    )
    return body + b"--" + boundary + b"--\r\n"


def _malformed_requests() -> list:
    long_boundary = b"b" * 300
    return [
        pytest.param({"content": b"[" * 50_000, "headers": {"content-type": "application/json"}}, 400, "bad_json",
                     "nested", id="json_50000_brackets"),
        pytest.param({"content": b'{"text": ' + b"{" * 40 + b"}" * 40 + b"}", "headers": {"content-type":
                      "application/json"}}, 400, "bad_json", "nested", id="json_deep_object"),
        pytest.param({"content": _multipart(long_boundary, [(b"text", b"a lake")]),
                      "headers": {"content-type": f"multipart/form-data; boundary={long_boundary.decode()}"}},
                     400, "bad_multipart", "oundary", id="boundary_300_chars"),
        pytest.param({"content": _multipart(b"zz", [(b"text", b"caf\xe9 by a lake")]),
                      "headers": {"content-type": "multipart/form-data; boundary=zz"}},
                     400, "bad_encoding", "'text'", id="multipart_text_not_utf8"),
        pytest.param({"content": b"text=caf%E9+by+a+lake", "headers": {"content-type":
                      "application/x-www-form-urlencoded"}}, 400, "bad_encoding", "'text'", id="urlencoded_not_utf8"),
        pytest.param({"content": b"text=caf\xe9", "headers": {"content-type": "application/x-www-form-urlencoded"}},
                     400, "bad_encoding", "'text'", id="urlencoded_raw_byte"),
        pytest.param({"json": {"text": {"a": 1}}}, 422, "invalid_field", "'text'", id="json_text_object"),
        pytest.param({"json": {"text": ["a", "b"]}}, 422, "invalid_field", "'text'", id="json_text_array"),
        pytest.param({"json": {"text": 5}}, 422, "invalid_field", "'text'", id="json_text_number"),
        pytest.param({"json": {"text": "x", "top_k": 2.5}}, 422, "invalid_field", "'top_k'", id="json_top_k_float"),
        pytest.param({"json": {"text": "x", "top_k": True}}, 422, "invalid_field", "'top_k'", id="json_top_k_bool"),
        pytest.param({"json": {"text": "x", "fusion": ["max"]}}, 422, "invalid_field", "'fusion'",
                     id="json_fusion_array"),
        pytest.param({"json": {"text": "x", "views": ["drone", 3]}}, 422, "invalid_field", "'views'",
                     id="json_views_number"),
        pytest.param({"json": {"text": "x", "top_k": int("9" * 30)}}, 422, "bad_top_k", "top_k", id="json_top_k_huge"),
        pytest.param({"content": b'{"text": "x", "top_k": ' + b"9" * 5000 + b"}", "headers": {"content-type":
                      "application/json"}}, 400, "bad_json", "digits", id="json_5000_digit_int"),
        pytest.param({"content": b'{"text": "a", "text": "b"}', "headers": {"content-type": "application/json"}},
                     400, "bad_json", "'text'", id="json_duplicate_key"),
        pytest.param({"json": {"text": "x", "nope": None}}, 422, "unknown_field", "nope", id="json_unknown_null"),
        pytest.param({"content": b'{"text": "\\ud800 lake"}', "headers": {"content-type": "application/json"}}, 422,
                     "invalid_field", "'text'", id="json_lone_surrogate"),
        pytest.param({"data": {"text": ["a", "b"]}}, 422, "repeated_field", "'text'", id="multipart_text_twice"),
        pytest.param({"content": b"[1, 2]", "headers": {"content-type": "application/json"}}, 400, "bad_json",
                     "object", id="json_array_body"),
    ]


@pytest.mark.parametrize("kwargs,status,code,named", _malformed_requests())
def test_malformed_bodies_are_4xx_naming_the_problem(client, kwargs, status, code, named):
    body = _assert_error(client.post("/locate", **kwargs), status, code)
    assert named in body["detail"], body
    assert client.get("/health").json()["status"] == "ok"
    good = client.post("/locate", json={"text": "a church", "top_k": 2})
    assert good.status_code == 200, good.text
