"""CLIP's encoders as GeoBridge uses them, run by the library whose weights they hold.

``build_clip`` makes the whole CLIP model of a ``ClipConfig`` with one of two libraries: ``transformers``
(``library="hf"``, a ``CLIPModel``) or open_clip (``library="open_clip"``, a ``CLIP``). ``split_clip`` then cuts it
into the two encoders the towers hold, each ending in CLIP's own projection, so that with loaded weights a tower's
output is the library's ``get_image_features`` / ``encode_image`` (and the text side's) on the same input, bit for
bit:

- a vision encoder: (B, 3, S, S) normalised images -> (B, E) features in CLIP's joint space;
- a text encoder: (N, L) token ids and their (N, L) attention mask -> (N, E).

Both expose ``blocks`` (the transformer layers, first to last) for ``trainable_blocks``, and
``set_grad_checkpointing``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from geobridge.models.config import ClipConfig

HF_BOS, HF_EOS = 49406, 49407  # CLIP's BPE: <|startoftext|>, <|endoftext|> (also open_clip's pooling token)


def hf_config_of(config: ClipConfig) -> Any:
    """The ``transformers.CLIPConfig`` of ``config``: the Hugging Face folder's own, or one made from the fields."""
    from transformers import CLIPConfig

    if config.hf_config:
        return CLIPConfig.from_dict(config.hf_config)
    text = dict(hidden_size=config.text_width, intermediate_size=4 * config.text_width,
                num_hidden_layers=config.text_layers, num_attention_heads=config.text_heads,
                vocab_size=config.vocab_size, max_position_embeddings=config.context_length,
                hidden_act=config.activation, bos_token_id=HF_BOS, eos_token_id=HF_EOS, pad_token_id=HF_EOS)
    vision = dict(hidden_size=config.vision_width, intermediate_size=4 * config.vision_width,
                  num_hidden_layers=config.vision_layers, num_attention_heads=config.vision_heads,
                  image_size=config.image_size, patch_size=config.patch_size, hidden_act=config.activation)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=config.embed_dim)


def open_clip_kwargs(config: ClipConfig) -> dict[str, Any]:
    """The arguments of ``open_clip.model.CLIP`` for ``config``."""
    return dict(
        embed_dim=config.embed_dim,
        vision_cfg=dict(image_size=config.image_size, patch_size=config.patch_size, width=config.vision_width,
                        layers=config.vision_layers, head_width=config.vision_width // config.vision_heads),
        text_cfg=dict(context_length=config.context_length, vocab_size=config.vocab_size, width=config.text_width,
                      heads=config.text_heads, layers=config.text_layers),
        quick_gelu=config.activation == "quick_gelu",
    )


def build_clip(config: ClipConfig) -> nn.Module:
    """The whole CLIP model of ``config`` with random weights, from ``config.library``."""
    if config.library == "hf":
        from transformers import CLIPModel

        return CLIPModel(hf_config_of(config))
    from open_clip.model import CLIP

    return CLIP(**open_clip_kwargs(config))


def architecture_of(hf_config: Any) -> dict[str, Any]:
    """The ``ClipConfig`` architecture fields of a ``transformers.CLIPConfig``."""
    vision, text = hf_config.vision_config, hf_config.text_config
    return dict(
        embed_dim=hf_config.projection_dim, image_size=vision.image_size, patch_size=vision.patch_size,
        vision_width=vision.hidden_size, vision_layers=vision.num_hidden_layers,
        vision_heads=vision.num_attention_heads, context_length=text.max_position_embeddings,
        vocab_size=text.vocab_size, text_width=text.hidden_size, text_layers=text.num_hidden_layers,
        text_heads=text.num_attention_heads, activation=vision.hidden_act,
    )


class HFVisionEncoder(nn.Module):
    """transformers' CLIP vision model and visual projection: ``CLIPModel.get_image_features``."""

    def __init__(self, model: nn.Module, projection: nn.Linear) -> None:
        super().__init__()
        self.model = model  # CLIPVisionModel
        self.projection = projection

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.layers

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B, E)
        return self.projection(self.model(pixel_values=images).pooler_output)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            self.model.activation_checkpointing_disable()


class HFTextEncoder(nn.Module):
    """transformers' CLIP text model and text projection: ``CLIPModel.get_text_features``."""

    def __init__(self, model: nn.Module, projection: nn.Linear) -> None:
        super().__init__()
        self.model = model  # CLIPTextModel
        self.projection = projection

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.layers

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (N, L), (N, L) -> (N, E)
        return self.projection(self.model(input_ids=ids, attention_mask=mask).pooler_output)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            self.model.activation_checkpointing_disable()


class OpenClipVisionEncoder(nn.Module):
    """open_clip's ``VisionTransformer`` (its projection inside): ``CLIP.encode_image``."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual

    @property
    def blocks(self) -> nn.ModuleList:
        return self.visual.transformer.resblocks

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B, E)
        return self.visual(images)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)


class OpenClipTextEncoder(nn.Module):
    """open_clip's CLIP without its vision tower and temperature: ``CLIP.encode_text``."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip

    @property
    def blocks(self) -> nn.ModuleList:
        return self.clip.transformer.resblocks

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (N, L), (N, L) -> (N, E)
        # causal attention pooled at the end-of-text token: the padding after it changes nothing, so no mask
        return self.clip.encode_text(ids)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.clip.transformer.grad_checkpointing = enable


def split_clip(model: nn.Module, *, library: str) -> tuple[nn.Module, nn.Module, float]:
    """A whole CLIP model -> (vision encoder, text encoder, logit scale); ``model`` is taken apart."""
    logit_scale = float(model.logit_scale.detach())
    if library == "hf":
        return (HFVisionEncoder(model.vision_model, model.visual_projection),
                HFTextEncoder(model.text_model, model.text_projection), logit_scale)
    visual = model.visual
    model.visual = None  # the text encoder keeps the rest of open_clip's CLIP
    del model.logit_scale  # GeoBridge keeps its own temperature
    if getattr(model, "logit_bias", None) is not None:
        del model.logit_bias
    return OpenClipVisionEncoder(visual), OpenClipTextEncoder(model), logit_scale


def copies(encoder: nn.Module, count: int) -> list[nn.Module]:
    """``count`` independent encoders starting from ``encoder``'s weights (the first is ``encoder`` itself)."""
    return [encoder] + [copy.deepcopy(encoder) for _ in range(count - 1)]
