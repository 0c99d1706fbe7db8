"""A Markdown report and a JSON dump of evaluation metrics.

:func:`write_report` reads the flat metric keys of :mod:`geobridge.eval.evaluator`:

* ``<q>-><g>/<metric>`` and ``mean/<metric>`` -> the results table (one row per direction, then the mean);
* ``in_domain/...`` and ``out_of_domain/...`` -> a cross-domain table (each direction twice);
* ``missing/<view>/mean/R@1`` -> a missing-view table;
* ``robust/<condition>/<q>-><g>/<metric>`` -> a robustness table (rows = conditions, columns = directions, cells =
  ``robust_metric``, R@1 by default), with the un-prefixed value as the ``clean`` row when it exists.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from geobridge._atomic import atomic_write_text
from geobridge.views import VIEWS

RATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("R@1", "R@1"),
    ("R@5", "R@5"),
    ("R@10", "R@10"),
    ("R@1%", "R@1%"),
    ("AP", "AP"),
    ("MRR", "MRR"),
)
KM_COLUMNS: tuple[tuple[str, str], ...] = (("median_km", "median km"), ("mean_km", "mean km"))
COUNT_COLUMNS: tuple[tuple[str, str], ...] = (("n_queries", "queries"), ("n_gallery", "gallery"))
GROUPS: tuple[tuple[str, str], ...] = (("in_domain", "in-domain"), ("out_of_domain", "out-of-domain"))
_DIRECTION = re.compile(r"^([a-z]+)->([a-z]+)$")
_ACC = re.compile(r"^acc@([0-9.]+)km$")


def write_report(
    out_dir: Path | str,
    metrics: Mapping[str, float | str],
    *,
    title: str = "GeoBridge evaluation",
    sections: Mapping[str, str] | None = None,
    plots: Mapping[str, Path | str] | None = None,
    robust_metric: str = "R@1",
    run: Mapping[str, str] | None = None,
) -> Path:
    """Write ``metrics.json`` (sorted keys, NaN as null) and ``report.md`` into ``out_dir``; return the report's path.

    ``sections``: extra Markdown sections (heading -> body) placed after the tables, e.g. the model and data used.
    ``plots``: images (name -> path) embedded with links relative to ``out_dir``. ``run``: what is known of the
    run (what -> value, e.g. from :func:`geobridge.eval.run_info.describe_run`: dates, commits, seed, epochs,
    training time), listed first. Both files are written atomically.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = {str(k): _json_value(v) for k, v in metrics.items()}
    atomic_write_text(out / "metrics.json", json.dumps(clean, indent=2, sort_keys=True) + "\n")
    lines = [f"# {title}", ""]
    primary = metrics.get("primary_metric")
    if isinstance(primary, str) and isinstance(metrics.get(primary), (int, float)):
        lines += [f"Primary metric: **{primary} = {_fmt(primary, float(metrics[primary]))}**", ""]
    if run:
        lines += ["## Run", "", *(f"- {what}: {value}" for what, value in run.items()), ""]
    own_k = "protocol" in metrics  # a named protocol: each direction has its own K
    one_percent = "R@1% (the recall at the K listed per direction below)" if own_k else "R@1% (K = 1% of the gallery)"
    lines += [
        f"Recall@K, {one_percent}, AP (University-1652 variant), MRR and acc@ (share of queries whose "
        "top-1 item lies within the distance) are percentages; distances are great-circle km to the top-1 item.",
        "",
    ]
    main = _table(metrics, prefix="")
    if main:
        lines += ["## Results", "", *main, ""]
    groups = _group_table(metrics)
    if groups:
        lines += [
            "## In-domain vs out-of-domain",
            "",
            "Queries split by country (held-out countries = out-of-domain); both use the full gallery.",
            "",
            *groups,
            "",
        ]
    robust = _robust_table(metrics, robust_metric)
    if robust:
        lines += ["## Robustness", "", f"{robust_metric} per direction under each condition.", "", *robust, ""]
    missing = _missing_table(metrics)
    if missing:
        lines += [
            "## Missing views",
            "",
            "Mean R@1 over the directions that remain when one view is unavailable (e.g. no satellite tile).",
            "",
            *missing,
            "",
        ]
    for heading, body in (sections or {}).items():
        lines += [f"## {heading}", "", body.rstrip(), ""]
    if plots:
        lines += ["## Plots", ""]
        for name, plot_path in plots.items():
            rel = Path(os.path.relpath(Path(plot_path).resolve(), out.resolve())).as_posix()
            lines += [f"### {name}", "", f"![{name}]({rel})", ""]
    return atomic_write_text(out / "report.md", "\n".join(lines).rstrip() + "\n")


