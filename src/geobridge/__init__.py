"""GeoBridge: cross-view geo-localisation with semantic anchors.

``import geobridge`` stays light: torch, timm, faiss and FastAPI load only when the
objects that need them are first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from geobridge.version import __version__
from geobridge.views import IMAGE_VIEWS, VIEWS, direction_key

__all__ = ["IMAGE_VIEWS", "VIEWS", "GeoBridge", "GeoIndex", "__version__", "direction_key"]

if TYPE_CHECKING:  # pragma: no cover
    from geobridge.index import GeoIndex
    from geobridge.models import GeoBridge


def __getattr__(name: str) -> Any:
    # Lazy exports keep the import cheap (PEP 562).
    if name == "GeoBridge":
        from geobridge.models import GeoBridge

        return GeoBridge
    if name == "GeoIndex":
        from geobridge.index import GeoIndex

        return GeoIndex
    raise AttributeError(f"module 'geobridge' has no attribute {name!r}")
