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
softmax is a confidence fitted by likelihood (not a guarantee of calibration on new places).

``fit_view_weights`` is the pure fit on a ``CalibrationSet`` (built from dense scores or from search hits; the
compact form costs memory in proportion to the candidates returned, not to the gallery); ``calibrate_index``
embeds calibration places, searches them in an index and fits weights for the index's gallery
(``GeoIndex.fusion_weights``, saved with the index).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geobridge.errors import GeoBridgeError
from geobridge.index.search import DEFAULT_CANDIDATES, search_depth, search_places
from geobridge.index.store import GeoIndex
from geobridge.views import check_view

CALIBRATION_VIEWS: tuple[str, ...] = ("drone", "street", "text")


@dataclass(frozen=True)
class CalibrationSet:
    """N labelled calibration queries (each a group of queries of several views describing one place), with the
    scores of their candidate places, kept compact: a gallery of P places needs only the few candidates that the
    queries returned, because every other place scores each view's floor.

    ``scores[v, n, k]`` is view v's score of candidate k of group n (the sum over that view's queries of the best
    hit, or the query's floor); ``valid`` (N, K) marks real candidates (rows are padded to K); ``rest_floor[v, n]``
    is view v's score of every place outside the candidates and ``rest_count[n]`` how many such places there are;
    ``target[n]`` is the candidate column of the true place.
    """

    views: tuple[str, ...]
    scores: np.ndarray  # (V, N, K) float64
    valid: np.ndarray  # (N, K) bool
    rest_floor: np.ndarray  # (V, N) float64
    rest_count: np.ndarray  # (N,) int64
    target: np.ndarray  # (N,) int64

    @classmethod
    def from_dense(cls, scores: Mapping[str, np.ndarray], labels: Any) -> CalibrationSet:
        """From (N, P) scores per view over the whole gallery and the (N,) column of each row's true place."""
        if not scores:
            raise GeoBridgeError("calibration needs scores of at least one view")
        views = _check_views(scores)
        mats = [np.asarray(scores[v], dtype=np.float64) for v in views]
        shape = mats[0].shape
        if len(shape) != 2 or shape[0] == 0 or any(m.shape != shape for m in mats):
            raise GeoBridgeError(f"scores must be (N, P) arrays of one shape with N > 0; got {[m.shape for m in mats]}")
        target = np.asarray(labels, dtype=np.int64)
        if target.shape != (shape[0],) or target.min() < 0 or target.max() >= shape[1]:
            raise GeoBridgeError(f"labels must be {shape[0]} column indices in [0, {shape[1]})")
        n = shape[0]
        return cls(views=views, scores=np.stack(mats), valid=np.ones(shape, dtype=bool),
                   rest_floor=np.zeros((len(views), n)), rest_count=np.zeros(n, dtype=np.int64), target=target)

    @classmethod
    def from_hits(
        cls,
        queries: Sequence[tuple[str, Sequence[Sequence[Mapping[str, Any]]]]],
        true_place_ids: Sequence[str],
        *,
        n_places: int,
    ) -> CalibrationSet:
        """From search hits: ``queries`` is one ``(view, hits)`` slot per query of a group (``hits[n]`` is group
        n's hit list for that slot, as ``SearchResult.metadata``); a view may fill several slots (four drone
        photos). ``true_place_ids[n]`` is group n's place, one of the ``n_places`` places in the gallery."""
        views = _check_views(view for view, _ in queries)
        n = len(true_place_ids)
        if not queries or n == 0 or any(len(hits) != n for _, hits in queries):
            raise GeoBridgeError(f"every query slot needs one hit list per calibration place ({n})")
        groups: list[dict[str, int]] = []  # group -> candidate place_id -> column
        for i, pid in enumerate(true_place_ids):
            columns: dict[str, int] = {}
            for _, hits in queries:
                if not hits[i]:
                    raise GeoBridgeError(f"calibration place {pid}: a query got no hits")
                for hit in hits[i]:
                    columns.setdefault(str(hit["place_id"]), len(columns))
            columns.setdefault(str(pid), len(columns))
            groups.append(columns)
        width = max(len(c) for c in groups)
        scores = np.zeros((len(views), n, width))
        rest_floor = np.zeros((len(views), n))
        valid = np.zeros((n, width), dtype=bool)
        for i, columns in enumerate(groups):
            valid[i, : len(columns)] = True
            for view, hits in queries:
                v = views.index(view)
                floor = min(float(h["score"]) for h in hits[i])
                filled = np.full(len(columns), floor)
                for hit in hits[i]:
                    j = columns[str(hit["place_id"])]
                    filled[j] = max(filled[j], float(hit["score"]))
                scores[v, i, : len(columns)] += filled
                rest_floor[v, i] += floor
        rest_count = np.array([n_places - len(c) for c in groups], dtype=np.int64)
        if (rest_count < 0).any():
            raise GeoBridgeError(f"the hits name more places than the gallery's {n_places}")
        target = np.array([columns[str(pid)] for columns, pid in zip(groups, true_place_ids, strict=True)])
        return cls(views=views, scores=scores, valid=valid, rest_floor=rest_floor, rest_count=rest_count,
                   target=target)


