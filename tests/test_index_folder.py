"""The index folder format: round trip, memory-mapped IVF lists, checks, and RSS against the single file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from geobridge.errors import GeoBridgeError, IndexFormatError
from geobridge.index import GeoIndex
from geobridge.index.folder import COLUMN_FILES, INDEX_FILE, MANIFEST, RECORDS_FILE


def _index(factory: str, n: int = 600, dim: int = 16) -> tuple[GeoIndex, np.ndarray]:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    records = [{"place_id": f"p{i // 2}", "lat": -40 + i * 0.1, "lon": 10 + i * 0.01, "view": "satellite",
                "path": f"img/{i}.png", "country": "NO" if i % 3 else None} for i in range(n)]
    index = GeoIndex(dim, factory=factory, model_info={"config": "gb-tiny", "embed_dim": dim})
    index.add(vectors, records)
    index.remove([3, 5])  # ids with gaps survive the round trip
    index.fusion_weights = {"drone": 0.7, "text": 0.3}
    return index, rng.standard_normal((20, dim)).astype(np.float32)


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat", "IVF8,PQ4x4"])
def test_folder_round_trip_answers_the_same(tmp_path, factory):
    index, queries = _index(factory)
    folder = index.save_folder(tmp_path / "idx")
    assert sorted(p.name for p in folder.iterdir()) == sorted([INDEX_FILE, RECORDS_FILE, "meta.json", MANIFEST,
                                                               *COLUMN_FILES])
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["count"] == 598 and manifest["files"][INDEX_FILE]["bytes"] == (folder / INDEX_FILE).stat().st_size
    assert len((folder / RECORDS_FILE).read_text().splitlines()) == 598  # one record per line
    loaded = GeoIndex.load(folder)
    assert (loaded._mapped_from is not None) == factory.startswith("IVF")  # IVF lists are memory-mapped
    assert loaded.info() == index.info() and loaded.fusion_weights == index.fusion_weights
    assert list(loaded.records()) == list(index.records())
    settings = [{}, {"view": "satellite", "k": 5}] + ([{"nprobe": 8}] if factory.startswith("IVF") else [])
    for kwargs in settings:
        a, b = index.search(queries, **kwargs), loaded.search(queries, **kwargs)
        np.testing.assert_array_equal(b.ids, a.ids)
        np.testing.assert_allclose(b.scores, a.scores, rtol=0, atol=1e-6)
    assert b.metadata(0) == a.metadata(0)


def test_mapped_index_is_read_only_and_resaves_by_copy(tmp_path):
    index, queries = _index("IVF8,Flat")
    index.save_folder(tmp_path / "idx")
    mapped = GeoIndex.load(tmp_path / "idx")
    for change in (lambda: mapped.add(queries[:1], [{"place_id": "x", "lat": 0.0, "lon": 0.0, "view": "drone",
                                                     "path": None}]), lambda: mapped.remove([0])):
        with pytest.raises(GeoBridgeError, match="memory-mapped"):
            change()
    mapped.fusion_weights = {"street": 1.0}
    mapped.save_folder(tmp_path / "idx")  # re-saved over itself while mapped (calibrate does this)
    again = GeoIndex.load(tmp_path / "idx")
    assert again.fusion_weights == {"street": 1.0}
    np.testing.assert_array_equal(again.search(queries).ids, index.search(queries).ids)
    writable = GeoIndex.load(tmp_path / "idx", mmap=False)
    assert writable._mapped_from is None and writable.remove([0]) == 1


def test_folder_checks_name_the_broken_file(tmp_path):
    index, _ = _index("IVF8,Flat")
    folder = index.save_folder(tmp_path / "idx")
    records = folder / RECORDS_FILE
    original = records.read_bytes()
    records.write_bytes(original.replace(b'"p0"', b'"q0"', 1))
    with pytest.raises(IndexFormatError, match="records.jsonl: checksum mismatch"):
        GeoIndex.load(folder)
    records.write_bytes(original)
    data = (folder / INDEX_FILE).read_bytes()
    (folder / INDEX_FILE).write_bytes(data[:-10])
    with pytest.raises(IndexFormatError, match="index.faiss: size"):
        GeoIndex.load(folder)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    (folder / INDEX_FILE).write_bytes(bytes(flipped))
    with pytest.raises(IndexFormatError, match="index.faiss: checksum"):
        GeoIndex.load(folder)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.txt").write_text("not an index")
    with pytest.raises(GeoBridgeError, match="not an index folder"):
        index.save_folder(tmp_path / "plain")
    assert (tmp_path / "plain" / "x.txt").is_file()


RSS_PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from geobridge.index import GeoIndex

    def rss_mb():
        status = open("/proc/self/status").read()
        return int(status.split("VmRSS:")[1].split()[0]) / 1024

    before = rss_mb()
    index = GeoIndex.load(sys.argv[1])
    loaded = rss_mb()
    queries = np.random.default_rng(0).standard_normal((3, index.dim)).astype("float32")
    index.search(queries, k=5, nprobe=1)
    print(json.dumps({"load_mb": loaded - before, "search_mb": rss_mb() - before,
                      "mapped": index._mapped_from is not None}))
""")


