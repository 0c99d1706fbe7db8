"""Evaluation plots: recall@K curves, a retrieval grid, a map of errors, a histogram of km errors and the
localisation R@1 of single and fused queries.

Every function draws on its own ``matplotlib.figure.Figure`` (Agg canvas, no pyplot and no global state), writes a
PNG atomically to ``path`` and returns the path. matplotlib and PIL are imported inside the functions.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geobridge._atomic import atomic_write_bytes
from geobridge.eval.geo import DEFAULT_THRESHOLDS_KM
from geobridge.eval.retrieval import RetrievalResult

if TYPE_CHECKING:  # pragma: no cover
    from geobridge.eval.evaluator import EmbeddingSet

CORRECT_COLOR = (46, 160, 67)
WRONG_COLOR = (214, 39, 40)
QUERY_COLOR = (31, 119, 180)


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path | str, *, dpi: int = 100) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(Path(path), buffer.getvalue())


def plot_recall_curves(
    results: Mapping[str, RetrievalResult], path: Path | str, *, max_k: int = 100, title: str | None = None
) -> Path:
    """Recall@K (percent) against K = 1 .. min(gallery size, ``max_k``) on a log K axis, one line per direction.

    ``results`` maps a direction name (``drone->satellite``) to its :class:`RetrievalResult`.
    """
    from matplotlib import colormaps

    fig = _new_figure(7.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    colors = colormaps["tab20"].colors
    styles = {"drone": "-", "satellite": "--", "street": ":", "text": "-."}  # line style by query view
    for i, (direction, result) in enumerate(results.items()):
        top = min(result.n_gallery, max_k)
        if top < 1 or not result.has_positive.any():
            continue
        ks = np.arange(1, top + 1)
        style = styles.get(direction.split("->")[0].strip(), "-")
        ax.plot(
            ks,
            100.0 * result.cmc(top),
            label=direction,
            linewidth=1.6,
            linestyle=style,
            color=colors[(2 * i) % 20 + (2 * i) // 20 % 2],
            marker="o" if top < 12 else None,
        )
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K (%)")
    ax.set_ylim(0, 101)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or "Recall@K")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2 if len(results) > 6 else 1, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no query has a positive", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def caption_lines(text: str, *, width: int = 24, max_lines: int = 9) -> list[str]:
    """``text`` wrapped to lines of at most ``width`` characters, at most ``max_lines`` of them; a cut text ends
    with ``...``."""
    lines = textwrap.wrap(" ".join(str(text).split()), width=width, break_long_words=True) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 3].rstrip() + "..."
    return lines


def _tile(
    image_path: str | None, size: int, border: tuple[int, int, int], label: str, *, caption: str | None = None
) -> np.ndarray:
    """A (size, size, 3) uint8 tile: the image letterboxed (aspect kept, e.g. 2:1 panoramas) inside a colour border;
    with ``caption`` (a text query), the text wrapped and truncated instead."""
    from PIL import Image, ImageDraw, ImageFont, ImageOps

    width = max(2, size // 28)
    inner = size - 2 * width
    canvas = Image.new("RGB", (inner, inner), (235, 235, 235))
    image = None
    if image_path:
        from geobridge.errors import DataError
        from geobridge.images import load_image

        try:
            image = load_image(image_path)
        except DataError:  # a missing or unreadable reference image is drawn as an empty tile
            image = None
    if caption is not None:
        font_px = max(8, inner // 10)  # about inner / 20 characters to a line
        font = ImageFont.load_default(size=font_px)
        line_px = font_px + 3
        lines = caption_lines(caption, width=max(8, inner * 2 // font_px), max_lines=max(1, (inner - 8) // line_px))
        draw = ImageDraw.Draw(canvas)
        for k, line in enumerate(lines):
            draw.text((4, 4 + k * line_px), line, fill=(20, 20, 20), font=font)
    elif image is not None:
        image.thumbnail((inner, inner), Image.Resampling.BILINEAR)
        if max(image.size) < inner:  # small images are scaled up to fit
            scale = inner / max(image.size)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        canvas.paste(image, ((inner - image.width) // 2, (inner - image.height) // 2))
    else:
        ImageDraw.Draw(canvas).text((6, inner // 2 - 6), label[:24] or "no image", fill=(90, 90, 90))
    return np.asarray(ImageOps.expand(canvas, border=width, fill=border))


def plot_retrieval_grid(
    query: EmbeddingSet,
    gallery: EmbeddingSet,
    result: RetrievalResult,
    path: Path | str,
    *,
    query_indices: Sequence[int] | None = None,
    n_queries: int = 6,
    top: int = 5,
    seed: int = 0,
    tile_px: int = 160,
) -> Path:
    """One row per query: the query image (blue border) and its top ``top`` gallery items, green when correct (same
    place) and red when wrong, titled with rank and score. Images come from the sets' ``paths``; a missing path or
    unreadable file shows a grey tile with the place id. A text query shows its sentence (the query set's ``texts``,
    wrapped and truncated to the tile). Queries: ``query_indices``, or ``n_queries`` drawn at random with ``seed``."""
    n_total = len(query)
    if query_indices is None:
        rng = np.random.default_rng(seed)
        query_indices = np.sort(rng.choice(n_total, size=min(n_queries, n_total), replace=False)).tolist()
    rows = [int(i) for i in query_indices]
    top = max(1, min(top, result.topk_indices.shape[1]))
    fig = _new_figure(1.6 * (top + 1), 1.75 * max(1, len(rows)))
    for r, qi in enumerate(rows):
        sentence = None if query.texts is None else query.texts[qi]
        cells = [(_path(query, qi), QUERY_COLOR, f"query {query.view}", str(query.place_ids[qi]), sentence)]
        for j in range(top):
            gi = int(result.topk_indices[qi, j])
            if gi < 0:
                cells.append((None, (200, 200, 200), f"#{j + 1} -", "", None))
                continue
            color = CORRECT_COLOR if result.topk_is_positive[qi, j] else WRONG_COLOR
            title = f"#{j + 1} {result.topk_scores[qi, j]:.3f}"
            cells.append((_path(gallery, gi), color, title, str(gallery.place_ids[gi]), None))
        for c, (image_path, color, title, label, caption) in enumerate(cells):
            ax = fig.add_subplot(max(1, len(rows)), top + 1, r * (top + 1) + c + 1)
            ax.imshow(_tile(image_path, tile_px, color, label, caption=caption))
            ax.set_title(title if c else f"{title}\n{label}", fontsize=7)
            ax.axis("off")
    fig.suptitle(f"{query.view} -> {gallery.view}: top-{top} (green = same place)", fontsize=9)
    return _save(fig, path)


def _path(emb_set: EmbeddingSet, i: int) -> str | None:
    return None if emb_set.paths is None else emb_set.paths[i]


def plot_error_map(
    true_lat: np.ndarray,
    true_lon: np.ndarray,
    pred_lat: np.ndarray,
    pred_lon: np.ndarray,
    path: Path | str,
    *,
    title: str | None = None,
    max_points: int = 2000,
    seed: int = 0,
) -> Path:
    """True locations (blue circles) and predicted locations (red crosses, the top-1 item's coordinates) on a plain
    lat/lon plot with a graticule, joined by grey error lines. Pairs with a NaN coordinate are skipped; at most
    ``max_points`` pairs (a random sample) are drawn. Get the predictions from a result with
    ``gallery.lat[result.topk_indices[:, 0]]`` (mind ``-1`` = nothing retrieved)."""
    from matplotlib.collections import LineCollection

    arrays = (true_lat, true_lon, pred_lat, pred_lon)
    tlat, tlon, plat, plon = (np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays)
    ok = np.isfinite(tlat) & np.isfinite(tlon) & np.isfinite(plat) & np.isfinite(plon)
    idx = np.flatnonzero(ok)
    if idx.size > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_points, replace=False))
    fig = _new_figure(7.5, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    if idx.size:
        segments = np.stack([np.stack([tlon[idx], tlat[idx]], 1), np.stack([plon[idx], plat[idx]], 1)], 1)  # (P, 2, 2)
        ax.add_collection(LineCollection(segments, colors=(0.4, 0.4, 0.4, 0.5), linewidths=0.7, zorder=1))
        ax.scatter(
            tlon[idx],
            tlat[idx],
            s=22,
            facecolors="none",
            edgecolors=[np.array(QUERY_COLOR) / 255],
            linewidths=1.0,
            label="true",
            zorder=2,
        )
        ax.scatter(
            plon[idx],
            plat[idx],
            s=14,
            c=[np.array(WRONG_COLOR) / 255],
            marker="x",
            linewidths=1.0,
            label="predicted (top-1)",
            zorder=3,
        )
        lons = np.concatenate([tlon[idx], plon[idx]])
        lats = np.concatenate([tlat[idx], plat[idx]])
        pad_lon = max(0.5, 0.05 * (lons.max() - lons.min()))
        pad_lat = max(0.5, 0.05 * (lats.max() - lats.min()))
        ax.set_xlim(max(-180.0, lons.min() - pad_lon), min(180.0, lons.max() + pad_lon))
        ax.set_ylim(max(-90.0, lats.min() - pad_lat), min(90.0, lats.max() + pad_lat))
        mid_lat = float(np.clip(np.mean(lats), -80.0, 80.0))
        ax.set_aspect(1.0 / math.cos(math.radians(mid_lat)), adjustable="box")
        ax.legend(fontsize=8, loc="best")
    else:
        ax.set_xlim(-180, 180)
        ax.set_ylim(-90, 90)
        ax.text(0, 0, "no coordinates", ha="center", va="center")
    _graticule(ax)
    ax.set_xlabel("longitude (deg)")
    ax.set_ylabel("latitude (deg)")
    ax.set_title(title or f"top-1 predictions ({idx.size} queries)")
    return _save(fig, path)


def _graticule(ax: Any) -> None:
    """Grid lines at a round step in degrees (1, 2, 5, 10, 15, 30 ...) chosen from the view's extent."""
    from matplotlib.ticker import MultipleLocator

    span = max(np.ptp(ax.get_xlim()), np.ptp(ax.get_ylim()))
    step = next((s for s in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60) if span / s <= 12), 90)
    ax.xaxis.set_major_locator(MultipleLocator(step))
    ax.yaxis.set_major_locator(MultipleLocator(step))
    ax.grid(True, linestyle=":", linewidth=0.6, color="0.6")


