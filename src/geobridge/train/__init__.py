"""Training: config loading, the trainer (single process or DDP) and safe checkpoints.

Uses the library only through its public API (models, losses, data, eval).
"""

from __future__ import annotations

from geobridge.train.config import TrainConfig, load_config, to_yaml, validate_config
from geobridge.train.trainer import Trainer, train

__all__ = ["TrainConfig", "Trainer", "load_config", "to_yaml", "train", "validate_config"]