def test_mapped_folder_keeps_rss_far_below_the_index_size(tmp_path):
    """A 10k x 2048 IVF-Flat index (78 MB): loading the folder maps the lists, loading the .gbx reads them all.
    Measured here: +14 MB to load the folder (ids and records), +32 MB after a search (probed pages), +89 MB to
    load the single file."""
    rng = np.random.default_rng(1)
    n, dim = 10_000, 2048
    index = GeoIndex(dim, factory="IVF16,Flat")
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    index.add(vectors, [{"place_id": str(i), "lat": 0.0, "lon": 0.0, "view": "satellite", "path": None}
                        for i in range(n)])
    del vectors
    index.save_folder(tmp_path / "big")
    index.save(tmp_path / "big.gbx")
    size_mb = (tmp_path / "big" / INDEX_FILE).stat().st_size / 2**20
    assert size_mb > 75

    def probe(path):
        out = subprocess.run([sys.executable, "-c", RSS_PROBE, str(path)], capture_output=True, text=True,
                             timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": "", **_pythonpath()})
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    folder, single = probe(tmp_path / "big"), probe(tmp_path / "big.gbx")
    assert folder["mapped"] and not single["mapped"]
    assert folder["load_mb"] < 0.3 * size_mb, (folder, size_mb)  # ids and records only
    assert single["load_mb"] > 0.9 * size_mb, (single, size_mb)  # the whole index in memory
    assert folder["search_mb"] < 0.65 * size_mb, (folder, size_mb)  # a search reads in only what it probes


def _pythonpath() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "HOME", "HF_HUB_OFFLINE")}


# ---------------------------------------------------------------------------------------------------------------------
# lazy, columnar records (format version 2)


def _mixed(factory: str, n: int = 400, dim: int = 8) -> tuple[GeoIndex, np.ndarray]:
    """Records of every view spread over a region, with extra keys, and gaps in the ids."""
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    lat, lon = rng.uniform(40, 50, n), rng.uniform(0, 20, n)
    views = ("drone", "satellite", "street", "text")
    records = [{"place_id": f"p{i // 3}", "lat": float(lat[i]), "lon": float(lon[i]), "view": views[i % 4 if i % 7
                else 1], "path": None if i % 5 == 0 else f"img/{i}.png", "country": ["NO", "SE", None][i % 3],
                "tags": {"k": i}} for i in range(n)]
    index = GeoIndex(dim, factory=factory)
    index.add(vectors, records)
    index.remove([0, 7, 8, 200])
    return index, rng.standard_normal((12, dim)).astype(np.float32)


def _reseal(folder, name: str) -> None:
    """Write the manifest's size and checksum of ``name`` again after an edit, as a consistent forgery would."""
    from geobridge._hashing import file_sha256

    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"][name] = {"bytes": (folder / name).stat().st_size, "sha256": file_sha256(folder / name)}
    (folder / MANIFEST).write_text(json.dumps(manifest))


