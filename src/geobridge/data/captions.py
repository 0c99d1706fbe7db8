"""Caption augmentation: a description with some of its sentences dropped and the rest reordered.

A place's descriptions list facts in independent sentences (terrain, buildings, landmark, water, roads, trees),
so any non-empty subset in any order still describes the place, with fewer cues. Training on such subsets
keeps the text head from keying on one sentence or on the template's order, and mimics the partial
descriptions users type.
"""

from __future__ import annotations

import re

import numpy as np

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (split after ``.``, ``!`` or ``?``), stripped; [] for blank text."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def augment_caption(text: str, rng: np.random.Generator, *, keep: float = 0.7) -> str:
    """Keep each sentence with probability ``keep`` (at least one), in a random order."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    parts = sentences(text)
    if len(parts) <= 1:
        return text
    kept = [p for p in parts if rng.random() < keep]
    if not kept:
        kept = [parts[int(rng.integers(len(parts)))]]
    order = rng.permutation(len(kept))
    return " ".join(kept[int(i)] for i in order)
