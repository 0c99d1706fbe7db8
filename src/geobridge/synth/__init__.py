"""``geobridge.synth``: a procedural multi-view world with real cross-view difficulty.

Each place is a 2.5D scene (terrain, buildings, roads, water, trees, an optional landmark) in the style of
one of several countries, rendered as a north-up satellite tile, oblique drone views on an orbit and a
street-level 360° panorama, and described in words. See ``docs/synth.md``.

    from geobridge.synth import WorldConfig, generate_world
    summary = generate_world("runs/world", WorldConfig(places=600, image_size=64, holdout_countries=("NO",)))
"""

from __future__ import annotations

from geobridge.synth.appearance import AppearanceShift, blur, low_resolution, season, time_of_day
from geobridge.synth.countries import COUNTRY_STYLES, CountryStyle, country_codes, get_country
from geobridge.synth.generate import generate_world
from geobridge.synth.preview import write_preview
from geobridge.synth.render import DroneCamera, Lighting, light_scene, render_drone, render_satellite, render_street
from geobridge.synth.scene import Building, Landmark, Material, Roads, Scene, Water, build_scene
from geobridge.synth.text import describe
from geobridge.synth.writer import (
    PlaceSpec,
    PlaceViews,
    WorldConfig,
    WorldSummary,
    plan_places,
    render_place,
)

__all__ = [
    "COUNTRY_STYLES",
    "AppearanceShift",
    "Building",
    "CountryStyle",
    "DroneCamera",
    "Landmark",
    "Lighting",
    "Material",
    "PlaceSpec",
    "PlaceViews",
    "Roads",
    "Scene",
    "Water",
    "WorldConfig",
    "WorldSummary",
    "blur",
    "build_scene",
    "country_codes",
    "describe",
    "generate_world",
    "get_country",
    "light_scene",
    "low_resolution",
    "plan_places",
    "render_drone",
    "render_place",
    "render_satellite",
    "render_street",
    "season",
    "time_of_day",
    "write_preview",
]
