"""Torch datasets: one view for encoding (``ViewDataset``), or all views of a place for training (``PlaceDataset``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from geobridge.data.captions import augment_caption
from geobridge.data.io import load_image
from geobridge.data.pairs import PairTable
from geobridge.data.types import Place, Sample
from geobridge.views import IMAGE_VIEWS

Transform = Callable[[Any], torch.Tensor]


class ViewDataset(Dataset):
    """Image samples of one view -> ``{"image": (3, H, W), "place_index": int, "index": int}``."""

    def __init__(self, samples: Sequence[Sample], *, transform: Transform) -> None:
        if any(s.path is None for s in samples):
            raise ValueError("ViewDataset takes image samples (with a path); encode texts with model.encode")
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image = load_image(sample.path)  # type: ignore[arg-type]
        return {"image": self.transform(image), "place_index": sample.place_index, "index": index}


class PlaceDataset(Dataset):
    """Item ``i`` is place ``i`` with one image of each of its views and one of its texts.

    Where a place has several images of a view (drone orbits) or several texts, one is drawn at random,
    reproducibly from ``(seed, epoch, index)``: call ``set_epoch`` each epoch. Views a place lacks are left
    out of its item. Item: ``{"place_index": i, "images": {view: (3, H, W)}, "text": str | None}``.

    With ``pairs`` (a pair-based epoch, ``data/pairs.py``) item ``i`` is pair ``i`` instead: its place, with the
    pair's two items in the pair's views, and the other views drawn as above from ``(seed, epoch, i)``.
    """

    def __init__(
        self,
        places: Sequence[Place],
        *,
        views: Sequence[str],
        transforms: dict[str, Transform],
        seed: int = 0,
        text_augment: bool = False,
        pairs: PairTable | None = None,
    ) -> None:
        self.places = list(places)
        self.pairs = pairs
        self.image_views = [v for v in IMAGE_VIEWS if v in views]
        missing = [v for v in self.image_views if v not in transforms]
        if missing:
            raise ValueError(f"no transform given for views {missing}")
        self.use_text = "text" in views
        self.text_augment = text_augment
        self.transforms = transforms
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.places) if self.pairs is None else len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        place_index = index if self.pairs is None else int(self.pairs.place[index])
        place = self.places[place_index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        images = {}
        for view in self.image_views:
            paths = place.images.get(view, ())
            if paths:
                drawn = int(rng.integers(len(paths)))  # drawn in every case, so the other draws do not shift
                fixed = None if self.pairs is None else self.pairs.item(index, view)
                images[view] = self.transforms[view](load_image(paths[drawn if fixed is None else fixed]))
        text = None
        if self.use_text and place.texts:
            drawn = int(rng.integers(len(place.texts)))
            fixed = None if self.pairs is None else self.pairs.item(index, "text")
            text = place.texts[drawn if fixed is None else fixed]
            if self.text_augment:
                text = augment_caption(text, rng)
        return {"place_index": place_index, "images": images, "text": text}


def collate_places(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of ``PlaceDataset`` items into one batch.

    Returns ``{"place_index": (B,) long, "images": {view: (B_v, 3, H, W)}, "index": {view: (B_v,) long},
    "text": list[str] (T), "text_index": (T,) long}``, where ``index[view]`` and ``text_index`` are positions
    within the batch (so ``place_index[index[view]]`` are the places of ``images[view]``).
    """
    place_index = torch.tensor([item["place_index"] for item in items], dtype=torch.long)
    images: dict[str, torch.Tensor] = {}
    index: dict[str, torch.Tensor] = {}
    views = sorted({v for item in items for v in item["images"]}, key=IMAGE_VIEWS.index)
    for view in views:
        rows = [i for i, item in enumerate(items) if view in item["images"]]
        images[view] = torch.stack([items[i]["images"][view] for i in rows])
        index[view] = torch.tensor(rows, dtype=torch.long)
    text_rows = [i for i, item in enumerate(items) if item["text"] is not None]
    return {
        "place_index": place_index,
        "images": images,
        "index": index,
        "text": [items[i]["text"] for i in text_rows],
        "text_index": torch.tensor(text_rows, dtype=torch.long),
    }
