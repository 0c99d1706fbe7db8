"""The image tower: one timm backbone shared by drone, satellite and street views."""

from __future__ import annotations

import re
from pathlib import Path

import timm
import torch
from torch import nn

from geobridge.errors import CheckpointError, ConfigError
from geobridge.models.config import INTERPOLATIONS, ImageTowerConfig, kept_rows
from geobridge.models.pretrained import load_packaged_weights
from geobridge.models.view_norm import active_view, apply_norm
from geobridge.views import IMAGE_VIEWS, check_view


class ResidualAdapter(nn.Module):
    """x + MLP(LN(x)); the last layer starts at zero so the adapter starts as the identity."""

    def __init__(self, dim: int, *, hidden_ratio: float = 0.5) -> None:
        super().__init__()
        hidden = max(8, int(dim * hidden_ratio))
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B, F)
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class ImageTower(nn.Module):
    """Backbone (shared, or one per view) -> (+ view embedding) -> per-view adapter -> shared projection."""

    def __init__(
        self,
        config: ImageTowerConfig,
        *,
        embed_dim: int,
        backbone_file: str | Path | None = None,
        load_pretrained: bool = True,
    ) -> None:
        """``load_pretrained=False`` skips ``config.pretrained`` (the weights come from a checkpoint instead).

        When weights are loaded (``config.pretrained`` or ``backbone_file``), ``config`` adopts the mean, std and
        interpolation of the backbone's timm ``pretrained_cfg``, which a saved checkpoint then keeps.
        """
        super().__init__()
        self.config = config

        pretrained = backbone_file is not None or (load_pretrained and bool(config.pretrained))

        def create() -> nn.Module:
            backbone = _create_backbone(config, backbone_file=backbone_file, load_pretrained=load_pretrained)
            # per-view statistics only where views share the backbone; a view's own backbone has its own anyway
            norm = "batch" if config.norm == "view_batch" and not config.share_backbone else config.norm
            apply_norm(backbone, norm=norm, num_views=len(IMAGE_VIEWS), pretrained=pretrained)
            return backbone

        # one backbone shared by the views (Sample4Geo), or one per view (the GeoBridge paper's towers)
        self.backbone = create() if config.share_backbone else None
        self.view_backbones = None if config.share_backbone else nn.ModuleDict({v: create() for v in IMAGE_VIEWS})
        if backbone_file is not None or (load_pretrained and config.pretrained):
            _adopt_normalisation(config, self.backbone_for(IMAGE_VIEWS[0]))
        width = self.backbone_for(IMAGE_VIEWS[0]).num_features
        self.view_embed = nn.Parameter(torch.zeros(len(IMAGE_VIEWS), width)) if config.view_embedding else None
        if config.adapter == "residual":
            self.adapters = nn.ModuleDict({view: ResidualAdapter(width) for view in IMAGE_VIEWS})
        else:
            self.adapters = None
        self.proj = nn.Linear(width, embed_dim)
        if config.trainable_blocks is not None:
            self.set_trainable_blocks(config.trainable_blocks)
        if config.grad_checkpointing:
            self.set_grad_checkpointing(True)

    def set_trainable_blocks(self, count: int | None) -> None:
        """Train only the last ``count`` backbone blocks (``ImageTowerConfig.trainable_blocks``); None: all."""
        if count is not None and count < 0:
            raise ValueError(f"image.trainable_blocks must be >= 0, got {count}")
        self.config.trainable_blocks = count
        for backbone in self._backbones():
            frozen = set() if count is None else frozen_parameters(backbone, trainable_blocks=count)
            for name, param in backbone.named_parameters():
                param.requires_grad_(name not in frozen)

    def train(self, mode: bool = True) -> ImageTower:
        super().train(mode)
        if mode and self.config.trainable_blocks is not None:
            for backbone in self._backbones():  # frozen blocks keep their BatchNorm statistics too
                for module in backbone.modules():
                    weight = getattr(module, "weight", None)
                    if isinstance(module, nn.modules.batchnorm._BatchNorm) and weight is not None:
                        module.train(bool(weight.requires_grad))
        return self

    def _backbones(self) -> list[nn.Module]:
        return [self.backbone] if self.view_backbones is None else list(self.view_backbones.values())

    def forward(self, images: torch.Tensor, *, view: str) -> torch.Tensor:
        """(B, 3, H, W) images of one view -> (B, D) unnormalised embeddings."""
        band = self.config.keep_rows.get(view)
        if band is not None:  # image.keep_rows: only a band of rows (a panorama without its sky)
            first, end = kept_rows(band, int(images.shape[2]))
            images = images[:, :, first:end]  # (B, 3, H', W)
        with active_view(IMAGE_VIEWS.index(view)):  # per-view BatchNorm statistics (models/view_norm.py)
            x = self.backbone_for(view)(images)  # (B, F) pooled features (num_classes=0)
        if self.view_embed is not None:
            x = x + self.view_embed[IMAGE_VIEWS.index(view)]
        if self.adapters is not None:
            x = self.adapters[view](x)
        return self.proj(x)  # (B, D)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each backbone's activations during backward (timm's per-stage checkpointing)."""
        backbones = [self.backbone] if self.view_backbones is None else list(self.view_backbones.values())
        for backbone in backbones:
            if not hasattr(backbone, "set_grad_checkpointing"):
                raise ValueError(f"image.grad_checkpointing: backbone {self.config.backbone!r} does not support it")
            backbone.set_grad_checkpointing(enable)

    def backbone_for(self, view: str) -> nn.Module:
        """The timm backbone that embeds ``view``."""
        check_view(view, allowed=IMAGE_VIEWS)
        return self.backbone if self.view_backbones is None else self.view_backbones[view]


