"""The input side of ``GeoBridge.encode``: items of one view become batches of (B, 3, H, W) tensors.

Decoding (``geobridge.images``, the one decoder) and resizing run in DataLoader worker processes with prefetch,
so the main process only runs the network. Items are PIL images, paths, uint8 (H, W, 3) arrays or uint8
(3, H, W) tensors; a uint8 (N, 3, H, W) tensor is split into its N images.

Workers return uint8 (3, H, W) images (a quarter of the bytes of float32 through the workers' queues); the
caller scales and normalises the whole batch at once with ``normalise`` on the model's device. Together this is
the model's evaluation transform (``GeoBridge.transform``: a PIL resize to exactly H x W with the configured
filter, ``/ 255``, then ``(x - mean) / std``), bit for bit. A uint8 image already at the view's input size skips
the resize, which would be the identity.

Errors raised in a worker (an unreadable file, a wrong dtype) are carried back and raised again in the caller
with their own class and message, so ``encode`` fails the same way with and without workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from geobridge.images import ImageError, as_image

MAX_AUTO_WORKERS = 4
MIN_AUTO_BATCHES = 4  # starting workers costs about a batch's time; fewer batches decode in the caller


def default_num_workers(*, n_items: int, batch_size: int, device_type: str = "cpu") -> int:
    """Workers for ``n_items``: none for a few batches (a worker's start costs more), else the spare cores (max 4).

    On the CPU the forward already runs on ``torch.get_num_threads()`` cores, so only the cores beyond those are
    spare: a worker on a core the forward uses slows both (on 2 cores with 2 torch threads, one worker made
    gb-tiny's encode 1.5x slower than none; benchmarks/README.md, ``deploy``). On a GPU every core but the
    caller's is spare.
    """
    if n_items < MIN_AUTO_BATCHES * batch_size:
        return 0
    cores = os.cpu_count() or 1
    busy = 1 if device_type != "cpu" else torch.get_num_threads()
    return max(0, min(MAX_AUTO_WORKERS, cores - busy))


def as_items(items: Any) -> Sequence[Any]:
    """A uint8 (N, 3, H, W) tensor as a sequence of its (3, H, W) images; any other sequence unchanged."""
    if isinstance(items, torch.Tensor):
        if items.ndim == 3:
            return [items]
        if items.ndim != 4:
            raise ValueError(f"image tensors must be uint8 (N, 3, H, W) or (3, H, W), got {tuple(items.shape)}")
        return list(items.unbind(0))
    return items


class ImageItems(Dataset):
    """Item ``i`` -> ``(index, (3, H, W) uint8 tensor or None, error or None)``."""

    def __init__(self, items: Sequence[Any], *, size: tuple[int, int], resample: int) -> None:
        self.items = items
        self.size = size  # (H, W) of the view
        self.resample = resample  # a PIL filter (Image.Resampling)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, tuple[str, str, str, str] | None]:
        try:
            return index, self.load(self.items[index]), None
        except (ImageError, ValueError, TypeError) as exc:
            return index, None, _pack_error(exc)

    def load(self, item: Any) -> torch.Tensor:
        """One item -> (3, H, W) uint8 at the view's input size."""
        if isinstance(item, torch.Tensor):
            if item.dtype != torch.uint8 or item.ndim != 3 or item.shape[0] != 3:
                raise ValueError(f"image tensors must be uint8 (3, H, W), got {item.dtype} {tuple(item.shape)}")
            if tuple(item.shape[1:]) == self.size:  # at input size already: resizing would be the identity
                return item
            item = item.permute(1, 2, 0).contiguous().numpy()  # (H, W, 3)
        image = as_image(item)
        height, width = self.size
        if image.size != (width, height):
            image = image.resize((width, height), self.resample)
        return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)  # (3, H, W)


def normalise(batch: torch.Tensor, *, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> float32 ``(x / 255 - mean) / std``, the same operations as ToTensor + Normalize."""
    mean_t = torch.tensor(list(mean), dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    std_t = torch.tensor(list(std), dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    return batch.to(torch.float32).div_(255.0).sub_(mean_t).div_(std_t)  # (B, 3, H, W)


def image_batches(
    dataset: ImageItems, *, batch_size: int, num_workers: int, pin_memory: bool = False
) -> Iterator[torch.Tensor]:
    """(B, 3, H, W) uint8 batches in order; the first failing item's error is raised again here."""
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers else None,
        worker_init_fn=_single_thread_worker if num_workers else None,
    )
    for tensors, error in loader:
        if error is not None:
            raise _unpack_error(error)
        yield tensors


def _collate(rows: list[tuple[int, torch.Tensor | None, Any]]) -> tuple[torch.Tensor | None, Any]:
    for _, _, error in rows:
        if error is not None:
            return None, error
    return torch.stack([tensor for _, tensor, _ in rows]), None  # (B, 3, H, W) uint8


def _pack_error(exc: Exception) -> tuple[str, str, str, str]:
    return type(exc).__name__, str(exc), getattr(exc, "kind", ""), getattr(exc, "source", "")


def _unpack_error(error: tuple[str, str, str, str]) -> Exception:
    name, message, kind, source = error
    if name == "ImageError":
        return ImageError(message, kind=kind, source=source)
    return {"TypeError": TypeError}.get(name, ValueError)(message)


def _single_thread_worker(worker_id: int) -> None:
    # a worker decodes and resizes; a full OpenMP pool per worker oversubscribes small machines
    torch.set_num_threads(1)
