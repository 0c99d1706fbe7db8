"""Training configuration: dataclass defaults <- YAML file <- command-line dot-list overrides (OmegaConf)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from geobridge.errors import GeoBridgeError
from geobridge.losses import OBJECTIVES
from geobridge.models.precision import PRECISIONS
from geobridge.views import check_view_pairs


@dataclass
class ModelSection:
    name: str = "gb-tiny"  # a built-in config name or a JSON path
    backbone_file: str | None = None  # local timm weights (.safetensors) for the image backbone
    init_from: str | None = None  # a saved GeoBridge model folder to fine-tune from
    text_kind: str | None = None  # override the config's text tower kind ("minilm" or "hashing")
    text_freeze: bool | None = None  # override the config's freeze flag
    text_trainable_layers: int | None = None  # override: with text_freeze=false, fine-tune only the last N layers
    grad_checkpointing: bool | None = None  # override the config's image.grad_checkpointing (recompute activations)


@dataclass
class DataSection:
    root: str = "runs/world"
    format: str = "geoloc"  # "geoloc" or "university1652"
    views: list[str] = field(default_factory=lambda: ["drone", "satellite", "street", "text"])
    train_split: str = "train"
    eval_split: str = "test"
    num_workers: int = 0  # loader processes of the "pil" pipeline
    # "pil": decode and augment each sample per step in a DataLoader (any dataset size); "tensor": decode every
    # training image once into a uint8 cache and augment whole batches on the device (data/tensor_cache.py)
    pipeline: str = "pil"
    augment: bool = True
    text_augment: bool = False  # drop and reorder the sentences of each description (data/captions.py)
    robust_augment: bool = False  # also blur, downscale, strong colour jitter, grayscale (transforms.py)


@dataclass
class LossSection:
    objective: str = "geobridge"  # "geobridge" (symmetric terms, summed) or "paper" (losses/geobridge_loss.py)
    symmetric: bool | None = None  # both directions of each term; None = the objective's own (paper: one)
    use_pairs: bool = True  # image-image terms (false: the text-only arm of the anchors ablation)
    use_anchors: bool = True
    pair_weight: float = 1.0
    pair_weights: dict[str, float] = field(default_factory=dict)  # per image-view pair, e.g. drone_street: 0.3
    anchor_weight: float = 1.0
    bridge_weight: float = 1.0
    label_smoothing: float = 0.1


@dataclass
class OptimSection:
    epochs: int = 10
    batch_size: int = 32  # global batch (summed over DDP ranks)
    grad_accum: int = 1
    lr: float = 1e-3
    text_lr: float | None = None  # learning rate of a fine-tuned text encoder (default: lr / 10)
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0


@dataclass
class SamplerSection:
    strategy: str = "random"  # "random", "gps" (GPS hard negatives) or "embedding" (similarity hard negatives)
    gps_epochs: str = "all"  # "all", or "after:N" to switch from random to gps after N epochs
    embedding_refresh: int = 2  # epochs between neighbour refreshes for strategy "embedding"
    neighbours: int = 64


@dataclass
class TrainSection:
    seed: int = 0
    device: str = "auto"  # "auto", "cpu" or "cuda"
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "fp16" (autocast + GradScaler; CUDA only)
    drop_views: list[str] = field(default_factory=list)  # ablation: never train on these views
    view_dropout: float = 0.0  # probability of hiding each image view of each place in a batch
    eval_every: int = 0  # epochs between evaluations on the eval split (0 = at the end only)
    max_steps: int | None = None  # stop early (tests)
    log_every: int = 10


@dataclass
class TrainConfig:
    out: str = "runs/train"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    sampler: SamplerSection = field(default_factory=SamplerSection)
    train: TrainSection = field(default_factory=TrainSection)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Merge the defaults, an optional YAML file and ``key=value`` overrides; unknown keys are errors."""
    base = OmegaConf.structured(TrainConfig)
    layers: list[Any] = [base]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise GeoBridgeError(f"config file not found: {path}")
        try:
            layers.append(OmegaConf.load(path))
        except (OmegaConfBaseException, OSError, ValueError) as exc:
            raise GeoBridgeError(f"cannot read config {path}: {exc}") from exc
    try:
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
    except OmegaConfBaseException as exc:
        raise GeoBridgeError(f"bad config: {exc}") from exc
    config: TrainConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    _validate(config)
    return config


def to_yaml(config: TrainConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def _validate(config: TrainConfig) -> None:
    if config.sampler.strategy not in ("random", "gps", "embedding"):
        raise GeoBridgeError(f"sampler.strategy must be random, gps or embedding, got {config.sampler.strategy!r}")
    if config.optim.batch_size < 2:
        raise GeoBridgeError("optim.batch_size must be at least 2 for a contrastive loss")
    if not 0.0 <= config.train.view_dropout < 1.0:
        raise GeoBridgeError(f"train.view_dropout must be in [0, 1), got {config.train.view_dropout}")
    if config.loss.objective not in OBJECTIVES:
        raise GeoBridgeError(f"loss.objective must be one of {', '.join(OBJECTIVES)}, got {config.loss.objective!r}")
    if not (config.loss.use_pairs or config.loss.use_anchors):
        raise GeoBridgeError("loss.use_pairs and loss.use_anchors are both false: the loss would have no term")
    try:
        check_view_pairs(config.loss.pair_weights)
    except ValueError as exc:
        raise GeoBridgeError(f"loss.pair_weights: {exc}") from exc
    if config.train.precision not in PRECISIONS:
        raise GeoBridgeError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {config.train.precision!r}")
    if config.data.pipeline not in ("pil", "tensor"):
        raise GeoBridgeError(f"data.pipeline must be pil or tensor, got {config.data.pipeline!r}")
    if config.data.format not in ("geoloc", "university1652"):
        raise GeoBridgeError(f"data.format must be geoloc or university1652, got {config.data.format!r}")
