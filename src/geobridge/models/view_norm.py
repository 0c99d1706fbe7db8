"""Normalisation of a backbone shared by the image views: per-view BatchNorm statistics, or none at all.

A BatchNorm layer trained on one view at a time (the trainer forwards each view as its own batch) normalises each
view with that view's batch statistics; a single set of running statistics is then a moving average over views
whose pixel statistics differ widely (a panorama is half sky, a tile has none), and evaluation normalises every
view with numbers it was never trained with. Domain-specific BatchNorm (Chang et al., CVPR 2019) keeps one set of
running statistics per view, so training and evaluation compute the same thing. The affine weights stay shared.

``image.norm`` (``ImageTowerConfig``) picks one of:

- ``view_batch``: every BatchNorm of the shared backbone keeps its running statistics per image view
  (``ViewBatchNorm2d``, ``ViewBatchNormAct2d``); the tower embeds a view inside ``active_view``;
- ``batch``: the backbone's own BatchNorm, one set of statistics for all views (checkpoints before ``image.norm``);
- ``group``: BatchNorm replaced by GroupNorm, which has no batch statistics (from-scratch backbones only).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import torch
from timm.layers import BatchNormAct2d, GroupNormAct
from torch import nn

from geobridge.errors import ConfigError
from geobridge.models.config import NORMS

_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")

# The view being embedded, as an index into IMAGE_VIEWS. A context variable, not an attribute of the layers:
# each thread (the service embeds in a thread pool) and each asyncio task sees its own value, so concurrent
# encodes of different views never read each other's statistics. Unset outside ``active_view``.
_ACTIVE_VIEW: ContextVar[int | None] = ContextVar("geobridge_active_view", default=None)


@contextlib.contextmanager
def active_view(index: int) -> Iterator[None]:
    """Within the block, per-view norm layers normalise with (and, in training, update) view ``index``'s statistics."""
    token = _ACTIVE_VIEW.set(index)
    try:
        yield
    finally:
        _ACTIVE_VIEW.reset(token)


class _ViewStatistics:
    """Mixin for a ``_BatchNorm`` subclass: ``running_mean``, ``running_var`` and ``num_batches_tracked`` are the
    active view's rows of (V, C), (V, C) and (V,) buffers, so the parent's own ``forward`` runs unchanged.

    Outside ``active_view``: in training the layer normalises with batch statistics and updates nothing (this is
    also what activation checkpointing's recomputation in the backward pass sees, so statistics are updated
    once per forward); in evaluation it raises.
    """

    _buffers: dict[str, torch.Tensor | None]
    training: bool

    @classmethod
    def from_batchnorm(cls, norm: nn.modules.batchnorm._BatchNorm, *, num_views: int) -> Any:
        """A copy of ``norm`` (same affine parameters) whose running statistics start as ``norm``'s for every view."""
        module = cls.__new__(cls)
        module.__dict__.update(norm.__dict__)  # eps, momentum, affine, hooks, ...; its own dicts below
        module._parameters = dict(norm._parameters)
        module._modules = dict(norm._modules)
        module._buffers = {k: v for k, v in norm._buffers.items() if k not in _STATISTICS}
        module._non_persistent_buffers_set = set(norm._non_persistent_buffers_set)
        for name in _STATISTICS:
            value = norm._buffers[name]
            assert value is not None  # converted only when track_running_stats
            # (V, C) statistics, (V,) step counters
            module.register_buffer(f"view_{name}", value.detach().unsqueeze(0).repeat(num_views, *[1] * value.ndim))
        return module

    def _view_row(self, name: str) -> torch.Tensor | None:
        index = _ACTIVE_VIEW.get()
        if index is None:
            if self.training:  # batch statistics; the running update lands in a throwaway copy (the same tensors
                return self._buffers[f"view_{name}"][0].clone()  # as in the forward, as checkpointing requires)
            raise RuntimeError(
                f"{type(self).__name__} keeps its statistics per image view and no view is active: embed images "
                "through ImageTower(images, view=...) or GeoBridge.encode_image, not the bare backbone"
            )
        return self._buffers[f"view_{name}"][index]  # type: ignore[index]  # a view of the row: updates land in place

    @property
    def running_mean(self) -> torch.Tensor | None:
        return self._view_row("running_mean")

    @property
    def running_var(self) -> torch.Tensor | None:
        return self._view_row("running_var")

    @property
    def num_batches_tracked(self) -> torch.Tensor | None:
        return self._view_row("num_batches_tracked")

    @property
    def num_views(self) -> int:
        return int(self._buffers["view_running_mean"].shape[0])  # type: ignore[union-attr]

    def reset_running_stats(self) -> None:
        """Every view's statistics back to mean 0, variance 1 and no batches seen."""
        self._buffers["view_running_mean"].zero_()  # type: ignore[union-attr]
        self._buffers["view_running_var"].fill_(1)  # type: ignore[union-attr]
        self._buffers["view_num_batches_tracked"].zero_()  # type: ignore[union-attr]

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        # nn.Module's loader: _NormBase's would add a plain ``num_batches_tracked`` key to versionless state dicts
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)  # type: ignore[arg-type]


class ViewBatchNorm2d(_ViewStatistics, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with running statistics per image view."""


class ViewBatchNormAct2d(_ViewStatistics, BatchNormAct2d):
    """timm's ``BatchNormAct2d`` (BatchNorm + activation, EfficientNet's) with running statistics per image view."""


_VIEW_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    nn.BatchNorm2d: ViewBatchNorm2d,
    BatchNormAct2d: ViewBatchNormAct2d,
}


def apply_norm(backbone: nn.Module, *, norm: str, num_views: int, pretrained: bool) -> int:
    """Convert the BatchNorm layers of ``backbone`` in place for ``norm`` (see the module docstring).

    Returns the number of layers converted (0 for ``batch``, or a backbone without BatchNorm, such as ConvNeXt).
    """
    if norm not in NORMS:
        raise ConfigError(f"image.norm: unknown {norm!r}; expected one of {NORMS}")
    if norm == "batch":
        return 0
    if norm == "group" and pretrained:
        raise ConfigError(
            "image.norm=group replaces BatchNorm with GroupNorm, which pretrained BatchNorm weights do not fit; "
            "use image.norm=view_batch with pretrained weights"
        )
    converted = 0
    for parent in list(backbone.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.modules.batchnorm._BatchNorm) or isinstance(child, _ViewStatistics):
                continue
            if not child.track_running_stats:
                continue
            if type(child) not in _VIEW_CLASSES:
                raise ConfigError(
                    f"image.norm={norm}: cannot convert {type(child).__name__} at {name!r}; "
                    f"supported: {[c.__name__ for c in _VIEW_CLASSES]}"
                )
            new = _to_group_norm(child) if norm == "group" else _VIEW_CLASSES[type(child)].from_batchnorm(
                child, num_views=num_views
            )
            setattr(parent, name, new)
            converted += 1
    return converted


def _to_group_norm(norm: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """GroupNorm with up to 32 groups (Wu & He) in place of ``norm``, keeping a BatchNormAct2d's activation."""
    channels = norm.num_features
    groups = math.gcd(channels, 32)
    if isinstance(norm, BatchNormAct2d):
        out = GroupNormAct(channels, groups, eps=norm.eps, affine=norm.affine)
        out.act, out.drop = norm.act, norm.drop
        return out
    return nn.GroupNorm(groups, channels, eps=norm.eps, affine=norm.affine)


def view_norm_layers(module: nn.Module) -> list[nn.Module]:
    """The per-view BatchNorm layers inside ``module``."""
    return [m for m in module.modules() if isinstance(m, _ViewStatistics)]
