from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_config():
    """gb-tiny with the from-scratch hashing text tower: fast, and independent of MiniLM."""
    from geobridge.models import get_model_config

    config = get_model_config("gb-tiny")
    config.text.kind = "hashing"
    return config


@pytest.fixture(scope="module")
def saved_tiny_model(tmp_path_factory, tiny_model_config):
    """The untrained gb-tiny (seed 0) saved with ``save_pretrained``, once per test module."""
    import torch

    from geobridge.models import GeoBridge

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt") / "model"
    GeoBridge(tiny_model_config).save_pretrained(folder)
    return folder


def _png(path: Path, size: tuple[int, int], seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def make_world(root: Path, n: int = 8) -> Path:
    places, texts = [], []
    for i in range(n):
        pid = f"p{i:03d}"
        places.append({"place_id": pid, "country": "NO" if i % 2 else "DE", "lat": 50.0 + i, "lon": 5.0 + 0.5 * i,
                       "split": "train" if i < 2 else "test", "terrain": "urban", "landmark": None})
        texts.append({"place_id": pid, "texts": [f"a {['red', 'blue', 'green', 'grey'][i % 4]} tower, place {i}"]})
        _png(root / "drone" / pid / "00.png", (32, 32), seed=i)
        _png(root / "satellite" / pid / "0.png", (32, 32), seed=100 + i)
        _png(root / "street" / pid / "0.png", (64, 32), seed=200 + i)
    (root / "places.jsonl").write_text("".join(json.dumps(p) + "\n" for p in places))
    (root / "texts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts))
    manifest = {"format": "geoloc", "format_version": 1, "name": "tiny", "image_size": 32, "drone_views": 1,
                "views": ["drone", "satellite", "street", "text"], "holdout_countries": [], "countries": [],
                "seed": 0, "generator": "test", "appearance": {}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_config):
    """A tiny untrained model saved as a run, and an 8-place GeoLoc world (6 test places) for index tests."""
    import torch

    from geobridge.data import load_places
    from geobridge.models import GeoBridge

    root = tmp_path_factory.mktemp("locate")
    torch.manual_seed(0)
    model = GeoBridge(tiny_model_config).eval()
    model.save_pretrained(root / "run" / "model")
    data = make_world(root / "world")
    return {"root": root, "model": model, "run": root / "run", "data": data,
            "places": load_places(data, split="test")}
