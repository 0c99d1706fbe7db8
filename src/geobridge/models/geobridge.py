"""The GeoBridge model: drone, satellite and street images and text embedded into one space."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.transforms import str_to_pil_interp
from torch import nn
from tqdm.auto import tqdm

from geobridge._atomic import atomic_write_json
from geobridge.errors import CheckpointError, ConfigError
from geobridge.models.checkpoint import (
    PICKLE_SUFFIXES,
    check_tensors,
    load_tensors,
    read_json,
    refuse_pickle,
    save_tensors,
)
from geobridge.models.clip import ClipImageTower, ClipTextTower, clip_parts
from geobridge.models.config import CLIP_BACKBONE, GeoBridgeConfig, get_model_config
from geobridge.models.encoding import ImageItems, as_items, default_num_workers, image_batches, normalise
from geobridge.models.image_tower import ImageTower
from geobridge.models.precision import autocast, check_precision
from geobridge.models.symmetries import view_symmetries
from geobridge.models.text_tower import TextTower
from geobridge.models.view_norm import active_view, apply_norm
from geobridge.preprocess import eval_transform
from geobridge.views import IMAGE_VIEWS, check_view

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CHECKPOINT_FORMAT = "geobridge-model"
CHECKPOINT_VERSION = 1
CLIP_TOKENIZER_DIR = "clip_tokenizer"  # a saved model's copy of its Hugging Face CLIP tokenizer files

ImageLike = Image.Image | str | Path | np.ndarray | torch.Tensor


class GeoBridge(nn.Module):
    """One embedding space for drone, satellite and street images and text.

    ``forward`` returns a dict of L2-normalised embeddings per view; ``encode`` is the user-facing verb that
    takes images (PIL, paths or uint8 arrays) or strings and returns an (N, D) float32 numpy array.
    """

    def __init__(
        self,
        config: GeoBridgeConfig,
        *,
        backbone_file: str | Path | None = None,
        load_pretrained: bool = True,
        clip_tokenizer: str | Path | None = None,
    ) -> None:
        """``load_pretrained=False`` builds the architecture without reading ``config.image.pretrained`` or
        ``config.clip.weights``; ``clip_tokenizer`` is a folder of Hugging Face CLIP tokenizer files."""
        super().__init__()
        config.validate()
        self.config = config
        clip = None
        if config.clip is not None:  # CLIP towers (models/clip/): the checkpoint's encoders and temperature
            clip = clip_parts(config, load_weights=load_pretrained,
                              tokenizer_dir=Path(clip_tokenizer) if clip_tokenizer is not None else None)
        self.image: ImageTower | ClipImageTower
        if clip is not None and config.image.backbone == CLIP_BACKBONE:
            self.image = ClipImageTower(config.image, encoder=clip.vision, embed_dim=config.embed_dim)
        else:
            self.image = ImageTower(
                config.image, embed_dim=config.embed_dim, backbone_file=backbone_file, load_pretrained=load_pretrained
            )
        self.text: TextTower | ClipTextTower
        if clip is not None and config.text.kind == "clip":
            self.text = ClipTextTower(config.text, clip=config.clip, encoder=clip.text, tokens=clip.tokens)
        else:
            self.text = TextTower(config.text, embed_dim=config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))

    @classmethod
    def from_config(cls, name_or_path: str | Path, *, backbone_file: str | Path | None = None) -> GeoBridge:
        """Build an untrained model from a built-in config name (``gb-tiny``) or a JSON file."""
        return cls(get_model_config(name_or_path), backbone_file=backbone_file)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def encode_image(self, images: torch.Tensor, *, view: str, test_time_augment: bool = False) -> torch.Tensor:
        """(B, 3, H, W) normalised image tensors of one view -> (B, D) unit vectors.

        ``test_time_augment=True`` averages the unit embeddings of the view's symmetric copies (rotations and
        mirrors of a tile, mirrors of a drone photo, headings of a panorama; ``models/symmetries.py``) and
        renormalises, which makes the embedding exactly invariant to them.
        """
        if not test_time_augment:
            return F.normalize(self.image(images, view=view), dim=-1)
        batch, _, height, width = images.shape
        group = view_symmetries(view, height=height, width=width)
        copies = torch.cat([g(images) for g in group])  # (G * B, 3, H, W)
        emb = F.normalize(self.image(copies, view=view), dim=-1)  # (G * B, D)
        return F.normalize(emb.view(len(group), batch, -1).mean(dim=0), dim=-1)  # (B, D)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """N strings -> (N, D) unit vectors."""
        return F.normalize(self.text(texts), dim=-1)

    def forward(self, images: dict[str, torch.Tensor], texts: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Embed a batch: ``images[view]`` is (B_v, 3, H, W).

        Returns ``{view: (B_v, D)}`` unit vectors, plus ``text`` (T, D) if texts are given, plus the scalar
        ``logit_scale`` (returned here so that, under DDP, every parameter is used inside ``forward``).
        """
        out = {view: self.encode_image(batch, view=view) for view, batch in images.items()}
        if texts:
            out["text"] = self.encode_text(texts)
        out["logit_scale"] = self.logit_scale * 1.0  # a fresh tensor: DDP must not see the Parameter as output
        return out

    # ------------------------------------------------------------------ user-facing encoding
    def transform(self, view: str) -> Any:
        """The evaluation transform of an image view: PIL image -> (3, H, W) tensor."""
        check_view(view, allowed=IMAGE_VIEWS)
        height, width = self.config.image.input_size[view]
        return eval_transform(input_size=(3, height, width), mean=tuple(self.config.image.mean),
                              std=tuple(self.config.image.std), interpolation=self.config.image.interpolation)

    @torch.no_grad()
    def encode(
        self,
        items: Sequence[ImageLike] | Sequence[str] | torch.Tensor,
        *,
        view: str,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
        test_time_augment: bool = True,
        num_workers: int | None = None,
        precision: str = "fp32",
    ) -> np.ndarray:
        """Embed images of one view, or texts (``view="text"``), into an (N, D) float32 array of unit vectors.

        Images are PIL images, paths, uint8 (H, W, 3) arrays, uint8 (3, H, W) tensors or one uint8 (N, 3, H, W)
        tensor. They are decoded and resized in ``num_workers`` DataLoader processes with prefetch (None: none for
        fewer than 4 batches, else up to the cores minus one; 0: in this process). ``precision`` (fp32, bf16, or fp16 on
        CUDA) runs the network under autocast; the result is float32 either way.

        Images of a view listed in the config's ``image.test_time_augment`` are embedded with test-time
        augmentation (see ``encode_image``) unless ``test_time_augment=False``.
        """
        check_view(view)
        check_precision(precision, device=self.device)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = as_items(items)
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() <= logging.INFO and len(items) > batch_size
        # eval mode for the call, then each submodule's own mode back; a model already in eval mode is left alone
        # (train()/eval() walk every submodule, MiniLM's hundreds: ~10 ms, more than a small query's forward)
        training = [module for module in self.modules() if module.training]
        if training:
            self.eval()
        chunks: list[np.ndarray] = []
        n_batches = (len(items) + batch_size - 1) // batch_size
        try:
            bar = tqdm(total=n_batches, desc=f"encode {view}", disable=not show_progress_bar, unit="batch")
            for batch in self._encode_inputs(items, view=view, batch_size=batch_size, num_workers=num_workers):
                with autocast(precision, device=self.device):
                    if view == "text":
                        embeddings = self.encode_text(batch)
                    else:
                        tta = test_time_augment and view in self.config.image.test_time_augment
                        batch = normalise(  # (B, 3, H, W) float32
                            batch.to(self.device, non_blocking=True),
                            mean=self.config.image.mean,
                            std=self.config.image.std,
                        )
                        embeddings = self.encode_image(batch, view=view, test_time_augment=tta)
                chunks.append(F.normalize(embeddings.float(), dim=-1).cpu().numpy())  # (B, D)
                bar.update(1)
            bar.close()
        finally:
            for module in training:
                module.training = True
        if not chunks:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)  # (N, D)

    def _encode_inputs(
        self, items: Sequence[Any], *, view: str, batch_size: int, num_workers: int | None
    ) -> Iterator[Any]:
        """Batches of texts, or of (B, 3, H, W) image tensors decoded in DataLoader workers."""
        if view == "text":
            for start in range(0, len(items), batch_size):
                yield [_as_text(t) for t in items[start : start + batch_size]]
            return
        if num_workers is None:
            num_workers = default_num_workers(n_items=len(items), batch_size=batch_size, device_type=self.device.type)
        height, width = self.config.image.input_size[view]
        resample = str_to_pil_interp(self.config.image.interpolation)  # the eval transform's filter
        dataset = ImageItems(items, size=(height, width), resample=resample)
        yield from image_batches(
            dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=self.device.type == "cuda"
        )

    @torch.no_grad()
    def reestimate_norm_statistics(
        self,
        items: dict[str, Sequence[ImageLike]],
        *,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
        num_workers: int | None = None,
    ) -> dict[str, int]:
        """Recompute the image tower's BatchNorm running statistics of each view in ``items`` from those images.

        Each view's statistics become the plain average over its images' batches (momentum None), computed with
        the evaluation transform and no test-time augmentation. A model with ``image.norm=batch`` (one set of
        statistics shared by the views, as checkpoints before per-view normalisation) is first converted to
        ``view_batch``, so that each view gets its own. Returns the number of images per view.
        """
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (BatchNorm statistics of a batch), got {batch_size}")
        for view, view_items in items.items():
            check_view(view, allowed=IMAGE_VIEWS)
            if len(view_items) < 2:
                raise ValueError(f"{view}: BatchNorm statistics need at least 2 images, got {len(view_items)}")
        image_cfg = self.config.image
        if image_cfg.norm == "batch" and image_cfg.share_backbone:
            apply_norm(self.image.backbone, norm="view_batch", num_views=len(IMAGE_VIEWS), pretrained=False)
            image_cfg.norm = "view_batch"
        norms = [m for m in self.image.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            raise ValueError("the image tower has no BatchNorm statistics to estimate (GroupNorm or LayerNorm)")
        modes = {m: m.training for m in self.modules()}
        momenta = {m: m.momentum for m in norms}
        counts: dict[str, int] = {}
        try:
            self.eval()
            for view, view_items in items.items():
                view_items = as_items(view_items)
                index = IMAGE_VIEWS.index(view)
                view_norms = [m for m in self.image.backbone_for(view).modules() if m in momenta]
                with active_view(index):  # the view's own rows of per-view statistics
                    for m in view_norms:
                        m.running_mean.zero_()
                        m.running_var.fill_(1)
                        m.num_batches_tracked.zero_()
                        m.momentum = None  # a cumulative average over the batches
                        m.train()
                n_batches = (len(view_items) + batch_size - 1) // batch_size
                bar = tqdm(total=n_batches, desc=f"statistics {view}", unit="batch",
                           disable=not (show_progress_bar if show_progress_bar is not None else n_batches > 1))
                for batch in self._encode_inputs(view_items, view=view, batch_size=batch_size, num_workers=num_workers):
                    batch = normalise(batch.to(self.device), mean=image_cfg.mean, std=image_cfg.std)
                    if batch.shape[0] > 1:  # a last batch of one has no variance
                        self.image(batch, view=view)
                    bar.update(1)
                bar.close()
                for m in view_norms:
                    m.eval()
                counts[view] = len(view_items)
        finally:
            for m, momentum in momenta.items():
                m.momentum = momentum
            for m, mode in modes.items():
                m.training = mode
        return counts

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into the folder ``path`` (atomically, file by file)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        skip = tuple(f"text.{prefix}" for prefix in self.text.frozen_prefixes())
        tensors = {k: v for k, v in self.state_dict().items() if not k.startswith(skip)}
        save_tensors(path / WEIGHTS_NAME, tensors, metadata={"format": CHECKPOINT_FORMAT})
        config = self.config.to_dict()
        if isinstance(self.text, ClipTextTower) and self.text.tokens.folder is not None:
            self.text.tokens.save(path / CLIP_TOKENIZER_DIR)  # the Hugging Face tokenizer files, file by file
            config["clip"]["tokenizer"] = CLIP_TOKENIZER_DIR  # relative to the checkpoint folder
        atomic_write_json(
            path / CONFIG_NAME,
            {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "model": config},
        )
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu") -> GeoBridge:
        """Load a model saved by ``save_pretrained`` (or a training run folder holding one under ``model/``)."""
        path = Path(path)
        if path.is_file():
            refuse_pickle(path)
            raise CheckpointError(
                f"{path} is a file; pass the checkpoint folder holding {CONFIG_NAME} and {WEIGHTS_NAME}"
            )
        if not path.exists():
            raise CheckpointError(f"checkpoint not found: {path}")
        if not (path / CONFIG_NAME).is_file() and (path / "model" / CONFIG_NAME).is_file():
            path = path / "model"  # a training run folder
        for pickled in sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES):
            if not (path / WEIGHTS_NAME).is_file():
                refuse_pickle(pickled)
        config = _read_checkpoint_config(path / CONFIG_NAME)
        tokenizer = None
        if config.clip is not None and config.clip.tokenizer is not None:
            tokenizer = path / config.clip.tokenizer  # an absolute path stays as it is
        try:
            model = cls(config, load_pretrained=False, clip_tokenizer=tokenizer)  # the weights are in the checkpoint
        except ConfigError as exc:  # e.g. backbone_kwargs the backbone does not take
            raise CheckpointError(f"bad model config in {path / CONFIG_NAME}: {exc}") from exc
        tensors = load_tensors(path / WEIGHTS_NAME)
        skip = tuple(f"text.{prefix}" for prefix in model.text.frozen_prefixes())
        state = model.state_dict()
        expected = {k: v for k, v in state.items() if not k.startswith(skip)}
        # frozen pretrained weights that an older checkpoint saved anyway load as they are (the same values)
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(state))
        if missing or unexpected:
            raise CheckpointError(
                f"{path / WEIGHTS_NAME} does not match config {config.name!r}: "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        check_tensors(tensors, state, source=path / WEIGHTS_NAME)
        try:
            model.load_state_dict(tensors, strict=False)
        except RuntimeError as exc:  # shape mismatches
            raise CheckpointError(f"{path / WEIGHTS_NAME} does not match config {config.name!r}: {exc}") from exc
        return model.to(device).eval()


def _read_checkpoint_config(path: Path) -> GeoBridgeConfig:
    """The validated model config of a checkpoint's ``config.json``; CheckpointError naming the file and key."""
    meta = read_json(path)
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a GeoBridge model config (format != {CHECKPOINT_FORMAT!r})")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: format_version: expected an int >= 1, got {version!r}")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} was written by a newer GeoBridge (format_version {version}); please upgrade")
    if "model" not in meta:
        raise CheckpointError(f"{path}: model: missing (the model config)")
    image = meta["model"].get("image") if isinstance(meta["model"], dict) else None
    if isinstance(image, dict) and "norm" not in image:
        # written before image.norm: its shared backbone kept one set of BatchNorm statistics for all views
        image["norm"] = "batch"
        logger.warning(
            "%s predates per-view normalisation: its image views share one set of BatchNorm statistics "
            "(image.norm=batch), which evaluates every view with statistics averaged over all three; "
            "`geobridge renorm` re-estimates them per view", path
        )
    try:
        return GeoBridgeConfig.from_dict(meta["model"], where="model")
    except ConfigError as exc:
        raise CheckpointError(f"bad model config in {path}: {exc}") from exc


def _as_text(item: object) -> str:
    if not isinstance(item, str):
        raise TypeError(f"view='text' expects strings, got {type(item).__name__}")
    return item

