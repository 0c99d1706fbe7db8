from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geobridge.cli.main import main
from geobridge.data import (
    GeoLocDataset,
    PlaceBatchSampler,
    PlaceDataset,
    University1652Dataset,
    ViewDataset,
    check_dataset,
    collate_places,
    load_geotext1652,
    make_view_transform,
)
from geobridge.errors import DataError
from geobridge.robust import RobustAugment

MEAN = STD = (0.5, 0.5, 0.5)


def _png(path: Path, size=(32, 32), seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def make_geoloc(root: Path, n: int = 6, *, drone_views: int = 2, skip_street: tuple[int, ...] = ()) -> Path:
    places, texts = [], []
    for i in range(n):
        pid = f"p{i:03d}"
        places.append({"place_id": pid, "country": "NO", "lat": 60.0 + i * 0.01, "lon": 5.0 + i * 0.01,
                       "split": "train" if i < n - 2 else "test", "terrain": "urban", "landmark": None})
        texts.append({"place_id": pid, "texts": [f"place {chr(97 + i)} one", f"place {chr(97 + i)} two"]})
        for k in range(drone_views):
            _png(root / "drone" / pid / f"{k:02d}.png", seed=i * 10 + k)
        _png(root / "satellite" / pid / "0.png", seed=100 + i)
        if i not in skip_street:
            _png(root / "street" / pid / "0.png", size=(64, 32), seed=200 + i)
    (root / "places.jsonl").write_text("".join(json.dumps(p) + "\n" for p in places))
    (root / "texts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts))
    manifest = {"format": "geoloc", "format_version": 1, "name": "fixture", "image_size": 32,
                "drone_views": drone_views,
                "views": ["drone", "satellite", "street", "text"], "holdout_countries": [],
                "countries": [{"code": "NO", "name": "Norway", "bbox": [58.0, 71.0, 4.0, 31.0]}],
                "seed": 0, "generator": "test", "appearance": {}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def make_university(root: Path) -> Path:
    for bid in ("0001", "0002", "0003"):
        for view in ("drone", "satellite", "street"):
            _png(root / "train" / view / bid / "a.jpg")
    for bid in ("0101", "0102"):
        _png(root / "test" / "query_drone" / bid / "image-01.jpeg")
        _png(root / "test" / "query_drone" / bid / "image-02.jpeg")
        _png(root / "test" / "gallery_satellite" / bid / f"{bid}.jpg")
    _png(root / "test" / "gallery_satellite" / "0999" / "0999.jpg")  # a distractor building
    (root / "coords.csv").write_text("building_id,lat,lon\n0101,1.5,2.5\n0102,3.0,4.0\n")
    return root


def test_geoloc_loader(tmp_path):
    ds = GeoLocDataset(make_geoloc(tmp_path / "w", skip_street=(1,)))
    assert len(ds) == 6 and ds.countries == ("NO",)
    first = ds.places[0]
    assert first.place_id == "p000" and first.lat == pytest.approx(60.0) and len(first.images["drone"]) == 2
    assert first.texts == ("place a one", "place a two")
    assert not ds.places[1].has_view("street") and ds.places[1].has_view("satellite")
    assert [p.place_id for p in GeoLocDataset(tmp_path / "w", split="test").places] == ["p004", "p005"]
    drones = ds.samples("drone")
    assert len(drones) == 12 and drones[3].place_index == 1 and drones[3].path.name == "01.png"
    assert len(ds.samples("text")) == 12


def test_geoloc_loader_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="not found"):
        GeoLocDataset(tmp_path / "nope")
    root = make_geoloc(tmp_path / "w")
    (root / "places.jsonl").write_text('{"place_id": "a", "lat": 1, "lon": 2}\n{oops\n')
    with pytest.raises(DataError, match=r"places.jsonl:2"):
        GeoLocDataset(root)
    (root / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="manifest.json"):
        GeoLocDataset(root)


def test_university1652_loader(tmp_path):
    root = make_university(tmp_path / "u")
    train = University1652Dataset(root, split="train")
    assert [p.place_id for p in train.places] == ["0001", "0002", "0003"]
    assert train.places[0].lat is None and set(train.places[0].images) == {"drone", "satellite", "street"}
    test = University1652Dataset(root, split="test")
    assert [p.place_id for p in test.places_for("query")] == ["0101", "0102"]
    assert [p.place_id for p in test.places_for("gallery")] == ["0101", "0102", "0999"]
    queries = test.samples("drone", role="query")
    assert len(queries) == 4 and queries[0].lat == 1.5 and queries[2].lon == 4.0
    assert test.samples("satellite", role="gallery")[2].lat is None
    with pytest.raises(DataError, match="University-1652"):
        University1652Dataset(tmp_path / "empty", split="train")
    coords = root / "coords.csv"
    for body, message in [
        (b"building_id,lat,lon\n0101,1.5,2.5\n0102,3.0,\xe9\n", r"coords.csv:3: not valid UTF-8"),
        (b"building_id,lat,lon\n\n0101,95,2.5\n", r"coords.csv:3: coordinates \(95.0, 2.5\) out of range"),
        (b"building_id,lat,lon\n0101,nan,2.5\n", r"coords.csv:2: coordinates \(nan, 2.5\) out of range"),
        (b"building,lat,lon\n0101,1,2\n", r"coords.csv:2: expected columns building_id,lat,lon"),
        (b"", r"coords.csv: empty file"),
    ]:
        coords.write_bytes(body)
        with pytest.raises(DataError, match=message):
            University1652Dataset(root, split="test")


def test_geotext1652_annotations(tmp_path):
    entries = [
        {"image_id": "0839/image-01.jpeg", "image": "train/drone/0839/image-01.jpeg",
         "caption": "A tall white building with a red roof.", "sentences": ["a red roof"], "bboxes": [[0, 0, 1, 1]]},
        {"image": "train/drone/0839/image-02.jpeg", "caption": "A tall white building with a red roof."},
        {"image": "train/satellite/0840/0840.jpg", "caption": ["A green field.", "A road to the north."],
         "sentences": ["a green field", "a road to the north"]},
    ]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(entries))
    texts = load_geotext1652(path)  # captions only: region sentences are grounding, never captions
    assert texts == {"0839": ["A tall white building with a red roof."],
                     "0840": ["A green field.", "A road to the north."]}
    assert set(load_geotext1652(path, views=("satellite",))) == {"0840"}
    path.write_text(json.dumps([{"image": "train/0841/image-01.jpeg", "sentences": ["a field"]}]))
    with pytest.raises(DataError, match="entry 0.*caption"):
        load_geotext1652(path)
    path.write_text(json.dumps(entries))
    root = make_university(tmp_path / "u")
    ds = University1652Dataset(root, split="train")
    ds.attach_texts({"0001": ["a brick tower"]})
    assert ds.places[0].texts == ("a brick tower",)
    path.write_text(json.dumps([{"caption": "no image"}]))
    with pytest.raises(DataError, match="entry 0"):
        load_geotext1652(path)


@pytest.mark.parametrize("view,size", [("drone", (3, 24, 24)), ("satellite", (3, 24, 24)), ("street", (3, 24, 48))])
@pytest.mark.parametrize("train", [False, True])
def test_transforms_shapes(view, size, train):
    t = make_view_transform(view, input_size=size, mean=MEAN, std=STD, train=train)
    out = t(Image.new("RGB", (100, 70), (255, 0, 0)))
    assert tuple(out.shape) == size and out.dtype == torch.float32
    if not train:  # pure red normalised with mean = std = 0.5
        assert out[0].mean().item() == pytest.approx(1.0) and out[1].mean().item() == pytest.approx(-1.0)


@pytest.mark.parametrize("view,size", [("drone", (3, 24, 24)), ("street", (3, 24, 48))])
def test_robust_transform_shapes_and_downscale(view, size):
    from geobridge.data.transforms import RandomDownscale

    t = make_view_transform(view, input_size=size, mean=MEAN, std=STD, train=True, robust=RobustAugment())
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (70, 100, 3), dtype=np.uint8))
    outs = [t(image) for _ in range(4)]
    assert all(tuple(o.shape) == size and torch.isfinite(o).all() for o in outs)
    assert not torch.equal(outs[0], outs[1])  # random, per call
    fixed = RandomDownscale(min_factor=2.0, max_factor=2.0)(image)
    expected = image.resize((50, 35), Image.BILINEAR).resize((100, 70), Image.BILINEAR)
    assert fixed.size == image.size and np.array_equal(np.asarray(fixed), np.asarray(expected))
    with pytest.raises(ValueError, match="min_factor"):
        RandomDownscale(min_factor=0.5, max_factor=2.0)


