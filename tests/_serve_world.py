"""A tiny served world for the service tests: an untrained gb-tiny model and a GeoIndex over a synthetic world."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image


def build_served_world(root: Path, model_config: Any) -> tuple[Any, Any, Path]:
    """Generate 8 synthetic places at 32 px and index their satellite and street images (with real paths)."""
    import torch

    from geobridge.data.io import read_jsonl
    from geobridge.index import GeoIndex
    from geobridge.models import GeoBridge
    from geobridge.synth import WorldConfig, generate_world

    torch.manual_seed(0)
    world = root / "world"
    generate_world(world, WorldConfig(places=8, image_size=32, drone_views=1, texts_per_place=1, test_places=4,
                                      workers=1), show_progress_bar=False)
    model = GeoBridge(model_config).eval()
    places = read_jsonl(world / "places.jsonl")
    index = GeoIndex(model.embed_dim, factory="Flat")
    for view in ("satellite", "street"):
        paths = [world / view / p["place_id"] / "0.png" for p in places]
        vectors = model.encode(paths, view=view)
        records = [
            {"place_id": p["place_id"], "lat": p["lat"], "lon": p["lon"], "view": view, "path": str(path)}
            for p, path in zip(places, paths, strict=True)
        ]
        index.add(vectors, records)
    return model, index, world


def png_bytes(size: tuple[int, int] = (32, 32), color: tuple[int, int, int] = (90, 140, 60)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()
