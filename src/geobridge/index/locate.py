"""Locate a place from one or more queries (images of any view, texts) against a ``GeoIndex``.

Each query is embedded with its own view and searched in the index, by default among the items of the *other*
views (cross-view localisation). ``fuse`` then aggregates the per-query hits per place:

* ``score``: a place's score is the mean over queries of its best similarity in that query's hits; a place
  missing from a query's hits gets that query's lowest returned (K-th) score as a floor. The estimate is the top
  place. Confidence is the softmax probability of the top place among the candidates,
  ``1 / sum_p exp((S_p - S_top) / T)`` with temperature ``T`` (default 0.05).
* ``max``: a place's score is its best similarity over all queries (no floor). Estimate and confidence as above.
* ``consensus``: geographic consensus. With the ``score`` fusion ``S`` and weights ``w_p = exp((S_p - max S) / T)``,
  a place's consensus score is the share of the total weight lying within ``radius_km`` of it (itself included),
  ``C_p = sum_{q: d(p, q) <= r} w_q / sum_q w_q`` in (0, 1]. The top place is the one with the largest ``C``;
  the estimate is the ``w``-weighted spherical centroid of the places within ``radius_km`` of it, and the
  confidence is its ``C``.

* ``weighted``: a place's score is the logit ``sum_q w_{view(q)} * s_{q,p}`` (floors as in ``score``), with one
  weight per query view fitted on labelled queries (``geobridge.index.calibrate``, stored with the index as
  ``GeoIndex.fusion_weights``). A view carrying no signal gets a weight near 0. The estimate is the top place;
  the confidence is its softmax probability ``1 / sum_p exp(logit_p - logit_top)`` over the gallery (the weights
  carry the scale; ``locate`` counts the places no query returned at the floor logit).

``locate`` defaults to ``fusion="auto"``: ``weighted`` when the index holds fusion weights for every query's
view, else ``score``.
One query goes through the same code path as many.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from geobridge.errors import GeoBridgeError
from geobridge.fusions import FUSIONS, LOCATE_FUSIONS, score_meaning
from geobridge.geodesy import haversine_km, spherical_centroid
from geobridge.index.arrays import check_near
from geobridge.index.search import DEFAULT_CANDIDATES, search_depth
from geobridge.index.store import GeoIndex
from geobridge.views import IMAGE_VIEWS, VIEWS

DEFAULT_RADIUS_KM = 25.0
DEFAULT_TEMPERATURE = 0.05


@dataclass
class Match:
    """One candidate place. ``score`` is the fused score that ranks matches (a similarity in [-1, 1] for
    ``score`` and ``max``, a weight share in (0, 1] for ``consensus``, an unbounded logit for ``weighted``:
    ``geobridge.fusions.score_meaning``); ``similarity`` is the place's best raw cosine similarity over all
    queries; ``view`` and ``path`` name the gallery item that gave it."""

    rank: int
    place_id: str
    lat: float
    lon: float
    view: str | None
    path: str | None
    score: float
    distance_km: float  # from the estimated location
    similarity: float
    country: str | None = None
    # raster tiles only (``geobridge.index.raster``): the tile's WGS84 footprint ring, native CRS, centre and GSD
    footprint: list[list[float]] | None = None
    crs: str | None = None
    native_center: list[float] | None = None
    gsd_m: float | None = None


RASTER_KEYS: tuple[str, ...] = ("footprint", "crs", "native_center", "gsd_m")


@dataclass
class LocateResult:
    """The estimated location (``lat``, ``lon``), a confidence in [0, 1], the ranked matches, the queries and
    the fusion mode used. ``to_dict`` and ``to_geojson`` also state what the matches' scores mean
    (``score_meaning``). ``prior`` is the search prior (centre, radius, source, entries it allowed) or None;
    ``native`` is the estimate in the top match's raster CRS (``{"crs", "x", "y"}``) when it is a raster tile."""

    lat: float
    lon: float
    confidence: float
    matches: list[Match]
    queries: list[dict[str, Any]] = field(default_factory=list)
    fusion: str = "score"
    prior: dict[str, Any] | None = None
    native: dict[str, Any] | None = None
    truth: dict[str, Any] | None = None  # the true position and the estimate's error_m, when given

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible; ``prior``, ``native`` and the matches' raster keys appear only when they are set."""
        out: dict[str, Any] = {
            "lat": self.lat,
            "lon": self.lon,
            "confidence": self.confidence,
            "fusion": self.fusion,
            "score_meaning": score_meaning(self.fusion),
            "queries": [dict(q) for q in self.queries],
            "matches": [_match_dict(m) for m in self.matches],
        }
        for key in ("prior", "native", "truth"):
            if getattr(self, key) is not None:
                out[key] = dict(getattr(self, key))
        return out

    def to_geojson(self) -> dict[str, Any]:
        """A GeoJSON FeatureCollection: the estimate (``kind: estimate``), one point per match (``kind: match``),
        then the footprint polygon of each match that is a raster tile (``kind: footprint``, with its rank)."""
        estimate = {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [self.lon, self.lat]},
            "properties": {"kind": "estimate", "confidence": self.confidence, "fusion": self.fusion,
                           "score_meaning": score_meaning(self.fusion), "prior": self.prior, "native": self.native,
                           "truth": self.truth,
                           "queries": [dict(q) for q in self.queries]},
        }
        matches = [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [m.lon, m.lat]},
                "properties": {"kind": "match", **{k: v for k, v in _match_dict(m).items()
                                                   if k not in ("lat", "lon", "footprint")}},
            }
            for m in self.matches
        ]
        footprints = [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in m.footprint]]},
                "properties": {"kind": "footprint", "rank": m.rank, "place_id": m.place_id, "crs": m.crs,
                               "gsd_m": m.gsd_m, "score": m.score},
            }
            for m in self.matches
            if m.footprint
        ]
        return {"type": "FeatureCollection", "features": [estimate, *matches, *footprints]}


