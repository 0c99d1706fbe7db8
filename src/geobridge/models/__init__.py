"""GeoBridge models: the multi-view image tower, the text tower and the model that joins them."""

from __future__ import annotations

from geobridge.models.config import GeoBridgeConfig, ImageTowerConfig, TextTowerConfig, get_model_config, list_models
from geobridge.models.geobridge import GeoBridge

__all__ = ["GeoBridge", "GeoBridgeConfig", "ImageTowerConfig", "TextTowerConfig", "get_model_config", "list_models"]
