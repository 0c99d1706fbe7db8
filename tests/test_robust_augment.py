"""Seasons (geobridge.seasons), the robust augmentation settings (geobridge.robust) in both training pipelines, and
precise BN at the end of training (train.norm_recalibration_images)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_data import make_geoloc

from geobridge.data.batch_augment import BatchAugment
from geobridge.data.transforms import RandomSeason, make_view_transform
from geobridge.errors import ConfigError
from geobridge.robust import RobustAugment
from geobridge.seasons import SEASON_NAMES, season_shift, vegetation_weight
from geobridge.synth.appearance import season

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
GRASS, ROAD, ROOF = (0.25, 0.55, 0.2), (0.5, 0.5, 0.5), (0.7, 0.2, 0.15)


def _scene(grass: float) -> torch.Tensor:
    """(8, 8, 3): the top ``grass`` fraction of rows grass, then a grey road row, then red roofs."""
    x = torch.tensor(ROOF).repeat(8, 8, 1)
    rows = int(round(8 * grass))
    x[:rows] = torch.tensor(GRASS)
    x[rows : rows + 1] = torch.tensor(ROAD)
    return x


def test_vegetation_weight_is_green_above_red_and_blue():
    x = torch.tensor([[GRASS, ROAD, ROOF, (0.1, 0.13, 0.1)]])  # (1, 4, 3)
    w = vegetation_weight(x)[0, :, 0]
    assert w.tolist() == pytest.approx([1.0, 0.0, 0.0, 0.5])  # (0.13 - 0.1) / 0.06


@pytest.mark.parametrize("name", SEASON_NAMES)
def test_season_of_a_batch_equals_each_image_with_its_own_strength(name):
    batch = torch.stack([_scene(g) for g in (0.25, 0.5, 0.75)])  # (3, 8, 8, 3)
    strength = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1, 1)
    out = season_shift(batch, name, strength)
    for i, s in enumerate((0.0, 0.5, 1.0)):
        torch.testing.assert_close(out[i], season_shift(batch[i], name, s))
    torch.testing.assert_close(out[0], batch[0])  # strength 0: unchanged


def test_winter_whitens_vegetation_and_keeps_roofs_red():
    x = _scene(0.5)
    out = season_shift(x, "winter", 1.0)
    grass, roof = out[0, 0], out[7, 0]
    assert grass.min() > 0.75 and grass[2] > grass[0]  # snow: bright, bluish white (was green 0.25/0.55/0.2)
    assert roof[0] > roof[1] + 0.3  # a red roof stays red (only the overall tint moves it)
    autumn = season_shift(x, "autumn", 1.0)[0, 0]
    assert autumn[0] > autumn[1] > autumn[2]  # foliage turns orange-brown


def test_world_season_uses_the_shared_formula():
    image = (_scene(0.5).numpy() * 255).astype(np.uint8)
    for name in SEASON_NAMES:
        expected = season_shift(torch.from_numpy(image.astype(np.float32) / 255), name, 0.7).numpy()
        assert np.abs(season(image, name, strength=0.7).astype(float) - expected * 255).max() <= 0.5 + 1e-4
    with pytest.raises(ValueError, match="unknown season"):
        season_shift(_scene(0.5), "monsoon")


def _uint8_batch() -> torch.Tensor:
    scenes = torch.stack([_scene(g) for g in (0.25, 0.5, 0.75, 1.0)])  # (4, 8, 8, 3)
    return (scenes * 255).round().to(torch.uint8).permute(0, 3, 1, 2).contiguous()  # (4, 3, 8, 8)


def test_batch_season_with_p1_changes_every_green_image_and_p0_none():
    images = _uint8_batch()
    only_season = RobustAugment(blur_p=0, downscale_p=0, season_p=1.0, strong_colour=False, grayscale_p=0)
    never = RobustAugment(blur_p=0, downscale_p=0, season_p=0.0, strong_colour=False, grayscale_p=0)
    kwargs = dict(mean=(0, 0, 0), std=(1, 1, 1), rotate=False)
    # drone geometry crops and flips: compare the same draw with and without the season
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    with_season = BatchAugment("satellite", robust=only_season, **kwargs)(images, generator=gen())
    without = BatchAugment("satellite", robust=never, **kwargs)(images, generator=gen())
    assert all(not torch.allclose(a, b, atol=0.02) for a, b in zip(with_season, without, strict=True))
    again = BatchAugment("satellite", robust=never, **kwargs)(images, generator=gen())
    torch.testing.assert_close(without, again)


def test_pil_random_season_keeps_size_and_changes_green():
    image = Image.fromarray((_scene(1.0).numpy() * 255).astype(np.uint8))
    torch.manual_seed(0)
    out = RandomSeason()(image)
    assert out.size == image.size and out.mode == "RGB"
    assert not np.array_equal(np.asarray(out), np.asarray(image))
    t = make_view_transform("satellite", input_size=(3, 8, 8), mean=MEAN, std=STD, train=True,
                            robust=RobustAugment(season_p=1.0))
    assert tuple(t(image).shape) == (3, 8, 8)


def test_robust_settings_are_checked():
    from geobridge.train import load_config

    config = load_config(None, ["data.robust.season_p=0.3", "data.robust.strong_colour=false"])
    assert config.data.robust.season_p == 0.3 and config.data.robust.colour == (0.2, 0.2, 0.1)
    with pytest.raises(ConfigError, match="data.robust.blur_p"):
        load_config(None, ["data.robust.blur_p=1.5"])
    with pytest.raises(ValueError, match="season_p"):
        RobustAugment(season_p=-0.1)
    with pytest.raises(ConfigError, match="data.robust.views"):
        load_config(None, ["data.robust.views=[drone,text]"])


def _tiny_resnet(path) -> str:
    from geobridge.models import get_model_config

    config = get_model_config("gb-small")
    config.name = "tiny-resnet"
    config.text.kind = "hashing"
    config.image.backbone_kwargs = {"channels": [8, 16, 32, 64]}
    config.image.input_size = {"drone": [32, 32], "satellite": [32, 32], "street": [32, 64]}
    config.image.test_time_augment = []
    path.write_text(json.dumps(config.to_dict()))
    return str(path)


def test_precise_bn_saves_each_views_statistics_of_its_plain_training_images(tmp_path):
    from geobridge.data import load_places
    from geobridge.models import GeoBridge
    from geobridge.models.view_norm import ViewBatchNorm2d
    from geobridge.train import load_config, train

    world = make_geoloc(tmp_path / "w", n=20)
    model_json = _tiny_resnet(tmp_path / "tiny.json")
    common = [f"data.root={world}", f"model.name={model_json}", "optim.batch_size=8", "optim.epochs=2",
              "data.pipeline=tensor"]
    runs = {}
    for images in (0, 1000):  # 1000: every training image of each view
        out = tmp_path / f"run{images}"
        train(load_config(None, [*common, f"out={out}", f"train.norm_recalibration_images={images}"]),
              evaluate=False)
        runs[images] = out
    record = json.loads((runs[1000] / "run.json").read_text())
    places = load_places(world, split="train")  # 18 training places, 2 drone photos each
    assert record["norm_recalibration"] == {"drone": 36, "satellite": 18, "street": 18}
    assert json.loads((runs[0] / "run.json").read_text())["norm_recalibration"] == {}

    def stats(model: GeoBridge) -> torch.Tensor:
        bn = model.image.backbone.bn1
        assert isinstance(bn, ViewBatchNorm2d)
        return torch.cat([bn.view_running_mean.flatten(), bn.view_running_var.flatten()])

    saved = GeoBridge.from_pretrained(runs[1000] / "model")
    direct = GeoBridge.from_pretrained(runs[1000] / "model")
    items = {v: [p for place in places for p in place.images[v]] for v in ("drone", "satellite", "street")}
    direct.reestimate_norm_statistics(items, batch_size=64, show_progress_bar=False, num_workers=0)
    torch.testing.assert_close(stats(saved), stats(direct))  # re-estimating again changes nothing
    # the control: the moving averages of the augmented batches differ from the plain images' statistics
    moving = GeoBridge.from_pretrained(runs[0] / "model")
    redone = GeoBridge.from_pretrained(runs[0] / "model")
    redone.reestimate_norm_statistics(items, batch_size=64, show_progress_bar=False, num_workers=0)
    assert not torch.allclose(stats(moving), stats(redone), atol=1e-3)


@pytest.mark.parametrize("pipeline", ["tensor", "pil"])
def test_robust_augmentation_joins_at_its_epoch(tmp_path, pipeline):
    from geobridge.train import load_config
    from geobridge.train.trainer import Trainer

    world = make_geoloc(tmp_path / "w", n=12)
    config = load_config(None, [f"data.root={world}", f"out={tmp_path / 'run'}", "model.text_kind=hashing",
                                "optim.batch_size=4", "optim.epochs=3", f"data.pipeline={pipeline}",
                                "data.robust_augment=true", "data.robust_from_epoch=1", "data.robust.season_p=0.5",
                                "data.robust.views=[drone,satellite]"])
    trainer = Trainer(config, show_progress_bar=False)

    def robust_of_each_view() -> list:
        if pipeline == "tensor":
            return [aug.robust for aug in trainer.data.dataset.augment.values()]
        return [any(type(t).__name__ == "RandomApply" for t in tf.transforms)
                for tf in trainer.data.dataset.transforms.values()]

    trainer._set_epoch(0)
    assert robust_of_each_view() == [None if pipeline == "tensor" else False] * 3  # clean first epoch
    trainer._set_epoch(1)
    expected = config.data.robust if pipeline == "tensor" else True
    clean = None if pipeline == "tensor" else False
    assert robust_of_each_view() == [expected, expected, clean]  # drone, satellite; the panoramas stay clean
    trainer.fit()  # and a run with the switch trains through it
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    trainer.close()
