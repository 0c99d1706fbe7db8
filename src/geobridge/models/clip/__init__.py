"""CLIP towers from local weights (the GeoBridge paper's model): ``transformers`` or open_clip runs them."""

from geobridge.models.clip.towers import ClipImageTower, ClipParts, ClipTextTower, clip_parts

__all__ = ["ClipImageTower", "ClipParts", "ClipTextTower", "clip_parts"]
