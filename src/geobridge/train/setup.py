"""What a training run starts from: the model (built, or loaded to fine-tune), its AdamW parameter groups and the
learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from geobridge.errors import ConfigError, GeoBridgeError
from geobridge.models import GeoBridge, get_model_config
from geobridge.train.config import TrainConfig


def build_model(config: TrainConfig) -> GeoBridge:
    """The model a run trains: a built-in/JSON architecture, or a saved model to fine-tune."""
    section = config.model
    if section.init_from:
        model = GeoBridge.from_pretrained(section.init_from)  # strict: every tensor, with its shape
        _check_init_overrides(model, config)
        if section.grad_checkpointing is not None:
            model.config.image.grad_checkpointing = section.grad_checkpointing
            model.image.set_grad_checkpointing(section.grad_checkpointing)
        if section.text_trainable_layers is not None:
            try:
                model.text.set_trainable_layers(section.text_trainable_layers)
            except ValueError as exc:
                raise GeoBridgeError(f"model.text_trainable_layers with model.init_from: {exc}") from exc
    else:
        model_config = get_model_config(section.name)
        if section.text_kind is not None:
            model_config.text.kind = section.text_kind
        if section.text_freeze is not None:
            model_config.text.freeze = section.text_freeze
        if section.text_trainable_layers is not None:
            model_config.text.trainable_layers = section.text_trainable_layers
        if section.grad_checkpointing is not None:
            model_config.image.grad_checkpointing = section.grad_checkpointing
        if section.clip_weights is not None:
            if model_config.clip is None:
                raise GeoBridgeError(f"model.clip_weights: model {section.name!r} has no CLIP towers; "
                                     "use a gb-clip-* model")
            model_config.clip.weights = section.clip_weights
        model = GeoBridge(model_config, backbone_file=section.backbone_file)
    clip = model.config.clip
    for view, size in section.image_input_size.items():
        if clip is not None and model.config.image.backbone == "clip" and list(size) != [clip.image_size] * 2:
            raise GeoBridgeError(f"model.image_input_size.{view}: a CLIP tower takes {clip.image_size} px squares "
                                 f"(its position embeddings fit one grid), got {list(size)}")
        model.config.image.input_size[view] = [int(v) for v in size]  # the transforms and caches read these
    if section.image_keep_rows:
        bands = {view: [float(f) for f in band] for view, band in section.image_keep_rows.items()}
        model.config.image.keep_rows.update(bands)
        try:
            model.config.validate()
        except ConfigError as exc:
            raise GeoBridgeError(f"model.image_keep_rows: {exc}") from exc
    if section.image_trainable_blocks is not None:
        try:
            model.image.set_trainable_blocks(section.image_trainable_blocks)
        except ValueError as exc:
            raise GeoBridgeError(f"model.image_trainable_blocks: {exc}") from exc
    return model


def _check_init_overrides(model: GeoBridge, config: TrainConfig) -> None:
    """The architecture of an ``init_from`` model is the checkpoint's: overrides that would change it are errors."""
    text = model.config.text
    for key, wanted, saved in (("text_kind", config.model.text_kind, text.kind),
                               ("text_freeze", config.model.text_freeze, text.freeze)):
        if wanted is not None and wanted != saved:
            raise GeoBridgeError(
                f"model.{key}={wanted} conflicts with model.init_from={config.model.init_from}, "
                f"whose text tower has {key.removeprefix('text_')}={saved}"
            )
    if config.model.backbone_file:
        raise GeoBridgeError("model.backbone_file and model.init_from are exclusive: the checkpoint holds the backbone")
    if config.model.clip_weights:
        raise GeoBridgeError("model.clip_weights and model.init_from are exclusive: the checkpoint holds the towers")


def lr_at(step: int, *, total_steps: int, warmup_steps: int, base_lr: float, min_lr_ratio: float) -> float:
    """Linear warmup from 0, then cosine decay to ``min_lr_ratio * base_lr`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def param_groups(model: GeoBridge, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norms, view embeddings and the temperature; own LR for text encoder."""
    text_lr = config.optim.text_lr if config.optim.text_lr is not None else config.optim.lr / 10
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim < 2 or name.endswith("view_embed") or name == "logit_scale"
        lr = text_lr if name.startswith("text.encoder.") else config.optim.lr
        groups.setdefault((lr, 0.0 if no_decay else config.optim.weight_decay), []).append(param)
    return [{"params": ps, "lr": lr, "base_lr": lr, "weight_decay": wd} for (lr, wd), ps in sorted(groups.items())]
