"""Country styles of the synthetic world: where a country lies and what its places look like.

A style holds everything that makes a country's places recognisable as a *domain*: roof and facade palettes,
ground and vegetation colours, building density and height, the street grid's orientation and regularity,
tree amount and shape, and the mix of terrain classes. The world's logic (how a town, a river or a landmark is
built) is shared by every country, so a model trained on some countries can be tested on held-out ones.

Bounding boxes are ``(lat_min, lat_max, lon_min, lon_max)`` in WGS84 degrees, chosen to lie inside the real
country (they are not the country's full extent).
"""

from __future__ import annotations

from dataclasses import dataclass

from geobridge.errors import GeoBridgeError

RGB = tuple[int, int, int]

TERRAINS: tuple[str, ...] = ("urban", "suburban", "rural", "coastal", "forest")

# Named roof colours: the names appear in text descriptions, so they must read naturally and look distinct.
ROOF_COLOURS: dict[str, RGB] = {
    "red": (170, 48, 40),
    "terracotta": (196, 104, 64),
    "orange": (226, 140, 50),
    "brown": (108, 74, 50),
    "beige": (212, 194, 156),
    "white": (238, 238, 232),
    "light grey": (176, 178, 178),
    "grey": (124, 126, 130),
    "dark grey": (70, 72, 80),
    "black": (34, 34, 38),
    "blue": (50, 86, 164),
    "teal": (38, 128, 128),
    "green": (64, 124, 62),
    "yellow": (226, 196, 62),
    "pink": (224, 140, 162),
}

# Named landmark colours: vivid, so that a landmark is a strong cue in every view.
LANDMARK_COLOURS: dict[str, RGB] = {
    "red": (204, 38, 38),
    "white": (246, 246, 240),
    "gold": (222, 172, 36),
    "blue": (36, 78, 206),
    "green": (36, 156, 70),
    "black": (28, 28, 30),
    "orange": (244, 118, 28),
    "purple": (132, 58, 176),
    "turquoise": (36, 194, 190),
    "pink": (238, 104, 172),
}

# Crop colours of fields in rural places (names are used in descriptions).
FIELD_COLOURS: dict[str, RGB] = {
    "green": (104, 148, 62),
    "pale green": (146, 170, 92),
    "yellow": (214, 190, 70),
    "golden": (192, 164, 96),
    "brown": (136, 106, 76),
    "purple": (128, 106, 158),
    "dark green": (64, 112, 58),
}


@dataclass(frozen=True)
class CountryStyle:
    """How places of one country look. All colours are sRGB 0..255."""

    code: str
    name: str
    bbox: tuple[float, float, float, float]  # (lat_min, lat_max, lon_min, lon_max)
    terrain_mix: tuple[tuple[str, float], ...]
    roof_colours: tuple[tuple[str, float], ...]  # names from ROOF_COLOURS with weights
    wall_tint: RGB  # facades are the roof colour blended with this tint
    wall_mix: float  # 0 = facade has the roof's colour, 1 = facade is the tint
    ground: RGB  # bare soil / dust
    grass: RGB
    vegetation: RGB  # tree crowns
    water: RGB
    road: RGB
    sand: RGB
    fields: tuple[str, ...]  # names from FIELD_COLOURS
    density: float  # probability that a lot in a built block holds a building
    urban_height: tuple[float, float]  # (min, max) metres of urban buildings
    house_height: tuple[float, float]  # (min, max) wall height of houses
    pitched: float  # probability that a small building has a gabled roof
    lot_m: float  # typical lot frontage in metres
    block_m: tuple[float, float]  # (min, max) street spacing in metres
    road_width_m: float
    grid_angle: float | None  # bearing of the street grid in degrees; None = random per place
    wobble_m: float  # irregularity of streets (amplitude of their meander)
    tree_density: float  # 0..1, scales tree cover everywhere
    tree_shape: str  # "round", "cone" (conifers) or "palm"
    pools: float  # probability that a suburban house has a swimming pool
    dirt_roads: float  # probability that roads of a rural place are unpaved


