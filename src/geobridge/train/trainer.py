"""The training loop: single process or torchrun DDP, with exact resume."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from geobridge._atomic import atomic_write_bytes
from geobridge.data.pipeline import ImageInputs, TrainingData
from geobridge.data.types import sample_images
from geobridge.errors import CheckpointError, GeoBridgeError
from geobridge.losses import GeoBridgeLoss
from geobridge.models import GeoBridge
from geobridge.models.precision import autocast, check_precision, grad_scaler
from geobridge.train.config import TrainConfig, to_yaml, validate_config
from geobridge.train.distributed import all_reduce_mean, barrier, cleanup, gather_rows, init_distributed
from geobridge.train.setup import build_model, lr_at, param_groups
from geobridge.train.state import (
    METRICS,
    config_changes,
    finish_run_record,
    latest_checkpoint,
    load_train_state,
    save_checkpoint,
    start_run_record,
    truncate_metrics,
)
from geobridge.train.text_align import align_text
from geobridge.views import IMAGE_VIEWS

MAX_LOGIT_SCALE = math.log(100.0)

Evaluator = Callable[[GeoBridge], Mapping[str, Any]]  # a trained model -> its metrics


class Trainer:
    """Owns the model, data, optimizer and run folder of one training run."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        show_progress_bar: bool | None = None,
        strict: bool = False,
        evaluator: Evaluator | None = None,
    ) -> None:
        """``strict``: refuse training places that lack one of the views trained (default: count them and go on).
        ``evaluator``: model -> metrics, for ``train.eval_every`` and ``evaluate`` (the caller builds it, e.g.
        ``geobridge.eval.training_evaluator``: training imports no evaluation code)."""
        validate_config(config)  # also a config built or changed in code, not only one from load_config
        if config.train.eval_every and evaluator is None:
            raise GeoBridgeError("train.eval_every needs an evaluator (geobridge.eval.training.training_evaluator)")
        self.config = config
        self.strict = strict
        self.evaluator = evaluator
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
        if config.train.channels_last:
            self.model.image.to(memory_format=torch.channels_last)
        self.loss_fn = GeoBridgeLoss(config.loss)
        self.views = [v for v in config.data.views if v not in config.train.drop_views]
        if not config.loss.use_anchors:
            self.views = [v for v in self.views if v != "text"]
        self.image_views = [v for v in IMAGE_VIEWS if v in self.views]
        if len(self.image_views) + ("text" in self.views) < 2:
            raise GeoBridgeError(f"training needs at least two views; got {self.views}")
        self._build_data()
        self.optimizer = torch.optim.AdamW(param_groups(self.model, config), betas=(0.9, 0.999))
        self.steps_per_epoch = max(1, len(self.data) // config.optim.grad_accum)
        self.total_steps = self.steps_per_epoch * config.optim.epochs
        if config.train.max_steps is not None:
            self.total_steps = min(self.total_steps, config.train.max_steps)
        self.warmup_steps = int(round(config.optim.warmup_epochs * self.steps_per_epoch))
        self.step = 0
        self.start_epoch = 0
        self.elapsed_before = 0.0  # training seconds of the run before a resume
        self.ddp_model: nn.Module = self.model
        if self.dist.enabled:
            self.ddp_model = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,  # a view may be absent from one rank's slice of a batch
            )

    # ------------------------------------------------------------------ data
    def _build_data(self) -> None:
        """The training places, sampler and pipeline (``geobridge.data.pipeline``); a frozen text encoder is run
        once per distinct description, up front."""
        image = self.model.config.image
        self.data = TrainingData(
            self.config.data,
            self.config.sampler,
            views=self.views,
            image=ImageInputs(mean=tuple(image.mean), std=tuple(image.std),
                              input_size={v: tuple(s) for v, s in image.input_size.items()},
                              interpolation=image.interpolation),
            batch_size=self.config.optim.batch_size,
            seed=self.config.train.seed,
            device=self.device,
            world_size=self.dist.world_size,
            rank=self.dist.rank,
            strict=self.strict,
            show_progress_bar=self.show_progress_bar,
        )
        if "text" in self.views:
            texts = [t for p in self.data.places for t in p.texts]
            self.model.text.warm_cache(texts, show_progress_bar=self.show_progress_bar)

    def _set_epoch(self, epoch: int) -> None:
        self.data.set_epoch(epoch, neighbours=self._embedding_neighbours)

    @torch.no_grad()
    def _embedding_neighbours(self) -> np.ndarray:
        """(P, k) nearest training places by satellite (else first image view) embedding, for hard negatives."""
        view = "satellite" if "satellite" in self.image_views else self.image_views[0]
        places = self.data.places
        items = [p.images[view][0] for p in places]
        emb = self.model.encode(items, view=view, batch_size=128, show_progress_bar=False)  # (P, D)
        k = min(self.config.sampler.neighbours, len(places) - 1)
        out = np.empty((len(emb), k), dtype=np.int64)
        for start in range(0, len(emb), 2048):  # (2048, P) similarities at a time: CVUSA's P = 35,532 would be 5 GB
            sims = emb[start : start + 2048] @ emb.T  # (C, P)
            rows = np.arange(sims.shape[0])
            sims[rows, start + rows] = -np.inf
            best = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else np.argsort(-sims, axis=1)
            order = np.argsort(-np.take_along_axis(sims, best, axis=1), axis=1, kind="stable")
            out[start : start + 2048] = np.take_along_axis(best, order, axis=1)[:, :k]
        return out

    # ------------------------------------------------------------------ steps
    def _forward_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        emb, labels, logit_scale = self._embed(batch, with_graph=True)
        return self._batch_losses(emb, labels, logit_scale)

    def _embed(self, batch: dict[str, Any], with_graph: bool) -> tuple[
        dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor
    ]:
        """This rank's embeddings ``{view: (B_v, D)}``, their place labels ``{view: (B_v,)}`` and the logit scale;
        without a graph through the bare model (no DDP hooks), as the first pass of cached accumulation does."""
        place_index = batch["place_index"].to(self.device)  # (B,) global place indices
        images = {v: batch["images"][v].to(self.device) for v in self.image_views if v in batch["images"]}
        labels = {v: place_index[batch["index"][v].to(self.device)] for v in images}
        images, labels = self._view_dropout(images, labels)
        texts = batch["text"] if "text" in self.views else None
        with autocast(self.precision, device=self.device):
            emb = (self.ddp_model if with_graph else self.model)(images, texts or None)
        emb = {k: v.float() for k, v in emb.items()}  # the loss (logits, softmax) in fp32
        logit_scale = emb.pop("logit_scale")
        if texts:
            labels["text"] = place_index[batch["text_index"].to(self.device)]
        return emb, labels, logit_scale

    def _batch_losses(
        self, emb: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], logit_scale: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The loss terms over the global batch: every rank's embeddings gathered (differentiably) under DDP."""
        if self.dist.enabled:
            emb, labels = self._gather(emb, labels, anchor=logit_scale)
        return self.loss_fn(emb, labels, logit_scale=logit_scale)

    def _accumulated_losses(self, batches: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """One optimizer step's gradients from ``grad_accum`` micro-batches, the loss over all of them together."""
        from geobridge.train.grad_cache import cached_accumulation

        return cached_accumulation(
            batches,
            embed=self._embed,
            loss_fn=self._batch_losses,
            module=self.model,
            no_sync=self.ddp_model.no_sync if self.dist.enabled else contextlib.nullcontext,  # type: ignore[operator]
            devices=[self.device],
        )

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
        """Restore model, optimizer, step, epoch, RNG and an fp16 run's loss scale from the newest checkpoint;
        False if there is none."""
        folder = latest_checkpoint(self.run_dir)
        if folder is None:
            return False
        restored = GeoBridge.from_pretrained(folder / "model")
        changed = config_changes(restored.config.to_dict(), self.model.config.to_dict())
        if changed:
            raise CheckpointError(
                f"cannot resume {self.run_dir}: its checkpoint {folder.name} was trained with another model config "
                f"({'; '.join(changed[:4])}{'; ...' if len(changed) > 4 else ''}); train with the same model "
                "settings, or give a new out folder"
            )
        self.model.load_state_dict(restored.state_dict())
        state = load_train_state(folder)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:  # other trainable parameters (e.g. model.image_trainable_blocks changed)
            raise CheckpointError(f"cannot resume {self.run_dir}: the optimizer state of {folder.name} does not "
                                  f"match the parameters trained now ({exc})") from None
        torch.set_rng_state(state["rng_torch"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        if self.scaler is not None and state["grad_scaler"] is not None:
            self.scaler.load_state_dict(state["grad_scaler"])  # else (an older checkpoint) the scale starts fresh
        self.step = state["step"]
        self.start_epoch = state["epoch"] + 1
        self.elapsed_before = float(state["extra"].get("elapsed_s") or 0.0)
        return True

    def fit(self) -> dict[str, float]:
        """Train from ``start_epoch`` to ``optim.epochs`` (or ``train.max_steps``), logging and checkpointing every
        epoch, then save the model; returns the last epoch's mean losses."""
        config = self.config
        self._start_run()
        last: dict[str, float] = {}
        started = time.time() - self.elapsed_before  # elapsed_s counts the whole run across resumes
        for epoch in range(self.start_epoch, config.optim.epochs):
            if self.step >= self.total_steps:
                break
            self._set_epoch(epoch)
            sums, n_batches, lr = self._train_epoch(epoch)
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
                self._end_epoch(record)
            barrier(self.dist)
        if self.dist.is_main:
            self._finish_run(train_s=time.time() - started)
        barrier(self.dist)
        return last

    def _start_run(self) -> None:
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.run_dir / "config.yaml", to_yaml(self.config).encode())
            # the log holds exactly the epochs before this one (a kill after an epoch's line but before its
            # checkpoint would otherwise log that epoch twice)
            truncate_metrics(self.run_dir / METRICS, before_epoch=self.start_epoch)
            start_run_record(self.run_dir, resumed=self.start_epoch > 0)
        barrier(self.dist)

    def _train_epoch(self, epoch: int) -> tuple[dict[str, float], int, float]:
        """One epoch of optimizer steps; returns the summed losses, the steps taken and the last learning rate."""
        accum = self.config.optim.grad_accum
        self.model.train()
        sums: dict[str, float] = {}
        n_batches, lr = 0, max(group["lr"] for group in self.optimizer.param_groups)
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.config.optim.epochs}",
                   disable=not self.show_progress_bar, unit="step", leave=False)
        self.optimizer.zero_grad(set_to_none=True)
        pending: list[dict[str, Any]] = []
        for batch in self.data:
            if accum > 1:  # the loss sees all grad_accum micro-batches at once (train/grad_cache.py)
                pending.append(batch)
                if len(pending) < accum:
                    continue
                lr = self._set_lr()
                losses = self._accumulated_losses(pending)
                total = sum(losses.values())
                pending = []
            else:
                lr = self._set_lr()
                losses = self._forward_losses(batch)
                total = sum(losses.values())
                (total if self.scaler is None else self.scaler.scale(total)).backward()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            sums["loss"] = sums.get("loss", 0.0) + float(total.detach())
            n_batches += 1
            self._optimizer_step()
            bar.update(1)
            bar.set_postfix(loss=f"{float(total.detach()):.3f}", lr=f"{lr:.2e}")
            if self.step >= self.total_steps:
                break
        bar.close()
        return sums, n_batches, lr

    def _optimizer_step(self) -> None:
        """Clip, step (skipped by the fp16 scaler on overflow), clear the gradients, clamp the logit scale."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients
        if self.config.optim.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        self.step += 1

    def _end_epoch(self, record: dict[str, Any]) -> None:
        """The epoch's log line, then its checkpoint (main rank)."""
        with open(self.run_dir / METRICS, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        save_checkpoint(
            self.run_dir,
            model=self.model,
            optimizer=self.optimizer,
            epoch=record["epoch"],
            step=self.step,
            extra={"loss": record.get("loss"), "elapsed_s": record["elapsed_s"]},
            grad_scaler=None if self.scaler is None else self.scaler.state_dict(),
        )
        if self.show_progress_bar:
            tqdm.write(f"epoch {record['epoch'] + 1}: loss {record.get('loss', float('nan')):.4f}  "
                       f"({record['elapsed_s']} s)")

    def _finish_run(self, *, train_s: float) -> None:
        """Precise BN, the saved model and the run record (main rank)."""
        recalibrated = self._recalibrate_norm()
        aligned = self._align_text()
        self.model.save_pretrained(self.run_dir / "model")
        log_path = self.run_dir / METRICS
        epochs_done = len(log_path.read_text().splitlines()) if log_path.is_file() else 0
        finish_run_record(self.run_dir, train_s=train_s, epochs=epochs_done, steps=self.step,
                          norm_recalibration=recalibrated, text_align=aligned)

    def _recalibrate_norm(self) -> dict[str, int]:
        """Precise BN: each view's BatchNorm statistics re-estimated from its plain training images (a seeded sample
        of ``train.norm_recalibration_images``); returns the images used per view ({} when off or no BatchNorm)."""
        limit = self.config.train.norm_recalibration_images
        has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.image.modules())
        if not limit or not has_batch_norm:
            return {}
        rng = np.random.default_rng(self.config.train.seed)
        items = sample_images(self.data.places, self.image_views, limit=limit, rng=rng)
        counts = self.model.reestimate_norm_statistics(items, batch_size=64, show_progress_bar=self.show_progress_bar)
        if self.show_progress_bar:
            tqdm.write("BatchNorm statistics re-estimated per view on plain training images: "
                       + ", ".join(f"{view} {n}" for view, n in counts.items()))
        return counts

    def _align_text(self) -> dict[str, Any]:
        """Text alignment (``text_align``, train/text_align.py): the text tower tuned against the finished image
        towers; returns its record ({} when off)."""
        section = self.config.text_align
        if not section.epochs:
            return {}
        record = align_text(self.model, self.data.places, section, weight_decay=self.config.optim.weight_decay,
                            label_smoothing=self.config.loss.label_smoothing, seed=self.config.train.seed,
                            show_progress_bar=self.show_progress_bar)
        if self.show_progress_bar:
            tqdm.write(f"text tower aligned to the image towers: {record['steps']} steps, {record['seconds']} s")
        return record

    def evaluate(self) -> dict[str, Any]:
        """Metrics of the current model, from the evaluator the trainer was given."""
        if self.evaluator is None:
            raise GeoBridgeError("this trainer has no evaluator (pass geobridge.eval.training.training_evaluator(...))")
        return dict(self.evaluator(self.model))

    def close(self) -> None:
        cleanup(self.dist)


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    strict: bool = False,
    evaluator: Evaluator | None = None,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Train (resuming if asked) and save the model to ``<out>/model``; with an ``evaluator`` (model -> metrics,
    e.g. ``geobridge.eval.training_evaluator(config)``) and ``evaluate``, evaluate it on the main rank and write
    ``<out>/eval.json``. ``strict``: refuse training places without one of the views trained (default: count
    them on stderr and go on)."""
    trainer = Trainer(config, strict=strict, evaluator=evaluator)
    try:
        if resume and not trainer.resume() and trainer.dist.is_main:
            tqdm.write(f"no checkpoint in {trainer.run_dir}; starting from scratch")
        losses = trainer.fit()
        result: dict[str, Any] = {f"train/{k}": v for k, v in losses.items()}
        if evaluate and evaluator is not None and trainer.dist.is_main:
            metrics = trainer.evaluate()
            result.update(metrics)
            atomic_write_bytes(trainer.run_dir / "eval.json", (json.dumps(metrics, indent=2) + "\n").encode())
        return result
    finally:
        trainer.close()


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GeoBridgeError("train.device is cuda but no CUDA device is available")
    return torch.device(name)
