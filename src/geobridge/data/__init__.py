"""Datasets: typed loaders for GeoLoc-format, University-1652 and GeoText-1652 data, transforms, sampling, checks."""

from __future__ import annotations

from pathlib import Path

from geobridge.data.batch_augment import BatchAugment
from geobridge.data.check import CheckReport, Problem, check_dataset
from geobridge.data.datasets import PlaceDataset, ViewDataset, collate_places
from geobridge.data.geoloc import GeoLocDataset
from geobridge.data.geotext1652 import load_geotext1652
from geobridge.data.io import load_image
from geobridge.data.sampler import PlaceBatchSampler
from geobridge.data.tensor_cache import TensorBatches, ViewCache, build_view_cache
from geobridge.data.transforms import make_view_transform
from geobridge.data.types import Place, Sample, samples_of
from geobridge.data.university1652 import University1652Dataset


def load_places(root: str | Path, *, fmt: str = "geoloc", split: str | None = None) -> list[Place]:
    """The places of one split of a dataset in either layout (``fmt``: ``geoloc`` or ``university1652``)."""
    if fmt == "geoloc":
        return GeoLocDataset(root, split=split).places
    if fmt == "university1652":
        return University1652Dataset(root, split=split or "train").places
    raise ValueError(f"unknown dataset format {fmt!r}; expected 'geoloc' or 'university1652'")


__all__ = [
    "BatchAugment",
    "CheckReport",
    "GeoLocDataset",
    "Place",
    "PlaceBatchSampler",
    "PlaceDataset",
    "Problem",
    "Sample",
    "TensorBatches",
    "University1652Dataset",
    "ViewCache",
    "ViewDataset",
    "build_view_cache",
    "check_dataset",
    "collate_places",
    "load_geotext1652",
    "load_image",
    "load_places",
    "make_view_transform",
    "samples_of",
]