def _same_answers(a: GeoIndex, b: GeoIndex, queries: np.ndarray) -> None:
    assert dict(b.records()) == dict(a.records()) and list(b.records()) == list(a.records())
    assert b.info() == a.info() and b.n_places() == a.n_places() and b.place_ids() == a.place_ids()
    for near, radius in (((45.0, 10.0), 150.0), ((41.0, 1.0), 60.0), ((0.0, 0.0), 10.0)):
        np.testing.assert_array_equal(b.ids_within(near, radius_km=radius), a.ids_within(near, radius_km=radius))
    for kwargs in ({}, {"view": "street", "k": 4}, {"view": ["drone", "text"]}, {"exclude_views": ["satellite"]},
                   {"near": (45.0, 10.0), "radius_km": 200.0, "k": 6},
                   {"near": (44.0, 5.0), "radius_km": 300.0, "view": "drone"}):
        x, y = a.search(queries, **kwargs), b.search(queries, **kwargs)
        np.testing.assert_array_equal(y.ids, x.ids)
        np.testing.assert_allclose(y.scores, x.scores, rtol=0, atol=1e-6)
        assert y.records == x.records


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat"])
def test_lazy_records_equal_the_dict_path(tmp_path, factory):
    from geobridge.index.records import LazyRecords

    index, queries = _mixed(factory)
    index.save_folder(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    assert manifest["format_version"] == 2 and set(COLUMN_FILES) <= set(manifest["files"])
    lazy = GeoIndex.load(tmp_path / "idx")
    assert isinstance(lazy._records, LazyRecords) and len(lazy._records) == len(index) == 396
    assert dict(lazy._records) == index._records  # every record parses to what the dict path holds
    assert 0 not in lazy._records and 1 in lazy._records and "1" not in lazy._records and 10**9 not in lazy._records
    with pytest.raises(GeoBridgeError, match="no vector with id 7"):
        lazy.record(7)
    _same_answers(index, lazy, queries)
    assert isinstance(lazy._records, LazyRecords)  # reading, filtering and searching parse nothing into a dict
    fresh = GeoIndex.load(tmp_path / "idx")
    fresh._records._parse = None  # summaries, filters and the disc lookup read the columns, never a line
    assert fresh.info() == index.info() and fresh.n_places() == index.n_places()
    np.testing.assert_array_equal(fresh._allowed_ids("drone", None), index._allowed_ids("drone", None))
    np.testing.assert_array_equal(fresh.ids_within((45.0, 10.0), radius_km=99.0),
                                  index.ids_within((45.0, 10.0), radius_km=99.0))
    if factory == "Flat":
        np.testing.assert_array_equal(lazy.reconstruct([1, 399]), index.reconstruct([1, 399]))
    index.save(tmp_path / "idx.gbx")
    lazy.save(tmp_path / "lazy.gbx")  # a lazily loaded index saves in both layouts
    lazy.save_folder(tmp_path / "again")
    _same_answers(GeoIndex.load(tmp_path / "idx.gbx"), GeoIndex.load(tmp_path / "lazy.gbx"), queries)
    assert (tmp_path / "again" / RECORDS_FILE).read_bytes() == (tmp_path / "idx" / RECORDS_FILE).read_bytes()
    _same_answers(index, GeoIndex.load(tmp_path / "again"), queries)


def test_version_1_folder_is_read_by_parsing(tmp_path):
    index, queries = _mixed("Flat")
    folder = index.save_folder(tmp_path / "idx")
    manifest = json.loads((folder / MANIFEST).read_text())
    for name in COLUMN_FILES:
        (folder / name).unlink()
        del manifest["files"][name]
    manifest["format_version"] = 1
    del manifest["view_names"]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    old = GeoIndex.load(folder)
    assert type(old._records) is dict
    _same_answers(index, old, queries)
    manifest["format_version"] = 3
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="unsupported format_version 3"):
        GeoIndex.load(folder)


