"""Fusion weights: how much each query view counts when several queries are fused (``fusion="weighted"``).

Raw cosine similarities of different views are not on one scale: a drone photo that matches its satellite tile
at 0.6 may be a strong hit while a description at 0.6 is a weak one, and a view near chance (street panoramas
from a small model) only adds noise. ``weighted`` fusion therefore ranks places by a weighted sum of the
queries' similarities,

    logit_p = sum_q w_{view(q)} * s_{q,p},        P(place p | queries) = softmax_p(logit_p),

with one positive weight per query view, fitted on labelled calibration queries by minimising the
cross-entropy of the true place under that softmax (a multinomial logistic regression with one coefficient
per view; L-BFGS in torch). The fit is joint: a view whose errors the others already cover, or that carries no
signal, gets a weight near zero, so fusing it cannot cost much. The weights also carry the scale, so the fused
softmax is a calibrated confidence.

``fit_view_weights`` is the pure fit; ``calibrate_index`` embeds calibration places, searches them in an index
and fits weights for the index's gallery (``GeoIndex.fusion_weights``, saved with the index).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from geobridge.errors import GeoBridgeError
from geobridge.index.locate import DEFAULT_CANDIDATES, search_depth
from geobridge.index.store import GeoIndex
from geobridge.views import VIEWS

CALIBRATION_VIEWS: tuple[str, ...] = ("drone", "street", "text")


def fit_view_weights(
    scores: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    l2: float = 1e-5,
    max_iter: int = 200,
) -> dict[str, float]:
    """Positive per-view weights that minimise the mean cross-entropy of the true place.

    ``scores[view]`` is an (N, P) array: the similarity of calibration query n of that view to candidate place p
    (all views describe the same N places, row for row); ``labels`` is the (N,) column of each row's true place.
    ``l2`` is a small ridge penalty ``l2 * sum_v w_v**2``, which keeps the fit finite when one view separates
    the calibration places perfectly. Returns ``{view: weight}``.
    """
    if not scores:
        raise GeoBridgeError("fit_view_weights needs scores of at least one view")
    views = list(scores)
    for view in views:
        if view not in VIEWS:
            raise GeoBridgeError(f"unknown view {view!r}; expected some of {', '.join(VIEWS)}")
    mats = [np.asarray(scores[v], dtype=np.float64) for v in views]
    shape = mats[0].shape
    if len(shape) != 2 or shape[0] == 0 or any(m.shape != shape for m in mats):
        raise GeoBridgeError(f"scores must be (N, P) arrays of one shape with N > 0; got {[m.shape for m in mats]}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (shape[0],) or labels.min() < 0 or labels.max() >= shape[1]:
        raise GeoBridgeError(f"labels must be {shape[0]} column indices in [0, {shape[1]})")
    if not all(np.isfinite(m).all() for m in mats):
        raise GeoBridgeError("scores hold NaN or inf")
    x = torch.from_numpy(np.stack(mats))  # (V, N, P)
    target = torch.from_numpy(labels)  # (N,)
    log_w = torch.zeros(len(views), dtype=torch.float64, requires_grad=True)  # (V,)
    optimizer = torch.optim.LBFGS([log_w], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = torch.einsum("v,vnp->np", log_w.exp(), x)  # (N, P)
        loss = torch.nn.functional.cross_entropy(logits, target) + l2 * (2 * log_w).exp().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    weights = log_w.detach().exp().numpy()
    return {view: float(w) for view, w in zip(views, weights, strict=True)}


def place_scores(
    hits: Sequence[Sequence[Mapping[str, Any]]], place_ids: Sequence[str]
) -> np.ndarray:
    """(N, P) place-level scores from N queries' hits: a place's best hit score, or the query's lowest returned
    score (the floor) where the place is not among its hits, as in ``fuse``."""
    column = {pid: j for j, pid in enumerate(place_ids)}
    out = np.empty((len(hits), len(place_ids)))
    for n, query_hits in enumerate(hits):
        if not query_hits:
            raise GeoBridgeError(f"calibration query {n} got no hits")
        out[n] = min(float(h["score"]) for h in query_hits)
        for hit in query_hits:
            j = column.get(str(hit["place_id"]))
            if j is not None:
                out[n, j] = max(out[n, j], float(hit["score"]))
    return out


def calibrate_index(
    model: Any,
    index: GeoIndex,
    places: Sequence[Any],
    *,
    views: Sequence[str] = CALIBRATION_VIEWS,
    candidates: int = DEFAULT_CANDIDATES,
    batch_size: int = 64,
    show_progress_bar: bool | None = None,
) -> dict[str, float]:
    """Fit fusion weights of ``views`` for ``index`` from labelled calibration ``places`` and return them.

    Each place must be in the index (its ``place_id``) and have an item of every view in ``views`` (its first
    image of the view, or first text); other places are skipped. Each query is searched among the index items
    of the other views, ``candidates`` places deep: use the depth ``locate`` will use (the same default), since
    the weights are fitted on the same floored scores that ``fuse`` sees. The caller stores the result with
    ``index.fusion_weights = ...`` and saves the index. Calibrate on places other than those you evaluate on.
    """
    for view in views:
        if view not in VIEWS:
            raise GeoBridgeError(f"unknown view {view!r}; expected some of {', '.join(VIEWS)}")
    if not views:
        raise GeoBridgeError("calibration needs at least one view")
    indexed = index.place_ids()
    usable = [
        p for p in places
        if str(p.place_id) in indexed
        and all((p.texts if v == "text" else p.images.get(v, ())) for v in views)
    ]
    if len(usable) < 2:
        raise GeoBridgeError(
            f"calibration needs at least 2 places that are in the index and have every view of {list(views)}; "
            f"found {len(usable)} of {len(places)}"
        )
    place_order = sorted(indexed)
    column = {pid: j for j, pid in enumerate(place_order)}
    labels = np.array([column[str(p.place_id)] for p in usable])
    depth = search_depth(index, candidates)
    scores: dict[str, np.ndarray] = {}
    indexed_views = set(index.info()["views"])
    for view in views:
        if not indexed_views - {view}:
            raise GeoBridgeError(
                f"cannot calibrate {view} queries: the index holds only {view} items, and queries are searched "
                "among the other views"
            )
        items = [p.texts[0] if view == "text" else p.images[view][0] for p in usable]
        vectors = model.encode(items, view=view, batch_size=batch_size, show_progress_bar=show_progress_bar)  # (N, D)
        result = index.search(vectors, k=depth, exclude_views=(view,))
        scores[view] = place_scores([result.metadata(q) for q in range(len(usable))], place_order)
    return fit_view_weights(scores, labels)
