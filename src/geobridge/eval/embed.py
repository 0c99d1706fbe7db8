"""Embedding a dataset's places with a model, and evaluating a model on a dataset split."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from geobridge.data import Place, load_image, load_places
from geobridge.errors import DataError
from geobridge.eval.evaluator import EmbeddingSet, RetrievalEvaluator, evaluate_groups
from geobridge.protocols import Protocol, default_protocol
from geobridge.views import IMAGE_VIEWS

Degrade = Callable[[np.ndarray], np.ndarray]  # uint8 (H, W, 3) -> uint8 (H, W, 3)


def embed_places(
    model: Any,
    places: Sequence[Place],
    *,
    views: Sequence[str] = ("drone", "satellite", "street", "text"),
    degrade: Mapping[str, Degrade] | None = None,
    batch_size: int = 64,
    show_progress_bar: bool | None = None,
) -> dict[str, EmbeddingSet]:
    """One ``EmbeddingSet`` per view: every image (every drone image of an orbit) and every text is an item.

    ``degrade[view]`` is applied to each image of that view before encoding (robustness tests).
    """
    sets: dict[str, EmbeddingSet] = {}
    for view in views:
        items: list[Any] = []
        ids, lat, lon, paths, countries = [], [], [], [], []
        for place in places:
            entries = place.texts if view == "text" else place.images.get(view, ())
            for entry in entries:
                items.append(entry)
                ids.append(place.place_id)
                lat.append(np.nan if place.lat is None else place.lat)
                lon.append(np.nan if place.lon is None else place.lon)
                paths.append(None if view == "text" else str(entry))
                countries.append(place.country)
        if not items:
            continue
        if view in IMAGE_VIEWS and degrade and view in degrade:
            fn = degrade[view]
            items = [Image.fromarray(fn(np.asarray(load_image(Path(p))))) for p in items]
        emb = model.encode(items, view=view, batch_size=batch_size, show_progress_bar=show_progress_bar)
        sets[view] = EmbeddingSet(
            view=view, embeddings=emb, place_ids=ids, lat=np.array(lat), lon=np.array(lon), paths=paths,
            countries=countries, texts=[str(t) for t in items] if view == "text" else None,
        )
    return sets


def evaluate_model(
    model: Any,
    root: str | Path,
    *,
    fmt: str = "geoloc",
    split: str = "test",
    holdout_countries: Sequence[str] = (),
    batch_size: int = 64,
    show_progress_bar: bool | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` on one split of ``root``.

    GeoLoc layout: every direction on the places of ``split``; with held-out countries, in/out-of-domain groups
    too. A benchmark layout (University-1652, CVUSA, ...): its test split scored with the layout's default
    protocol (:func:`geobridge.protocols.default_protocol`: fixed query/gallery roles, junk, ties, K of
    R@1%); ``split`` must then be ``"test"``.
    """
    protocol = benchmark_protocol(fmt, split)
    if protocol is not None:
        from geobridge.eval.protocol_run import evaluate_protocol, protocol_splits

        splits = protocol_splits(protocol, root)
        metrics, _ = evaluate_protocol(model, protocol, splits, batch_size=batch_size,
                                       show_progress_bar=show_progress_bar)
        return dict(metrics)
    places = load_places(root, fmt=fmt, split=split)
    sets = embed_places(model, places, batch_size=batch_size, show_progress_bar=show_progress_bar)
    evaluator = RetrievalEvaluator(show_progress_bar=False)
    metrics: dict[str, Any] = dict(evaluator(sets))
    if holdout_countries:
        metrics.update(evaluate_groups(sets, holdout_countries=holdout_countries, evaluator=evaluator))
    return metrics


def benchmark_protocol(fmt: str, split: str) -> Protocol | None:
    """The default protocol of a benchmark layout (``None`` for GeoLoc); a split other than ``test`` of a benchmark
    layout is a DataError, since only the protocol's test split has fixed query and gallery roles."""
    protocol = default_protocol(fmt)
    if protocol is not None and split != "test":
        raise DataError(
            f"split={split!r}: the {fmt} layout is evaluated on its test split with protocol {protocol.name!r} "
            "(fixed query and gallery roles); use split='test', or `geobridge eval --protocol NAME` for another one"
        )
    return protocol