def test_corrupt_records_line_is_named_when_read(tmp_path):
    index, queries = _mixed("Flat")
    folder = index.save_folder(tmp_path / "idx")
    lines = (folder / RECORDS_FILE).read_bytes().splitlines(keepends=True)
    assert json.loads(lines[4])["id"] == 5 and json.loads(lines[8])["id"] == 11
    lines[4] = lines[4].replace(b'"view": "satellite"', b'"view": "satellitX"', 1)
    lines[8] = b"[" + lines[8][1:]  # same length, not JSON
    (folder / RECORDS_FILE).write_bytes(b"".join(lines))
    with pytest.raises(IndexFormatError, match="records.jsonl: checksum mismatch"):
        GeoIndex.load(folder)
    _reseal(folder, RECORDS_FILE)
    lazy = GeoIndex.load(folder)  # the columns are sound: the load succeeds, the bad lines fail when read
    assert lazy.record(6) == index.record(6)
    with pytest.raises(IndexFormatError, match=r"records.jsonl: line 5 \(id 5\): .*unknown view 'satellitX'"):
        lazy.record(5)
    with pytest.raises(IndexFormatError, match=r"records.jsonl: line 9 \(id 11\): not a JSON record"):
        lazy.record(11)
    with pytest.raises(IndexFormatError, match=r"line 5 \(id 5\)"):
        list(lazy.records())
    with pytest.raises(IndexFormatError, match=r"line 5 \(id 5\)"):
        lazy.remove([1])  # materialising before a change reads every line
    assert len(lazy) == len(index)  # nothing was removed


