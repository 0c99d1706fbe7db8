"""The tensor pipeline: decode-once uint8 caches and batched augmentation, against the PIL path and by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from geobridge.data import PlaceBatchSampler, load_places
from geobridge.data.batch_augment import BatchAugment, _crop_theta, _roll_columns
from geobridge.data.tensor_cache import TensorBatches, build_view_cache
from geobridge.data.transforms import make_view_transform
from geobridge.errors import DataError
from geobridge.robust import RobustAugment
from tests.conftest import make_world

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _uint8(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("view,size", [("drone", (32, 32)), ("street", (32, 64))])
def test_cache_without_augmentation_equals_the_eval_transform(tmp_path, view, size):
    root = make_world(tmp_path / "w")
    places = load_places(root, split="test")
    # the world's images are 32 px; the cache resizes them to the input size as the eval transform does
    target = (24, 24) if view == "drone" else (24, 48)
    cache = build_view_cache(places, view, size=target, interpolation="bicubic")
    assert cache.images.shape == (len(places), 3, *target) and cache.images.dtype == torch.uint8
    eval_t = make_view_transform(view, input_size=(3, *target), mean=MEAN, std=STD, interpolation="bicubic")
    expected = torch.stack([eval_t(Image.open(p.images[view][0]).convert("RGB")) for p in places])
    got = BatchAugment(view, mean=MEAN, std=STD, train=False)(cache.images, generator=torch.Generator())
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_identity_crop_with_turns_and_flips_is_exactly_the_dihedral_group():
    x = torch.rand(1, 3, 8, 8).expand(8, -1, -1, -1).contiguous()
    turns = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    flip = torch.tensor([False] * 4 + [True] * 4)
    theta = _crop_theta(8, torch.Generator(), scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=flip, turns=turns)
    grid = torch.nn.functional.affine_grid(theta, [8, 3, 8, 8], align_corners=False)
    out = torch.nn.functional.grid_sample(x, grid, mode="bilinear", align_corners=False)
    group = [torch.rot90(x[0], k, dims=(-2, -1)) for k in range(4)]
    group += [torch.rot90(x[0].flip(-1), k, dims=(-2, -1)) for k in range(4)]
    for image in out:  # every output is one of the 8 symmetries, and all 8 occur
        assert any(torch.allclose(image, g, atol=1e-5) for g in group)
    assert all(any(torch.allclose(image, g, atol=1e-5) for image in out) for g in group)


def test_street_roll_and_mirror_by_hand():
    x = _uint8(3, 2, 8).float()
    out = _roll_columns(x, torch.tensor([0, 3, 5]), torch.tensor([False, False, True]))
    assert torch.equal(out[0], x[0])
    assert torch.equal(out[1], torch.roll(x[1], shifts=-3, dims=-1))
    assert torch.equal(out[2], torch.roll(x[2], shifts=-5, dims=-1).flip(-1))


@pytest.mark.parametrize("view", ["drone", "satellite", "street"])
@pytest.mark.parametrize("robust", [False, True])
def test_batch_augment_shapes_range_and_reproducibility(view, robust):
    images = _uint8(16, 16, 32 if view == "street" else 16)
    aug = BatchAugment(view, mean=MEAN, std=STD, robust=RobustAugment() if robust else None)
    a = aug(images, generator=torch.Generator().manual_seed(1))
    b = aug(images, generator=torch.Generator().manual_seed(1))
    c = aug(images, generator=torch.Generator().manual_seed(2))
    assert a.shape == images.shape and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    lo = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    hi = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    per_channel = a.transpose(0, 1).reshape(3, -1)
    assert (per_channel.min(1).values >= lo - 1e-5).all() and (per_channel.max(1).values <= hi + 1e-5).all()


def test_batch_augment_rejects_float_input():
    with pytest.raises(ValueError, match="uint8"):
        BatchAugment("drone", mean=MEAN, std=STD)(torch.rand(2, 3, 8, 8), generator=torch.Generator())


def test_tensor_batches_structure_and_reproducibility(tmp_path):
    root = make_world(tmp_path / "w")
    places = load_places(root)
    caches = {v: build_view_cache(places, v, size=(16, 32 if v == "street" else 16), interpolation="bilinear")
              for v in ("drone", "satellite", "street")}
    sampler = PlaceBatchSampler([p.place_id for p in places], batch_size=4, seed=0)
    augment = {v: BatchAugment(v, mean=MEAN, std=STD) for v in caches}
    batches = TensorBatches(places, caches, sampler=sampler, augment=augment, use_text=True,
                            device=torch.device("cpu"), seed=0)
    first = list(batches)
    assert len(first) == len(sampler) == 2
    for batch in first:
        assert batch["place_index"].shape == (4,)
        assert len(set(batch["place_index"].tolist())) == 4
        for view in ("drone", "satellite", "street"):
            assert batch["images"][view].shape[0] == batch["index"][view].shape[0] == 4
        assert len(batch["text"]) == batch["text_index"].shape[0] == 4
        for text, row in zip(batch["text"], batch["text_index"].tolist(), strict=True):
            assert text in places[batch["place_index"][row]].texts
    again = list(batches)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["place_index"], b["place_index"])
        assert torch.equal(a["images"]["satellite"], b["images"]["satellite"])
    batches.set_epoch(1)
    other = list(batches)
    assert not torch.equal(first[0]["images"]["drone"], other[0]["images"]["drone"])


def test_corrupt_image_in_the_cache_names_its_path(tmp_path):
    root = make_world(tmp_path / "w")
    places = load_places(root)
    bad = places[3].images["satellite"][0]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=str(bad)):
        build_view_cache(places, "satellite", size=(16, 16), interpolation="bilinear")


def test_a_place_without_a_view_is_left_out_of_that_view(tmp_path):
    root = make_world(tmp_path / "w")
    places = load_places(root)
    places[0] = type(places[0])(**{**places[0].__dict__, "images": {k: v for k, v in places[0].images.items()
                                                                    if k != "street"}})
    cache = build_view_cache(places, "street", size=(16, 32), interpolation="bilinear")
    assert cache.count(0) == 0 and cache.images.shape[0] == len(places) - 1
    sampler = PlaceBatchSampler([p.place_id for p in places], batch_size=len(places), seed=0)
    batches = TensorBatches(places, {"street": cache}, sampler=sampler,
                            augment={"street": BatchAugment("street", mean=MEAN, std=STD)}, use_text=False,
                            device=torch.device("cpu"))
    batch = next(iter(batches))
    positions = batch["index"]["street"].tolist()
    assert 0 not in batch["place_index"][positions].tolist() and len(positions) == len(places) - 1
    assert np.all(np.diff(cache.start) >= 0)


def test_caption_augmentation_keeps_sentences_whole():
    from geobridge.data.captions import augment_caption, sentences

    text = "A town with red roofs. A white church by the river. Trees along the road. A lake in the north."
    parts = set(sentences(text))
    assert len(parts) == 4
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        out = augment_caption(text, rng)
        kept = sentences(out)
        assert kept and set(kept) <= parts and len(kept) == len(set(kept))
        seen.add(out)
    assert len(seen) > 20  # subsets and orders vary
    assert augment_caption("one sentence only", rng) == "one sentence only"
    with pytest.raises(ValueError, match="keep"):
        augment_caption(text, rng, keep=0.0)


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
@pytest.mark.parametrize("mirror", [False, True])
def test_joint_orientation_keeps_tile_and_panorama_aligned(turns, mirror):
    """A red mark at bearing 60 degrees in a north-up tile and in a north-left panorama stays at one bearing in both
    after the joint augmentation, whatever the quarter turn and mirror."""
    import math

    from geobridge.data.batch_augment import BatchAugment

    size, bearing = 64, 60.0
    tile = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5 - size / 2, torch.arange(size) + 0.5 - size / 2, indexing="ij")
    east, north = 0.3 * size * math.sin(math.radians(bearing)), 0.3 * size * math.cos(math.radians(bearing))
    tile[0, 0][(xx - east) ** 2 + (yy + north) ** 2 < 16] = 255  # a disc on the bearing, y grows southwards
    pano = torch.zeros(1, 3, size // 2, size, dtype=torch.uint8)
    column = int(bearing / 360 * size)
    pano[0, 0, :, column - 2 : column + 3] = 255
    orientation = (torch.tensor([turns]), torch.tensor([mirror]))
    kwargs = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    out_tile = BatchAugment("satellite", **kwargs)(tile, generator=torch.Generator().manual_seed(0),
                                                    orientation=orientation)
    out_pano = BatchAugment("street", **kwargs)(pano, generator=torch.Generator().manual_seed(0),
                                                 orientation=orientation)
    red = out_tile[0, 0] - out_tile[0, 1]  # (H, W) the mark survives the colour jitter as red minus green
    weight = (red > 0.5 * red.max()).float()
    x_c, y_c = (weight * xx).sum() / weight.sum(), (weight * yy).sum() / weight.sum()
    tile_bearing = math.degrees(math.atan2(float(x_c), float(-y_c))) % 360
    cols = (out_pano[0, 0] - out_pano[0, 1]).mean(dim=0)  # (W,)
    angles = torch.arange(size) * 2 * math.pi / size
    weights = (cols > 0.5 * cols.max()).float()
    pano_bearing = math.degrees(math.atan2(float((weights * angles.sin()).sum()),
                                           float((weights * angles.cos()).sum()))) % 360
    difference = abs((tile_bearing - pano_bearing + 180) % 360 - 180)
    assert difference < 20, (tile_bearing, pano_bearing)
    expected = ((-bearing if mirror else bearing) - 90 * turns) % 360
    assert abs((pano_bearing - expected + 180) % 360 - 180) < 10, (pano_bearing, expected)


def test_colour_matrices_rotate_hue_about_the_grey_axis():
    from geobridge.data.batch_augment import colour_matrices

    m = colour_matrices(torch.tensor([120.0, -120.0, 37.0, 0.0]), torch.tensor([1.0, 1.0, 1.0, 0.5]))  # (4, 3, 3)
    red, green, blue = torch.eye(3)
    torch.testing.assert_close(m[0] @ red, green, atol=1e-6, rtol=0)  # a third of a turn: red -> green -> blue
    torch.testing.assert_close(m[0] @ green, blue, atol=1e-6, rtol=0)
    torch.testing.assert_close(m[1] @ red, blue, atol=1e-6, rtol=0)
    grey = torch.tensor([0.4, 0.4, 0.4])
    for k in range(4):
        torch.testing.assert_close(m[k] @ grey, grey, atol=1e-6, rtol=0)  # greys stay grey
    torch.testing.assert_close(m[2] @ m[2].T, torch.eye(3), atol=1e-6, rtol=0)  # a pure hue turn is a rotation
    # saturation 0.5, no turn: every colour halfway to its own grey level
    colour = torch.tensor([0.9, 0.3, 0.0])
    torch.testing.assert_close(m[3] @ colour, (colour + colour.mean()) / 2, atol=1e-6, rtol=0)


def test_joint_colour_gives_every_view_of_a_place_the_same_matrix(tmp_path):
    from geobridge.data.batch_augment import draw_joint_colour

    root = make_world(tmp_path / "w")
    places = load_places(root)
    caches = {v: build_view_cache(places, v, size=(16, 32 if v == "street" else 16), interpolation="bilinear")
              for v in ("drone", "satellite", "street")}
    seen: dict[str, torch.Tensor] = {}

    class Recorder(BatchAugment):
        def __call__(self, images, *, generator, orientation=None, colour=None):
            seen[self.view] = colour
            return super().__call__(images, generator=generator, orientation=orientation, colour=colour)

    sampler = PlaceBatchSampler([p.place_id for p in places], batch_size=8, seed=0)
    augment = {v: Recorder(v, mean=MEAN, std=STD) for v in caches}
    batches = TensorBatches(places, caches, sampler=sampler, augment=augment, use_text=False,
                            device=torch.device("cpu"), joint_colour=(0.5, 60.0))
    batch = next(iter(batches))
    for view in caches:
        assert torch.equal(batch["index"][view], torch.arange(8))
    assert torch.equal(seen["drone"], seen["satellite"]) and torch.equal(seen["drone"], seen["street"])
    shifted = ~torch.isclose(seen["drone"], torch.eye(3)).flatten(1).all(dim=1)  # (8,)
    assert 0 < int(shifted.sum()) < 8  # p 0.5: some places shifted, some not
    # p 0: no matrices at all, and the batches are those of a pipeline without the option
    plain = TensorBatches(places, caches, sampler=sampler, augment=augment, use_text=False,
                          device=torch.device("cpu"))
    off = TensorBatches(places, caches, sampler=sampler, augment=augment, use_text=False,
                        device=torch.device("cpu"), joint_colour=(0.0, 60.0))
    a, b = next(iter(plain)), next(iter(off))
    assert seen["drone"] is None
    for view in caches:
        assert torch.equal(a["images"][view], b["images"][view])
    matrices = draw_joint_colour(1000, torch.Generator().manual_seed(0), p=1.0, hue_deg=30.0)
    angles = torch.rad2deg(torch.acos(((matrices.diagonal(dim1=1, dim2=2).sum(1) - 1)  # trace of P + sR(I-P)
                                       / (2 * _saturation(matrices)) ).clamp(-1, 1)))
    assert float(angles.max()) <= 30.0 + 1e-3 and float(angles.max()) > 25.0


def _saturation(matrices: torch.Tensor) -> torch.Tensor:
    """(B,) the saturation scale of colour matrices: how much they stretch a chroma vector."""
    chroma = torch.tensor([1.0, -1.0, 0.0]) / 2 ** 0.5
    return (matrices @ chroma).norm(dim=1)


def test_joint_colour_needs_the_tensor_pipeline():
    from geobridge.errors import ConfigError
    from geobridge.train import load_config

    with pytest.raises(ConfigError, match="data.joint_colour_p"):
        load_config(None, ["data.pipeline=pil", "data.joint_colour_p=0.5"])
    assert load_config(None, ["data.pipeline=tensor", "data.joint_colour_p=0.5"]).data.joint_colour_p == 0.5


def test_batch_augment_applies_the_shared_colour():
    from geobridge.data.batch_augment import colour_matrices

    red = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    red[:, 0] = 200
    turn = colour_matrices(torch.tensor([0.0, 120.0]), torch.ones(2))  # (2, 3, 3): the identity, a third of a turn
    out = BatchAugment("satellite", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))(
        red, generator=torch.Generator().manual_seed(0), colour=turn)
    means = out.mean(dim=(2, 3))  # (2, 3)
    assert means[0].argmax() == 0 and means[1].argmax() == 1  # red stays red; turned, it is green


def _flat_images(batch: int, height: int, width: int) -> torch.Tensor:
    return torch.full((batch, 3, height, width), 200, dtype=torch.uint8)


def test_cutout_holes_have_the_drawn_size_and_the_mean_and_leave_the_rest_alone():
    from geobridge.data.config import Cutout

    common = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    images = _flat_images(6, 32, 64)
    plain = BatchAugment("street", **common)(images, generator=torch.Generator().manual_seed(3))
    cut = BatchAugment("street", cutout=Cutout(p=1.0, holes=[1, 1], size=[0.25, 0.25]), **common)(
        images, generator=torch.Generator().manual_seed(3))
    hole = (cut == 0).all(dim=1)  # (B, H, W): the fill is the mean, 0 after normalising
    assert (plain > 0).all()  # a bright image stays bright under the colour jitter
    assert hole.sum(dim=(1, 2)).tolist() == [8 * 16] * 6  # one hole, a quarter of each side
    rows, cols = hole.any(dim=2), hole.any(dim=1)  # (B, H), (B, W): a rectangle covers exactly its rows x cols
    assert torch.equal(hole, rows[:, :, None] & cols[:, None, :])
    assert torch.equal(cut.masked_fill(hole[:, None], 0), plain.masked_fill(hole[:, None], 0))  # the rest untouched


def test_cutout_reaches_the_chosen_share_of_images_with_the_drawn_number_of_holes():
    from geobridge.data.config import Cutout

    common = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    out = BatchAugment("drone", cutout=Cutout(p=0.3, holes=[2, 5], size=[0.1, 0.2]), **common)(
        _flat_images(500, 40, 40), generator=torch.Generator().manual_seed(0))
    hole = (out == 0).all(dim=1)  # (B, H, W)
    holed = hole.any(dim=(1, 2))
    assert 0.24 < holed.float().mean() < 0.36
    area = hole[holed].float().mean(dim=(1, 2))  # share of each holed image covered: 2-5 holes of 4-8 px sides
    assert area.min() >= 2 * 16 / 1600 * 0.5 and area.max() <= 5 * 64 / 1600



def test_cutout_needs_the_tensor_pipeline_and_sound_settings():
    from geobridge.errors import ConfigError
    from geobridge.train import load_config

    with pytest.raises(ConfigError, match="data.cutout.p"):
        load_config(None, ["data.pipeline=pil", "data.cutout.p=0.5"])
    with pytest.raises(ConfigError, match="data.cutout.holes"):
        load_config(None, ["data.pipeline=tensor", "data.cutout.holes=[3,1]"])
    with pytest.raises(ConfigError, match="data.cutout.size"):
        load_config(None, ["data.pipeline=tensor", "data.cutout.size=[0.0,0.2]"])
    with pytest.raises(ConfigError, match="data.cutout.views"):
        load_config(None, ["data.pipeline=tensor", "data.cutout.views=[text]"])
    from geobridge.data.config import Cutout

    with pytest.raises(ValueError, match="holes"):  # one built in code is checked too
        Cutout(p=0.5, holes=[3, 1])
    with pytest.raises(ValueError, match="probability"):
        Cutout(p=1.5)
    assert load_config(None, ["data.pipeline=tensor", "data.cutout.p=0.3"]).data.cutout.p == 0.3
