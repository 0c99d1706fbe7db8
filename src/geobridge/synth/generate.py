"""``generate_world``: one entry point for every layout the generator writes (GeoLoc and the benchmark layouts)."""

from __future__ import annotations

import logging
import os

from geobridge.synth.layouts import generate_layout
from geobridge.synth.writer import WorldConfig, WorldSummary, start_world, write_geoloc_world

logger = logging.getLogger(__name__)


def generate_world(out_dir: str | os.PathLike[str], config: WorldConfig, *,
                   show_progress_bar: bool | None = None) -> WorldSummary:
    """Write a synthetic world in ``config.format`` to ``out_dir``; returns what was written.

    ``out_dir`` must be new, empty, or a previous world written by this generator (which is then replaced).
    The completion marker is written last, so an interrupted run is recognisable.
    """
    root, config = start_world(out_dir, config)
    if show_progress_bar is None:
        show_progress_bar = logger.getEffectiveLevel() <= logging.INFO
    if config.format == "geoloc":
        return write_geoloc_world(root, config, show_progress_bar=show_progress_bar)
    return generate_layout(root, config, show_progress_bar=show_progress_bar)
