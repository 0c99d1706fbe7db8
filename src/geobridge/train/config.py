"""Training configuration: dataclass defaults <- YAML file <- command-line dot-list overrides (OmegaConf)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from geobridge.data.config import DATA_RULES, MAX_EPOCHS, SAMPLER_RULES, DataConfig, SamplerConfig
from geobridge.errors import ConfigError, GeoBridgeError
from geobridge.losses.config import LOSS_RULES, LossConfig
from geobridge.models.precision import PRECISIONS
from geobridge.protocols import get_protocol
from geobridge.schema import Choice, Range, build, check
from geobridge.views import IMAGE_VIEWS, VIEWS


@dataclass
class ModelSection:
    name: str = "gb-tiny"  # a built-in config name or a JSON path
    backbone_file: str | None = None  # local timm weights (.safetensors) for the image backbone
    # local CLIP weights for a CLIP model (gb-clip-*): a Hugging Face CLIP folder or an open_clip .safetensors
    # file (models/clip/weights.py); sets the model config's clip.weights
    clip_weights: str | None = None
    init_from: str | None = None  # a saved GeoBridge model folder to fine-tune from
    text_kind: str | None = None  # override the config's text tower kind ("minilm" or "hashing")
    text_freeze: bool | None = None  # override the config's freeze flag
    text_trainable_layers: int | None = None  # override: with text_freeze=false, fine-tune only the last N layers
    # override: train only the last N blocks of the image backbone (ImageTowerConfig.trainable_blocks); None keeps
    # the model's own setting. Applied to an ``init_from`` model too.
    image_trainable_blocks: int | None = None
    # override: (H, W) per image view, merged into the model's input sizes (e.g. CVUSA's 1232 x 224 panoramas as
    # street: [140, 768], Sample4Geo's size); applied to an ``init_from`` model too and saved with the fine-tuned one
    image_input_size: dict[str, list[int]] = field(default_factory=dict)
    # override: the band of rows per image view the backbone sees (ImageTowerConfig.keep_rows), e.g.
    # {street: [0.25, 1.0]} drops a panorama's top quarter (sky); merged into the model's and saved with it
    image_keep_rows: dict[str, list[float]] = field(default_factory=dict)
    grad_checkpointing: bool | None = None  # override the config's image.grad_checkpointing (recompute activations)


@dataclass
class OptimSection:
    epochs: int = 10
    batch_size: int = 32  # global batch (summed over DDP ranks)
    # micro-batches per optimizer step: the contrastive loss sees all grad_accum * batch_size places at once, one
    # micro-batch's graph held at a time (GradCache, train/grad_cache.py); 1 = no accumulation
    grad_accum: int = 1
    lr: float = 1e-3
    text_lr: float | None = None  # learning rate of a fine-tuned text encoder (default: lr / 10)
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0


@dataclass
class TrainSection:
    seed: int = 0
    device: str = "auto"  # "auto", "cpu" or "cuda"
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "fp16" (autocast + GradScaler; CUDA only)
    drop_views: list[str] = field(default_factory=list)  # ablation: never train on these views
    view_dropout: float = 0.0  # probability of hiding each image view of each place in a batch
    eval_every: int = 0  # epochs between evaluations on the eval split (0 = at the end only)
    # a named benchmark protocol for the evaluations (geobridge eval --protocol NAME: its roles, junk, ties, K of
    # R@1%); None: every direction over the places of data.eval_split
    eval_protocol: str | None = None
    max_steps: int | None = None  # stop early (tests)
    # precise BN: at the end of training, each view's BatchNorm statistics are re-estimated from up to this many of
    # its plain (un-augmented) training images, as evaluation sees them, instead of the moving averages of the
    # augmented training batches; 0 keeps the moving averages (a backbone without BatchNorm ignores it)
    norm_recalibration_images: int = 0
    # the image tower's weights (and so its activations) in channels-last memory format: oneDNN's faster
    # convolutions on the CPU (gb-small, batch 32, 3 views, this project's 2-core machine: a step 1.22x faster);
    # the same model, different summation order, so results differ in the last bits. Checkpoints are contiguous.
    channels_last: bool = False


@dataclass
class TextAlignSection:
    # after joint training, the text side tuned alone against the frozen image towers (train/text_align.py): each
    # description against every training place's images, embedded once as evaluation sees them; 0 epochs: off
    epochs: int = 0  # passes over every training description
    trainable_layers: int = 2  # the text encoder's top layers tuned, with the projection head (MiniLM, CLIP)
    batch_size: int = 64  # descriptions per step, each of another place
    # the projection head (linear warmup over a tenth of the steps, then cosine decay); on the demo world (2
    # epochs) 3e-4 gave text->satellite 39.5, 1e-3 42.5, 3e-3 45.0, 1e-2 47.7 (docs/model.md)
    lr: float = 3.0e-3
    encoder_lr: float = 3.0e-4  # the text encoder's tuned layers
    # the training places' images embedded with test-time augmentation, as evaluation does: the same text recall
    # within 0.5 points on the demo world, for 65 s more on 2 cores
    test_time_augment: bool = False


@dataclass
class TrainConfig:
    out: str = "runs/train"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)  # geobridge.data.config
    loss: LossConfig = field(default_factory=LossConfig)  # geobridge.losses.config
    optim: OptimSection = field(default_factory=OptimSection)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)  # geobridge.data.config
    train: TrainSection = field(default_factory=TrainSection)
    text_align: TextAlignSection = field(default_factory=TextAlignSection)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Merge the defaults, an optional YAML file and ``key=value`` overrides; unknown keys and bad values are errors.

    Every value is checked by ``validate_config`` (types, ranges, known names); a ``ConfigError`` names the key.
    """
    base = OmegaConf.structured(TrainConfig)
    layers: list[Any] = [base]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise GeoBridgeError(f"config file not found: {path}")
        try:
            layers.append(OmegaConf.load(path))
        except (OmegaConfBaseException, OSError, ValueError, yaml.YAMLError) as exc:
            raise GeoBridgeError(f"cannot read config {path}: {_one_line(exc)}") from exc
    bad = [item for item in overrides if "=" not in item or not item.split("=", 1)[0].strip()]
    if bad:
        raise ConfigError(f"bad override {bad[0]!r}: write overrides as key=value, e.g. optim.epochs=5")
    try:
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
        data = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"{key + ': ' if key else 'bad config: '}{_one_line(exc)}") from exc
    except (yaml.YAMLError, TypeError, ValueError) as exc:  # e.g. a control character, or a mapping for a list
        raise ConfigError(f"{_culprit(base, overrides)}: {_one_line(exc)}") from exc
    config: TrainConfig = build(TrainConfig, data, rules=TRAIN_RULES)
    validate_config(config)
    return config


