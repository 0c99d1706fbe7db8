"""The tokeniser of the hashing text tower: words and word bigrams hashed into a vocabulary (no torch import).

Shared by ``models.text_tower.HashingEncoder`` and the ONNX runtime (``export.onnx_runtime``), so both see the
same ids.
"""

from __future__ import annotations

import re
import zlib

_WORD = re.compile(r"[a-z0-9]+")


def hash_text(text: str, *, vocab_size: int) -> list[int]:
    """The ids of ``text``'s lower-cased words and word bigrams (``<empty>`` for a text without words)."""
    words = _WORD.findall(text.lower()) or ["<empty>"]
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    return [zlib.crc32(g.encode()) % vocab_size for g in grams]
