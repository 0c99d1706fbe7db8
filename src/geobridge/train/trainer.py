"""The training loop: single process or torchrun DDP, with exact resume."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from geobridge._atomic import atomic_write_bytes
from geobridge.data import BatchAugment, TensorBatches, build_view_cache
from geobridge.errors import GeoBridgeError
from geobridge.losses import GeoBridgeLoss
from geobridge.models import GeoBridge, get_model_config
from geobridge.models.precision import autocast, check_precision, grad_scaler
from geobridge.train.config import TrainConfig, to_yaml
from geobridge.train.distributed import all_reduce_mean, barrier, cleanup, gather_rows, init_distributed
from geobridge.train.state import latest_checkpoint, load_train_state, save_checkpoint
from geobridge.views import IMAGE_VIEWS

MAX_LOGIT_SCALE = math.log(100.0)


def build_model(config: TrainConfig) -> GeoBridge:
    """The model a run trains: a built-in/JSON architecture, or a saved model to fine-tune."""
    if config.model.init_from:
        model = GeoBridge.from_pretrained(config.model.init_from)
        if config.model.grad_checkpointing is not None:
            model.config.image.grad_checkpointing = config.model.grad_checkpointing
            model.image.set_grad_checkpointing(config.model.grad_checkpointing)
        return model
    model_config = get_model_config(config.model.name)
    if config.model.text_kind is not None:
        model_config.text.kind = config.model.text_kind
    if config.model.text_freeze is not None:
        model_config.text.freeze = config.model.text_freeze
    if config.model.text_trainable_layers is not None:
        model_config.text.trainable_layers = config.model.text_trainable_layers
    if config.model.grad_checkpointing is not None:
        model_config.image.grad_checkpointing = config.model.grad_checkpointing
    return GeoBridge(model_config, backbone_file=config.model.backbone_file)


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


class Trainer:
    """Owns the model, data, optimizer and run folder of one training run."""

    def __init__(self, config: TrainConfig, *, show_progress_bar: bool | None = None) -> None:
        self.config = config
        self.device = _resolve_device(config.train.device)
        self.dist = init_distributed(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.show_progress_bar = self.dist.is_main if show_progress_bar is None else show_progress_bar
        self.run_dir = Path(config.out)
        self.precision = config.train.precision
        check_precision(self.precision, device=self.device, where="train.precision")
        self.scaler = grad_scaler(self.precision, device=self.device)  # fp16 only
        torch.manual_seed(config.train.seed)  # identical initial weights on every rank
        np.random.seed(config.train.seed)
        self.model = build_model(config).to(self.device)
        self.loss_fn = GeoBridgeLoss(
            objective=config.loss.objective,
            symmetric=config.loss.symmetric,
            use_pairs=config.loss.use_pairs,
            use_anchors=config.loss.use_anchors,
            pair_weight=config.loss.pair_weight,
            pair_weights=dict(config.loss.pair_weights),
            anchor_weight=config.loss.anchor_weight,
            bridge_weight=config.loss.bridge_weight,
            label_smoothing=config.loss.label_smoothing,
        )
        self.views = [v for v in config.data.views if v not in config.train.drop_views]
        if not config.loss.use_anchors:
            self.views = [v for v in self.views if v != "text"]
        self.image_views = [v for v in IMAGE_VIEWS if v in self.views]
        if len(self.image_views) + ("text" in self.views) < 2:
            raise GeoBridgeError(f"training needs at least two views; got {self.views}")
        self._build_data()
        self.optimizer = torch.optim.AdamW(param_groups(self.model, config), betas=(0.9, 0.999))
        self.steps_per_epoch = max(1, len(self.sampler) // config.optim.grad_accum)
        self.total_steps = self.steps_per_epoch * config.optim.epochs
        if config.train.max_steps is not None:
            self.total_steps = min(self.total_steps, config.train.max_steps)
        self.warmup_steps = int(round(config.optim.warmup_epochs * self.steps_per_epoch))
        self.step = 0
        self.start_epoch = 0
        self.ddp_model: nn.Module = self.model
        if self.dist.enabled:
            self.ddp_model = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,  # a view may be absent from one rank's slice of a batch
            )

    # ------------------------------------------------------------------ data
    def _build_data(self) -> None:
        from geobridge.data import PlaceBatchSampler, load_places

        config = self.config
        places = load_places(config.data.root, fmt=config.data.format, split=config.data.train_split)
        if len(places) < config.optim.batch_size:
            raise GeoBridgeError(
                f"{config.data.root} has {len(places)} {config.data.train_split} places, "
                f"fewer than one batch ({config.optim.batch_size})"
            )
        self.places = places
        coords = np.array([[p.lat, p.lon] for p in places], dtype=np.float64)
        gps_now = config.sampler.strategy == "gps" and config.sampler.gps_epochs == "all"
        self.sampler = PlaceBatchSampler(
            [p.place_id for p in places],
            batch_size=config.optim.batch_size,
            shuffle=True,
            drop_last=True,
            seed=config.train.seed,
            strategy="gps" if gps_now else "random",  # "embedding" starts after the first epoch (see _set_epoch)
            coords=coords,
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
        )
        if config.data.pipeline == "tensor":
            self.loader = self._tensor_batches(places)
        else:
            self.loader = self._pil_loader(places)
        encoder = self.model.text.encoder
        if "text" in self.views and hasattr(encoder, "warm_cache"):
            # a frozen text encoder is run once per distinct sentence, up front
            encoder.warm_cache([t for p in places for t in p.texts], show_progress_bar=self.show_progress_bar)

    def _pil_loader(self, places: list) -> DataLoader:
        from geobridge.data import PlaceDataset, collate_places, make_view_transform

        config = self.config
        image_cfg = self.model.config.image
        transforms = {
            view: make_view_transform(
                view,
                input_size=(3, *image_cfg.input_size[view]),
                mean=tuple(image_cfg.mean),
                std=tuple(image_cfg.std),
                interpolation=image_cfg.interpolation,
                train=config.data.augment,
                robust=config.data.augment and config.data.robust_augment,
            )
            for view in self.image_views
        }
        self.dataset = PlaceDataset(
            places,
            views=self.views,
            transforms=transforms,
            seed=config.train.seed,
            text_augment=config.data.text_augment,
        )
        return DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            collate_fn=collate_places,
            num_workers=config.data.num_workers,
            worker_init_fn=_single_thread_worker,
            persistent_workers=False,
        )

    def _tensor_batches(self, places: list) -> TensorBatches:
        config = self.config
        image_cfg = self.model.config.image
        caches = {
            view: build_view_cache(
                places,
                view,
                size=tuple(image_cfg.input_size[view]),
                interpolation=image_cfg.interpolation,
                show_progress_bar=self.show_progress_bar,
            )
            for view in self.image_views
        }
        augment = {
            view: BatchAugment(
                view,
                mean=tuple(image_cfg.mean),
                std=tuple(image_cfg.std),
                train=config.data.augment,
                robust=config.data.augment and config.data.robust_augment,
            )
            for view in self.image_views
        }
        self.dataset = TensorBatches(
            places,
            caches,
            sampler=self.sampler,
            augment=augment,
            use_text="text" in self.views,
            text_augment=config.data.text_augment,
            device=self.device,
            seed=config.train.seed,
            rank=self.dist.rank,
        )
        return self.dataset

    def _set_epoch(self, epoch: int) -> None:
        sampler_cfg = self.config.sampler
        if sampler_cfg.strategy == "gps" and sampler_cfg.gps_epochs.startswith("after:"):
            switch = int(sampler_cfg.gps_epochs.split(":", 1)[1])
            self.sampler.strategy = "gps" if epoch >= switch else "random"
        if sampler_cfg.strategy == "embedding":
            if epoch >= 1 and (epoch - 1) % max(1, sampler_cfg.embedding_refresh) == 0:
                self.sampler.set_neighbours(self._embedding_neighbours())
                self.sampler.strategy = "embedding"
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    @torch.no_grad()
    def _embedding_neighbours(self) -> np.ndarray:
        """(P, k) nearest training places by satellite (else first image view) embedding, for hard negatives."""
        view = "satellite" if "satellite" in self.image_views else self.image_views[0]
        items = [p.images[view][0] for p in self.places]
        emb = self.model.encode(items, view=view, batch_size=128, show_progress_bar=False)  # (P, D)
        sims = emb @ emb.T  # (P, P): the training set is small enough to hold
        np.fill_diagonal(sims, -np.inf)
        k = min(self.config.sampler.neighbours, len(self.places) - 1)
        return np.argsort(-sims, axis=1)[:, :k]

    # ------------------------------------------------------------------ steps
    def _forward_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        place_index = batch["place_index"].to(self.device)  # (B,) global place indices
        images = {v: batch["images"][v].to(self.device) for v in self.image_views if v in batch["images"]}
        labels = {v: place_index[batch["index"][v].to(self.device)] for v in images}
        images, labels = self._view_dropout(images, labels)
        texts = batch["text"] if "text" in self.views else None
        with autocast(self.precision, device=self.device):
            emb = self.ddp_model(images, texts or None)
        emb = {k: v.float() for k, v in emb.items()}  # the loss (logits, softmax) in fp32
        logit_scale = emb.pop("logit_scale")
        if texts:
            labels["text"] = place_index[batch["text_index"].to(self.device)]
        if self.dist.enabled:
            emb, labels = self._gather(emb, labels, anchor=logit_scale)
        return self.loss_fn(emb, labels, logit_scale=logit_scale)

    def _view_dropout(
        self, images: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        p = self.config.train.view_dropout
        if p <= 0:
            return images, labels
        gen = torch.Generator().manual_seed(self.config.train.seed * 1_000_003 + self.step * 31 + self.dist.rank)
        kept_images, kept_labels = {}, {}
        for view, batch in images.items():
            keep = torch.rand(batch.shape[0], generator=gen) >= p
            if keep.sum() >= 2:
                kept_images[view], kept_labels[view] = batch[keep.to(batch.device)], labels[view][keep.to(batch.device)]
        return kept_images, kept_labels

    def _gather(
        self, emb: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], *, anchor: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """All ranks gather every training view (empty where a rank lacks one) in the same order.

        ``anchor`` is a forward output that an empty view's placeholder hangs from, so that it requires grad.
        """
        views = [*self.image_views, *(["text"] if "text" in self.views else [])]
        dim = self.model.embed_dim
        out_emb, out_labels = {}, {}
        for view in views:
            local = emb.get(view)
            if local is None:  # keep the autograd graph identical across ranks
                local = anchor.new_zeros((0, dim)) + 0.0 * anchor
                local_labels = torch.zeros(0, dtype=torch.long, device=self.device)
            else:
                local_labels = labels[view]
            out_emb[view] = gather_rows(local, self.dist, with_grad=True)
            out_labels[view] = gather_rows(local_labels, self.dist, with_grad=False)
        return out_emb, out_labels

    def _set_lr(self) -> float:
        lr = 0.0
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(
                self.step,
                total_steps=self.total_steps,
                warmup_steps=self.warmup_steps,
                base_lr=group["base_lr"],
                min_lr_ratio=self.config.optim.min_lr_ratio,
            )
            lr = max(lr, group["lr"])
        return lr

    # ------------------------------------------------------------------ run
    def resume(self) -> bool:
        """Restore model, optimizer, step, epoch and RNG from the newest checkpoint; False if there is none."""
        folder = latest_checkpoint(self.run_dir)
        if folder is None:
            return False
        restored = GeoBridge.from_pretrained(folder / "model")
        self.model.load_state_dict(restored.state_dict())
        state = load_train_state(folder)
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_torch"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.step = state["step"]
        self.start_epoch = state["epoch"] + 1
        return True

    def fit(self) -> dict[str, float]:
        config = self.config
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.run_dir / "config.yaml", to_yaml(config).encode())
        barrier(self.dist)
        log_path = self.run_dir / "metrics.jsonl"
        accum = config.optim.grad_accum
        last: dict[str, float] = {}
        started = time.time()
        for epoch in range(self.start_epoch, config.optim.epochs):
            if self.step >= self.total_steps:
                break
            self._set_epoch(epoch)
            self.model.train()
            sums: dict[str, float] = {}
            n_batches = 0
            bar = tqdm(
                total=self.steps_per_epoch,
                desc=f"epoch {epoch + 1}/{config.optim.epochs}",
                disable=not self.show_progress_bar,
                unit="step",
                leave=False,
            )
            self.optimizer.zero_grad(set_to_none=True)
            for i, batch in enumerate(self.loader):
                lr = self._set_lr()
                sync = (i + 1) % accum == 0
                ctx = self.ddp_model.no_sync() if self.dist.enabled and not sync else contextlib.nullcontext()
                with ctx:
                    losses = self._forward_losses(batch)
                    total = sum(losses.values())
                    scaled = total / accum
                    (scaled if self.scaler is None else self.scaler.scale(scaled)).backward()
                for key, value in losses.items():
                    sums[key] = sums.get(key, 0.0) + float(value.detach())
                sums["loss"] = sums.get("loss", 0.0) + float(total.detach())
                n_batches += 1
                if not sync:
                    continue
                if self.scaler is not None:
                    self.scaler.unscale_(self.optimizer)  # clip the true gradients
                if config.optim.grad_clip > 0:
                    nn.utils.clip_grad_norm_(self.model.parameters(), config.optim.grad_clip)
                if self.scaler is None:
                    self.optimizer.step()
                else:  # skips the step when fp16 gradients overflowed
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                with torch.no_grad():
                    self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{float(total.detach()):.3f}", lr=f"{lr:.2e}")
                if self.step >= self.total_steps:
                    break
            bar.close()
            last = {k: all_reduce_mean(v / max(1, n_batches), self.dist) for k, v in sums.items()}
            record = {
                "epoch": epoch,
                "step": self.step,
                "lr": lr,
                "logit_scale": float(self.model.logit_scale.detach().exp()),
                "elapsed_s": round(time.time() - started, 2),
                **last,
            }
            if config.train.eval_every and (epoch + 1) % config.train.eval_every == 0 and self.dist.is_main:
                record.update({f"eval/{k}": v for k, v in self.evaluate().items() if isinstance(v, float)})
            if self.dist.is_main:
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                save_checkpoint(
                    self.run_dir,
                    model=self.model,
                    optimizer=self.optimizer,
                    epoch=epoch,
                    step=self.step,
                    extra={"loss": last.get("loss")},
                )
                if self.show_progress_bar:
                    epoch_loss = last.get("loss", float("nan"))
                    tqdm.write(f"epoch {epoch + 1}: loss {epoch_loss:.4f}  ({record['elapsed_s']} s)")
            barrier(self.dist)
        if self.dist.is_main:
            self.model.save_pretrained(self.run_dir / "model")
        barrier(self.dist)
        return last

    def evaluate(self) -> dict[str, Any]:
        """Every-direction retrieval metrics of the current model on the eval split."""
        from geobridge.eval.embed import evaluate_model

        return evaluate_model(
            self.model,
            self.config.data.root,
            fmt=self.config.data.format,
            split=self.config.data.eval_split,
            show_progress_bar=self.show_progress_bar,
        )

    def close(self) -> None:
        cleanup(self.dist)


def train(config: TrainConfig, *, resume: bool = False, evaluate: bool = True) -> dict[str, Any]:
    """Train (resuming if asked), save the model to ``<out>/model`` and, on the main rank, evaluate it."""
    trainer = Trainer(config)
    try:
        if resume and not trainer.resume() and trainer.dist.is_main:
            tqdm.write(f"no checkpoint in {trainer.run_dir}; starting from scratch")
        losses = trainer.fit()
        result: dict[str, Any] = {f"train/{k}": v for k, v in losses.items()}
        if evaluate and trainer.dist.is_main:
            metrics = trainer.evaluate()
            result.update(metrics)
            atomic_write_bytes(trainer.run_dir / "eval.json", (json.dumps(metrics, indent=2) + "\n").encode())
        return result
    finally:
        trainer.close()


def _single_thread_worker(worker_id: int) -> None:
    # Loader workers decode and resize images; letting each also spawn a full OpenMP pool oversubscribes
    # small machines badly (2 cores: the training step slows down several-fold).
    torch.set_num_threads(1)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GeoBridgeError("train.device is cuda but no CUDA device is available")
    return torch.device(name)