def test_place_dataset_and_collate_with_missing_view(tmp_path):
    ds = GeoLocDataset(make_geoloc(tmp_path / "w", skip_street=(1,)))
    transforms = {v: make_view_transform(v, input_size=(3, 16, 32 if v == "street" else 16), mean=MEAN, std=STD)
                  for v in ("drone", "satellite", "street")}
    pd = PlaceDataset(ds.places, views=["drone", "satellite", "street", "text"], transforms=transforms, seed=0)
    batch = collate_places([pd[i] for i in (0, 1, 2)])
    assert batch["place_index"].tolist() == [0, 1, 2]
    assert batch["images"]["drone"].shape == (3, 3, 16, 16)
    assert batch["images"]["street"].shape == (2, 3, 16, 32) and batch["index"]["street"].tolist() == [0, 2]
    assert batch["text_index"].tolist() == [0, 1, 2] and batch["text"][1].startswith("place b")
    # reproducible per (seed, epoch, index), and the draw changes with the epoch
    draws = set()
    for epoch in range(8):
        pd.set_epoch(epoch)
        a, b = pd[0], pd[0]
        assert torch.equal(a["images"]["drone"], b["images"]["drone"]) and a["text"] == b["text"]
        draws.add(a["text"])
    assert len(draws) == 2
    vd = ViewDataset(ds.samples("drone"), transform=transforms["drone"])
    assert len(vd) == 12 and vd[5]["place_index"] == 2