def plot_error_histogram(
    errors_km: np.ndarray,
    path: Path | str,
    *,
    thresholds_km: Sequence[float] = DEFAULT_THRESHOLDS_KM,
    floor_km: float = 0.01,
    title: str | None = None,
) -> Path:
    """Histogram of top-1 km errors on log-spaced bins, with dashed lines at ``thresholds_km`` (labelled with the
    percentage within each). Errors below ``floor_km`` (including exact 0 km hits) are counted in the first bin;
    NaN errors are skipped."""
    errors = np.asarray(errors_km, dtype=np.float64).reshape(-1)
    errors = errors[~np.isnan(errors)]
    fig = _new_figure(7.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    if errors.size:
        clipped = np.maximum(errors, floor_km)
        high = max(clipped.max(), floor_km * 10) * 1.05
        bins = np.logspace(math.log10(floor_km), math.log10(high), 40)
        ax.hist(clipped, bins=bins, color=(0.3, 0.45, 0.7), edgecolor="white", linewidth=0.4)
        ax.set_xscale("log")
        for t in thresholds_km:
            share = 100.0 * np.count_nonzero(errors <= t) / errors.size
            ax.axvline(t, color="0.3", linestyle="--", linewidth=0.8)
            ax.text(
                t,
                0.98,
                f" {t:g} km: {share:.1f}%",
                rotation=90,
                va="top",
                ha="left",
                fontsize=7,
                transform=ax.get_xaxis_transform(),
            )
        ax.set_title(title or f"top-1 error (median {np.median(errors):.1f} km, n={errors.size})")
    else:
        ax.text(0.5, 0.5, "no km errors (coordinates missing)", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title or "top-1 error")
    ax.set_xlabel(f"error (km, log scale; errors below {floor_km:g} km in the first bin)")
    ax.set_ylabel("queries")
    return _save(fig, path)


def plot_fusion(fusion: Mapping[str, float], path: Path | str, *, title: str | None = None) -> Path:
    """Horizontal bars of localisation R@1 per query combination (``evaluate_fusion``'s output): single queries
    first, then each combination under each fusion, with the best single query as a dashed reference line."""
    rows = [k[: -len("/R@1")] for k in fusion if k.endswith("/R@1")]
    singles = sorted(r for r in rows if "/" not in r)
    combos = sorted(r for r in rows if "/" in r)
    ordered = singles + combos
    fig = _new_figure(7.0, 0.6 + 0.26 * max(1, len(ordered)))
    ax = fig.add_subplot(1, 1, 1)
    if ordered:
        values = [fusion[f"{r}/R@1"] for r in ordered]
        colours = [(0.55, 0.55, 0.55) if r in singles else (0.3, 0.45, 0.7) for r in ordered]
        positions = np.arange(len(ordered))[::-1]
        ax.barh(positions, values, color=colours)
        ax.set_yticks(positions, ordered, fontsize=7)
        for y, value in zip(positions, values, strict=True):
            ax.text(value, y, f" {value:.1f}", va="center", fontsize=7)
        if singles:
            best = max(fusion[f"{r}/R@1"] for r in singles)
            ax.axvline(best, color="0.2", linestyle="--", linewidth=0.8)
        ax.set_xlim(0, max(max(values) * 1.15, 1.0))
    else:
        ax.text(0.5, 0.5, "no fusion results", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("R@1 (%): the true place is the top estimate; grey = single query, dashed = best single")
    ax.set_title(title or "localisation: single queries and fused combinations")
    return _save(fig, path)