def _match_dict(match: Match) -> dict[str, Any]:
    """``asdict(match)`` without the raster keys that are unset (matches that are not raster tiles)."""
    return {k: v for k, v in asdict(match).items() if k not in RASTER_KEYS or v is not None}


# ---------------------------------------------------------------------------------------------------------------------
# fusion (pure)


def fuse(
    per_query: Sequence[Sequence[Mapping[str, Any]]],
    *,
    fusion: str = "score",
    top_k: int = 10,
    radius_km: float = DEFAULT_RADIUS_KM,
    temperature: float = DEFAULT_TEMPERATURE,
    query_views: Sequence[str] | None = None,
    view_weights: Mapping[str, float] | None = None,
    gallery_places: int | None = None,
) -> LocateResult:
    """Aggregate per-query hits into ranked places and one location estimate (see the module docstring).

    ``per_query[q]`` is query q's hits, each a mapping with ``place_id``, ``lat``, ``lon`` and ``score`` (and
    optionally ``view``, ``path``, ``country``), as returned by ``SearchResult.metadata(q)``. Queries with no
    hits are ignored. ``weighted`` fusion also needs ``query_views`` (the view of each query) and
    ``view_weights`` (a weight for each of those views); with ``gallery_places`` (the index's place count) its
    confidence also counts the places no query returned, each at the floor logit, as the calibration fit does.
    Returns a ``LocateResult`` with empty ``queries``.
    """
    if fusion not in FUSIONS:
        raise GeoBridgeError(f"unknown fusion {fusion!r}; expected one of {', '.join(FUSIONS)}")
    if top_k < 1:
        raise GeoBridgeError(f"top_k must be >= 1, got {top_k}")
    if temperature <= 0 or radius_km < 0:
        raise GeoBridgeError(f"temperature must be > 0 and radius_km >= 0, got {temperature} and {radius_km}")
    query_weights = _query_weights(per_query, fusion=fusion, query_views=query_views, view_weights=view_weights)
    active = [list(hits) for hits in per_query if len(hits)]
    if not active:
        raise GeoBridgeError("no gallery item matched any query (is the index empty, or are all its views excluded?)")
    places, best, floors = _hit_table(active)
    pids = list(places)
    filled = np.where(np.isnan(best), floors[:, None], best)  # (Q, P)
    mean_scores = filled.mean(axis=0)  # (P,)
    lat = np.array([places[p]["lat"] for p in pids])
    lon = np.array([places[p]["lon"] for p in pids])
    if fusion == "consensus":
        weights = np.exp((mean_scores - mean_scores.max()) / temperature)  # (P,)
        near = haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :]) <= radius_km  # (P, P)
        ranking = near.astype(np.float64) @ weights / weights.sum()  # (P,) share of weight within the radius
        order = sorted(range(len(pids)), key=lambda j: (-ranking[j], -mean_scores[j], pids[j]))
        top = order[0]
        est_lat, est_lon = spherical_centroid(lat[near[top]], lon[near[top]], weights[near[top]])
        confidence = float(ranking[top])
    else:
        if fusion == "weighted":
            ranking = query_weights @ filled  # (P,) logits
        else:
            ranking = mean_scores if fusion == "score" else np.nanmax(best, axis=0)
        order = sorted(range(len(pids)), key=lambda j: (-ranking[j], pids[j]))
        top = order[0]
        est_lat, est_lon = float(lat[top]), float(lon[top])
        scale = 1.0 if fusion == "weighted" else temperature
        total = np.exp((ranking - ranking[top]) / scale).sum()
        if fusion == "weighted" and gallery_places is not None and gallery_places > len(pids):
            floor_logit = float(query_weights @ floors)  # every place outside the hits
            total += (gallery_places - len(pids)) * math.exp(floor_logit - ranking[top])
        confidence = float(1.0 / total)
    distances = haversine_km(est_lat, est_lon, lat, lon)  # (P,)
    matches = [
        Match(rank=rank, place_id=pids[j], lat=float(lat[j]), lon=float(lon[j]), view=places[pids[j]]["view"],
              path=places[pids[j]]["path"], score=float(ranking[j]), distance_km=float(distances[j]),
              similarity=float(places[pids[j]]["similarity"]), country=places[pids[j]]["country"],
              **{key: places[pids[j]][key] for key in RASTER_KEYS})
        for rank, j in enumerate(order[:top_k], start=1)
    ]
    return LocateResult(lat=est_lat, lon=est_lon, confidence=min(1.0, max(0.0, confidence)), matches=matches,
                        fusion=fusion)


