"""``geobridge eval --protocol NAME``: load a benchmark's test splits, embed them, score them, write the report.

:func:`protocol_splits` is the one place that turns a protocol into :class:`~geobridge.data.evalsplit.EvalSplit`
objects: one call of the layout registry's :func:`geobridge.data.load_eval_split` per direction, with the
protocol's ``loader_options`` (VIGOR's ``mode``, CVACT's ``split``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geobridge.data.evalsplit import EvalItem, EvalSplit
from geobridge.errors import DataError
from geobridge.eval.protocol_score import protocol_metrics, score_split
from geobridge.eval.retrieval import RetrievalResult
from geobridge.protocols import Protocol

SplitLoader = Callable[..., EvalSplit]


def protocol_splits(
    protocol: Protocol, root: str | Path, *, loader: SplitLoader | None = None
) -> dict[str, EvalSplit]:
    """One split per direction of ``protocol`` (``"<q>-><g>"`` -> split), read from ``root``.

    ``loader`` defaults to :func:`geobridge.data.load_eval_split`; it is called as
    ``loader(root, fmt=protocol.layout, query_view=q, gallery_view=g, **dict(protocol.loader_options))``.
    A layout the registry does not know, or a missing folder, is a ``DataError`` naming ``root``.
    """
    if loader is None:
        from geobridge.data.layouts import load_eval_split

        loader = load_eval_split
    splits = {}
    for query, gallery in protocol.directions:
        try:
            split = loader(root, fmt=protocol.layout, query_view=query, gallery_view=gallery,
                           **dict(protocol.loader_options))
        except ValueError as exc:  # an unknown layout or direction: the protocol and the registry disagree
            raise DataError(f"protocol {protocol.name!r} cannot read {root}: {exc}") from exc
        if (split.query_view, split.gallery_view) != (query, gallery):
            raise DataError(
                f"{split.name}: the loader returned {split.query_view}->{split.gallery_view}, "
                f"expected {query}->{gallery} ({root})"
            )
        splits[f"{query}->{gallery}"] = split
    return splits


def embed_items(
    model: Any, items: Sequence[EvalItem], *, batch_size: int = 64, show_progress_bar: bool | None = None
) -> np.ndarray:
    """(N, D) embeddings of items of one view with ``model.encode(..., view=...)`` (paths or texts)."""
    view = items[0].view
    inputs = [item.text if view == "text" else item.path for item in items]
    return np.asarray(model.encode(inputs, view=view, batch_size=batch_size, show_progress_bar=show_progress_bar))


def evaluate_protocol(
    model: Any,
    protocol: Protocol,
    splits: dict[str, EvalSplit],
    *,
    batch_size: int = 64,
    show_progress_bar: bool | None = None,
) -> tuple[dict[str, float | str], dict[str, RetrievalResult]]:
    """Embed and score every split; items shared by two directions (GeoText's) are embedded once."""
    cache: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}

    def embedded(items: Sequence[EvalItem]) -> np.ndarray:
        key = (items[0].view, tuple(item.key for item in items))
        if key not in cache:
            cache[key] = embed_items(model, items, batch_size=batch_size, show_progress_bar=show_progress_bar)
        return cache[key]

    results = {}
    for direction, split in splits.items():
        results[direction] = score_split(
            protocol, split, embedded(split.queries), embedded(split.gallery), show_progress_bar=show_progress_bar
        )
    return protocol_metrics(protocol, results), results


def run_protocol(
    model: Any,
    protocol: Protocol,
    data: str | Path,
    out_dir: str | Path,
    *,
    batch_size: int = 64,
    sections: dict[str, str] | None = None,
    run: dict[str, str] | None = None,
    show_progress_bar: bool | None = None,
    loader: SplitLoader | None = None,
) -> dict[str, float | str]:
    """Evaluate ``model`` on ``data`` with ``protocol``; write ``metrics.json``, ``report.md`` and a recall plot."""
    from geobridge.eval.plots import plot_recall_curves
    from geobridge.eval.report import write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = protocol_splits(protocol, data, loader=loader)
    metrics, results = evaluate_protocol(
        model, protocol, splits, batch_size=batch_size, show_progress_bar=show_progress_bar
    )
    curves = {d: _curve_result(r, count_misses=protocol.no_positive != "exclude") for d, r in results.items()}
    plots = {"recall@K": plot_recall_curves(curves, out / "recall_curves.png", title=f"Recall@K ({protocol.name})")}
    body = {"Protocol": protocol_section(protocol, results, metrics), **(sections or {})}
    write_report(out, metrics, title=f"GeoBridge evaluation: {protocol.name}", sections=body, plots=plots, run=run)
    return metrics


def protocol_section(
    protocol: Protocol, results: dict[str, RetrievalResult], metrics: dict[str, float | str]
) -> str:
    """Markdown: the protocol's conventions, the K of R@1% per direction, and its extra metrics."""
    lines = [
        f"`{protocol.name}`: {protocol.description}.",
        "",
        f"- source: {protocol.source}",
        f"- ties: {protocol.ties}; queries without a positive: {protocol.no_positive}; distractors: "
        f"{protocol.distractors}; semi-positives for recall: {protocol.semi_positives}; multi-query: "
        f"{'yes' if protocol.multi_query else 'no'}",
        f"- R@1% is the recall at K, K = rule `{protocol.k_rule}` of the gallery size M (junk included)",
        "",
        "| direction | queries | gallery M | K of R@1% | R@1% | extra |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for direction, result in results.items():
        m = result.metrics
        extra = ", ".join(
            f"{name} {m[name]:.2f}" for name in ("AP", "hit_rate", "median_m", "mean_m") if name in m
        )
        r1p, k = (f"{m['R@1%']:.2f}", str(int(m["R@1%_K"]))) if "R@1%" in m else ("-", "-")
        lines.append(f"| `{direction}` | {result.n_queries} | {result.n_gallery} | {k} | {r1p} | {extra or '-'} |")
    means = [
        f"- {name} = {value:.2f}"
        for name in ("txt_r_mean", "img_r_mean", "r_mean")
        if isinstance(value := metrics.get(name), float) and math.isfinite(value)
    ]
    if means:
        lines += ["", "GeoText's means of R@1, R@5 and R@10 (txt: image->text, img: text->image):", "", *means]
    return "\n".join(lines)


def _curve_result(result: RetrievalResult, *, count_misses: bool) -> RetrievalResult:
    """The result for the recall plot; with ``count_misses`` a query without a positive gets the rank M (outside
    every K), so the curve divides by all queries as the protocol does."""
    if not count_misses:
        return result
    first = result.first_positive_rank.copy()
    first[first < 0] = result.n_gallery
    return dataclasses.replace(result, first_positive_rank=first)
