"""Datasets: typed loaders for the GeoLoc layout and the published benchmarks' layouts (University-1652,
GeoText-1652, CVUSA, CVACT, VIGOR), transforms, sampling, checks."""

from __future__ import annotations

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

__all__ = [
    "FORMATS",
    "BatchAugment",
    "CVACTDataset",
    "CVUSADataset",
    "EvalItem",
    "EvalSplit",
    "GeoText1652Dataset",
    "CheckReport",
    "GeoLocDataset",
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