_INDEXED = re.compile(r"(^|\.)\d+(\.|$)")  # a numbered path segment: "stages.3.blocks.1.", "layer4.0.", "blocks.11."


def frozen_parameters(backbone: nn.Module, *, trainable_blocks: int) -> set[str]:
    """Names of the parameters of ``backbone`` outside its last ``trainable_blocks`` blocks.

    The blocks are timm's fine-grained parameter groups (``group_matcher(coarse=False)``): group 0 is the stem,
    then one group per block; a last group without numbered modules (ConvNeXt's ``head.norm``, ViT's ``norm``)
    is the head, which always trains. ``trainable_blocks`` at least the number of blocks freezes nothing.
    """
    matcher = getattr(backbone, "group_matcher", None)
    if matcher is None:
        raise ValueError(f"image.trainable_blocks: backbone {type(backbone).__name__} has no timm group_matcher")
    groups = timm.models.group_parameters(backbone, matcher(coarse=False))  # {group id: [parameter names]}
    ordered = [groups[k] for k in sorted(groups)]
    head: list[str] = []
    if len(ordered) > 2 and not any(_INDEXED.search(name) for name in ordered[-1]):
        head = ordered.pop()
    blocks = ordered[1:]
    if trainable_blocks >= len(blocks):
        return set()
    keep = set(head).union(*blocks[len(blocks) - trainable_blocks :]) if trainable_blocks else set(head)
    return {name for group in ordered for name in group if name not in keep}


def _create_backbone(
    config: ImageTowerConfig, *, backbone_file: str | Path | None, load_pretrained: bool
) -> nn.Module:
    kwargs = dict(config.backbone_kwargs)
    if backbone_file is None:
        try:
            model = timm.create_model(config.backbone, pretrained=False, num_classes=0, **kwargs)
        except (TypeError, ValueError, AssertionError, RuntimeError) as exc:  # kwargs the backbone does not take
            message = " ".join(str(exc).split()) or type(exc).__name__
            raise ConfigError(
                f"image.backbone_kwargs: {config.backbone} cannot be built with {kwargs}: {message}"
            ) from exc
        if load_pretrained and config.pretrained:
            load_packaged_weights(model, config.pretrained)
        return model
    path = Path(backbone_file)
    if not path.is_file():
        raise CheckpointError(f"backbone weights file not found: {path}")
    if path.suffix not in (".safetensors", ".pth", ".pt", ".bin"):
        raise CheckpointError(f"unsupported backbone weights file {path}; expected .safetensors (or .pth/.bin)")
    # timm reads .safetensors with safetensors and other files with torch.load(weights_only=True),
    # which refuses arbitrary pickled objects.
    try:
        return timm.create_model(
            config.backbone,
            pretrained=True,
            num_classes=0,
            pretrained_cfg_overlay=dict(file=str(path), num_classes=0),
            **kwargs,
        )
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise CheckpointError(f"could not load backbone weights {path} into {config.backbone}: {exc}") from exc


def _adopt_normalisation(config: ImageTowerConfig, backbone: nn.Module) -> None:
    """Set the tower's mean, std and resize filter to those its pretrained weights were trained with."""
    pretrained_cfg = getattr(backbone, "pretrained_cfg", None) or {}
    if "mean" in pretrained_cfg and "std" in pretrained_cfg:
        config.mean = [float(v) for v in pretrained_cfg["mean"]]
        config.std = [float(v) for v in pretrained_cfg["std"]]
    if pretrained_cfg.get("interpolation") in INTERPOLATIONS:
        config.interpolation = str(pretrained_cfg["interpolation"])
