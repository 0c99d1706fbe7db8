"""The training data of a run: its places, the batch sampler, and one of the two pipelines that turn a batch of
places into tensors, built from a training config's ``data`` and ``sampler`` sections.

* ``pil``: each sample decoded and augmented per step (PIL transforms) in a ``DataLoader``; any dataset size;
* ``tensor``: every training image decoded once into a uint8 cache, whole batches augmented on the training
  device (``BatchAugment``); the CPU recipe's pipeline.

Both yield the same batches (``place_index``, per-view image tensors, texts) from the same sampler, and both switch
to the robust augmentation at ``data.robust_from_epoch``. The trainer only iterates ``TrainingData`` and tells it the
epoch (and, for similarity hard negatives, the neighbours it mined with the model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from geobridge.data.batch_augment import BatchAugment
from geobridge.data.config import DataConfig, SamplerConfig
from geobridge.data.coverage import check_coverage
from geobridge.data.datasets import PlaceDataset, collate_places
from geobridge.data.layouts import load_places
from geobridge.data.pairs import PairBatchSampler, epoch_pairs
from geobridge.data.sampler import PlaceBatchSampler
from geobridge.data.tensor_cache import TensorBatches, build_view_cache
from geobridge.data.transforms import make_view_transform
from geobridge.errors import GeoBridgeError
from geobridge.robust import RobustAugment
from geobridge.views import IMAGE_VIEWS


@dataclass(frozen=True)
class ImageInputs:
    """What the model takes of each image view: its normalisation, (H, W) per view and resize filter."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: Mapping[str, tuple[int, int]]
    interpolation: str = "bilinear"