def test_corrupt_image_names_path(tmp_path):
    root = make_geoloc(tmp_path / "w")
    bad = root / "satellite" / "p002" / "0.png"
    bad.write_bytes(bad.read_bytes()[:40])
    ds = GeoLocDataset(root)
    vd = ViewDataset(ds.samples("satellite"), transform=make_view_transform(
        "satellite", input_size=(3, 8, 8), mean=MEAN, std=STD))
    with pytest.raises(DataError, match=str(bad)):
        vd[2]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("strategy", ["random", "gps", "embedding"])
def test_sampler_never_repeats_a_place(seed, strategy):
    rng = np.random.default_rng(seed)
    keys = [f"k{int(k)}" for k in rng.integers(0, 40, size=150)]  # many items share places
    coords = np.repeat(rng.uniform([-60, -170], [60, 170], size=(1, 2)), 150, axis=0) + rng.normal(size=(150, 2))
    sampler = PlaceBatchSampler(keys, batch_size=7, seed=seed, strategy=strategy, coords=coords)
    if strategy == "embedding":
        n = sampler.n_places
        sampler.set_neighbours(np.array([rng.permutation(n)[:10] for _ in range(n)]))
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == sampler.n_places // 7
        seen = []
        for batch in batches:
            places = [keys[i] for i in batch]
            assert len(places) == len(set(places)) == 7
            seen.extend(places)
        assert len(seen) == len(set(seen))  # each place at most once per epoch


def test_gps_batches_are_geographically_tighter():
    rng = np.random.default_rng(0)
    coords = rng.uniform([-50, -150], [50, 150], size=(400, 2))
    keys = [str(i) for i in range(400)]

    def mean_spread(strategy):
        sampler = PlaceBatchSampler(keys, batch_size=16, strategy=strategy, coords=coords, seed=1)
        return np.mean([np.ptp(coords[b], axis=0).sum() for b in sampler])

    assert mean_spread("gps") < 0.5 * mean_spread("random")


