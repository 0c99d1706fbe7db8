"""CLIP towers: CLIP's vision encoder per image view (or one shared), and CLIP's text encoder.

The GeoBridge paper's model: three view-specific CLIP image towers and one CLIP text tower, starting from CLIP's
weights, projections and temperature. ``image.share_backbone=false`` gives each view its own copy of the vision
encoder and projection (the paper); ``true`` shares one, told apart by per-view adapters and view embeddings,
both starting as the identity. Either way an untrained tower embeds exactly as the CLIP checkpoint does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from geobridge.models.clip.modules import build_clip, copies, split_clip
from geobridge.models.clip.tokens import SPECIAL_TOKENS, HFTokens, OpenClipTokens, chunk_texts
from geobridge.models.clip.weights import image_normalisation, load_clip
from geobridge.models.config import ClipConfig, GeoBridgeConfig, ImageTowerConfig, TextTowerConfig
from geobridge.models.image_tower import ResidualAdapter
from geobridge.views import IMAGE_VIEWS, check_view


@dataclass
class ClipParts:
    """A CLIP model taken apart for the towers."""

    vision: nn.Module  # (B, 3, S, S) -> (B, E)
    text: nn.Module  # (N, L) ids, (N, L) mask -> (N, E)
    tokens: OpenClipTokens | HFTokens
    logit_scale: float


def clip_parts(config: GeoBridgeConfig, *, load_weights: bool, tokenizer_dir: Path | None = None) -> ClipParts:
    """The encoders of ``config.clip``: with the weights at ``clip.weights`` when ``load_weights``, else random.

    Loading sets ``clip.library`` (from the layout), the image mean and std (a Hugging Face folder's
    ``preprocessor_config.json``, when it has one) and ``init_logit_scale`` (the checkpoint's temperature) in
    ``config``, which a saved model then keeps. ``tokenizer_dir`` overrides where Hugging Face tokenizer files are.
    """
    clip = config.clip
    assert clip is not None
    loading = load_weights and clip.weights is not None
    model = load_clip(clip) if loading else build_clip(clip)
    vision, text, logit_scale = split_clip(model, library=clip.library)
    if loading:
        normalisation = image_normalisation(Path(clip.weights).expanduser())  # type: ignore[arg-type]
        if normalisation is not None:
            config.image.mean, config.image.std = normalisation
        config.init_logit_scale = min(max(logit_scale, 0.0), math.log(100.0))  # CLIP clamps it at log(100)
    return ClipParts(vision=vision, text=text, tokens=clip_tokens(clip, folder=tokenizer_dir), logit_scale=logit_scale)


def clip_tokens(clip: ClipConfig, *, folder: Path | None = None) -> OpenClipTokens | HFTokens:
    """The tokenizer of ``clip``: open_clip's bundled BPE, or the Hugging Face files in ``folder`` (default: the
    ``tokenizer`` field, else the weights folder)."""
    if clip.library == "open_clip":
        return OpenClipTokens(context_length=clip.context_length)
    where = folder or clip.tokenizer or clip.weights
    if where is None:
        raise ValueError("clip.library='hf' needs tokenizer files: set clip.tokenizer or clip.weights to a folder")
    return HFTokens(Path(where).expanduser(), context_length=clip.context_length)


class ClipImageTower(nn.Module):
    """CLIP vision encoder(s) -> (+ view embedding) -> per-view adapter: (B, 3, S, S) -> (B, E)."""

    def __init__(self, config: ImageTowerConfig, *, encoder: nn.Module, embed_dim: int) -> None:
        super().__init__()
        self.config = config
        if config.share_backbone:
            self.backbone: nn.Module | None = encoder
            self.view_backbones: nn.ModuleDict | None = None
        else:  # the paper: one tower per view, each starting from CLIP's weights
            self.backbone = None
            self.view_backbones = nn.ModuleDict(dict(zip(IMAGE_VIEWS, copies(encoder, len(IMAGE_VIEWS)), strict=True)))
        self.view_embed = nn.Parameter(torch.zeros(len(IMAGE_VIEWS), embed_dim)) if config.view_embedding else None
        residual = config.adapter == "residual"
        self.adapters = nn.ModuleDict({v: ResidualAdapter(embed_dim) for v in IMAGE_VIEWS}) if residual else None
        if config.trainable_blocks is not None:
            self.set_trainable_blocks(config.trainable_blocks)
        if config.grad_checkpointing:
            self.set_grad_checkpointing(True)

    def backbone_for(self, view: str) -> nn.Module:
        check_view(view, allowed=IMAGE_VIEWS)
        return self.backbone if self.view_backbones is None else self.view_backbones[view]

    def _backbones(self) -> list[nn.Module]:
        return [self.backbone] if self.view_backbones is None else list(self.view_backbones.values())

    def forward(self, images: torch.Tensor, *, view: str) -> torch.Tensor:
        """(B, 3, S, S) images of one view -> (B, E) unnormalised embeddings."""
        x = self.backbone_for(view)(images)  # (B, E): CLIP's projected features
        if self.view_embed is not None:
            x = x + self.view_embed[IMAGE_VIEWS.index(view)]
        if self.adapters is not None:
            x = self.adapters[view](x)
        return x

    def set_trainable_blocks(self, count: int | None) -> None:
        """Train only the last ``count`` transformer blocks of each encoder, with the final norm and projection."""
        if count is not None and count < 0:
            raise ValueError(f"image.trainable_blocks must be >= 0, got {count}")
        self.config.trainable_blocks = count
        for encoder in self._backbones():
            train_last_blocks(encoder, count)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for encoder in self._backbones():
            encoder.set_grad_checkpointing(enable)


def train_last_blocks(encoder: nn.Module, count: int | None) -> None:
    """Freeze ``encoder`` up to its last ``count`` blocks (None: train everything).

    What follows the blocks (the final norm, the pooling and the projection) always trains; what precedes them
    (patch or token embedding, position embedding, pre-norm) trains only when every block does.
    """
    blocks = list(encoder.blocks)
    if count is None:
        encoder.requires_grad_(True)
        return
    encoder.requires_grad_(False)
    inside = {id(p) for block in blocks for p in block.parameters()}
    for block in blocks[len(blocks) - count:] if count else []:
        block.requires_grad_(True)
    after = [p for p in encoder.parameters() if id(p) not in inside]
    before = _parameters_before_blocks(encoder, blocks)
    for param in after:
        param.requires_grad_(id(param) not in before or count >= len(blocks))


def _parameters_before_blocks(encoder: nn.Module, blocks: list[nn.Module]) -> set[int]:
    """The parameters that feed the first block: embeddings, position embeddings and the pre-norm."""
    names = ("embeddings", "pre_layrnorm", "conv1", "class_embedding", "positional_embedding", "ln_pre",
             "token_embedding", "patch_dropout")
    found = set()
    for name, param in encoder.named_parameters():
        if any(part in names for part in name.split(".")):
            found.add(id(param))
    return found


class ClipTextTower(nn.Module):
    """CLIP's text encoder: N strings -> (N, E), long descriptions as in ``clip.long_text``."""

    def __init__(self, config: TextTowerConfig, *, clip: ClipConfig, encoder: nn.Module,
                 tokens: OpenClipTokens | HFTokens) -> None:
        super().__init__()
        self.config = config
        self.clip = clip
        self.encoder = encoder
        self.tokens = tokens
        if config.freeze:
            self.encoder.requires_grad_(False)
        elif config.trainable_layers is not None:
            train_last_blocks(self.encoder, config.trainable_layers)

    def forward(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            raise ValueError("encode_text needs at least one text")
        limit = self.tokens.context_length - SPECIAL_TOKENS
        if self.clip.long_text == "truncate":
            runs, owner = texts, torch.arange(len(texts))
        else:
            runs, owner = chunk_texts(texts, count=self.tokens.count, limit=limit)
        ids, mask = self.tokens(runs)  # (R, L), (R, L)
        device = next(self.encoder.parameters()).device
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze):
            features = self.encoder(ids.to(device), mask.to(device))  # (R, E)
        if len(runs) == len(texts):
            return features
        owner = owner.to(device)
        sums = features.new_zeros(len(texts), features.shape[1]).index_add_(0, owner, features)  # (N, E)
        counts = torch.bincount(owner, minlength=len(texts)).to(features.dtype)  # (N,)
        return sums / counts[:, None]  # (N, E)

    def set_trainable_layers(self, count: int) -> None:
        """Fine-tune only the last ``count`` transformer layers (with the final norm and projection)."""
        if self.config.freeze:
            raise ValueError("text.trainable_layers needs an unfrozen text tower (text.freeze=false)")
        if count < 0:
            raise ValueError(f"text.trainable_layers must be >= 0, got {count}")
        self.config.trainable_layers = count
        train_last_blocks(self.encoder, count)

    def unfreeze_top_layers(self, count: int) -> None:
        """Train the last ``count`` transformer layers from now on, frozen or not before (text alignment)."""
        self.config.freeze = False
        self.set_trainable_layers(count)

    def warm_cache(self, texts: list[str], *, show_progress_bar: bool = False) -> None:
        """Nothing to warm: CLIP's text tower embeds each batch as it comes."""

    def frozen_prefixes(self) -> tuple[str, ...]:
        return ()  # the encoder is saved even when frozen: the weights came from a path that may not stay
