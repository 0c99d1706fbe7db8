"""The full evaluation of a model on a dataset split: metrics, cross-domain groups, robustness, plots, report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from geobridge.data import degrade, load_places
from geobridge.data.coverage import ViewCoverage, check_coverage
from geobridge.errors import DataError
from geobridge.eval.embed import Degrade, benchmark_protocol, embed_places
from geobridge.eval.evaluator import EmbeddingSet, RetrievalEvaluator, evaluate_groups, retrieve
from geobridge.eval.plots import plot_error_histogram, plot_error_map, plot_recall_curves, plot_retrieval_grid
from geobridge.eval.report import write_report
from geobridge.views import IMAGE_VIEWS, VIEWS, direction_key


@dataclass(frozen=True)
class Condition:
    """A robustness condition: one view degraded as a stale, low-resolution or badly lit capture would be."""

    name: str
    view: str
    shift: str  # "low_resolution", "season", "time_of_day" or "blur"
    value: Any


DEFAULT_CONDITIONS: tuple[Condition, ...] = (
    Condition("satellite-lowres-x4", "satellite", "low_resolution", 4.0),
    Condition("satellite-winter", "satellite", "season", "winter"),
    Condition("drone-blur-2px", "drone", "blur", 2.0),
    Condition("street-night", "street", "time_of_day", "night"),
)


def _degrade_fn(condition: Condition) -> Degrade:
    return partial(getattr(degrade, condition.shift), **{_ARG[condition.shift]: condition.value})


_ARG = {"low_resolution": "factor", "blur": "sigma", "season": "name", "time_of_day": "name"}


def evaluate_run(
    model: Any,
    data: str | Path,
    out_dir: str | Path,
    *,
    fmt: str = "geoloc",
    split: str = "test",
    holdout_countries: Sequence[str] | None = None,
    conditions: Sequence[Condition] = DEFAULT_CONDITIONS,
    batch_size: int = 64,
    title: str = "GeoBridge evaluation",
    sections: dict[str, str] | None = None,
    run: dict[str, str] | None = None,
    strict: bool = False,
    show_progress_bar: bool | None = None,
) -> dict[str, Any]:
    """Evaluate every direction on ``split`` and write ``metrics.json``, ``report.md`` and plots into ``out_dir``.

    Adds ``in_domain/`` and ``out_of_domain/`` keys when held-out countries exist (from the manifest unless
    given), ``robust/<condition>/`` keys for each degraded-view condition (directions involving that view),
    and ``missing/<view>/`` summaries: the mean R@1 over the directions left when a view is unavailable.
    A benchmark layout (``fmt`` other than ``geoloc``) is evaluated with its default protocol instead
    (:func:`geobridge.eval.protocol_run.run_protocol`; held-out countries and conditions do not apply).
    ``run`` (dates, commits, seed, epochs, training time: ``geobridge.eval.run_info.describe_run``) heads the report.
    Places without one of the dataset's views are counted on stderr and in the report's Coverage section (a
    ``DataError`` with ``strict``). A ``holdout_countries`` code without a place in ``split`` is a ``DataError``.
    """
    protocol = benchmark_protocol(fmt, split)
    if protocol is not None:
        from geobridge.eval.protocol_run import run_protocol

        return dict(run_protocol(model, protocol, data, out_dir, batch_size=batch_size, sections=sections,
                                 run=run, show_progress_bar=show_progress_bar))
    places = load_places(data, fmt=fmt, split=split)
    manifest = json.loads((Path(data) / "manifest.json").read_text()) if fmt == "geoloc" else {}
    if holdout_countries is None:
        holdout_countries = tuple(manifest.get("holdout_countries", ()))
    else:
        _check_holdout(holdout_countries, places, where=f"{data} ({split})")
    views = [v for v in manifest.get("views", VIEWS) if v in VIEWS]
    coverage = check_coverage(places, views=views, strict=strict, where=f"{data} ({split})")
    sections = {**(sections or {}), "Coverage": _coverage_section(coverage)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sets = embed_places(model, places, batch_size=batch_size, show_progress_bar=show_progress_bar)
    evaluator = RetrievalEvaluator(show_progress_bar=False)
    metrics: dict[str, Any] = dict(evaluator(sets))
    if holdout_countries:
        metrics.update(evaluate_groups(sets, holdout_countries=holdout_countries, evaluator=evaluator))
    for view in IMAGE_VIEWS:
        if view in sets:
            left = [
                k for k in metrics
                if k.count("/") == 1 and k.endswith("/R@1") and "->" in k and view not in k.split("/")[0].split("->")
            ]
            if left:
                metrics[f"missing/{view}/mean/R@1"] = float(np.mean([metrics[k] for k in left]))
    for condition in conditions:
        if condition.view not in sets:
            continue
        degraded = embed_places(
            model, places, views=(condition.view,), degrade={condition.view: _degrade_fn(condition)},
            batch_size=batch_size, show_progress_bar=show_progress_bar,
        )
        mixed = {**sets, **degraded}
        directions = [d for d in evaluator.directions_for(set(mixed)) if condition.view in d.split("->")]
        robust = RetrievalEvaluator(directions, show_progress_bar=False).evaluate(mixed, mixed)
        metrics.update({f"robust/{condition.name}/{k}": v for k, v in robust.items() if not k.startswith("mean/")})
    plots = write_plots(sets, out)
    write_report(out, metrics, title=title, sections=sections, plots=plots, run=run)
    return metrics


def _check_holdout(codes: Sequence[str], places: Sequence[Any], *, where: str) -> None:
    """Every held-out country asked for has places in the split (else its group would be silently empty)."""
    present = sorted({p.country for p in places if p.country})
    absent = [code for code in codes if code not in present]
    if absent:
        raise DataError(f"held-out countries {', '.join(absent)} have no place in {where}; its countries are "
                        f"{', '.join(present) or 'not recorded'}")


def _coverage_section(coverage: ViewCoverage) -> str:
    lines = coverage.lines()
    if not lines:
        return f"Every one of the {coverage.places} places has every view."
    return "\n".join(f"- {line}: left out of the directions with that view." for line in lines)


def write_plots(sets: dict[str, EmbeddingSet], out: Path) -> dict[str, Path]:
    """Recall curves of every direction, retrieval grids, and the km-error map and histogram of drone->satellite."""
    results = {}
    for q in sets:
        for g in sets:
            if q != g:
                results[direction_key(q, g)] = retrieve(sets[q], sets[g], k=10, show_progress_bar=False)
    plots: dict[str, Path] = {"recall@K": plot_recall_curves(results, out / "recall_curves.png")}
    for direction in ("drone->satellite", "street->satellite", "text->satellite", "drone->street"):
        if direction in results:
            q, g = direction.split("->")
            name = f"retrieval grid {direction}"
            plots[name] = plot_retrieval_grid(
                sets[q], sets[g], results[direction], out / f"grid_{q}_{g}.png", n_queries=6, top=5
            )
    main = "drone->satellite" if "drone->satellite" in results else next(iter(results))
    q, g = main.split("->")
    result = results[main]
    top1 = result.topk_indices[:, 0]
    ok = top1 >= 0
    pred_lat = np.where(ok, sets[g].lat[np.maximum(top1, 0)], np.nan)
    pred_lon = np.where(ok, sets[g].lon[np.maximum(top1, 0)], np.nan)
    plots[f"predicted vs true locations ({main})"] = plot_error_map(
        sets[q].lat, sets[q].lon, pred_lat, pred_lon, out / "error_map.png", title=f"{main}: top-1 vs truth"
    )
    errors = result.errors_km  # (N,) km, filled by retrieve
    if np.isfinite(errors).any():
        plots[f"error histogram ({main})"] = plot_error_histogram(
            errors, out / "error_histogram.png", title=f"{main}: top-1 error (km)"
        )
    return plots
