"""What a search returns: scores, ids and the hits' metadata records, read from the index when first asked."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SearchResult:
    """The answer of ``GeoIndex.search``: ``scores`` (Q, k) float32 cosine similarities, best first, and ``ids``
    (Q, k) int64 vector ids; rows with fewer than k hits are padded with id -1 and score -inf.

    Metadata records are built only when asked for (``metadata(q)``, ``records``), so a large batch of searches
    that only needs ids and scores costs no Python work per hit.
    """

    scores: np.ndarray  # (Q, k) float32
    ids: np.ndarray  # (Q, k) int64
    lookup: Mapping[int, Mapping[str, Any]]  # vector id -> metadata record, for every hit (a snapshot)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def metadata(self, q: int) -> list[dict[str, Any]]:
        """The metadata records of query ``q``'s hits, best first (copies with ``id`` and ``score`` added)."""
        return [
            {**self.lookup[i], "id": i, "score": s}
            for i, s in zip(self.ids[q].tolist(), self.scores[q].tolist(), strict=True)
            if i >= 0
        ]

    @property
    def records(self) -> tuple[tuple[dict[str, Any], ...], ...]:
        """Every query's ``metadata``, as nested tuples."""
        return tuple(tuple(self.metadata(q)) for q in range(len(self)))


class HitRecords(Mapping[int, Mapping[str, Any]]):
    """Vector id -> metadata record for the hits of one search, read from the index's records when first asked.

    ``freeze`` copies the hits' records out of the index (``GeoIndex`` calls it before any add or remove), so the
    mapping keeps answering as it would have at search time.
    """

    def __init__(self, records: Mapping[int, Mapping[str, Any]], ids: np.ndarray) -> None:
        self._records: Mapping[int, Mapping[str, Any]] = records
        self._ids = ids.copy()  # (Q, k) the hits, padded with -1; np.unique'd on first membership test
        self._hits: np.ndarray | None = None
        self._frozen = False

    def hits(self) -> np.ndarray:
        """(H,) sorted distinct ids of the hits."""
        if self._hits is None:
            self._hits = np.unique(self._ids[self._ids >= 0])
        return self._hits

    def freeze(self) -> None:
        if not self._frozen:
            self._records = {i: self._records[i] for i in self.hits().tolist()}
            self._frozen = True

    def __getitem__(self, vector_id: int) -> Mapping[str, Any]:
        if vector_id not in self:
            raise KeyError(vector_id)
        return self._records[vector_id]

    def __contains__(self, vector_id: object) -> bool:
        if not isinstance(vector_id, (int, np.integer)):
            return False
        hits = self.hits()
        at = int(np.searchsorted(hits, vector_id))
        return at < hits.size and int(hits[at]) == int(vector_id)

    def __iter__(self) -> Iterator[int]:
        return iter(self.hits().tolist())

    def __len__(self) -> int:
        return int(self.hits().size)