def to_yaml(config: TrainConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def validate_config(config: TrainConfig) -> None:
    """Check a training config (also one built in code): every field's type and range, then cross-field rules."""
    check(config, rules=TRAIN_RULES)
    if not (config.loss.use_pairs or config.loss.use_anchors):
        raise ConfigError("loss.use_pairs and loss.use_anchors are both false: the loss would have no term")
    if config.train.precision == "fp16" and config.optim.grad_accum > 1:
        raise ConfigError("train.precision: fp16 (a GradScaler) does not combine with optim.grad_accum > 1 (the "
                          "cached accumulation); use bf16 or grad_accum=1")
    tensor_only = (  # (set?, key, what it does) of the options only the batch augmentation has
        (config.data.joint_rotate, "data.joint_rotate", "turns a place's tile and panorama together"),
        (config.data.joint_colour_p > 0, "data.joint_colour_p", "shifts the colour of a place's views together"),
        (config.data.cutout.p > 0, "data.cutout.p", "cuts holes"),
    )
    for wanted, key, what in tensor_only:
        if wanted and config.data.pipeline != "tensor":
            raise ConfigError(f"{key} {what} in the batch augmentation of data.pipeline=tensor; set "
                              f"data.pipeline=tensor")
    if config.sampler.group_size and config.data.epoch_unit != "places":
        raise ConfigError("sampler.group_size groups the places of a batch (data.epoch_unit=places); pair epochs "
                          "fill each hard-negative batch round one place")
    _validate_epoch(config)
    trained = _trained_views(config)
    if config.text_align.epochs and "text" not in trained:
        raise ConfigError(f"text_align.epochs: tunes the text tower on the training descriptions, but text is not "
                          f"among the trained data.views {trained}")


def _trained_views(config: TrainConfig) -> list[str]:
    """The data views a run trains on: ``data.views`` less ``train.drop_views``."""
    return [v for v in config.data.views if v not in config.train.drop_views]


def _validate_epoch(config: TrainConfig) -> None:
    """Cross-field rules of pair-based epochs, per-view input sizes and the evaluation protocol."""
    data = config.data
    if data.epoch_unit == "pairs":
        views = list(data.pair_views)
        if len(views) != 2 or views[0] == views[1]:
            raise ConfigError(f"data.pair_views: expected two different views (query, reference), got {views}")
        trained = _trained_views(config)
        missing = [v for v in views if v not in trained]
        if missing:
            raise ConfigError(f"data.pair_views: {views}: {missing} not among the trained data.views {trained}")
        if "text" in views and not config.loss.use_anchors:
            raise ConfigError("data.pair_views: holds text, which is only trained with loss.use_anchors=true")
    for view, size in config.model.image_input_size.items():
        if view not in IMAGE_VIEWS or len(size) != 2 or min(size) < 1:
            raise ConfigError(
                f"model.image_input_size.{view}: expected an image view ({', '.join(IMAGE_VIEWS)}) "
                f"and a positive [H, W], got {list(size)}"
            )
    if config.train.eval_protocol is not None:
        try:
            protocol = get_protocol(config.train.eval_protocol)
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"train.eval_protocol: {exc}") from exc
        if protocol.layout != config.data.format:
            raise ConfigError(
                f"train.eval_protocol: {protocol.name} reads the {protocol.layout} layout, not data.format="
                f"{config.data.format}"
            )


