"""Text descriptions of a place, generated from its scene's semantics.

Descriptions name what a person would see from above or from the street: the terrain, how many buildings
and how tall, the dominant roof colours, the landmark (kind, colour, where it stands), water (river course,
lake, sea side), the street pattern and its orientation, trees, fields and pools. Phrasing, templates and
clause order vary between descriptions. They never contain a place id, coordinates or the country's name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geobridge.synth.grid import SAT_HALF_M, Material, Scene, bearing_of

COMPASS: tuple[str, ...] = ("north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west")


def compass(bearing: float) -> str:
    """The 8-point compass name of a bearing in degrees (0 = north, 90 = east)."""
    return COMPASS[int(((bearing % 360.0) + 22.5) // 45.0) % 8]


def axis_name(bearing: float) -> str:
    """Name of an undirected axis, e.g. 0 -> 'north-south', 45 -> 'north-east to south-west'."""
    k = int(((bearing % 180.0) + 22.5) // 45.0) % 4
    return ("north-south", "north-east to south-west", "east-west", "north-west to south-east")[k]


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


@dataclass
class SceneFacts:
    """What the descriptions are made of, measured inside the satellite footprint."""

    terrain: str
    buildings: int
    roof_colours: list[str]  # dominant first (by roof area)
    roof_shares: list[float]
    mean_height: float
    pitched_share: float
    tree_cover: float
    water_cover: float
    field_colours: list[str]
    pools: int

    @classmethod
    def from_scene(cls, scene: Scene) -> SceneFacts:
        inside = [b for b in scene.buildings if abs(b.x) < SAT_HALF_M and abs(b.y) < SAT_HALF_M]
        area: dict[str, float] = {}
        for b in inside:
            area[b.roof] = area.get(b.roof, 0.0) + b.area
        total = sum(area.values())
        order = sorted(area, key=lambda name: -area[name])
        weights = [b.area for b in inside]
        c = (scene.size - int(2 * SAT_HALF_M / scene.cell_m)) // 2
        mat = scene.material[c : scene.size - c, c : scene.size - c]
        return cls(
            terrain=scene.terrain,
            buildings=len(inside),
            roof_colours=order,
            roof_shares=[area[name] / total for name in order] if total else [],
            mean_height=float(np.average([b.height for b in inside], weights=weights)) if inside else 0.0,
            pitched_share=float(np.average([b.gabled for b in inside], weights=weights)) if inside else 0.0,
            tree_cover=float((mat == Material.TREE).mean()),
            water_cover=float((mat == Material.WATER).mean()),
            field_colours=list(scene.field_colours),
            pools=scene.pools,
        )


# --------------------------------------------------------------------------------------------- clauses


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _count_phrase(n: int, rng: np.random.Generator) -> str:
    if n == 0:
        return _pick(rng, ["no buildings at all", "not a single building"])
    if n <= 4:
        return _pick(rng, ["a handful of buildings", "only a few buildings", "a couple of isolated buildings"])
    if n <= 15:
        return _pick(rng, ["a small cluster of buildings", "about a dozen buildings", "a dozen or so buildings"])
    if n <= 40:
        return _pick(
            rng, ["a few dozen buildings", "some thirty buildings", "a neighbourhood of a few dozen buildings"]
        )
    if n <= 80:
        return _pick(rng, ["many buildings", "dozens of buildings", "around sixty buildings"])
    return _pick(
        rng,
        [
            "a dense mass of buildings",
            "closely packed buildings, well over eighty",
            "hundreds of tightly packed buildings",
        ],
    )


def _height_word(facts: SceneFacts, rng: np.random.Generator) -> str:
    h = facts.mean_height
    if h < 7.5:
        return _pick(rng, ["low", "one- and two-storey", "small low-rise"])
    if h < 15:
        return _pick(rng, ["mid-rise", "three- to four-storey", "medium-height"])
    if h < 30:
        return _pick(rng, ["tall", "multi-storey", "high"])
    return _pick(rng, ["high-rise", "towering", "skyscraper-like"])


def _roof_phrase(facts: SceneFacts, rng: np.random.Generator) -> str:
    names = facts.roof_colours
    shares = facts.roof_shares
    shape = ""
    if facts.pitched_share > 0.6:
        shape = _pick(rng, ["pitched ", "gabled ", ""])
    elif facts.pitched_share < 0.2:
        shape = _pick(rng, ["flat ", ""])
    if len(names) == 1 or shares[1] < 0.15:
        return _pick(rng, [f"{names[0]} {shape}roofs", f"{shape}roofs that are {names[0]}", f"{names[0]}-roofed"])
    if shares[0] > 0.6:
        return _pick(rng, [f"mostly {names[0]} {shape}roofs with some {names[1]} ones",
                           f"{names[0]} {shape}roofs and a few {names[1]} ones"])
    return _pick(rng, [f"{names[0]} and {names[1]} {shape}roofs", f"roofs in {names[0]} and {names[1]}",
                       f"a mix of {names[0]} and {names[1]} {shape}roofs"])


def _buildings_clause(facts: SceneFacts, rng: np.random.Generator) -> str:
    if facts.buildings == 0:
        return _count_phrase(0, rng)
    count = _count_phrase(facts.buildings, rng)
    height = _height_word(facts, rng)
    roofs = _roof_phrase(facts, rng)
    if roofs.endswith("-roofed"):
        return _pick(rng, [f"{count}, {height} and {roofs}", f"{count}, mostly {height} and {roofs}"])
    return _pick(rng, [f"{count} with {roofs}", f"{count}, {height}, with {roofs}", f"{height} buildings with {roofs}"])


def _where(x: float, y: float, rng: np.random.Generator) -> str:
    if math.hypot(x, y) < 15:
        return _pick(rng, ["at the centre", "in the middle", "right at the centre"])
    d = compass(bearing_of(x, y))
    return _pick(rng, [f"in the {d}", f"{d} of the centre", f"towards the {d}", f"on the {d} side"])


def _landmark_noun(scene: Scene, rng: np.random.Generator) -> str:
    lm = scene.landmark
    assert lm is not None
    c = lm.colour
    return {
        "tower": _pick(rng, [f"a tall {c} tower", f"a {c} tower", f"a slender {c} tower"]),
        "stadium": _pick(rng, [f"a {c} stadium", f"a large oval stadium with {c} stands", f"a {c}-roofed stadium"]),
        "church": _pick(rng, [f"a {c}-roofed church with a spire", f"a church with a {c} roof and spire",
                              f"a {c} church"]),
        "bridge": _pick(rng, [f"a {c} bridge", f"a {c} bridge with tall pylons", f"a {c} arched bridge"]),
        "roundabout": _pick(rng, [f"a roundabout with a {c} monument", f"a {c} roundabout island",
                                  f"a roundabout with a {c} centre"]),
    }[lm.kind]


def _relation_to_water(scene: Scene, rng: np.random.Generator) -> str | None:
    lm, w = scene.landmark, scene.water
    if lm is None or w is None:
        return None
    if lm.kind == "bridge":
        return _pick(rng, ["over the river", "across the river", "spanning the river"])
    if w.kind == "river":
        b = math.radians(w.bearing)
        nx, ny = math.cos(b), -math.sin(b)
        side = (lm.x - w.x) * nx + (lm.y - w.y) * ny
        if abs(side) < 20:
            return _pick(rng, ["beside the river", "on the riverbank"])
        word = compass(bearing_of(nx * np.sign(side), ny * np.sign(side)))
        return f"{word} of the river"
    if w.kind == "lake":
        if math.hypot(lm.x - w.x, lm.y - w.y) < w.width + 20:
            return _pick(rng, ["by the lake", "on the lakeshore"])
        return f"{compass(bearing_of(lm.x - w.x, lm.y - w.y))} of the lake"
    return _pick(rng, ["near the shore", "close to the sea"]) if _sea_distance(scene) < 30 else "inland from the shore"


def _sea_distance(scene: Scene) -> float:
    lm, w = scene.landmark, scene.water
    assert lm is not None and w is not None
    b = math.radians(w.bearing)
    return math.hypot(w.x, w.y) - (lm.x * math.sin(b) + lm.y * math.cos(b))


def _landmark_clause(scene: Scene, rng: np.random.Generator) -> str | None:
    lm = scene.landmark
    if lm is None:
        return None
    noun = _landmark_noun(scene, rng)
    where = _where(lm.x, lm.y, rng)
    rel = _relation_to_water(scene, rng)
    verb = {"tower": "rises", "stadium": "lies", "church": "stands", "bridge": "crosses the water",
            "roundabout": "sits"}[lm.kind]
    forms = [f"{noun} {where}", f"{noun} {verb} {where}", f"{where} {verb.split()[0]} {noun}"]
    if rel is not None:
        forms += [f"{noun} {rel}, {where}", f"{noun} {rel}"]
    return _pick(rng, forms)


def _water_clause(scene: Scene, rng: np.random.Generator) -> str | None:
    w = scene.water
    if w is None:
        return None
    if w.kind == "river":
        course = f"from {compass(w.bearing + 180)} to {compass(w.bearing)}"
        kind = _pick(rng, ["a winding river", "a meandering river", "a river with a bend"]) if w.winding else (
            _pick(
                rng, ["a river", "a straight river", "a broad river"] if w.width > 20 else ["a river", "a narrow river"]
            )
        )
        dist = math.hypot(w.x, w.y)
        place = _pick(rng, ["through the centre", "right through the middle"]) if dist < 25 else (
            f"through the {compass(bearing_of(w.x, w.y))}"
        )
        return _pick(rng, [f"{kind} runs {course} {place}", f"{kind} flows {place}, {course}",
                           f"{kind} {place}"])
    if w.kind == "lake":
        noun = "a pond" if w.width < 26 else _pick(rng, ["a lake", "a small lake", "a round lake"])
        return _pick(rng, [f"{noun} in the {compass(w.bearing)}", f"{noun} to the {compass(w.bearing)}",
                           f"{noun} lies {compass(w.bearing)} of the centre"])
    side = compass(w.bearing)
    return _pick(rng, [f"the sea to the {side}", f"a coastline along the {side} side",
                       f"the shore on the {side}, with a beach", f"open water to the {side}"])


def _roads_clause(scene: Scene, rng: np.random.Generator) -> str:
    r = scene.roads
    if r.pattern == "none":
        return _pick(rng, ["no roads", "no roads at all"])
    if r.pattern in ("grid", "parallel"):
        b = r.bearing % 90
        if min(b, 90 - b) < 12:
            orient = _pick(rng, ["north-south", "compass-aligned"])
        elif abs(b - 45) < 12:
            orient = "diagonal"
        else:
            orient = _pick(rng, ["tilted", "skewed"])
        style = _pick(rng, ["irregular ", "winding ", ""]) if r.curvy else _pick(rng, ["regular ", "straight ", ""])
        if r.pattern == "parallel":
            return _pick(rng, [f"{style}parallel streets running {axis_name(r.bearing)}",
                               f"{style}streets running {axis_name(r.bearing)}"])
        return _pick(rng, [f"{_article(style + orient)} street grid", f"streets on {_article(style + orient)} grid",
                           f"{_article(orient)} grid of {style}streets"])
    road = "road" if r.paved else _pick(rng, ["dirt track", "unpaved road"])
    adj = "winding " if r.curvy else ""
    if r.pattern == "crossing":
        return _pick(rng, [f"two {adj}{road}s crossing", f"a crossroads of {adj}{road}s"])
    return _pick(
        rng, [f"a single {adj}{road} running {axis_name(r.bearing)}", f"one {adj}{road}, {axis_name(r.bearing)}"]
    )


def _trees_clause(facts: SceneFacts, rng: np.random.Generator) -> str:
    t = facts.tree_cover
    if t < 0.03:
        return _pick(rng, ["almost no trees", "hardly any trees", "barely a tree"])
    if t < 0.12:
        return _pick(rng, ["scattered trees", "a few trees", "some trees"])
    if t < 0.4:
        return _pick(rng, ["plenty of trees", "many trees", "leafy gardens and trees"])
    return _pick(rng, ["dense woodland", "thick forest", "trees almost everywhere"])


def _extras_clause(facts: SceneFacts, rng: np.random.Generator) -> str | None:
    parts = []
    if facts.field_colours:
        cols = facts.field_colours[:2]
        joined = " and ".join(cols)
        parts.append(_pick(rng, [f"a patchwork of {joined} fields", f"{joined} fields", f"fields in {joined}"]))
    if facts.pools >= 2:
        parts.append(_pick(rng, ["several swimming pools", "blue backyard pools"]))
    elif facts.pools == 1:
        parts.append("a swimming pool")
    return ", ".join(parts) if parts else None


def _opener(facts: SceneFacts, rng: np.random.Generator) -> str:
    t = facts.terrain
    if t == "urban":
        return _pick(
            rng, ["a dense city district", "an urban neighbourhood", "a city block area", "a busy town centre"]
        )
    if t == "suburban":
        return _pick(rng, ["a suburban neighbourhood", "a residential suburb", "a quiet residential area"])
    if t == "rural":
        return _pick(rng, ["open countryside", "farmland", "a rural landscape"])
    if t == "coastal":
        if facts.buildings > 10:
            return _pick(rng, ["a coastal town", "a seaside town", "a town on the coast"])
        return _pick(rng, ["a stretch of coast", "a coastal area"])
    return _pick(rng, ["a wooded area", "a forest", "woodland"])


# --------------------------------------------------------------------------------------------- descriptions


def describe(scene: Scene, rng: np.random.Generator, *, count: int = 3) -> list[str]:
    """``count`` distinct descriptions of ``scene``; the first is the most complete."""
    facts = SceneFacts.from_scene(scene)
    texts: list[str] = []
    attempts = 0
    while len(texts) < count and attempts < 10 * count:
        attempts += 1
        text = _compose(scene, facts, rng, full=not texts)
        if text not in texts:
            texts.append(text)
    return texts


def _compose(scene: Scene, facts: SceneFacts, rng: np.random.Generator, *, full: bool) -> str:
    core = [c for c in (_landmark_clause(scene, rng), _water_clause(scene, rng)) if c]
    buildings = _buildings_clause(facts, rng)
    others = [c for c in (_roads_clause(scene, rng), _trees_clause(facts, rng), _extras_clause(facts, rng)) if c]
    if not full:  # shorter descriptions: drop some of the secondary clauses
        keep = int(rng.integers(1, len(others) + 1))
        others = [others[int(k)] for k in sorted(rng.choice(len(others), size=keep, replace=False))]
    template = int(rng.integers(4))
    if template == 0:
        head = f"{_opener(facts, rng)} with {buildings}"
        rest = core + others
    elif template == 1 and core:
        head = core[0]
        rest = [f"{_opener(facts, rng)} with {buildings}"] + core[1:] + others
    elif template == 2:
        head = f"{buildings} in {_opener(facts, rng)}" if facts.buildings else _opener(facts, rng)
        rest = others + core
    else:
        head = _pick(rng, ["seen from above: ", "aerial view of ", "overview: "]) + _opener(facts, rng)
        rest = [buildings] + core + others
    order = list(rest)
    if len(order) > 1:  # vary the clause order, keeping the head first
        perm = rng.permutation(len(order))
        order = [order[int(k)] for k in perm]
    sep = _pick(rng, ["; ", ". ", ", "])
    parts = [head] + order
    if sep == ". ":
        parts = [p[0].upper() + p[1:] for p in parts]
    sentence = sep.join(parts)
    return sentence[0].upper() + sentence[1:] + "."
