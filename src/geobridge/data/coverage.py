"""Which places lack a view a command needs: counted, reported on every command, an error under ``strict``.

``index build``, ``train`` and ``eval`` call :func:`check_coverage` on the places they read, with the views they
use. A place without one of them is left out of what needs that view (an index of satellite tiles, a direction, a
loss term); the report says how many and which, so a result is never silently about fewer places than the user
thinks. ``strict=True`` (the commands' ``--strict``) turns a non-empty report into a ``DataError``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from geobridge.errors import DataError

logger = logging.getLogger(__name__)
LISTED = 5  # place ids named per view in a message


@dataclass(frozen=True)
class ViewCoverage:
    """``missing[view]``: the ids of the places (of ``places`` in all) without that view, in their order."""

    places: int
    missing: dict[str, tuple[str, ...]]

    @property
    def ok(self) -> bool:
        return not any(self.missing.values())

    def lines(self) -> list[str]:
        """One sentence per view with missing places, e.g. ``5 of 20 places have no satellite view (p1, p2, ...)``."""
        out = []
        for view, ids in self.missing.items():
            if ids:
                shown = ", ".join(ids[:LISTED]) + (", ..." if len(ids) > LISTED else "")
                out.append(f"{len(ids)} of {self.places} places have no {view} view ({shown})")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"places": self.places, "missing": {view: len(ids) for view, ids in self.missing.items()}}


def view_coverage(places: Sequence[Any], *, views: Sequence[str]) -> ViewCoverage:
    """The places (``geobridge.data.Place`` records) without each of ``views``."""
    missing = {view: tuple(str(p.place_id) for p in places if not p.has_view(view)) for view in views}
    return ViewCoverage(places=len(places), missing=missing)


def check_coverage(places: Sequence[Any], *, views: Sequence[str], strict: bool = False,
                   where: str = "the dataset") -> ViewCoverage:
    """Report (log a warning) the places of ``where`` without one of ``views``; a DataError instead if ``strict``."""
    coverage = view_coverage(places, views=views)
    lines = coverage.lines()
    if lines and strict:
        raise DataError(f"{where}: {'; '.join(lines)} (strict: every place needs every view used)")
    for line in lines:
        logger.warning("%s: %s; they are left out of what needs that view", where, line)
    return coverage
