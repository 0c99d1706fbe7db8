"""The grid of a synthetic place and the semantic objects on it.

The grid has ``GRID_CELLS`` x ``GRID_CELLS`` cells of ``CELL_M`` metres (300 m across); the satellite tile shows
the central ``SAT_CELLS`` cells (200 m), the drone and street views see the whole grid and a flat far field
beyond it. Row 0 is the northern edge and column 0 the western edge; world coordinates are metres east (``x``)
and north (``y``) of the place's centre. A ``Scene`` holds the objects (buildings, roads, water, trees, a
landmark) and the raster maps painted from them (``geobridge.synth.scene.build_scene``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

GRID_CELLS = 192
CELL_M = 1.5625
SAT_CELLS = 128
HALF_M = GRID_CELLS * CELL_M / 2  # 150 m: half the grid's side
SAT_HALF_M = SAT_CELLS * CELL_M / 2  # 100 m: half the satellite tile's side
WATER_LEVEL_M = -0.8

ZONE_PARK, ZONE_HEDGE, ZONE_CLEARING = 1, 2, 3

LANDMARK_KINDS: tuple[str, ...] = ("tower", "stadium", "church", "bridge", "roundabout")


class Material(IntEnum):
    """What covers a grid cell."""

    GROUND = 0
    GRASS = 1
    ROAD = 2
    WATER = 3
    SAND = 4
    FIELD = 5
    BUILDING = 6
    TREE = 7
    LANDMARK = 8
    BRIDGE = 9
    PAVEMENT = 10
    POOL = 11


@dataclass
class Building:
    """A rectangular building; ``angle`` is the bearing of its long axis in degrees (0 = north)."""

    x: float
    y: float
    length: float
    width: float
    angle: float
    height: float  # wall height above the ground in metres
    roof: str  # colour name from ROOF_COLOURS
    roof_rgb: tuple[float, float, float]  # 0..1
    facade_rgb: tuple[float, float, float]  # 0..1
    gabled: bool

    @property
    def area(self) -> float:
        return self.length * self.width


@dataclass
class Landmark:
    """The place's landmark: a tower, stadium, church, bridge or roundabout in a named colour."""

    kind: str
    colour: str  # name from LANDMARK_COLOURS
    x: float
    y: float
    height: float  # metres above the ground (0 for a flat roundabout island)
    radius: float  # metres, half of its largest extent


@dataclass
class Water:
    """A river, lake or sea coast. ``bearing`` is the river's axis, the lake's or the sea's direction."""

    kind: str  # "river", "lake" or "coast"
    bearing: float  # degrees, 0 = north
    x: float  # a representative point of the water body (river: nearest to the centre; lake: its centre)
    y: float
    width: float  # river width, lake radius or beach width in metres
    winding: bool = False  # a river that meanders strongly


@dataclass
class Roads:
    """The road network: a street grid, a single road, a crossing, or none."""

    pattern: str  # "grid", "parallel", "single", "crossing" or "none"
    bearing: float  # degrees of the main road direction (0 = north), in [0, 180)
    spacing: float  # metres between parallel streets (0 if not a grid)
    width: float
    curvy: bool
    paved: bool


@dataclass
class Scene:
    """One place: semantic objects plus per-cell raster maps.

    A place's rasters are ``(GRID_CELLS, GRID_CELLS)`` centred on the place; a region's composed scene
    (``geobridge.synth.region``) has rasters of any ``(rows, cols)``, with ``origin`` its north-west corner.
    """

    country: str
    terrain: str
    height: np.ndarray  # (N, N) float32: surface height in metres (ground, roofs, tree crowns)
    ground: np.ndarray  # (N, N) float32: bare terrain height under everything
    material: np.ndarray  # (N, N) uint8: Material codes
    albedo: np.ndarray  # (N, N, 3) float32 in 0..1: colour of the top surface
    wall: np.ndarray  # (N, N, 3) float32 in 0..1: colour of vertical faces (facades, crowns, banks)
    buildings: list[Building]
    roads: Roads
    landmark: Landmark | None
    water: Water | None
    trees: np.ndarray  # (T, 3) float32: x, y, crown radius of every tree
    roof_palette: dict[str, float]  # roof colour name -> share of the place's buildings
    field_colours: list[str]
    pools: int
    sun_azimuth: float  # bearing the light comes from, degrees
    sun_elevation: float  # degrees above the horizon
    street_xy: tuple[float, float]  # where the street panorama is taken (on a road near the centre)
    far_rgb: tuple[float, float, float]  # colour of the ground beyond the grid
    cell_m: float = CELL_M
    origin: tuple[float, float] = (-HALF_M, HALF_M)  # world (x east, y north) of the grid's north-west corner
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.height.shape[0])



def cell_centres() -> np.ndarray:
    """Coordinates (metres) of cell centres along one axis, west->east (also south->north reversed)."""
    return ((np.arange(GRID_CELLS) + 0.5) * CELL_M - HALF_M).astype(np.float32)


def bearing_of(x: float, y: float) -> float:
    """Compass bearing (degrees, 0 = north, 90 = east) of the vector (x east, y north)."""
    return math.degrees(math.atan2(x, y)) % 360.0
