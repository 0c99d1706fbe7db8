"""Training objectives. Each loss returns a dict of named ``*_loss`` terms."""

from __future__ import annotations

from geobridge.losses.config import LOSS_RULES, OBJECTIVES, LossConfig
from geobridge.losses.contrastive import info_nce, match_labels, symmetric_info_nce
from geobridge.losses.geobridge_loss import GeoBridgeLoss

__all__ = ["LOSS_RULES", "OBJECTIVES", "GeoBridgeLoss", "LossConfig", "info_nce", "match_labels", "symmetric_info_nce"]
