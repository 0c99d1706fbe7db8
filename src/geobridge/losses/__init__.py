"""Training objectives. Each loss returns a dict of named ``*_loss`` terms."""

from __future__ import annotations

from geobridge.losses.contrastive import match_labels, symmetric_info_nce
from geobridge.losses.geobridge_loss import GeoBridgeLoss

__all__ = ["GeoBridgeLoss", "match_labels", "symmetric_info_nce"]
