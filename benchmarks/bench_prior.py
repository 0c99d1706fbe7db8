"""Search within a prior: ``GeoIndex.search(q, near=(lat, lon), radius_km=1.0)`` against the same search without one.

Galleries are the clustered 256-d vectors of ``benchmarks/_data.py`` placed as map tiles: a square grid every 50 m
around (50.0 N, 14.4 E), two entries per tile (``satellite`` and ``drone``), so a 1 km disc holds about 2,500
entries at every gallery size (100k entries cover 11 x 11 km, 1M cover 35 x 35 km). Per gallery:

* ``no_prior``: one query, k = 10, the whole gallery;
* ``prior``: the same query within 1 km of a random tile centre (the kd-tree lookup and the search);
* ``old_prior``: the previous implementation of the same search, as a baseline: the haversine to every entry,
  then faiss with an ``IDSelectorBatch`` (which tests every stored id for membership);
* ``lookup``: ``GeoIndex.ids_within`` (kd-tree + haversine of the candidates) against ``full_haversine`` (the old
  lookup), with the kd-tree's one-off build time.

Flat galleries of 100k and 1M, and ``IVF256,Flat`` (nprobe 16) at 100k. On the 100k Flat gallery the Flat subset
path (``index/prior.py``) and faiss's ID selector are also timed on random allowed sets of 10 %, 50 % and 90 % of
the gallery: the measurement behind ``FLAT_SUBSET_MAX_SHARE``. Every call is single-query; the methods are
interleaved call by call, and medians over the calls are reported.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks._common import Context, Findings, interleaved, ratio
from benchmarks._data import gallery_and_queries

NAME = "prior"
TITLE = "Search within a 1 km prior vs the whole gallery, single query (Flat 100k and 1M, IVF 100k)"
TARGET = "single-query search within a 1 km prior faster than without it (speed-up >= 1)"
CENTRE = (50.0, 14.4)
SPACING_M = 50.0
RADIUS_KM = 1.0
K = 10


def plan(*, quick: bool) -> list[dict[str, Any]]:
    if quick:
        return [{"n": 4_000, "factory": "Flat", "calls": 5, "shares": [0.1, 0.9]},
                {"n": 4_000, "factory": "IVF16,Flat", "nprobe": 4, "calls": 5}]
    return [{"n": 100_000, "factory": "Flat", "calls": 40, "shares": [0.1, 0.5, 0.9]},
            {"n": 100_000, "factory": "IVF256,Flat", "nprobe": 16, "calls": 40},
            {"n": 1_000_000, "factory": "Flat", "calls": 20}]


def tile_records(n: int) -> list[dict[str, Any]]:
    """``n`` records on a 50 m grid of tiles (two views per tile), row by row as a raster is tiled."""
    tiles = (n + 1) // 2
    side = int(np.ceil(np.sqrt(tiles)))
    row, col = np.divmod(np.arange(tiles), side)
    metres_per_deg_lat = 111_320.0
    metres_per_deg_lon = metres_per_deg_lat * np.cos(np.radians(CENTRE[0]))
    lat = CENTRE[0] + (row - side / 2) * SPACING_M / metres_per_deg_lat
    lon = CENTRE[1] + (col - side / 2) * SPACING_M / metres_per_deg_lon
    return [{"place_id": f"t{i // 2}", "lat": float(lat[i // 2]), "lon": float(lon[i // 2]),
             "view": ("satellite", "drone")[i % 2], "path": None} for i in range(n)]


def measure(ctx: Context, spec: dict[str, Any]) -> dict[str, Any]:
    import faiss

    from geobridge.eval.geo import haversine_km
    from geobridge.index import GeoIndex
    from geobridge.index.prior import flat_subset_search

    n, factory, calls = spec["n"], spec["factory"], spec["calls"]
    gallery, queries = gallery_and_queries(ctx.cache, n=n, n_queries=max(calls, 64))
    records = tile_records(n)
    ctx.log(NAME, f"{factory} {n}: building")
    start = time.perf_counter()
    index = GeoIndex(gallery.shape[1], factory=factory)
    if factory != "Flat":
        index.train(gallery[:: max(1, n // 50_000)])
    index.add(gallery, records)
    build_s = time.perf_counter() - start
    params = {"nprobe": spec["nprobe"]} if "nprobe" in spec else {}
    lat = np.asarray([r["lat"] for r in records])
    lon = np.asarray([r["lon"] for r in records])
    ids = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(0)
    inner = np.flatnonzero((np.abs(lat - CENTRE[0]) < (lat.max() - lat.min()) / 4)
                           & (np.abs(lon - CENTRE[1]) < (lon.max() - lon.min()) / 4))
    centres = [(float(lat[i]), float(lon[i])) for i in rng.choice(inner, calls + 1)]  # away from the edges
    import scipy.spatial  # noqa: F401 - imported before the build is timed

    start = time.perf_counter()
    index.ids_within(centres[0], radius_km=RADIUS_KM)  # builds the kd-tree cache (and the id -> lat/lon arrays)
    tree_build_s = time.perf_counter() - start

    normed = np.array(queries, dtype=np.float32)  # normalised as GeoIndex.search does, for the baseline
    faiss.normalize_L2(normed)

    def old_within(call: int) -> np.ndarray:
        return ids[haversine_km(*centres[call], lat, lon) <= RADIUS_KM]

    def old_prior(call: int) -> np.ndarray:  # the previous GeoIndex code path, for the baseline
        selector = faiss.IDSelectorBatch(old_within(call))
        if factory == "Flat":
            search_params = faiss.SearchParameters(sel=selector)
        else:
            search_params = faiss.SearchParametersIVF(sel=selector, nprobe=spec["nprobe"])
        return index._index.search(normed[call : call + 1], K, params=search_params)[1]

    def prior(call: int) -> np.ndarray:
        return index.search(queries[call], k=K, near=centres[call], radius_km=RADIUS_KM, **params).ids

    def no_prior(call: int) -> np.ndarray:
        return index.search(queries[call], k=K, **params).ids

    ctx.log(NAME, f"{factory} {n}: {calls} single-query calls per method")
    out: dict[str, Any] = {**spec, "build_s": build_s, "tree_build_s": tree_build_s}
    out["s"] = interleaved({"no_prior": no_prior, "prior": prior, "old_prior": old_prior}, calls=calls)
    out["s"].update(interleaved({"lookup": lambda c: index.ids_within(centres[c], radius_km=RADIUS_KM),
                                  "full_haversine": old_within}, calls=calls))
    out["disc_entries"] = float(np.median([len(old_within(c)) for c in range(calls)]))
    out["same_ids_as_old"] = all(np.array_equal(prior(c), old_prior(c)) for c in range(calls))
    if factory == "Flat" and spec.get("shares"):
        base = faiss.downcast_index(index._index.index)
        for share in spec["shares"]:
            allowed = np.sort(rng.choice(n, int(share * n), replace=False)).astype(np.int64)
            selector = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
            timed = interleaved({
                "subset": lambda c, a=allowed: flat_subset_search(base, normed[c : c + 1], a, K),
                "selector": lambda c, p=selector: index._index.search(normed[c : c + 1], K, params=p),
            }, calls=max(3, calls // 4))
            out["s"].update({f"share{share:g}_{key}": value for key, value in timed.items()})
    return out


def bench(ctx: Context) -> dict[str, Any]:
    import faiss

    specs = plan(quick=ctx.quick)
    measured = [measure(ctx, spec) for spec in specs]
    found = Findings(notes=[
        f"Tiles every {SPACING_M:g} m around {CENTRE}, two entries per tile; prior radius {RADIUS_KM:g} km "
        f"(about 2,500 entries); k = {K}; one query per call; faiss OpenMP threads {faiss.omp_get_max_threads()}.",
        "old_prior: the previous implementation (haversine to every entry + faiss IDSelectorBatch); prior and "
        "old_prior returned the same ids in every call where same_ids_as_old is true.",
    ])
    for m in measured:
        label, s = f"{m['factory']} {m['n']}", m["s"]
        for key in ("prior", "no_prior", "old_prior", "lookup", "full_haversine"):
            (found.baselines if key in ("no_prior", "old_prior", "full_haversine") else found.medians)[
                f"{label}/{key}_s"] = s[key]
        found.medians[f"{label}/tree_build_s"] = m["tree_build_s"]
        found.medians[f"{label}/disc_entries"] = m["disc_entries"]
        found.compare(f"{label}: search within a 1 km prior vs no prior", value=s["prior"], baseline=s["no_prior"],
                      unit="s", key=f"{label}/prior_speedup_vs_no_prior", op=">=", threshold=1.0,
                      note=f"{m['disc_entries']:.0f} entries in the disc; same ids as the old path: "
                      f"{m['same_ids_as_old']}")
        found.compare(f"{label}: search within a 1 km prior vs the old prior path", value=s["prior"],
                      baseline=s["old_prior"], unit="s", key=f"{label}/prior_speedup_vs_old_prior",
                      note="old: haversine to every entry + faiss IDSelectorBatch")
        found.compare(f"{label}: disc lookup, kd-tree vs haversine to every entry", value=s["lookup"],
                      baseline=s["full_haversine"], unit="s", key=f"{label}/lookup_speedup_vs_full_haversine",
                      note=f"kd-tree built once in {m['tree_build_s']:.2f} s (kept until the next add/remove)")
        for share in m.get("shares") or []:
            sub, sel = s[f"share{share:g}_subset"], s[f"share{share:g}_selector"]
            found.medians[f"{label}/share{share:g}_subset_s"] = sub
            found.baselines[f"{label}/share{share:g}_selector_s"] = sel
            found.ratios[f"{label}/share{share:g}_subset_speedup_vs_selector"] = ratio(sel, sub)
        if m.get("shares"):
            found.notes.append(f"{label}: Flat subset path vs faiss ID selector on random allowed sets: " + ", ".join(
                f"{share:g}: {s[f'share{share:g}_subset'] * 1e3:.1f} vs {s[f'share{share:g}_selector'] * 1e3:.1f} ms"
                for share in m["shares"]))
    if ctx.quick:
        found.notes.append("--quick: 4,000 entries (the 1 km disc is a large share of them), few calls.")
    return found.result(
        NAME, title=TITLE,
        parameters={"galleries": specs, "k": K, "radius_km": RADIUS_KM, "spacing_m": SPACING_M, "centre": CENTRE,
                    "views_per_tile": 2, "dim": 256, "warmup": "1 untimed call of each method"},
        target=TARGET, details={"per_gallery": measured},
    )