def fit_view_weights(data: CalibrationSet, *, l2: float = 1e-5, max_iter: int = 200) -> dict[str, float]:
    """Positive per-view weights that minimise the mean cross-entropy of the true place over the gallery.

    The softmax runs over each group's candidates plus ``rest_count`` places at the floor logit
    ``sum_v w_v * rest_floor[v]``. ``l2`` is a small ridge penalty ``l2 * sum_v w_v**2``, which keeps the fit
    finite when one view separates the calibration places perfectly. Returns ``{view: weight}``.
    """
    if not np.isfinite(data.scores).all() or not np.isfinite(data.rest_floor).all():
        raise GeoBridgeError("calibration scores hold NaN or inf")
    x = torch.from_numpy(data.scores)  # (V, N, K)
    pad = torch.from_numpy(~data.valid)  # (N, K)
    rest_x = torch.from_numpy(data.rest_floor)  # (V, N)
    log_rest = torch.from_numpy(data.rest_count.astype(np.float64)).log()  # (N,), -inf where no place is left
    rows = torch.arange(len(data.target))
    target = torch.from_numpy(data.target)  # (N,)
    log_w = torch.zeros(len(data.views), dtype=torch.float64, requires_grad=True)  # (V,)
    optimizer = torch.optim.LBFGS([log_w], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        w = log_w.exp()
        logits = torch.einsum("v,vnk->nk", w, x).masked_fill(pad, float("-inf"))  # (N, K)
        rest = torch.einsum("v,vn->n", w, rest_x) + log_rest  # (N,) all the places outside the candidates
        log_z = torch.logsumexp(torch.cat([logits, rest[:, None]], dim=1), dim=1)  # (N,)
        loss = (log_z - logits[rows, target]).mean() + l2 * (w**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    weights = log_w.detach().exp().numpy()
    return {view: float(w) for view, w in zip(data.views, weights, strict=True)}


def _check_views(views: Iterable[str]) -> tuple[str, ...]:
    """The distinct ``views`` in order; a GeoBridgeError names an unknown one."""
    try:
        return tuple(check_view(view) for view in dict.fromkeys(views))
    except ValueError as exc:
        raise GeoBridgeError(str(exc)) from exc


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
    views = _check_views(views)
    if not views:
        raise GeoBridgeError("calibration needs at least one view")
    indexed_views = set(index.info()["views"])
    for view in views:
        if not indexed_views - {view}:
            raise GeoBridgeError(
                f"cannot calibrate {view} queries: the index holds only {view} items, and queries are searched "
                "among the other views"
            )
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
    depth = search_depth(index, candidates)
    slots = [
        (view, search_places(model, index, usable, view=view, depth=depth, batch_size=batch_size,
                             show_progress_bar=show_progress_bar))
        for view in views
    ]
    data = CalibrationSet.from_hits(slots, [str(p.place_id) for p in usable], n_places=len(indexed))
    return fit_view_weights(data)