def _hit_table(
    active: Sequence[Sequence[Mapping[str, Any]]],
) -> tuple[dict[str, dict[str, Any]], np.ndarray, np.ndarray]:
    """From each query's (non-empty) hits: place_id -> coordinates and best item (in order of first appearance),
    the (Q, P) best similarity of each place in each query's hits (NaN where absent) and the (Q,) floors (each
    query's lowest returned score)."""
    places: dict[str, dict[str, Any]] = {}
    for hits in active:
        for hit in hits:
            pid, score = str(hit["place_id"]), float(hit["score"])
            entry = places.get(pid)
            if entry is None or score > entry["similarity"]:
                places[pid] = {"lat": float(hit["lat"]), "lon": float(hit["lon"]), "similarity": score,
                               "view": hit.get("view"), "path": hit.get("path"), "country": hit.get("country"),
                               **{key: hit.get(key) for key in RASTER_KEYS}}
    column = {pid: j for j, pid in enumerate(places)}
    best = np.full((len(active), len(places)), np.nan)  # (Q, P)
    floors = np.empty(len(active))  # (Q,)
    for q, hits in enumerate(active):
        floors[q] = min(float(h["score"]) for h in hits)
        for hit in hits:
            j = column[str(hit["place_id"])]
            best[q, j] = np.fmax(best[q, j], float(hit["score"]))
    return places, best, floors


def _query_weights(
    per_query: Sequence[Sequence[Any]],
    *,
    fusion: str,
    query_views: Sequence[str] | None,
    view_weights: Mapping[str, float] | None,
) -> np.ndarray:
    """(Q',) weight of each query that has hits (``weighted`` fusion); an empty array for other fusions."""
    if fusion != "weighted":
        return np.zeros(0)
    if query_views is None or view_weights is None:
        raise GeoBridgeError("weighted fusion needs query_views and view_weights (fit them with calibrate_index)")
    if len(query_views) != len(per_query):
        raise GeoBridgeError(f"got {len(query_views)} query_views for {len(per_query)} queries")
    missing = sorted({v for v in query_views if v not in view_weights})
    if missing:
        raise GeoBridgeError(
            f"no fusion weight for query view(s) {missing}; the weights cover {sorted(view_weights)} "
            "(calibrate with those views, or use another fusion)"
        )
    return np.array([float(view_weights[v]) for v, hits in zip(query_views, per_query, strict=True) if len(hits)])


