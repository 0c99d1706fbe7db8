"""The one image decoder: 16-bit and float scaling, EXIF orientation, palette and alpha, one pixel limit, named errors.

Each reader is exercised through its public path: ``geobridge.data.load_image`` (datasets, ``data check``),
``ViewDataset`` and the tensor cache (training), and ``GeoBridge.encode`` on paths (what ``geobridge locate``,
``index build`` and ``eval`` call). The service's path is in test_serve.py.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from _image_files import (
    encode,
    expected8,
    gradient16,
    gradient16_png,
    palette_png,
    png_claiming,
    rgba_png,
    rotated_jpeg,
)
from PIL import Image

from geobridge.data import ViewDataset, load_image, load_places
from geobridge.errors import DataError
from tests.conftest import make_world


def _tiff(array: np.ndarray) -> bytes:
    return encode(Image.fromarray(array), "TIFF")


@pytest.mark.parametrize(
    "data,values16",
    [
        pytest.param(gradient16_png(), gradient16(), id="I;16-png"),
        pytest.param(_tiff(gradient16().astype(">u2")), gradient16(), id="I;16B-tiff"),
        pytest.param(_tiff(gradient16().astype(np.int32)), gradient16(), id="I-tiff"),
    ],
)
def test_16_bit_gradient_keeps_its_full_range(tmp_path, data, values16):
    path = tmp_path / "g.img"
    path.write_bytes(data)
    got = np.asarray(load_image(path))
    np.testing.assert_array_equal(got, expected8(values16))
    assert got.min() == 0 and got.max() == 255
    assert (got == 255).mean() == pytest.approx(1 / 256)  # one column of 256 is white, not 99.6 %
    assert len(np.unique(got[..., 0])) == 256


def test_float_images_scale_from_unit_range_or_their_own(tmp_path):
    unit = np.tile(np.linspace(0.0, 1.0, 256, dtype=np.float32), (4, 1))
    (tmp_path / "unit.tif").write_bytes(_tiff(unit))
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "unit.tif"))[..., 0], np.round(unit * 255))
    wide = unit * 4000.0 - 1000.0  # e.g. elevation in metres: scaled by its own range
    (tmp_path / "wide.tif").write_bytes(_tiff(wide))
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "wide.tif"))[..., 0], np.round(unit * 255))
    (tmp_path / "nan.tif").write_bytes(_tiff(np.full((4, 4), np.nan, np.float32)))
    with pytest.raises(DataError, match="nan.tif"):
        load_image(tmp_path / "nan.tif")


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_jpeg_is_decoded_upright(tmp_path, orientation):
    data, upright = rotated_jpeg(orientation)
    path = tmp_path / "r.jpg"
    path.write_bytes(data)
    got = np.asarray(load_image(path))
    assert got.shape == upright.shape
    np.testing.assert_array_equal(got, upright)


def test_palette_and_alpha_are_composited_on_black(tmp_path):
    palette, palette_expected = palette_png()
    rgba, rgba_expected = rgba_png(alpha=128)
    la = encode(Image.new("LA", (2, 2), (200, 51)))  # grey 200 at alpha 0.2 -> 40
    for name, data, expected in (
        ("p.png", palette, palette_expected),
        ("a.png", rgba, rgba_expected),
        ("la.png", la, np.full((2, 2, 3), 40.0)),
    ):
        (tmp_path / name).write_bytes(data)
        got = np.asarray(load_image(tmp_path / name)).astype(np.float64)
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, atol=1, err_msg=name)


def test_one_pixel_limit_for_every_reader(tmp_path):
    import geobridge.data.io
    import geobridge.images
    from geobridge.cli.main import build_parser

    limit = geobridge.images.MAX_IMAGE_PIXELS
    assert geobridge.data.io.MAX_IMAGE_PIXELS is limit
    (tmp_path / "i.gbx").write_bytes(b"")  # the parser checks that the index exists
    assert build_parser().parse_args(["serve", "--index", str(tmp_path / "i.gbx")]).max_pixels == limit
    over = tmp_path / "over.png"
    over.write_bytes(png_claiming(7000, 7000))  # 49 MP: over the one limit (the datasets allowed 64 MP)
    with pytest.raises(DataError, match=r"too large.*over\.png.*7000x7000"):
        load_image(over)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(100_000, 100_000))
    with pytest.raises(DataError, match=r"too large.*bomb\.png"):
        load_image(bomb)
    at_limit = tmp_path / "at.png"  # exactly at the limit the header is fine; the fake data is then truncated
    at_limit.write_bytes(png_claiming(8000, limit // 8000))
    with pytest.raises(DataError, match=r"truncated.*at\.png"):
        load_image(at_limit)


@pytest.mark.parametrize(
    "name,data,message",
    [
        ("trunc.png", gradient16_png()[:-30], "truncated"),
        ("trunc.jpg", rotated_jpeg()[0][:300], "truncated"),
        ("text.png", b"not an image at all", "not a known format"),
        ("empty.jpg", b"", "not a known format"),
    ],
)
def test_unreadable_files_are_data_errors_naming_the_file(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataError, match=message) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_dataset_and_tensor_cache_read_16_bit_and_rotated_images(tmp_path):
    from geobridge.data import samples_of
    from geobridge.data.tensor_cache import build_view_cache

    root = make_world(tmp_path / "w", n=3)
    values = gradient16(32, 32)
    (root / "satellite" / "p000" / "0.png").write_bytes(gradient16_png(32, 32))
    jpeg, upright = rotated_jpeg(6)  # stored 40x24, upright 24x40
    (root / "satellite" / "p001" / "0.png").write_bytes(jpeg)  # a JPEG named .png: read by its content
    places = load_places(root)
    dataset = ViewDataset(samples_of(places, "satellite"), transform=np.asarray)
    np.testing.assert_array_equal(dataset[0]["image"], expected8(values))
    np.testing.assert_array_equal(dataset[1]["image"], upright)
    cache = build_view_cache(places[:1], "satellite", size=(32, 32), interpolation="bilinear")
    np.testing.assert_array_equal(cache.images[0].numpy().transpose(1, 2, 0), expected8(values))  # (3,H,W)->(H,W,3)


def test_encode_reads_paths_and_pil_images_like_the_decoder(tmp_path, tiny_model_config):
    """``GeoBridge.encode`` on a path is what the CLI's locate, index build and eval use."""
    import torch

    from geobridge.models import GeoBridge

    torch.manual_seed(0)
    model = GeoBridge(tiny_model_config).eval()
    gradient = tmp_path / "g.png"
    gradient.write_bytes(gradient16_png(64, 64))
    jpeg, upright = rotated_jpeg(6)
    rotated = tmp_path / "r.jpg"
    rotated.write_bytes(jpeg)
    want = model.encode([Image.fromarray(expected8(gradient16(64, 64))), Image.fromarray(upright)], view="drone")
    got = model.encode([gradient, rotated], view="drone")
    np.testing.assert_allclose(got, want, atol=1e-6)
    with Image.open(io.BytesIO(gradient16_png(64, 64))) as img16:  # an open 16-bit image is scaled the same
        np.testing.assert_allclose(model.encode([img16], view="drone"), want[:1], atol=1e-6)
