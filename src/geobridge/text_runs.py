"""Descriptions as sentences, and sentences packed into runs that fit a token budget.

Pure Python, no torch: the text towers (``models/``) and the ONNX runtime (``export/``) split texts the same way.
A sentence ends at . ! ? or ; followed by white space.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def sentences(text: str) -> list[str]:
    """The sentences of ``text``, in order; a text without sentence punctuation (or an empty one) is one sentence."""
    return [p.strip() for p in _SENTENCE_END.split(text) if p.strip()] or [text]


def split_sentences(texts: list[str]) -> tuple[list[str], list[int]]:
    """The sentences of every text, in order, and the index of the text each belongs to."""
    pieces: list[str] = []
    owner: list[int] = []
    for i, text in enumerate(texts):
        parts = sentences(text)
        pieces.extend(parts)
        owner.extend([i] * len(parts))
    return pieces, owner


def pack_runs(texts: list[str], *, count: Callable[[str], int], limit: int) -> tuple[list[str], list[int]]:
    """Runs of whole sentences of at most ``limit`` tokens, in order, and the index of each run's text.

    ``count(text)`` is a text's token count, additive over words (CLIP's BPE merges within a word only). A text
    within ``limit`` is one run of its own, unchanged; a sentence longer than ``limit`` is a run of its own (the
    tokenizer truncates it).
    """
    runs: list[str] = []
    owner: list[int] = []
    for i, text in enumerate(texts):
        if count(text) <= limit:
            runs.append(text)
            owner.append(i)
            continue
        current: list[str] = []
        used = 0
        for sentence in sentences(text):
            tokens = count(sentence)
            if current and used + tokens > limit:
                runs.append(" ".join(current))
                owner.append(i)
                current, used = [], 0
            current.append(sentence)
            used += tokens
        runs.append(" ".join(current))
        owner.append(i)
    return runs, owner