def test_gps_groups_fill_a_batch_with_several_neighbourhoods():
    """Sample4Geo-style batches: with group_size g each batch holds batch_size / g groups, each a random place and
    its g - 1 nearest unused places; without it one neighbourhood fills the batch."""
    clusters, per = 24, 4  # 24 tight clusters of 4 places, 10 degrees apart along the equator
    coords = np.array([[0.0, 10.0 * c + 0.01 * k] for c in range(clusters) for k in range(per)])
    keys = [str(i) for i in range(len(coords))]
    cluster_of = np.arange(len(coords)) // per

    def batches(group_size):
        sampler = PlaceBatchSampler(keys, batch_size=16, strategy="gps", coords=coords, seed=2, group_size=group_size)
        return [cluster_of[np.array(b)] for epoch in range(3) if not sampler.set_epoch(epoch) for b in sampler]

    grouped, whole = batches(4), batches(None)
    for b in grouped:  # a seed's nearest unused places are its own cluster: every cluster comes whole
        assert sorted(np.bincount(b, minlength=clusters)[np.unique(b)]) == [per] * 4
    span = lambda b: np.ptp(b)  # noqa: E731  (clusters apart along the line)
    # one neighbourhood: adjacent clusters (the epoch's last batches gather what is left, anywhere)
    assert np.median([span(b) for b in whole]) <= 4
    assert np.median([span(b) for b in grouped]) > 10  # four random neighbourhoods
    with pytest.raises(ValueError, match="group_size"):
        PlaceBatchSampler(keys, batch_size=16, strategy="gps", coords=coords, group_size=0)


def test_sampler_ddp_slices_cover_global_batch():
    keys = [str(i) for i in range(64)]
    full = list(PlaceBatchSampler(keys, batch_size=8, seed=3))
    ranks = [list(PlaceBatchSampler(keys, batch_size=8, seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    for g, a, b in zip(full, *ranks, strict=True):
        assert a + b == g and len(a) == 4


def test_check_clean_and_corrupted(tmp_path, capsys):
    root = make_geoloc(tmp_path / "w")
    assert check_dataset(root, show_progress_bar=False).ok
    assert main(["data", "check", str(root), "--quiet"]) == 0
    (root / "drone" / "p001" / "00.png").unlink()
    (root / "drone" / "p001" / "01.png").unlink()
    truncated = root / "satellite" / "p002" / "0.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    lines = (root / "places.jsonl").read_text().splitlines()
    row = json.loads(lines[3])
    row["lat"] = 123.0
    lines[3] = json.dumps(row)
    (root / "places.jsonl").write_text("\n".join(lines) + "\n")
    _png(root / "street" / "zzz" / "0.png")
    report = check_dataset(root, show_progress_bar=False)
    kinds = {(p.kind, Path(p.path.split(":")[0]).name) for p in report.problems}
    assert ("missing-view", "p001") in kinds
    assert ("unreadable-image", "0.png") in kinds and any(str(truncated) == p.path for p in report.problems)
    assert ("bad-coordinates", "places.jsonl") in kinds
    assert ("unknown-id", "zzz") in kinds
    capsys.readouterr()
    assert main(["data", "check", str(root), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "p001" in out and str(truncated) in out and "123.0" in out and "zzz" in out


def test_check_cli_bad_roots(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "missing")]) == 1
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert main(["data", "check", str(f)]) == 1
    (tmp_path / "empty").mkdir()
    assert main(["data", "check", str(tmp_path / "empty")]) == 1
    assert "unknown-layout" in capsys.readouterr().out


def test_check_university_layout(tmp_path):
    root = make_university(tmp_path / "u")
    assert check_dataset(root, show_progress_bar=False).ok
    _png(root / "train" / "drone" / "stray.jpg")
    report = check_dataset(root, show_progress_bar=False)
    assert [p.kind for p in report.problems] == ["wrong-layout"]


def test_train_augmentations_keep_content():
    from geobridge.data.transforms import RandomRoll, RandomRot90

    rng = np.random.default_rng(0)
    pano = Image.fromarray(rng.integers(0, 255, (8, 16, 3), dtype=np.uint8))
    torch.manual_seed(0)
    rolled = [np.asarray(RandomRoll()(pano)) for _ in range(8)]
    original = np.asarray(pano)
    for r in rolled:  # a circular shift of columns: some shift reproduces the original exactly
        assert r.shape == original.shape
        assert any(np.array_equal(np.roll(r, s, axis=1), original) for s in range(16))
    assert any(not np.array_equal(r, original) for r in rolled)
    tile = Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8))
    rotated = [np.asarray(RandomRot90()(tile)) for _ in range(16)]
    tile_np = np.asarray(tile)
    for r in rotated:
        assert any(np.array_equal(np.rot90(r, k), tile_np) for k in range(4))
    assert len({r.tobytes() for r in rotated}) > 1