def test_column_checks_name_the_file(tmp_path):
    index, _ = _mixed("Flat")
    folder = index.save_folder(tmp_path / "idx")
    original = (folder / "lat.npy").read_bytes()
    flipped = bytearray(original)
    flipped[-3] ^= 0x01
    (folder / "lat.npy").write_bytes(bytes(flipped))
    with pytest.raises(IndexFormatError, match="lat.npy: checksum mismatch"):
        GeoIndex.load(folder)
    with pytest.raises(IndexFormatError, match="lat.npy: checksum mismatch"):
        GeoIndex.load(folder, verify=False)  # verify=False skips only the faiss file's checksum
    _reseal(folder, "lat.npy")  # a lat that no longer matches its line: caught when the line is read
    lazy = GeoIndex.load(folder)
    last = int(lazy._records.ids[-1])
    with pytest.raises(IndexFormatError, match=rf"line {len(lazy)} \(id {last}\): lat/lon/view .* differ"):
        lazy.record(last)
    (folder / "lat.npy").write_bytes(original)
    _reseal(folder, "lat.npy")
    ids = np.load(folder / "ids.npy")
    for bad, message in ((ids[::-1].copy(), "ids.npy: ids must be strictly increasing"),
                         (ids.astype(np.int32), r"ids.npy: expected a \(396,\) int64 column")):
        np.save(folder / "ids.npy", bad)
        _reseal(folder, "ids.npy")
        with pytest.raises(IndexFormatError, match=message):
            GeoIndex.load(folder)
    np.save(folder / "ids.npy", ids)
    _reseal(folder, "ids.npy")
    manifest = json.loads((folder / MANIFEST).read_text())
    for summary in ({"places": 10**6, "countries": {}}, {"places": 3, "countries": {"NO": 4}}, None):
        (folder / MANIFEST).write_text(json.dumps({**manifest, "summary": summary}))
        with pytest.raises(IndexFormatError, match="manifest.json: summary must hold places"):
            GeoIndex.load(folder)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    (folder / "view.npy").write_bytes(b"not a npy file")
    _reseal(folder, "view.npy")
    with pytest.raises(IndexFormatError, match="view.npy: not a readable .npy column"):
        GeoIndex.load(folder)


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat"])
def test_changes_after_a_lazy_load_match_the_dict_path(tmp_path, factory):
    index, queries = _mixed(factory)
    index.save_folder(tmp_path / "idx")
    index.save(tmp_path / "idx.gbx")
    lazy, plain = GeoIndex.load(tmp_path / "idx", mmap=False), GeoIndex.load(tmp_path / "idx.gbx")
    assert type(plain._records) is dict
    new = {"place_id": "new", "lat": 45.5, "lon": 9.5, "view": "street", "path": None}
    for changed in (lazy, plain):
        np.testing.assert_array_equal(changed.add(queries[:2], [new, {**new, "view": "text"}]), [400, 401])
        assert changed.remove([1, 2, 401, 5000]) == 3
        assert changed.remove_places(["p5", "p6"]) == 6
    assert type(lazy._records) is dict
    _same_answers(plain, lazy, queries)
    plain.save_folder(tmp_path / "plain")
    lazy.save_folder(tmp_path / "idx")  # over the folder it was loaded from
    for name in (RECORDS_FILE, *COLUMN_FILES):
        assert (tmp_path / "idx" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes(), name
    _same_answers(GeoIndex.load(tmp_path / "plain"), GeoIndex.load(tmp_path / "idx"), queries)


def test_lazy_load_holds_far_less_python_memory(tmp_path):
    """tracemalloc's peak while loading a 200k-record folder (columns memory-mapped, nothing parsed) against the
    dict path's, measured on the first 20k of the records written as a version-1 folder (every record parsed),
    scaled by 10. Measured here: lazy 3.1 MiB in 0.06 s; dict 235.8 MiB in 12.7 s for all 200k."""
    import time
    import tracemalloc

    def build(n, folder):
        rng = np.random.default_rng(3)
        index = GeoIndex(4, factory="Flat")
        lat, lon = rng.uniform(-60, 60, 200_000)[:n].tolist(), rng.uniform(-180, 180, 200_000)[:n].tolist()
        index.add(rng.standard_normal((n, 4)).astype(np.float32),
                  [{"place_id": f"p{i:07d}", "lat": lat[i], "lon": lon[i], "view": "satellite",
                    "path": f"tiles/{i:07d}.png"} for i in range(n)])
        return index.save_folder(folder)

    def peak_mb(path):
        tracemalloc.start()
        start = time.perf_counter()
        loaded = GeoIndex.load(path)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        return loaded, peak, seconds

    folder, old = build(200_000, tmp_path / "new"), build(20_000, tmp_path / "old")
    manifest = json.loads((old / MANIFEST).read_text())
    for name in COLUMN_FILES:
        (old / name).unlink()
        del manifest["files"][name]
    (old / MANIFEST).write_text(json.dumps({**manifest, "format_version": 1}))
    lazy, lazy_mb, lazy_s = peak_mb(folder)
    plain, plain_mb, plain_s = peak_mb(old)
    print(f"tracemalloc peak of the load: lazy 200k {lazy_mb:.1f} MiB in {lazy_s:.2f} s, dict 20k {plain_mb:.1f} "
          f"MiB in {plain_s:.2f} s")
    assert plain_mb > 10  # ~1 KB of Python objects per parsed record
    assert lazy_mb < 0.1 * 10 * plain_mb and lazy_mb < 20, (lazy_mb, plain_mb)
    assert lazy.record(12_345) == plain.record(12_345)
    near = {"near": (10.0, 20.0), "radius_km": 2000.0}
    assert set(lazy.ids_within(**near).tolist()) >= set(plain.ids_within(**near).tolist())  # same first 20k


def test_folder_save_refuses_records_that_are_not_json(tmp_path):
    index, _ = _mixed("Flat")
    index.save_folder(tmp_path / "idx")
    before = {p.name: p.read_bytes() for p in (tmp_path / "idx").iterdir()}
    index.add(np.ones((1, 8), np.float32), [{"place_id": "x", "lat": 0.0, "lon": 0.0, "view": "text", "path": None,
                                            "tags": {1, 2}}])
    with pytest.raises(GeoBridgeError, match="not JSON-compatible"):
        index.save_folder(tmp_path / "idx")
    assert {p.name: p.read_bytes() for p in (tmp_path / "idx").iterdir()} == before  # the old folder stands
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no staging folder left behind