# ---------------------------------------------------------------------------------------------------------------------
# locate and evaluate with a model


@dataclass(frozen=True)
class Prior:
    """Search only the index entries whose centre lies within ``radius_km`` (great circle) of ``(lat, lon)``: a
    GNSS fix, a photo's EXIF position, a region of interest. ``source`` names where it came from (``"exif"``)."""

    lat: float
    lon: float
    radius_km: float
    source: str = "near"

    def __post_init__(self) -> None:
        check_near((self.lat, self.lon), name="prior")
        radius = float(self.radius_km)
        if not (math.isfinite(radius) and radius > 0):
            raise GeoBridgeError(f"a prior's radius must be a positive number of km, got {self.radius_km!r}")

    @property
    def centre(self) -> tuple[float, float]:
        return float(self.lat), float(self.lon)


@dataclass(frozen=True)
class SearchSettings:
    """Per-call settings of approximate indexes (``None`` keeps the index's own): ``nprobe`` (IVF), ``ef_search``
    (HNSW), ``k_factor`` (refine)."""

    nprobe: int | None = None
    ef_search: int | None = None
    k_factor: float | None = None


def locate(
    model: Any,
    index: GeoIndex,
    *,
    images: Sequence[tuple[str, Any]] = (),
    texts: Sequence[str] = (),
    top_k: int = 10,
    fusion: str = "auto",
    exclude_views: Sequence[str] | None = None,
    radius_km: float = DEFAULT_RADIUS_KM,
    temperature: float = DEFAULT_TEMPERATURE,
    prior: Prior | None = None,
    search: SearchSettings = SearchSettings(),
    truth: tuple[float, float] | None = None,
    batch_size: int = 64,
) -> LocateResult:
    """Estimate where ``images`` (``(view, PIL image or path)`` pairs) and ``texts`` were taken / describe.

    ``exclude_views=None`` searches each query among the gallery items of the other views; pass a sequence
    (``()`` for none) to exclude exactly those views for every query. Each query fetches about
    ``max(top_k, DEFAULT_CANDIDATES)`` places for fusion. ``fusion="auto"`` is ``weighted`` when the index holds
    fusion weights for every query's view, else ``score``; ``radius_km`` and ``temperature`` are the fusion's
    (module docstring). A ``prior`` searches only the index entries within its radius; the result's ``prior``
    records it and how many entries it allowed. ``search`` overrides an approximate index's settings.
    ``truth=(lat, lon)``, where the true position is known, adds ``truth`` with the estimate's ``error_m``
    (great-circle metres).
    """
    if fusion not in LOCATE_FUSIONS:
        raise GeoBridgeError(f"unknown fusion {fusion!r}; expected one of {', '.join(LOCATE_FUSIONS)}")
    if int(model.embed_dim) != index.dim:
        raise GeoBridgeError(f"the model embeds into {model.embed_dim} dims; the index holds {index.dim}-dim vectors")
    queries = _queries(images, texts)
    view_weights = index.fusion_weights
    if fusion == "auto":
        calibrated = view_weights is not None and all(q[0] in view_weights for q in queries)
        fusion = "weighted" if calibrated else "score"
    if fusion == "weighted" and view_weights is None:
        raise GeoBridgeError("this index has no fusion weights; fit them with 'geobridge index calibrate'")
    vectors = _embed_queries(model, queries, batch_size=batch_size)
    prior_record, gallery_places = _prior_gallery(index, prior)
    near, near_km = (prior.centre, prior.radius_km) if prior is not None else (None, None)
    depth = search_depth(index, max(top_k, DEFAULT_CANDIDATES))
    per_query, described = [], []
    for (view, _, description), vector in zip(queries, vectors, strict=True):
        excluded = (view,) if exclude_views is None else tuple(exclude_views)
        result = index.search(vector, k=depth, exclude_views=excluded, nprobe=search.nprobe,
                              ef_search=search.ef_search, k_factor=search.k_factor, near=near, radius_km=near_km)
        hits = result.metadata(0)
        per_query.append(hits)
        described.append({**description, "excluded_views": list(excluded), "hits": len(hits),
                          "top_place_id": hits[0]["place_id"] if hits else None,
                          "top_score": hits[0]["score"] if hits else None})
    fused = fuse(per_query, fusion=fusion, top_k=top_k, radius_km=radius_km, temperature=temperature,
                 query_views=[q[0] for q in queries], view_weights=view_weights, gallery_places=gallery_places)
    checked = None
    if truth is not None:
        true_lat, true_lon = check_near(truth, name="truth")
        error_m = 1000.0 * float(haversine_km(true_lat, true_lon, fused.lat, fused.lon))
        checked = {"lat": true_lat, "lon": true_lon, "error_m": error_m}
    return replace(fused, queries=described, prior=prior_record, native=native_position(fused), truth=checked)


