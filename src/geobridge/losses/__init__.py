"""Training objectives. Each loss returns a dict of named ``*_loss`` terms."""

from __future__ import annotations

from geobridge.losses.contrastive import info_nce, match_labels, symmetric_info_nce
from geobridge.losses.geobridge_loss import OBJECTIVES, GeoBridgeLoss

__all__ = ["OBJECTIVES", "GeoBridgeLoss", "info_nce", "match_labels", "symmetric_info_nce"]