def _check_out(value: str, key: str) -> None:
    if not value.strip():
        raise ConfigError(f"{key}: expected a run folder, got an empty string")
    if Path(value).exists() and not Path(value).is_dir():
        raise ConfigError(f"{key}: {value} is an existing file; the run folder must be a folder (or not exist yet)")


def _check_model_name(value: str, key: str) -> None:
    from geobridge.models.config import CONFIG_DIR, list_models

    if value.endswith(".json"):
        if not Path(value).is_file():
            raise ConfigError(f"{key}: model config file not found: {value}")
    elif not (CONFIG_DIR / f"{value}.json").is_file():
        raise ConfigError(f"{key}: unknown model {value!r}; built-in models are {', '.join(list_models())}")


def _check_device(value: str, key: str) -> None:
    index = value.split(":", 1)[1] if value.startswith("cuda:") else None
    if value not in ("auto", "cpu", "cuda") and not (index is not None and index.isdigit()):
        raise ConfigError(f"{key}: expected auto, cpu, cuda or cuda:N, got {value!r}")


def _culprit(base: Any, overrides: list[str] | tuple[str, ...]) -> str:
    """The key of the first override that cannot be merged on its own (or 'bad override' if none alone fails)."""
    for item in overrides:
        try:
            OmegaConf.merge(base, OmegaConf.from_dotlist([item]))
        except Exception:  # noqa: BLE001 - any failure marks the culprit; the caller raises the real error
            return item.split("=", 1)[0].strip()
    return "bad override"


def _one_line(exc: BaseException) -> str:
    """OmegaConf's messages carry ``full_key: ...`` and ``object_type=...`` lines; keep the first."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


NON_NEGATIVE = Range(0.0, 1e6)
TRAIN_RULES = {
    **{f"data.{key}": rule for key, rule in DATA_RULES.items()},
    **{f"sampler.{key}": rule for key, rule in SAMPLER_RULES.items()},
    "out": _check_out,
    "model.name": _check_model_name,
    "model.text_kind": Choice(("minilm", "hashing")),
    "model.text_trainable_layers": Range(0, 1024),
    "model.image_trainable_blocks": Range(0, 4096),
    **{f"loss.{key}": rule for key, rule in LOSS_RULES.items()},
    "optim.epochs": Range(1, MAX_EPOCHS),
    "optim.batch_size": Range(2, 1 << 20),  # a contrastive loss needs at least two places per batch
    "optim.grad_accum": Range(1, 1 << 16),
    "optim.lr": Range(0.0, 10.0, lo_open=True),
    "optim.text_lr": Range(0.0, 10.0, lo_open=True),
    "optim.weight_decay": Range(0.0, 10.0),
    "optim.warmup_epochs": Range(0.0, MAX_EPOCHS),
    "optim.min_lr_ratio": Range(0.0, 1.0),
    "optim.grad_clip": NON_NEGATIVE,  # 0 = no clipping
    "train.seed": Range(0, 2**32 - 1),
    "train.device": _check_device,
    "train.drop_views.*": Choice(VIEWS),
    "train.view_dropout": Range(0.0, 1.0, hi_open=True),
    "train.eval_every": Range(0, MAX_EPOCHS),  # 0 = at the end only
    "train.max_steps": Range(1, 1 << 40),
    "train.norm_recalibration_images": Range(0, 1 << 40),
    "train.precision": Choice(PRECISIONS),
    "text_align.epochs": Range(0, MAX_EPOCHS),  # 0 = off
    "text_align.trainable_layers": Range(0, 1024),
    "text_align.batch_size": Range(2, 1 << 20),
    "text_align.lr": Range(0.0, 10.0, lo_open=True),
    "text_align.encoder_lr": Range(0.0, 10.0, lo_open=True),
}
