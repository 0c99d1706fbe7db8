"""The fusion modes of ``locate`` and what the score of a match means under each.

The one place these names live: ``geobridge.index`` fuses with them, the CLI and the service offer them.
No faiss or torch import, so that ``geobridge locate --help`` and the service's schema need neither.
"""

from __future__ import annotations

FUSIONS: tuple[str, ...] = ("score", "consensus", "max", "weighted")
LOCATE_FUSIONS: tuple[str, ...] = ("auto", *FUSIONS)  # auto: weighted for a calibrated index, else score

SCORE_MEANINGS: dict[str, str] = {
    "score": "the mean over queries of the place's best cosine similarity (a place a query did not return counts "
    "that query's lowest returned score); in [-1, 1], higher is better",
    "max": "the place's best cosine similarity over all queries; in [-1, 1], higher is better",
    "consensus": "the share of the fused weight lying within the consensus radius of the place; in (0, 1], "
    "higher is better",
    "weighted": "a logit, the sum over queries of the query view's fitted weight times the cosine similarity "
    "(weights from 'geobridge index calibrate'); unbounded, at most the sum of the weights in size: only "
    "differences matter, place a being exp(score_a - score_b) times as likely as place b",
}


def score_meaning(fusion: str) -> str:
    """What ``Match.score`` is under ``fusion`` (one of ``FUSIONS``) and its range, as a sentence."""
    if fusion not in SCORE_MEANINGS:
        raise ValueError(f"unknown fusion {fusion!r}; expected one of {', '.join(FUSIONS)}")
    return f"{fusion} fusion: each match's score is {SCORE_MEANINGS[fusion]}."


def fusion_help() -> str:
    """One paragraph naming every fusion and its score, for option help and API docs."""
    modes = "; ".join(f"{name}: {SCORE_MEANINGS[name]}" for name in FUSIONS)
    return f"auto = weighted if the index is calibrated, else score. A match's score under each: {modes}."
