"""Training batches from images decoded once: a uint8 tensor cache of every training image, batched on the device.

The PIL pipeline (``PlaceDataset`` + ``DataLoader``) decodes, resizes and augments every image of every step, one
sample at a time. For datasets that fit in memory (the synthetic worlds: 3,000 places at 64 px are 75 MB) the
tensor pipeline decodes each image once, at the model's input size, into one ``(N, 3, H, W)`` uint8 tensor per
view, and each step gathers its batch and augments it as a whole on the training device
(``data.batch_augment``). ``TensorBatches`` yields the same batch structure as ``collate_places``, so the
trainer's step is the same for both pipelines.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from timm.data.transforms import str_to_pil_interp
from tqdm.auto import tqdm

from geobridge.data.batch_augment import BatchAugment, draw_joint_colour, draw_joint_orientation
from geobridge.data.captions import augment_caption
from geobridge.data.io import load_image
from geobridge.data.pairs import PairBatchSampler, PairTable
from geobridge.data.sampler import PlaceBatchSampler
from geobridge.data.types import Place
from geobridge.views import IMAGE_VIEWS


@dataclass
class ViewCache:
    """Every image of one view: ``images`` (N, 3, H, W) uint8; place ``p`` owns rows ``start[p]:start[p + 1]``."""

    images: torch.Tensor
    start: np.ndarray  # (P + 1,) int64

    def count(self, place: int) -> int:
        return int(self.start[place + 1] - self.start[place])


def decode_resized(path: Any, *, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """One image file -> (3, H, W) uint8 at ``size = (H, W)``, resized as the evaluation transform resizes."""
    image = load_image(path)
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), str_to_pil_interp(interpolation))
    return np.array(image, dtype=np.uint8).transpose(2, 0, 1)  # (3, H, W), a writable copy


def build_view_cache(
    places: Sequence[Place],
    view: str,
    *,
    size: tuple[int, int],
    interpolation: str,
    workers: int = 2,
    show_progress_bar: bool = False,
) -> ViewCache:
    """Decode every ``view`` image of ``places`` once (PIL releases the GIL, so threads decode in parallel)."""
    paths = [path for place in places for path in place.images.get(view, ())]
    counts = np.array([len(place.images.get(view, ())) for place in places], dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(counts)])
    height, width = size
    images = torch.empty((len(paths), 3, height, width), dtype=torch.uint8)  # (N, 3, H, W)
    bar = tqdm(total=len(paths), desc=f"decode {view}", unit="img", disable=not show_progress_bar, leave=False)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        decoded = pool.map(lambda p: decode_resized(p, size=size, interpolation=interpolation), paths, chunksize=64)
        for row, array in enumerate(decoded):
            images[row] = torch.from_numpy(array)
            bar.update()
    bar.close()
    return ViewCache(images=images, start=start)


class TensorBatches:
    """An iterable over one epoch of training batches, built from ``ViewCache``s and augmented on ``device``.

    Each item is a place-unique batch from ``sampler`` in ``collate_places``' structure, with float images that
    are augmented and normalised: ``{"place_index": (B,), "images": {view: (B_v, 3, H, W)}, "index": {view:
    (B_v,)}, "text": [T strings], "text_index": (T,)}``. Which drone photo and which description a place shows
    is drawn from ``(seed, epoch, place)``, the augmentation from ``(seed, epoch, batch, rank)``, so a resumed
    run sees the same batches.

    With ``pairs`` (a pair-based epoch, ``data/pairs.py``) the sampler yields pair indices: each item shows its
    pair's two items in the pair's views, and the other views are drawn from ``(seed, epoch, place, pair)``.
    """

    def __init__(
        self,
        places: Sequence[Place],
        caches: dict[str, ViewCache],
        *,
        sampler: PlaceBatchSampler | PairBatchSampler,
        augment: dict[str, BatchAugment],
        use_text: bool,
        text_augment: bool = False,
        device: torch.device,
        seed: int = 0,
        rank: int = 0,
        pairs: PairTable | None = None,
        joint_orientation: bool = False,
        joint_colour: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        """``joint_orientation``: a place's satellite tile and street panorama share one random quarter turn and
        mirror (``batch_augment.draw_joint_orientation``), keeping them aligned. ``joint_colour``: (p, degrees), a
        place's views share one hue rotation and saturation scale with probability p
        (``batch_augment.draw_joint_colour``)."""
        self.places = list(places)
        self.pairs = pairs
        self.image_views = [v for v in IMAGE_VIEWS if v in caches]
        self.caches = {v: caches[v] for v in self.image_views}
        self.augment = augment
        self.sampler = sampler
        self.use_text = use_text
        self.text_augment = text_augment
        self.device = device
        self.seed = seed
        self.rank = rank
        self.joint_orientation = joint_orientation
        self.joint_colour = joint_colour
        self.epoch = 0
        # the cache on the device once (a GPU then gathers its own batches); on the CPU this is the same tensor
        self._images = {v: c.images.to(device) for v, c in self.caches.items()}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for number, indices in enumerate(self.sampler):
            yield self.batch(indices, number=number)

    def batch(self, indices: Sequence[int], *, number: int) -> dict[str, Any]:
        """The batch of the places (or pairs) ``indices``, the ``number``-th of this epoch."""
        state = np.random.SeedSequence((self.seed, self.epoch, number, self.rank)).generate_state(1, dtype=np.uint64)
        gen = torch.Generator().manual_seed(int(state[0]) & 0x7FFF_FFFF_FFFF_FFFF)
        items = [int(i) for i in indices]
        if self.pairs is None:
            place_index = torch.as_tensor(items, dtype=torch.long)
            keys = [(self.seed, self.epoch, p) for p in items]
        else:
            place_index = torch.as_tensor(self.pairs.place[items], dtype=torch.long)
            keys = [(self.seed, self.epoch, int(p), i) for p, i in zip(place_index, items, strict=True)]
        # which image of each view and which text: per place (or pair), from (seed, epoch, place[, pair]) as in
        # PlaceDataset, so the choice does not depend on how DDP splits a batch across ranks
        draws = torch.as_tensor(
            np.stack([np.random.default_rng(key).random(4) for key in keys]), dtype=torch.float64
        )  # (B, 4): one uniform per image view, and one for the text
        images: dict[str, torch.Tensor] = {}
        index: dict[str, torch.Tensor] = {}
        joint = draw_joint_orientation(len(items), gen) if self.joint_orientation else None  # (B,), (B,)
        colour_p, hue_deg = self.joint_colour
        colour = draw_joint_colour(len(items), gen, p=colour_p, hue_deg=hue_deg) if colour_p > 0 else None  # (B, 3, 3)
        for view in self.image_views:
            cache = self.caches[view]
            counts = torch.as_tensor([cache.count(int(p)) for p in place_index], dtype=torch.long)
            rows = (counts > 0).nonzero(as_tuple=True)[0]  # (B_v,) batch positions that have this view
            if rows.numel() == 0:
                continue
            starts = torch.as_tensor(cache.start[place_index[rows].numpy()], dtype=torch.long)
            offset = self._pair_items(items, rows, view)
            if offset is None:
                offset = (draws[rows, IMAGE_VIEWS.index(view)] * counts[rows]).long()  # one image each
            pick = starts + offset
            raw = self._images[view][pick.to(self.device)]  # (B_v, 3, H, W) uint8
            shared = None if joint is None or view == "drone" else (joint[0][rows], joint[1][rows])
            images[view] = self.augment[view](raw, generator=gen, orientation=shared,
                                              colour=None if colour is None else colour[rows])
            index[view] = rows
        texts: list[str] = []
        text_rows: list[int] = []
        if self.use_text:
            fixed = self._pair_items(items, torch.arange(len(items)), "text")
            for row, p in enumerate(place_index.tolist()):
                options = self.places[p].texts
                if options:
                    drawn = min(len(options) - 1, int(draws[row, 3] * len(options)))
                    text = options[drawn if fixed is None else int(fixed[row])]
                    if self.text_augment:
                        text = augment_caption(text, np.random.default_rng((*keys[row], 1)))
                    texts.append(text)
                    text_rows.append(row)
        return {
            "place_index": place_index,
            "images": images,
            "index": index,
            "text": texts,
            "text_index": torch.as_tensor(text_rows, dtype=torch.long),
        }

    def _pair_items(self, items: list[int], rows: torch.Tensor, view: str) -> torch.Tensor | None:
        """(len(rows),) the item of ``view`` shown by the pairs at batch positions ``rows``; None: not a pair view."""
        if self.pairs is None or view not in self.pairs.views:
            return None
        table = self.pairs.query if view == self.pairs.views[0] else self.pairs.reference
        return torch.as_tensor(table[[items[r] for r in rows.tolist()]], dtype=torch.long)
