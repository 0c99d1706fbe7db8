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
    for kwargs in ({}, {"nprobe": 8}, {"view": "satellite", "k": 5}):
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
