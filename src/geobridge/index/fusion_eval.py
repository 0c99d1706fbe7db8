"""Localisation from single queries and fused combinations, measured on labelled places: what the demo's fusion
table and ``geobridge index calibrate``'s check report. ``weighted`` fusion is cross-fitted, so no place is scored
with weights fitted on itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from geobridge.errors import GeoBridgeError
from geobridge.fusions import FUSIONS
from geobridge.geodesy import haversine_km
from geobridge.index.calibrate import CalibrationSet, fit_view_weights
from geobridge.index.locate import DEFAULT_RADIUS_KM, DEFAULT_TEMPERATURE, fuse
from geobridge.index.search import DEFAULT_CANDIDATES, search_depth, search_places
from geobridge.index.store import GeoIndex
from geobridge.views import VIEWS

DEFAULT_COMBOS: tuple[str, ...] = (
    "drone", "street", "text", "satellite", "drone+street", "drone+text", "street+text", "drone+street+text",
    "drone*4", "drone*4+street+text",
)


def evaluate_fusion(
    model: Any,
    index: GeoIndex,
    places: Sequence[Any],
    *,
    combos: Sequence[str] = DEFAULT_COMBOS,
    fusions: Sequence[str] = FUSIONS,
    top_k: int = 10,
    radius_km: float = DEFAULT_RADIUS_KM,
    temperature: float = DEFAULT_TEMPERATURE,
    candidates: int = DEFAULT_CANDIDATES,
    folds: int = 2,
    seed: int = 0,
    exclude_same_view: bool = True,
    batch_size: int = 64,
    show_progress_bar: bool | None = None,
) -> dict[str, float]:
    """Localisation of held-out ``places`` against ``index`` from single queries and fused combinations.

    Per place, the query of a view is its first image of that view (or its first text); ``view*N`` stands for
    its first N items of that view as N separate queries (``"drone*4"``: four drone photos of one place). A
    combination such as ``"drone+street+text"`` is evaluated under each fusion in ``fusions``; a single query
    under ``score`` only. ``weighted`` fusion (combinations of two or more views) is cross-fitted: the places
    are split into ``folds`` folds (seeded), and each fold is scored with view weights fitted on the others, so
    no place is scored with weights fitted on itself.
    Keys: ``<views>/R@1`` (percent of places whose own place_id is the top match), ``<views>/acc@25km``
    (percent of estimates within 25 km), ``<views>/median_km`` and ``<views>/n`` (places evaluated) for single
    views, and ``<views>/<fusion>/...`` for combinations, plus ``<views>/weighted/w_<view>`` (fitted weights,
    mean over folds). A place lacking one of a combination's views is left out of it; a combination none of
    whose queries can reach the gallery (e.g. a satellite query against a satellite-only index with
    ``exclude_same_view``) is left out of the result.
    """
    for mode in fusions:
        if mode not in FUSIONS:
            raise GeoBridgeError(f"unknown fusion {mode!r}; expected one of {', '.join(FUSIONS)}")
    if folds < 2:
        raise GeoBridgeError(f"folds must be >= 2 (weighted fusion is cross-fitted), got {folds}")
    parsed = {combo: _parse_combo(combo) for combo in combos}
    depth = search_depth(index, max(top_k, candidates))
    hits = {  # (view, n-th item) -> hits per place
        (view, nth): search_places(model, index, places, view=view, nth=nth, depth=depth,
                                   exclude_same_view=exclude_same_view, batch_size=batch_size,
                                   show_progress_bar=show_progress_bar)
        for view, nth in sorted({q for queries in parsed.values() for q in queries})
    }
    out: dict[str, float] = {}
    for combo, queries in parsed.items():
        rows = [i for i in range(len(places)) if all(hits[q][i] is not None for q in queries)]
        rows = [i for i in rows if any(hits[q][i] for q in queries)]
        if not rows:
            continue
        query_views = [view for view, _ in queries]
        for mode in (("score",) if len(queries) == 1 else tuple(fusions)):
            if mode == "weighted" and len(set(query_views)) < 2:
                continue  # one view: the weighted ranking is the score ranking
            weights_per_row = (
                _cross_fitted_weights(hits, queries, places, rows, index=index, folds=folds, seed=seed)
                if mode == "weighted" else {}
            )
            correct, errors = [], []
            for i in rows:
                lists = [hits[q][i] for q in queries]
                located = fuse(lists, fusion=mode, top_k=top_k, radius_km=radius_km, temperature=temperature,
                               query_views=query_views, view_weights=weights_per_row.get(i))
                correct.append(located.matches[0].place_id == str(places[i].place_id))
                if places[i].lat is not None and places[i].lon is not None:
                    errors.append(float(haversine_km(places[i].lat, places[i].lon, located.lat, located.lon)))
            key = combo if len(queries) == 1 else f"{combo}/{mode}"
            out[f"{key}/R@1"] = 100.0 * float(np.mean(correct))
            if errors:
                out[f"{key}/acc@25km"] = 100.0 * float(np.mean(np.asarray(errors) <= 25.0))
                out[f"{key}/median_km"] = float(np.median(errors))
            out[f"{key}/n"] = float(len(correct))
            for view in sorted(set(query_views)) if weights_per_row else ():
                out[f"{key}/w_{view}"] = float(np.mean([w[view] for w in weights_per_row.values()]))
    return out


def _cross_fitted_weights(
    hits: Mapping[tuple[str, int], Sequence[Sequence[Mapping[str, Any]] | None]],
    queries: Sequence[tuple[str, int]],
    places: Sequence[Any],
    rows: Sequence[int],
    *,
    index: GeoIndex,
    folds: int,
    seed: int,
) -> dict[int, dict[str, float]]:
    """Place row -> view weights fitted on the places of the other folds (``weighted`` fusion, evaluation)."""
    indexed = index.place_ids()
    labelled = [i for i in rows if str(places[i].place_id) in indexed and all(hits[q][i] for q in queries)]
    if len(labelled) < 2 * folds:
        raise GeoBridgeError(f"weighted fusion needs at least {2 * folds} evaluated places in the index to cross-fit")
    fold_of = {i: f for f, part in enumerate(np.array_split(np.random.default_rng(seed).permutation(labelled), folds))
               for i in part.tolist()}
    out: dict[int, dict[str, float]] = {}
    for fold in range(folds):
        train = [i for i in labelled if fold_of[i] != fold]
        data = CalibrationSet.from_hits([(view, [hits[(view, nth)][i] for i in train]) for view, nth in queries],
                                        [str(places[i].place_id) for i in train], n_places=len(indexed))
        weights = fit_view_weights(data)
        for i in rows:
            if fold_of.get(i, fold) == fold and i not in out:
                out[i] = weights
    return out


def _parse_combo(combo: str) -> tuple[tuple[str, int], ...]:
    """``"drone*2+text"`` -> ``(("drone", 0), ("drone", 1), ("text", 0))``: (view, n-th item of that view)."""
    queries: list[tuple[str, int]] = []
    for part in (p.strip() for p in combo.split("+")):
        view, _, count = part.partition("*")
        if view not in VIEWS:
            raise GeoBridgeError(f"bad combination {combo!r}: unknown view {view!r}; expected views from {VIEWS}")
        if count and (not count.isdigit() or int(count) < 1):
            raise GeoBridgeError(f"bad combination {combo!r}: {part!r} needs a positive count after '*'")
        start = sum(1 for v, _ in queries if v == view)
        queries += [(view, start + k) for k in range(int(count or 1))]
    return tuple(queries)