COUNTRY_STYLES: tuple[CountryStyle, ...] = (
    CountryStyle(
        code="NO",
        name="Norway",
        bbox=(59.8, 62.5, 7.0, 10.0),
        terrain_mix=(("coastal", 0.35), ("forest", 0.25), ("rural", 0.15), ("suburban", 0.18), ("urban", 0.07)),
        roof_colours=(("dark grey", 0.3), ("black", 0.2), ("red", 0.2), ("green", 0.1), ("brown", 0.1), ("grey", 0.1)),
        wall_tint=(236, 232, 222),
        wall_mix=0.35,
        ground=(98, 96, 86),
        grass=(84, 112, 66),
        vegetation=(34, 66, 42),
        water=(28, 58, 82),
        road=(92, 94, 98),
        sand=(150, 146, 128),
        fields=("green", "pale green", "dark green"),
        density=0.55,
        urban_height=(8.0, 18.0),
        house_height=(4.5, 7.5),
        pitched=0.9,
        lot_m=16.0,
        block_m=(55.0, 90.0),
        road_width_m=7.0,
        grid_angle=None,
        wobble_m=6.0,
        tree_density=0.65,
        tree_shape="cone",
        pools=0.0,
        dirt_roads=0.3,
    ),
    CountryStyle(
        code="EG",
        name="Egypt",
        bbox=(24.0, 30.5, 28.5, 32.3),
        terrain_mix=(("urban", 0.45), ("rural", 0.25), ("suburban", 0.15), ("coastal", 0.15)),
        roof_colours=(
            ("beige", 0.3),
            ("light grey", 0.25),
            ("white", 0.15),
            ("grey", 0.15),
            ("brown", 0.1),
            ("terracotta", 0.05),
        ),
        wall_tint=(218, 196, 158),
        wall_mix=0.5,
        ground=(206, 182, 136),
        grass=(118, 140, 70),
        vegetation=(58, 98, 44),
        water=(44, 94, 112),
        road=(122, 116, 106),
        sand=(222, 200, 150),
        fields=("green", "dark green", "pale green", "golden"),
        density=0.9,
        urban_height=(10.0, 30.0),
        house_height=(6.0, 12.0),
        pitched=0.02,
        lot_m=14.0,
        block_m=(40.0, 70.0),
        road_width_m=8.0,
        grid_angle=None,
        wobble_m=4.0,
        tree_density=0.15,
        tree_shape="palm",
        pools=0.02,
        dirt_roads=0.4,
    ),
    CountryStyle(
        code="JP",
        name="Japan",
        bbox=(35.3, 36.5, 137.2, 139.5),
        terrain_mix=(("urban", 0.4), ("suburban", 0.3), ("rural", 0.1), ("coastal", 0.1), ("forest", 0.1)),
        roof_colours=(
            ("dark grey", 0.3),
            ("blue", 0.2),
            ("grey", 0.2),
            ("light grey", 0.1),
            ("white", 0.1),
            ("brown", 0.1),
        ),
        wall_tint=(232, 232, 228),
        wall_mix=0.55,
        ground=(132, 130, 120),
        grass=(92, 130, 70),
        vegetation=(42, 94, 50),
        water=(44, 84, 106),
        road=(100, 100, 106),
        sand=(186, 176, 150),
        fields=("pale green", "green", "dark green"),
        density=0.95,
        urban_height=(8.0, 40.0),
        house_height=(5.0, 8.0),
        pitched=0.5,
        lot_m=11.0,
        block_m=(35.0, 60.0),
        road_width_m=6.0,
        grid_angle=None,
        wobble_m=3.0,
        tree_density=0.3,
        tree_shape="round",
        pools=0.0,
        dirt_roads=0.0,
    ),
    CountryStyle(
        code="BR",
        name="Brazil",
        bbox=(-22.0, -6.0, -54.0, -42.0),
        terrain_mix=(("urban", 0.35), ("suburban", 0.3), ("rural", 0.15), ("coastal", 0.1), ("forest", 0.1)),
        roof_colours=(
            ("terracotta", 0.35),
            ("orange", 0.15),
            ("grey", 0.2),
            ("light grey", 0.1),
            ("blue", 0.1),
            ("white", 0.1),
        ),
        wall_tint=(244, 222, 180),
        wall_mix=0.35,
        ground=(166, 108, 78),
        grass=(92, 140, 58),
        vegetation=(32, 104, 40),
        water=(82, 92, 62),
        road=(90, 90, 94),
        sand=(224, 206, 160),
        fields=("green", "pale green", "brown", "dark green"),
        density=0.9,
        urban_height=(8.0, 35.0),
        house_height=(3.5, 6.5),
        pitched=0.35,
        lot_m=12.0,
        block_m=(40.0, 90.0),
        road_width_m=7.0,
        grid_angle=None,
        wobble_m=5.0,
        tree_density=0.45,
        tree_shape="round",
        pools=0.08,
        dirt_roads=0.5,
    ),
    CountryStyle(
        code="DE",
        name="Germany",
        bbox=(48.5, 53.0, 8.0, 13.0),
        terrain_mix=(("suburban", 0.35), ("rural", 0.25), ("urban", 0.2), ("forest", 0.15), ("coastal", 0.05)),
        roof_colours=(("red", 0.35), ("dark grey", 0.25), ("brown", 0.15), ("terracotta", 0.15), ("black", 0.1)),
        wall_tint=(240, 234, 220),
        wall_mix=0.55,
        ground=(116, 110, 94),
        grass=(98, 134, 68),
        vegetation=(48, 94, 50),
        water=(52, 84, 96),
        road=(84, 86, 92),
        sand=(196, 186, 156),
        fields=("golden", "green", "yellow", "brown"),
        density=0.75,
        urban_height=(12.0, 25.0),
        house_height=(5.5, 8.5),
        pitched=0.85,
        lot_m=15.0,
        block_m=(50.0, 90.0),
        road_width_m=7.0,
        grid_angle=None,
        wobble_m=6.0,
        tree_density=0.45,
        tree_shape="round",
        pools=0.02,
        dirt_roads=0.1,
    ),
    CountryStyle(
        code="IN",
        name="India",
        bbox=(18.0, 26.5, 74.0, 83.0),
        terrain_mix=(("urban", 0.45), ("suburban", 0.2), ("rural", 0.25), ("coastal", 0.05), ("forest", 0.05)),
        roof_colours=(
            ("grey", 0.25),
            ("light grey", 0.15),
            ("pink", 0.15),
            ("yellow", 0.1),
            ("blue", 0.1),
            ("terracotta", 0.15),
            ("white", 0.1),
        ),
        wall_tint=(226, 202, 162),
        wall_mix=0.3,
        ground=(176, 150, 114),
        grass=(128, 138, 78),
        vegetation=(58, 98, 48),
        water=(84, 104, 90),
        road=(106, 100, 94),
        sand=(204, 184, 142),
        fields=("green", "golden", "brown", "pale green"),
        density=0.95,
        urban_height=(8.0, 22.0),
        house_height=(5.0, 10.0),
        pitched=0.05,
        lot_m=10.0,
        block_m=(35.0, 70.0),
        road_width_m=7.0,
        grid_angle=None,
        wobble_m=7.0,
        tree_density=0.3,
        tree_shape="round",
        pools=0.0,
        dirt_roads=0.5,
    ),
    CountryStyle(
        code="US",
        name="United States",
        bbox=(33.0, 41.0, -104.0, -84.0),
        terrain_mix=(("suburban", 0.45), ("urban", 0.2), ("rural", 0.25), ("forest", 0.05), ("coastal", 0.05)),
        roof_colours=(
            ("grey", 0.3),
            ("dark grey", 0.2),
            ("brown", 0.2),
            ("black", 0.1),
            ("light grey", 0.1),
            ("white", 0.1),
        ),
        wall_tint=(228, 222, 210),
        wall_mix=0.45,
        ground=(150, 140, 110),
        grass=(114, 146, 74),
        vegetation=(54, 100, 50),
        water=(48, 84, 110),
        road=(74, 76, 82),
        sand=(210, 196, 160),
        fields=("golden", "green", "brown", "pale green"),
        density=0.8,
        urban_height=(15.0, 60.0),
        house_height=(4.5, 7.0),
        pitched=0.7,
        lot_m=20.0,
        block_m=(70.0, 120.0),
        road_width_m=10.0,
        grid_angle=0.0,
        wobble_m=0.0,
        tree_density=0.35,
        tree_shape="round",
        pools=0.15,
        dirt_roads=0.2,
    ),
    CountryStyle(
        code="KE",
        name="Kenya",
        bbox=(-1.5, 1.0, 35.5, 38.5),
        terrain_mix=(("rural", 0.35), ("suburban", 0.25), ("urban", 0.2), ("forest", 0.1), ("coastal", 0.1)),
        roof_colours=(
            ("light grey", 0.3),
            ("red", 0.15),
            ("blue", 0.15),
            ("brown", 0.15),
            ("green", 0.1),
            ("grey", 0.15),
        ),
        wall_tint=(204, 172, 140),
        wall_mix=0.4,
        ground=(162, 96, 62),
        grass=(128, 134, 70),
        vegetation=(66, 104, 50),
        water=(88, 104, 88),
        road=(88, 88, 90),
        sand=(200, 170, 130),
        fields=("green", "brown", "pale green", "golden"),
        density=0.7,
        urban_height=(6.0, 20.0),
        house_height=(3.0, 5.0),
        pitched=0.4,
        lot_m=12.0,
        block_m=(40.0, 80.0),
        road_width_m=6.0,
        grid_angle=None,
        wobble_m=8.0,
        tree_density=0.3,
        tree_shape="round",
        pools=0.0,
        dirt_roads=0.7,
    ),
    CountryStyle(
        code="AU",
        name="Australia",
        bbox=(-33.5, -24.0, 139.0, 149.5),
        terrain_mix=(("suburban", 0.45), ("rural", 0.25), ("urban", 0.15), ("coastal", 0.1), ("forest", 0.05)),
        roof_colours=(
            ("terracotta", 0.3),
            ("dark grey", 0.2),
            ("white", 0.15),
            ("light grey", 0.15),
            ("green", 0.1),
            ("blue", 0.1),
        ),
        wall_tint=(236, 226, 206),
        wall_mix=0.4,
        ground=(186, 150, 100),
        grass=(148, 150, 86),
        vegetation=(92, 110, 70),
        water=(58, 110, 132),
        road=(70, 72, 76),
        sand=(228, 208, 160),
        fields=("golden", "brown", "pale green", "yellow"),
        density=0.7,
        urban_height=(12.0, 45.0),
        house_height=(3.5, 5.5),
        pitched=0.6,
        lot_m=22.0,
        block_m=(70.0, 120.0),
        road_width_m=10.0,
        grid_angle=None,
        wobble_m=2.0,
        tree_density=0.25,
        tree_shape="round",
        pools=0.3,
        dirt_roads=0.4,
    ),
    CountryStyle(
        code="FR",
        name="France",
        bbox=(44.0, 49.0, 0.0, 5.5),
        terrain_mix=(("rural", 0.3), ("suburban", 0.3), ("urban", 0.2), ("forest", 0.1), ("coastal", 0.1)),
        roof_colours=(("dark grey", 0.3), ("terracotta", 0.3), ("red", 0.15), ("brown", 0.15), ("grey", 0.1)),
        wall_tint=(232, 222, 196),
        wall_mix=0.55,
        ground=(130, 120, 96),
        grass=(104, 134, 70),
        vegetation=(50, 94, 50),
        water=(54, 90, 94),
        road=(90, 90, 96),
        sand=(210, 196, 160),
        fields=("yellow", "golden", "green", "purple"),
        density=0.8,
        urban_height=(12.0, 22.0),
        house_height=(5.5, 8.5),
        pitched=0.8,
        lot_m=14.0,
        block_m=(45.0, 80.0),
        road_width_m=7.0,
        grid_angle=None,
        wobble_m=7.0,
        tree_density=0.4,
        tree_shape="round",
        pools=0.06,
        dirt_roads=0.15,
    ),
)


def country_codes() -> tuple[str, ...]:
    """ISO 3166-1 alpha-2 codes of all styled countries, in table order."""
    return tuple(style.code for style in COUNTRY_STYLES)


def get_country(code: str) -> CountryStyle:
    """The style of the country with ISO code ``code`` (case-insensitive); unknown codes raise GeoBridgeError."""
    for style in COUNTRY_STYLES:
        if style.code == code.upper():
            return style
    raise GeoBridgeError(f"unknown country code {code!r}; expected one of {', '.join(country_codes())}")


def country_record(style: CountryStyle) -> dict[str, object]:
    """The manifest entry of a country: ``{"code", "name", "bbox"}``."""
    return {"code": style.code, "name": style.name, "bbox": list(style.bbox)}
