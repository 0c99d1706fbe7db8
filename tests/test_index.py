"""GeoIndex: exact search vs brute force, filters, removal, save/load, durability, approximate recall."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from geobridge import _atomic as atomic_module
from geobridge.errors import GeoBridgeError, IndexFormatError
from geobridge.index import GeoIndex, SearchResult

VIEW_CYCLE = ("drone", "satellite", "street")


def records(n: int, *, start: int = 0, per_place: int = 3) -> list[dict]:
    return [
        {"place_id": f"p{(start + i) // per_place:04d}", "lat": -60.0 + 0.001 * ((start + i) % 1000),
         "lon": 170.0 - 0.002 * (i % 1000), "view": VIEW_CYCLE[(start + i) % 3],
         "path": f"img/{start + i}.png", "country": "NO"}
        for i in range(n)
    ]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(queries: np.ndarray, gallery: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = unit(queries) @ unit(gallery).T  # (Q, N)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), ids[order]


@pytest.fixture()
def filled():
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((300, 16))  # float64 on purpose: converted and normalised by add
    index = GeoIndex(16, model_info={"config": "test"})
    ids = index.add(gallery, records(300))
    return index, gallery, ids, rng


def test_search_equals_brute_force(filled):
    index, gallery, ids, rng = filled
    assert len(index) == 300 and ids.dtype == np.int64 and list(ids) == list(range(300))
    queries = rng.standard_normal((7, 16))
    result = index.search(queries, k=10)
    assert isinstance(result, SearchResult)
    assert result.scores.shape == (7, 10) and result.scores.dtype == np.float32 and result.ids.dtype == np.int64
    scores, expected = brute_force(queries, gallery, ids, 10)
    np.testing.assert_allclose(result.scores, scores, atol=1e-5)
    np.testing.assert_array_equal(result.ids, expected)
    hits = result.metadata(2)
    assert [h["id"] for h in hits] == result.ids[2].tolist()
    assert hits[0]["place_id"] == f"p{result.ids[2, 0] // 3:04d}" and hits[0]["view"] in VIEW_CYCLE
    assert hits[0]["score"] == pytest.approx(float(result.scores[2, 0]))
    single = index.search(queries[0].tolist(), k=3)  # a list holding one (D,) vector
    np.testing.assert_array_equal(single.ids[0], expected[0, :3])


@pytest.mark.parametrize("kernel", [None, "faiss", "faiss-rows", "torch"])  # None: measured faster here
@pytest.mark.parametrize("n_queries", [1, 3, 40])
def test_every_exact_kernel_matches_brute_force_after_remove_and_load(filled, tmp_path, kernel, n_queries):
    from geobridge.index.exact import KernelChooser

    index, gallery, ids, rng = filled
    index.exact_kernels = KernelChooser(force=kernel)
    queries = rng.standard_normal((n_queries, 16))
    batched = index.search(queries, k=10)
    scores, expected = brute_force(queries, gallery, ids, 10)
    np.testing.assert_allclose(batched.scores, scores, atol=1e-5)
    np.testing.assert_array_equal(batched.ids, expected)
    index.remove(expected[:, 0])  # storage rows shift; ids must still map right
    kept = ~np.isin(ids, expected[:, 0])
    _, after = brute_force(queries, gallery[kept], ids[kept], 10)
    np.testing.assert_array_equal(index.search(queries, k=10).ids, after)
    loaded = GeoIndex.load(index.save(tmp_path / "i.gbx"))
    loaded.exact_kernels = KernelChooser(force=kernel)
    np.testing.assert_array_equal(loaded.search(queries, k=10).ids, after)
    wide = loaded.search(queries, k=500)  # k beyond the gallery: padded like faiss
    assert (wide.ids[:, len(loaded):] == -1).all() and np.isneginf(wide.scores[:, len(loaded):]).all()
    every = np.tile(np.sort(loaded.ids), (n_queries, 1))  # (Q, N): each query ranks the whole gallery
    np.testing.assert_array_equal(np.sort(wide.ids[:, : len(loaded)], axis=1), every)


def test_torch_kernel_merges_blocks_exactly():
    from geobridge.index.exact import faiss_topk, torch_topk

    rng = np.random.default_rng(3)
    gallery, queries = unit(rng.standard_normal((1000, 8))), unit(rng.standard_normal((5, 8)))
    order = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")[:, :7]
    for block_floats in (5 * 7, 5 * 64, 5 * 999, 1 << 22):  # one row short of k per block ... a single block
        scores, rows = torch_topk(gallery, queries, 7, block_floats=block_floats)
        np.testing.assert_array_equal(rows, order)
        np.testing.assert_allclose(scores, np.take_along_axis(queries @ gallery.T, order, axis=1), atol=1e-6)
    np.testing.assert_array_equal(faiss_topk(gallery, queries, 7)[1], order)
    assert torch_topk(gallery[:3], queries, 7)[1].shape == (5, 3)  # k beyond the rows: k' = N


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_row_split_kernel_merges_blocks_exactly(parts):
    from concurrent.futures import ThreadPoolExecutor

    from geobridge.index.exact import faiss_rows_topk

    rng = np.random.default_rng(5)
    gallery, queries = unit(rng.standard_normal((1001, 8))), unit(rng.standard_normal((3, 8)))
    sims = queries @ gallery.T  # (3, 1001)
    with ThreadPoolExecutor(2) as pool:
        for k, rows in ((7, 1001), (5, 4), (9, 9)):  # k beyond a block's rows; k beyond the gallery
            scores, found = faiss_rows_topk(gallery[:rows], queries, k, pool=pool, parts=parts)
            expected = np.argsort(-sims[:, :rows], axis=1, kind="stable")[:, :k]
            assert found.shape == (3, min(k, rows)) and found.dtype == np.int64
            np.testing.assert_array_equal(found, expected)
            np.testing.assert_allclose(scores, np.take_along_axis(sims[:, :rows], expected, axis=1), atol=1e-6)


def test_kernel_choice_is_measured_once_per_shape_class(monkeypatch):
    from geobridge.index import exact

    calls = []
    real = exact.run_kernel

    def slow_faiss(name, gallery, queries, k):  # faiss made slower than torch: the probe must see it
        calls.append((name, len(queries), len(gallery)))
        if name == "faiss":
            import time

            time.sleep(0.25)
        return real(name, gallery, queries, k)

    monkeypatch.setattr(exact, "run_kernel", slow_faiss)
    rng = np.random.default_rng(0)
    gallery, queries = unit(rng.standard_normal((5000, 8))), unit(rng.standard_normal((300, 8)))
    chooser = exact.KernelChooser(probe_queries=64, probe_products=64 * 2048, repeats=2)
    chooser.search(gallery, queries, 5)
    probe, search = calls[:-1], calls[-1]  # blocks faiss, torch, faiss, torch: 1 untimed call, then >= 2 timed
    kernels = [c[0] for c in probe]
    blocks = [kernels[0]] + [b for a, b in zip(kernels, kernels[1:], strict=False) if a != b]
    assert blocks == ["faiss", "torch", "faiss", "torch"] and kernels.count("faiss") == 2 * 3
    assert {c[1:] for c in probe} == {(64, 512), (64, 2048)}  # bounded: the first 64 queries x 2,048 rows
    assert search == ("torch", 300, 5000)  # the search itself: whole batch, whole gallery, torch chosen
    (decision,) = chooser.decisions.values()
    assert decision["kernel"] == "torch" and decision["probe_seconds"]["faiss"] >= 0.25
    calls.clear()
    chooser.search(gallery, queries[:100], 5)  # same class (64-127 queries, >= 4,096 rows): no new probe
    assert calls == [("torch", 100, 5000)]
    chooser.search(gallery, queries[:1], 5)  # a single query is its own class: a second probe
    assert len(chooser.decisions) == 2 and calls[-1][1:] == (1, 5000)
    even = exact.KernelChooser()  # without the slowed faiss: another kernel must win by its margin, else faiss
    kernel = even.choose(gallery, queries[:1], 5)
    (seconds,) = [d["probe_seconds"] for d in even.decisions.values()]
    margin = {"faiss": 1.0, "faiss-rows": exact.ROWS_MARGIN, "torch": exact.TORCH_MARGIN}
    assert kernel == min(seconds, key=lambda name: seconds[name] * margin[name])
    # faiss-rows is a candidate only where faiss leaves threads idle (fewer queries than threads)
    assert ("faiss-rows" in seconds) == (faiss.omp_get_max_threads() > 1)
    with pytest.raises(ValueError, match="unknown exact-search kernel"):
        exact.KernelChooser(force="numpy")


def test_hit_records_are_a_snapshot_read_lazily(filled, tmp_path):
    index, gallery, ids, rng = filled
    queries = rng.standard_normal((4, 16))
    result = index.search(queries, k=5)
    expected = [[index.record(int(i)) for i in row] for row in result.ids]
    index.remove(result.ids[:, 0])  # after the search: the result still names what it found
    index.add(rng.standard_normal((2, 16)), records(2, start=900))
    assert [[{k: v for k, v in hit.items() if k not in ("id", "score")} for hit in result.metadata(q)]
            for q in range(4)] == expected
    assert set(result.lookup) == set(np.unique(result.ids).tolist()) and 10**6 not in result.lookup
    folder = index.save_folder(tmp_path / "folder")
    lazy = GeoIndex.load(folder)
    found = lazy.search(queries, k=3)
    assert [hit["id"] for hit in found.metadata(0)] == found.ids[0].tolist()


def test_padding_view_filter_and_exclusion(filled):
    index, gallery, ids, rng = filled
    queries = rng.standard_normal((4, 16))
    padded = index.search(queries, k=400)
    assert (padded.ids[:, 300:] == -1).all() and np.isneginf(padded.scores[:, 300:]).all()
    assert len(padded.metadata(0)) == 300
    drone = np.array([r["view"] == "drone" for r in records(300)])
    result = index.search(queries, k=150, view="drone")  # exactly 100 drone items: padded after them
    scores, expected = brute_force(queries, gallery[drone], ids[drone], 100)
    np.testing.assert_array_equal(result.ids[:, :100], expected)
    np.testing.assert_allclose(result.scores[:, :100], scores, atol=1e-5)
    assert (result.ids[:, 100:] == -1).all()
    assert all(h["view"] == "drone" for q in range(4) for h in result.metadata(q))
    excluded = index.search(queries, k=20, exclude_views=["drone", "street"])
    sat = np.array([r["view"] == "satellite" for r in records(300)])
    np.testing.assert_array_equal(excluded.ids, brute_force(queries, gallery[sat], ids[sat], 20)[1])
    assert (index.search(queries, k=5, view="drone", exclude_views=["drone"]).ids == -1).all()
    with pytest.raises(GeoBridgeError, match="unknown view 'aerial'"):
        index.search(queries, k=5, view="aerial")


def test_validation_errors_name_the_problem(filled):
    index, *_ = filled
    with pytest.raises(GeoBridgeError, match=r"shape \(N, 16\)"):
        index.search(np.ones((2, 15)))
    with pytest.raises(GeoBridgeError, match="all zeros"):
        index.add(np.zeros((1, 16)), records(1))
    with pytest.raises(GeoBridgeError, match="NaN"):
        index.search(np.full((1, 16), np.nan))
    with pytest.raises(GeoBridgeError, match="2 vectors but 1 metadata"):
        index.add(np.ones((2, 16)), records(1))
    with pytest.raises(GeoBridgeError, match=r"lat=91.0 is outside"):
        index.add(np.ones((1, 16)), [{**records(1)[0], "lat": 91.0}])
    with pytest.raises(GeoBridgeError, match="lacks"):
        index.add(np.ones((1, 16)), [{"place_id": "x", "lat": 0.0, "lon": 0.0}])
    with pytest.raises(GeoBridgeError, match="unknown view"):
        index.add(np.ones((1, 16)), [{**records(1)[0], "view": "aerial"}])
    with pytest.raises(GeoBridgeError, match="k must be"):
        index.search(np.ones(16), k=0)
    with pytest.raises(GeoBridgeError, match="nprobe applies to IVF"):
        index.search(np.ones(16), nprobe=4)
    with pytest.raises(GeoBridgeError, match="factory"):
        GeoIndex(16, factory="NotAnIndex")
    assert len(index) == 300  # nothing was added by the failed calls


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_remove_incremental_add_and_round_trip(tmp_path, factory):
    rng = np.random.default_rng(1)
    gallery = unit(rng.standard_normal((120, 16)))
    index = GeoIndex(16, factory=factory, model_info={"checkpoint": "/runs/x", "embed_dim": 16})
    first = index.add(gallery[:60], records(60))
    second = index.add(gallery[60:], records(60, start=60))  # incremental: ids continue
    assert list(second) == list(range(60, 120))
    queries = gallery[:10]  # each query is a stored vector
    assert (index.search(queries, k=1).ids[:, 0] == first[:10]).all()
    assert index.remove([0, 1, 2, 999]) == 3
    assert index.remove_places(["p0005"]) == 3  # ids 15, 16, 17
    gone = {0, 1, 2, 15, 16, 17}
    assert len(index) == 114
    result = index.search(gallery, k=120)
    assert not gone & set(result.ids.ravel().tolist())
    if factory == "Flat":  # exact: everything left comes back
        assert set(result.ids[0].tolist()) - {-1} == set(range(120)) - gone
    assert all(h["place_id"] != "p0005" for q in range(len(gallery)) for h in result.metadata(q))
    third = index.add(gallery[:3], records(3))  # re-adding gets new ids, never reused ones
    assert list(third) == [120, 121, 122]
    path = index.save(tmp_path / "idx.gbx")
    loaded = GeoIndex.load(path)
    assert len(loaded) == len(index) and loaded.factory == factory and loaded.model_info == index.model_info
    before, after = index.search(queries, k=8), loaded.search(queries, k=8)
    np.testing.assert_array_equal(before.ids, after.ids)
    np.testing.assert_array_equal(before.scores, after.scores)
    assert [before.metadata(q) for q in range(10)] == [after.metadata(q) for q in range(10)]
    assert loaded.record(120) == index.record(120)
    assert list(loaded.add(gallery[3:4], records(1)).tolist()) == [123]
    info = loaded.info()
    assert info["count"] == 118 and info["dim"] == 16 and info["factory"] == factory
    assert info["views"] == {"drone": 40, "satellite": 39, "street": 39} and info["countries"] == {"NO": 39}
    assert info["places"] == 39 and info["model_info"]["checkpoint"] == "/runs/x"


@pytest.mark.parametrize("factory", ["IVF8,Flat", "IVF8,PQ4x4"])
def test_repeated_removal_from_ivf_keeps_the_right_vectors(tmp_path, factory):
    """faiss's IndexIDMap.remove_ids aborts the process on a second removal from an IVF index (its inner ids
    drift from the compacted id map); GeoIndex renumbers them, also for a file saved after one removal."""
    rng = np.random.default_rng(2)
    gallery = unit(rng.standard_normal((400, 16)))
    index = GeoIndex(16, factory=factory)
    index.add(gallery, records(400))
    index.set_search_params(nprobe=8)  # every list: IVF-Flat is then exact
    full = index.search(gallery, k=400).ids  # (400, 400) the whole ranking before any removal
    gone: set[int] = set()
    for step, batch in enumerate(([3, 5], [0, 7, 399], list(range(100, 140)))):
        assert index.remove(batch) == len(batch)
        gone |= set(batch)
        if step == 1:  # a save and load between removals
            index = GeoIndex.load(index.save(tmp_path / "idx.gbx"))
    kept = np.array(sorted(set(range(400)) - gone))
    assert len(index) == kept.size and sorted(index.ids.tolist()) == kept.tolist()
    result = index.search(gallery, k=10)
    assert not gone & set(result.ids.ravel().tolist())
    want = np.stack([row[~np.isin(row, list(gone))][:10] for row in full])  # the old ranking without the removed
    np.testing.assert_array_equal(result.ids, want)
    if factory == "IVF8,Flat":
        np.testing.assert_array_equal(result.ids, brute_force(gallery, gallery[kept], kept, 10)[1])


def test_durability_interrupted_save_keeps_previous(tmp_path, filled, monkeypatch):
    index, gallery, ids, rng = filled
    path = index.save(tmp_path / "idx.gbx")
    original = path.read_bytes()
    index.add(rng.standard_normal((5, 16)), records(5, start=300))

    def killed(src, dst):  # the process "dies" after writing the temp file, before the rename
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(atomic_module.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        index.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["idx.gbx"]  # the temp file was cleaned up
    # a harder kill leaves a truncated temp file behind: it must not affect loading, and the next save removes it
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f".idx.gbx.{int(dead.stdout)}.abcd1234.tmp").write_bytes(original[: len(original) // 2])
    assert len(GeoIndex.load(path)) == 300
    index.save(path)
    assert len(GeoIndex.load(path)) == 305
    assert [p.name for p in tmp_path.iterdir()] == ["idx.gbx"]


def test_corrupt_truncated_pickle_and_version_are_refused(tmp_path, filled):
    index, *_ = filled
    path = index.save(tmp_path / "idx.gbx")
    data = bytearray(path.read_bytes())
    flipped = tmp_path / "flipped.gbx"
    data[-100] ^= 0x01
    flipped.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=f"{flipped}.*checksum mismatch"):
        GeoIndex.load(flipped)
    truncated = tmp_path / "truncated.gbx"
    truncated.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IndexFormatError, match=f"{truncated}.*truncated"):
        GeoIndex.load(truncated)
    header_only = tmp_path / "header.gbx"
    header_only.write_bytes(path.read_bytes()[:10])
    with pytest.raises(IndexFormatError, match=str(header_only)):
        GeoIndex.load(header_only)
    newer = tmp_path / "newer.gbx"
    newer.write_bytes(path.read_bytes().replace(b'"format_version": 1', b'"format_version": 9', 1))
    with pytest.raises(IndexFormatError, match=f"{newer}.*format_version 9"):
        GeoIndex.load(newer)
    pickled = tmp_path / "index.gbx"
    import pickle

    pickled.write_bytes(pickle.dumps({"evil": True}))
    with pytest.raises(IndexFormatError, match=f"refusing to load {pickled}.*pickle"):
        GeoIndex.load(pickled)
    with pytest.raises(IndexFormatError, match="not found"):
        GeoIndex.load(tmp_path / "missing.gbx")
    with pytest.raises(IndexFormatError, match="folder"):
        GeoIndex.load(tmp_path)
    with pytest.raises(GeoBridgeError, match="folder"):
        index.save(tmp_path)


def clustered(rng: np.random.Generator, n: int, dim: int, n_clusters: int) -> np.ndarray:
    centres = rng.standard_normal((n_clusters, dim))
    return unit(centres[rng.integers(0, n_clusters, n)] + 0.35 * rng.standard_normal((n, dim)))


def test_approximate_refined_index_reaches_recall(tmp_path):
    rng = np.random.default_rng(0)
    dim, n = 32, 20_000
    gallery = clustered(rng, n, dim, 200)
    queries = unit(gallery[rng.integers(0, n, 200)] + 0.1 * rng.standard_normal((200, dim)))
    meta = records(n)
    exact = GeoIndex(dim)
    exact.add(gallery, meta)
    truth = exact.search(queries, k=10).ids
    approx = GeoIndex(dim, factory="IVF64,PQ16x4,RFlat")  # 4-bit PQ: cheap to train, re-ranked exactly
    with pytest.raises(GeoBridgeError, match="could not train"):
        approx.train(gallery[:50])
    approx.add(gallery, meta)  # trained on the first add
    approx.set_search_params(nprobe=16)
    ids = approx.search(queries, k=10, k_factor=8).ids
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), truth.tolist(), strict=True)])
    assert recall >= 0.95, recall
    loose = approx.search(queries, k=10, nprobe=1, k_factor=1).ids  # per-call override, then restored
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(loose.tolist(), truth.tolist(), strict=True)]) < recall
    path = approx.save(tmp_path / "ivf.gbx")
    np.testing.assert_array_equal(GeoIndex.load(path).search(queries, k=10, k_factor=8).ids, ids)  # nprobe saved
    assert approx.remove(range(100)) == 100  # refine indexes are rebuilt without the removed vectors
    assert len(approx) == n - 100 and not set(range(100)) & set(approx.search(queries, k=10).ids.ravel().tolist())


def test_no_faiss_on_plain_import():
    import subprocess
    import sys

    code = "import sys, geobridge; import geobridge.cli.main; assert 'faiss' not in sys.modules, 'faiss imported'"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ---------------------------------------------------------------------------------------------------------------------
# search within a prior: the kd-tree disc lookup and the Flat subset path against numpy references


def _prior_world(n: int, *, seed: int) -> tuple[np.ndarray, list[dict], np.ndarray, np.ndarray]:
    """(N, 16) vectors with records scattered around a few hard places: both poles, the antimeridian, (0, 0)."""
    rng = np.random.default_rng(seed)
    spots = np.array([[89.99, 30.0], [-89.99, -120.0], [10.0, 179.99], [-5.0, -179.99], [0.0, 0.0], [48.0, 11.0]])
    where = spots[rng.integers(0, len(spots), n)] + rng.normal(scale=0.05, size=(n, 2))  # about 5 km spreads
    lat = np.clip(where[:, 0], -90.0, 90.0)
    lon = (where[:, 1] + 180.0) % 360.0 - 180.0
    lat[:4], lon[:4] = [90.0, -90.0, 10.0, 10.0], [0.0, 0.0, 180.0, -180.0]  # exactly on the poles and the antimeridian
    recs = [{"place_id": f"p{i}", "lat": float(lat[i]), "lon": float(lon[i]), "view": VIEW_CYCLE[i % 3],
             "path": None} for i in range(n)]
    return rng.standard_normal((n, 16)).astype(np.float32), recs, lat, lon


def _ids_within_reference(index: GeoIndex, near: tuple[float, float], radius_km: float) -> np.ndarray:
    """The full scan that ``ids_within`` replaced: the haversine to every stored item."""
    from geobridge.eval.geo import haversine_km

    ids = np.asarray(sorted(i for i, _ in index.records()), dtype=np.int64)
    lat = np.asarray([index.record(i)["lat"] for i in ids])
    lon = np.asarray([index.record(i)["lon"] for i in ids])
    return ids[haversine_km(near[0], near[1], lat, lon) <= radius_km]


def _prior_brute_force(index, vectors, queries, k, allowed):
    """numpy top-k among ``allowed`` ids (vectors[id] is the id's vector), padded with -1 / -inf like the index."""
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    if len(allowed):
        sims = unit(queries) @ unit(vectors[allowed]).T  # (Q, M)
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        ids[:, : order.shape[1]] = allowed[order]
        scores[:, : order.shape[1]] = np.take_along_axis(sims, order, axis=1)
    return scores, ids


def test_ids_within_equals_the_full_haversine_scan_at_boundaries_poles_and_antimeridian():
    from geobridge.eval.geo import haversine_km

    vectors, recs, lat, lon = _prior_world(600, seed=0)
    index = GeoIndex(16)
    index.add(vectors, recs)
    rng = np.random.default_rng(1)
    centres = [(90.0, 0.0), (-90.0, 77.0), (10.0, 180.0), (10.0, -180.0), (-5.0, 179.999), (0.0, 0.0), (48.0, 11.0),
               (89.9, -150.0), (-30.0, 60.0)]  # the last is far from every item: an empty disc at small radii
    checked_boundary = 0
    for near in centres:
        distances = haversine_km(near[0], near[1], lat, lon)
        radii = [0.001, 1.0, 7.5, 600.0, 15000.0, 20015.1, 30000.0]  # 20015.1 km is about half the circumference
        for item in rng.choice(len(lat), 3, replace=False):  # an item exactly on the boundary, and just outside it
            radii += [float(distances[item]), float(np.nextafter(distances[item], 0.0))]
        for radius in radii:
            if radius <= 0:
                continue
            got = index.ids_within(near, radius_km=radius)
            np.testing.assert_array_equal(got, _ids_within_reference(index, near, radius))
            on_edge = np.flatnonzero(distances == radius)
            assert set(on_edge.tolist()) <= set(got.tolist())  # the boundary is inside (<=), as before
            checked_boundary += len(on_edge)
    assert checked_boundary >= 9
    assert index.ids_within((-30.0, 60.0), radius_km=5.0).size == 0
    assert index.ids_within((0.0, 0.0), radius_km=30000.0).size == len(index)  # beyond the antipode: everything
    with pytest.raises(GeoBridgeError, match="radius_km must be a positive"):
        index.ids_within((0.0, 0.0), radius_km=0.0)


@pytest.mark.parametrize("factory,params", [("Flat", {}), ("IVF8,Flat", {"nprobe": 8}), ("HNSW16", {"ef_search": 600})])
def test_prior_search_equals_brute_force_with_views_k_beyond_the_disc_and_after_add_and_remove(factory, params):
    vectors, recs, lat, lon = _prior_world(600, seed=2)
    index = GeoIndex(16, factory=factory)
    index.add(vectors[:500], recs[:500])
    rng = np.random.default_rng(3)
    views = np.asarray([r["view"] for r in recs])

    def check(stored: np.ndarray) -> None:
        for near, radius in (((90.0, 0.0), 8.0), ((10.0, 180.0), 6.0), ((-5.0, -179.99), 3.0), ((48.0, 11.0), 1.0),
                             ((0.0, 0.0), 2500.0), ((-30.0, 60.0), 5.0)):
            within = _ids_within_reference(index, near, radius)
            for view in (None, "street"):
                allowed = within if view is None else within[views[within] == view]
                for k in (3, max(1, len(allowed)) + 5):  # k below the disc's size and beyond it
                    queries = rng.standard_normal((int(rng.integers(1, 20)), 16))  # one prior, many queries
                    result = index.search(queries, k=k, near=near, radius_km=radius, view=view, **params)
                    scores, ids = _prior_brute_force(index, vectors, queries, k, allowed)
                    np.testing.assert_array_equal(result.ids, ids)
                    np.testing.assert_allclose(result.scores, scores, atol=1e-5)
                    assert set(result.ids[result.ids >= 0].tolist()) <= set(stored.tolist())

    check(np.arange(500))
    index.add(vectors[500:], recs[500:])  # new items inside the same discs: the cached kd-tree must be rebuilt
    check(np.arange(600))
    gone = rng.choice(600, 150, replace=False)
    index.remove(gone)  # and after a removal
    check(np.setdiff1d(np.arange(600), gone))


def test_flat_subset_path_gives_faiss_selector_answers_ties_included(monkeypatch):
    from geobridge.index import prior, selection

    vectors, recs, _, _ = _prior_world(400, seed=4)
    vectors[10:400:7] = vectors[3]  # many identical vectors: exact ties among the hits
    index = GeoIndex(16)
    index.add(vectors, recs)
    index.remove(range(20, 60))  # storage rows no longer equal ids
    calls = []
    original = prior.flat_subset_search
    monkeypatch.setattr(prior, "flat_subset_search", lambda *a: calls.append(len(a[2])) or original(*a))
    queries = np.concatenate([vectors[[3]], np.random.default_rng(5).standard_normal((30, 16))]).astype(np.float32)
    cases = [((0.0, 0.0), 20.0, None, 12), ((0.0, 0.0), 20.0, "drone", 200), ((89.99, 30.0), 15.0, None, 40)]
    subset = [index.search(queries, k=k, near=near, radius_km=r, view=v) for near, r, v, k in cases]
    assert len(calls) == len(cases) and all(0 < c <= selection.FLAT_SUBSET_MAX_SHARE * len(index) for c in calls)
    monkeypatch.setattr(selection, "FLAT_SUBSET_MAX_SHARE", 0.0)  # force faiss's ID selector for the same searches
    for (near, r, v, k), got in zip(cases, subset, strict=True):
        selected = index.search(queries, k=k, near=near, radius_km=r, view=v)
        np.testing.assert_array_equal(got.ids, selected.ids)
        np.testing.assert_allclose(got.scores, selected.scores, rtol=0, atol=1e-6)
        assert (got.scores[0, :3] > 0.999).all() and len(set(got.ids[0, :3].tolist())) == 3
    assert len(calls) == len(cases)  # the forced searches did not take the subset path
    assert index.search(queries, k=5, near=(-30.0, 60.0), radius_km=5.0).ids.tolist() == [[-1] * 5] * len(queries)
