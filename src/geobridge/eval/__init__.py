"""Evaluation of embeddings: retrieval metrics, geodesic errors, an every-direction evaluator, plots and reports.

Everything here works on embeddings (numpy arrays), so any model, or an embedding file, can be evaluated:

>>> from geobridge.eval import EmbeddingSet, RetrievalEvaluator
>>> metrics = RetrievalEvaluator()({"drone": drone_set, "satellite": sat_set})  # doctest: +SKIP
>>> metrics["drone->satellite/R@1"]  # percent  # doctest: +SKIP

Units: in metric dictionaries, rates (R@K, R@1%, AP, MRR, acc@<t>km) are percentages 0..100, distances are km and
counts are floats; functions that return a single number (``recall_at_k``, ``mean_average_precision``...) return
fractions 0..1. Ranks are 0-based, junk is removed before ranking and ties are broken pessimistically (see
:mod:`geobridge.eval.metrics`). ``AP`` is University-1652's trapezoid variant unless ``ap_variant="standard"``.

Benchmark numbers come from the named protocols (:func:`get_protocol`, :mod:`geobridge.eval.protocol_score`,
``geobridge eval --protocol NAME``), which follow each benchmark's official script: its roles, junk, ties and K.
"""

from __future__ import annotations

from geobridge.eval.evaluator import (
    EmbeddingSet,
    RetrievalEvaluator,
    all_directions,
    errors_km,
    evaluate_direction,
    evaluate_groups,
    mean_summaries,
    place_labels,
    retrieve,
    world_protocol,
)
from geobridge.eval.geo import (
    DEFAULT_THRESHOLDS_KM,
    EARTH_RADIUS_KM,
    accuracy_within_km,
    geodesic_metrics,
    haversine_km,
    top1_errors_km,
)
from geobridge.eval.metrics import (
    average_precision,
    average_precision_batch,
    cmc_curve,
    k_for_one_percent,
    mean_average_precision,
    mean_reciprocal_rank,
    positive_ranks_from_scores,
    recall_at_k,
    recall_k_for_percent,
    reciprocal_ranks,
)
from geobridge.eval.plots import (
    plot_error_histogram,
    plot_error_map,
    plot_fusion,
    plot_recall_curves,
    plot_retrieval_grid,
)
from geobridge.eval.protocol_score import direction_metrics, score_split
from geobridge.eval.report import write_report
from geobridge.eval.retrieval import RetrievalResult, auto_chunk_size, compute_retrieval
from geobridge.protocols import PROTOCOLS, Protocol, default_protocol, get_protocol, list_protocols

__all__ = [
    "DEFAULT_THRESHOLDS_KM",
    "EARTH_RADIUS_KM",
    "EmbeddingSet",
    "PROTOCOLS",
    "Protocol",
    "RetrievalEvaluator",
    "RetrievalResult",
    "accuracy_within_km",
    "all_directions",
    "auto_chunk_size",
    "average_precision",
    "average_precision_batch",
    "cmc_curve",
    "compute_retrieval",
    "default_protocol",
    "direction_metrics",
    "errors_km",
    "evaluate_direction",
    "evaluate_groups",
    "geodesic_metrics",
    "get_protocol",
    "haversine_km",
    "k_for_one_percent",
    "list_protocols",
    "mean_average_precision",
    "mean_reciprocal_rank",
    "mean_summaries",
    "place_labels",
    "plot_error_histogram",
    "plot_error_map",
    "plot_fusion",
    "plot_recall_curves",
    "plot_retrieval_grid",
    "positive_ranks_from_scores",
    "recall_at_k",
    "recall_k_for_percent",
    "reciprocal_ranks",
    "retrieve",
    "score_split",
    "top1_errors_km",
    "world_protocol",
    "write_report",
]