def _missing_table(metrics: Mapping[str, float | str]) -> list[str]:
    rows = []
    for view in VIEWS:
        value = metrics.get(f"missing/{view}/mean/R@1")
        if isinstance(value, (int, float)):
            rows.append(f"| {view} | {_fmt('R@1', float(value))} |")
    if not rows:
        return []
    return ["| missing view | mean R@1 of the other directions |", "|---|---:|", *rows]


def _json_value(value: object) -> object:
    if isinstance(value, str) or value is None:
        return value
    number = float(value)  # numpy scalars too
    return number if math.isfinite(number) else None


def _direction_order(direction: str) -> tuple[int, int, str]:
    match = _DIRECTION.match(direction)
    if not match or match.group(1) not in VIEWS or match.group(2) not in VIEWS:
        return (len(VIEWS), len(VIEWS), direction)
    return (VIEWS.index(match.group(1)), VIEWS.index(match.group(2)), direction)


def _split(metrics: Mapping[str, float | str], prefix: str) -> dict[str, dict[str, float]]:
    """``{row: {metric: value}}`` for keys ``<prefix><direction or 'mean'>/<metric>`` (numeric values only)."""
    rows: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if not key.startswith(prefix) or isinstance(value, str):
            continue
        head, sep, metric = key[len(prefix) :].partition("/")
        if sep and "/" not in metric and (head == "mean" or _DIRECTION.match(head)):
            rows.setdefault(head, {})[metric] = float(value)
    return rows


def _columns(rows: Mapping[str, Mapping[str, float]]) -> list[tuple[str, str]]:
    present = {m for values in rows.values() for m in values}
    acc = sorted((float(_ACC.match(m).group(1)), m) for m in present if _ACC.match(m))
    candidates = [*RATE_COLUMNS, *KM_COLUMNS, *((m, f"<= {t:g} km") for t, m in acc), *COUNT_COLUMNS]
    return [(m, label) for m, label in candidates if m in present]


def _fmt(metric: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if metric.startswith("n_"):
        return f"{int(round(value))}"
    if metric.endswith("_km"):
        return f"{value:.1f}"
    return f"{value:.2f}"


def _markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def _table(metrics: Mapping[str, float | str], *, prefix: str) -> list[str]:
    rows = _split(metrics, prefix)
    if not rows:
        return []
    columns = _columns(rows)
    names = sorted((r for r in rows if r != "mean"), key=_direction_order) + (["mean"] if "mean" in rows else [])
    body = [[f"`{n}`" if n != "mean" else "**mean**"] + [_fmt(m, rows[n].get(m)) for m, _ in columns] for n in names]
    return _markdown_table(["direction", *(label for _, label in columns)], body)


def _group_table(metrics: Mapping[str, float | str]) -> list[str]:
    per_group = {g: _split(metrics, f"{g}/") for g, _ in GROUPS}
    if not any(per_group.values()):
        return []
    merged = {f"{g}|{r}": v for g, rows in per_group.items() for r, v in rows.items()}
    columns = _columns(merged)
    names = sorted({r for rows in per_group.values() for r in rows if r != "mean"}, key=_direction_order)
    if any("mean" in rows for rows in per_group.values()):
        names.append("mean")
    body = []
    for name in names:
        for group, label in GROUPS:
            values = per_group[group].get(name)
            if values is None:
                continue
            shown = f"`{name}`" if name != "mean" else "**mean**"
            body.append([shown, label] + [_fmt(m, values.get(m)) for m, _ in columns])
    return _markdown_table(["direction", "queries from", *(label for _, label in columns)], body)


def _robust_table(metrics: Mapping[str, float | str], metric: str) -> list[str]:
    conditions: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if not key.startswith("robust/") or isinstance(value, str):
            continue
        parts = key.split("/")
        if len(parts) == 4 and parts[3] == metric and (parts[2] == "mean" or _DIRECTION.match(parts[2])):
            conditions.setdefault(parts[1], {})[parts[2]] = float(value)
    if not conditions:
        return []
    directions = sorted({d for values in conditions.values() for d in values if d != "mean"}, key=_direction_order)
    if any("mean" in values for values in conditions.values()):
        directions.append("mean")
    clean = {d: float(v) for d in directions if isinstance(v := metrics.get(f"{d}/{metric}"), (int, float))}
    body = []
    if clean:
        body.append(["clean"] + [_fmt(metric, clean.get(d)) for d in directions])
    for condition in sorted(conditions):
        body.append([condition] + [_fmt(metric, conditions[condition].get(d)) for d in directions])
    return _markdown_table(["condition", *(f"`{d}`" if d != "mean" else "mean" for d in directions)], body)
