"""Datasets: typed loaders for the GeoLoc layout and the published benchmarks' layouts (University-1652,
GeoText-1652, CVUSA, CVACT, VIGOR), transforms, sampling, checks.

The names below load their module when first used (PEP 562), so that readers, layouts and checks, which need no
torch, import without it (``import geobridge.data`` loads nothing heavy; a test holds it so).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {  # name -> the module that defines it
    "BatchAugment": "batch_augment",
    "CheckReport": "check",
    "Problem": "check",
    "check_dataset": "check",
    "CVACTDataset": "cvact",
    "CVUSADataset": "cvusa",
    "PlaceDataset": "datasets",
    "ViewDataset": "datasets",
    "collate_places": "datasets",
    "EvalItem": "evalsplit",
    "EvalSplit": "evalsplit",
    "GeoLocDataset": "geoloc",
    "GeoText1652Dataset": "geotext1652",
    "load_geotext1652": "geotext1652",
    "load_image": "io",
    "FORMATS": "layouts",
    "load_eval_split": "layouts",
    "load_places": "layouts",
    "PlaceBatchSampler": "sampler",
    "TensorBatches": "tensor_cache",
    "ViewCache": "tensor_cache",
    "build_view_cache": "tensor_cache",
    "make_view_transform": "transforms",
    "Place": "types",
    "Sample": "types",
    "samples_of": "types",
    "University1652Dataset": "university1652",
    "VIGORDataset": "vigor",
}

__all__ = [
    "BatchAugment",
    "CVACTDataset",
    "CVUSADataset",
    "CheckReport",
    "EvalItem",
    "EvalSplit",
    "FORMATS",
    "GeoLocDataset",
    "GeoText1652Dataset",
    "Place",
    "PlaceBatchSampler",
    "PlaceDataset",
    "Problem",
    "Sample",
    "TensorBatches",
    "University1652Dataset",
    "VIGORDataset",
    "ViewCache",
    "ViewDataset",
    "build_view_cache",
    "check_dataset",
    "collate_places",
    "load_eval_split",
    "load_geotext1652",
    "load_image",
    "load_places",
    "make_view_transform",
    "samples_of",
]

if TYPE_CHECKING:  # pragma: no cover
    from geobridge.data.batch_augment import BatchAugment
    from geobridge.data.check import CheckReport, Problem, check_dataset
    from geobridge.data.cvact import CVACTDataset
    from geobridge.data.cvusa import CVUSADataset
    from geobridge.data.datasets import PlaceDataset, ViewDataset, collate_places
    from geobridge.data.evalsplit import EvalItem, EvalSplit
    from geobridge.data.geoloc import GeoLocDataset
    from geobridge.data.geotext1652 import GeoText1652Dataset, load_geotext1652
    from geobridge.data.io import load_image
    from geobridge.data.layouts import FORMATS, load_eval_split, load_places
    from geobridge.data.sampler import PlaceBatchSampler
    from geobridge.data.tensor_cache import TensorBatches, ViewCache, build_view_cache
    from geobridge.data.transforms import make_view_transform
    from geobridge.data.types import Place, Sample, samples_of
    from geobridge.data.university1652 import University1652Dataset
    from geobridge.data.vigor import VIGORDataset


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'geobridge.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"geobridge.data.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