class TrainingData:
    """A run's training places, batch sampler and pipeline (see the module docstring).

    ``views``: the views trained (image views and/or ``text``). ``batch_size`` is the global batch, split over
    ``world_size`` ranks; ``device`` is where the tensor pipeline augments. ``strict`` refuses places that lack a
    trained view (default: count them on stderr and go on).
    """

    def __init__(
        self,
        data: DataConfig,
        sampler: SamplerConfig,
        *,
        views: Sequence[str],
        image: ImageInputs,
        batch_size: int,
        seed: int,
        device: torch.device,
        world_size: int = 1,
        rank: int = 0,
        strict: bool = False,
        show_progress_bar: bool = True,
    ) -> None:
        self.data, self.sampler_config, self.image = data, sampler, image
        self.views = list(views)
        self.image_views = [v for v in IMAGE_VIEWS if v in self.views]
        self.places = _load_places(data, batch_size=batch_size)
        check_coverage(self.places, views=self.views, strict=strict, where=f"{data.root} ({data.train_split})")
        self.pairs = None
        common = dict(
            batch_size=batch_size,
            drop_last=True,
            seed=seed,
            # gps from the start if asked; "embedding" starts after the first epoch (set_epoch)
            strategy="gps" if sampler.strategy == "gps" and sampler.gps_epochs == "all" else "random",
            coords=np.array([[p.lat, p.lon] for p in self.places], dtype=np.float64),
            num_replicas=world_size,
            rank=rank,
        )
        if data.epoch_unit == "pairs":
            self.pairs = epoch_pairs(self.places, views=data.pair_views)
            with_pairs = len(np.unique(self.pairs.place))
            if with_pairs < batch_size:
                raise GeoBridgeError(
                    f"{data.root}: {with_pairs} {data.train_split} places have both data.pair_views "
                    f"{list(data.pair_views)}, fewer than one batch ({batch_size})"
                )
            self.sampler = PairBatchSampler(self.pairs.place, n_places=len(self.places), **common)
        else:
            self.sampler = PlaceBatchSampler([p.place_id for p in self.places], shuffle=True,
                                             group_size=sampler.group_size or None, **common)
        augment = self.augmenters(self.robust_at(0))
        if data.pipeline == "tensor":
            caches = {
                view: build_view_cache(self.places, view, size=tuple(image.input_size[view]),
                                       interpolation=image.interpolation, show_progress_bar=show_progress_bar)
                for view in self.image_views
            }
            self.dataset: TensorBatches | PlaceDataset = TensorBatches(
                self.places, caches, sampler=self.sampler, augment=augment, use_text="text" in self.views,
                text_augment=data.text_augment, device=device, seed=seed, rank=rank, pairs=self.pairs,
                joint_orientation=data.rotate and data.joint_rotate,
                joint_colour=(data.joint_colour_p, data.joint_colour_hue) if data.augment else (0.0, 0.0),
            )
            self.loader: Any = self.dataset
        else:
            self.dataset = PlaceDataset(self.places, views=self.views, transforms=augment, seed=seed,
                                        text_augment=data.text_augment, pairs=self.pairs)
            self.loader = DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=collate_places,
                                     num_workers=data.num_workers, worker_init_fn=_single_thread_worker,
                                     persistent_workers=False)

    def __len__(self) -> int:
        """Batches per epoch (on this rank)."""
        return len(self.sampler)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.loader)

    def robust_at(self, epoch: int) -> RobustAugment | None:
        """The robust augmentation of ``epoch`` (None before ``data.robust_from_epoch`` or when it is off)."""
        data = self.data
        return data.robust if data.augment and data.robust_augment and epoch >= data.robust_from_epoch else None

    def augmenters(self, robust: RobustAugment | None) -> dict[str, Any]:
        """Per image view, the training augmentation of the pipeline in use: a ``BatchAugment`` of uint8 batches
        (tensor) or a PIL transform (pil)."""
        data, image = self.data, self.image
        common = dict(mean=tuple(image.mean), std=tuple(image.std), train=data.augment, rotate=data.rotate)
        robust_of = {view: robust if robust is not None and view in robust.views else None for view in self.image_views}
        if data.pipeline == "tensor":
            return {
                view: BatchAugment(view, robust=robust_of[view],
                                   cutout=data.cutout if view in data.cutout.views else None, **common)
                for view in self.image_views
            }
        return {
            view: make_view_transform(view, input_size=(3, *image.input_size[view]), interpolation=image.interpolation,
                                      robust=robust_of[view], **common)
            for view in self.image_views
        }

    def set_epoch(self, epoch: int, *, neighbours: Callable[[], np.ndarray] | None = None) -> None:
        """Seed ``epoch``'s batches and augmentation. With ``sampler.strategy=embedding``, ``neighbours()`` returns
        the (P, k) nearest training places by the current model's embeddings; it is called on refresh epochs."""
        sampler = self.sampler_config
        if sampler.strategy == "gps" and sampler.gps_epochs.startswith("after:"):
            switch = int(sampler.gps_epochs.split(":", 1)[1])
            self.sampler.strategy = "gps" if epoch >= switch else "random"
        if sampler.strategy == "embedding" and epoch >= 1 and (epoch - 1) % max(1, sampler.embedding_refresh) == 0:
            if neighbours is None:
                raise GeoBridgeError("sampler.strategy=embedding needs the model's neighbours at each refresh epoch")
            self.sampler.set_neighbours(neighbours())
            self.sampler.strategy = "embedding"
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        if self.data.robust_from_epoch:  # robust augmentation joins after the clean epochs
            augmenters = self.augmenters(self.robust_at(epoch))
            if isinstance(self.dataset, TensorBatches):
                self.dataset.augment = augmenters
            else:
                self.dataset.transforms = augmenters


def _load_places(data: DataConfig, *, batch_size: int) -> list[Any]:
    try:
        places = load_places(data.root, fmt=data.format, split=data.train_split, **data.loader_options)
    except TypeError as exc:  # an option the loader does not take
        raise GeoBridgeError(f"data.loader_options {dict(data.loader_options)}: {exc}") from exc
    if len(places) < batch_size:
        raise GeoBridgeError(
            f"{data.root} has {len(places)} {data.train_split} places, fewer than one batch ({batch_size})"
        )
    return places


def _single_thread_worker(worker_id: int) -> None:
    # Loader workers decode and resize images; letting each also spawn a full OpenMP pool oversubscribes
    # small machines badly (2 cores: the training step slows down several-fold).
    torch.set_num_threads(1)