def _queries(images: Sequence[tuple[str, Any]], texts: Sequence[str]) -> list[tuple[str, Any, dict[str, Any]]]:
    """(view, item, description) of each query, images first; checks views and texts."""
    if not images and not texts:
        raise GeoBridgeError("nothing to locate: give at least one image or text")
    queries: list[tuple[str, Any, dict[str, Any]]] = []
    for pair in images:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise GeoBridgeError(f"images must be (view, image) pairs, got {pair!r}")
        view, item = pair
        if view not in IMAGE_VIEWS:
            raise GeoBridgeError(f"unknown image view {view!r}; expected one of {', '.join(IMAGE_VIEWS)}")
        queries.append((view, item, {"view": view, "image": _describe(item)}))
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise GeoBridgeError(f"texts must be non-empty strings, got {text!r}")
        queries.append(("text", text, {"view": "text", "text": text}))
    return queries


def _embed_queries(model: Any, queries: Sequence[tuple[str, Any, Any]], *, batch_size: int) -> list[np.ndarray]:
    """(D,) embedding of each query, one batch per view."""
    vectors: list[np.ndarray | None] = [None] * len(queries)
    for view in VIEWS:
        rows = [i for i, q in enumerate(queries) if q[0] == view]
        if rows:
            embedded = model.encode([queries[i][1] for i in rows], view=view, batch_size=batch_size,
                                    show_progress_bar=False)  # (n, D)
            for i, vector in zip(rows, embedded, strict=True):
                vectors[i] = vector
    return vectors  # type: ignore[return-value]


def _prior_gallery(index: GeoIndex, prior: Prior | None) -> tuple[dict[str, Any] | None, int]:
    """The result's record of the prior (None without one) and the places a query can return."""
    if prior is None:
        return None, index.n_places()
    allowed = index.ids_within(prior.centre, radius_km=float(prior.radius_km))
    if len(allowed) == 0:
        raise GeoBridgeError(
            f"no index entry lies within {prior.radius_km:g} km of ({prior.lat:.6f}, {prior.lon:.6f}); "
            "widen the radius or check the prior"
        )
    record = {"lat": float(prior.lat), "lon": float(prior.lon), "radius_km": float(prior.radius_km),
              "source": prior.source, "entries": int(len(allowed))}
    return record, index.n_places_among(allowed)


def native_position(result: LocateResult) -> dict[str, Any] | None:
    """The estimate in the CRS of the top match's raster (``{"crs", "x", "y"}``), or None when the top match is
    not a raster tile. Needs pyproj (the ``geo`` extra), which indexing the raster already needed."""
    crs = result.matches[0].crs if result.matches else None
    if not crs:
        return None
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(result.lon, result.lat)
    return {"crs": crs, "x": float(x), "y": float(y)}


def _describe(item: Any) -> str:
    if isinstance(item, (str, Path)):
        return str(item)
    size = getattr(item, "size", None)
    if isinstance(size, tuple) and len(size) == 2:
        return f"<image {size[0]}x{size[1]}>"
    shape = getattr(item, "shape", None)
    return f"<array {tuple(shape)}>" if shape is not None else f"<{type(item).__name__}>"
