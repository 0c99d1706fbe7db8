"""Pair-based epochs (data/pairs.py): every pair once per epoch, place-unique batches, in both data pipelines."""

from __future__ import annotations

import itertools
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geobridge.data import Place, PlaceDataset, load_places
from geobridge.data.batch_augment import BatchAugment
from geobridge.data.pairs import PairBatchSampler, epoch_pairs, full_batches
from geobridge.data.tensor_cache import TensorBatches, build_view_cache
from tests.conftest import make_world

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _places(drone_counts: list[int], *, satellite: int = 1, texts: int = 0) -> list[Place]:
    """Places whose images are fake paths: ``drone_counts[p]`` drone photos and ``satellite`` tiles each."""
    return [
        Place(place_id=f"b{p}", lat=50.0 + p, lon=5.0, texts=tuple(f"text {p}.{k}" for k in range(texts)),
              images={v: tuple(Path(f"{v}/b{p}/{k}.png") for k in range(n)) for v, n in
                      (("drone", n_drone), ("satellite", satellite)) if n})
        for p, n_drone in enumerate(drone_counts)
    ]


def _epoch(sampler: PairBatchSampler, epoch: int = 0) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_epoch_pairs_by_hand():
    # b0: 3 drone photos and 1 tile -> 3 pairs; b1: no drone photo -> none; b2: 2 photos -> 2 pairs
    places = _places([3, 0, 2])
    pairs = epoch_pairs(places, views=("drone", "satellite"))
    assert pairs.views == ("drone", "satellite") and len(pairs) == 5 and pairs.n_places == 3
    assert pairs.place.tolist() == [0, 0, 0, 2, 2]
    assert pairs.query.tolist() == [0, 1, 2, 0, 1] and pairs.reference.tolist() == [0, 0, 0, 0, 0]
    assert pairs.item(1, "drone") == 1 and pairs.item(1, "satellite") == 0 and pairs.item(1, "street") is None
    # two reference items cycle under three query items; texts count as items of the "text" view
    cycled = epoch_pairs(_places([3], satellite=2, texts=3), views=("drone", "satellite"))
    assert cycled.reference.tolist() == [0, 1, 0]
    aligned = epoch_pairs(_places([3], texts=3), views=("drone", "text"))
    assert aligned.query.tolist() == aligned.reference.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="two different views"):
        epoch_pairs(places, views=("drone", "drone"))
    with pytest.raises(ValueError, match="unknown view"):
        epoch_pairs(places, views=("drone", "aerial"))


def test_every_pair_once_and_no_place_twice_in_a_batch_by_hand():
    # counts 3, 2, 2, 1 with batches of 2: 8 pairs fill exactly 4 batches; place 0 is in 3 of the 4
    pairs = epoch_pairs(_places([3, 2, 2, 1]), views=("drone", "satellite"))
    sampler = PairBatchSampler(pairs.place, n_places=4, batch_size=2, seed=0)
    assert len(sampler) == 4
    for epoch in range(20):  # many draws of the random plan
        batches = _epoch(sampler, epoch)
        assert len(batches) == 4 and all(len(b) == 2 for b in batches)
        assert sorted(i for b in batches for i in b) == list(range(8))  # every pair exactly once
        for batch in batches:
            assert len({int(pairs.place[i]) for i in batch}) == 2  # two places, never one twice
        assert sum(0 in pairs.place[b] for b in batches) == 3


def test_leftover_pairs_follow_in_smaller_batches_without_drop_last():
    # place 0 holds 5 of 7 pairs: only 2 full batches of 2 distinct places exist, 3 pairs of place 0 are left
    pairs = epoch_pairs(_places([5, 1, 1]), views=("drone", "satellite"))
    assert full_batches(np.bincount(pairs.place), 2) == 2
    dropping = PairBatchSampler(pairs.place, n_places=3, batch_size=2, seed=1)
    batches = _epoch(dropping)
    assert len(dropping) == len(batches) == 2 and all(len(b) == 2 for b in batches)
    assert len({i for b in batches for i in b}) == 4  # no pair twice
    keeping = PairBatchSampler(pairs.place, n_places=3, batch_size=2, seed=1, drop_last=False)
    batches = _epoch(keeping)
    assert len(keeping) == len(batches) == 5
    assert sorted(len(b) for b in batches) == [1, 1, 1, 2, 2]
    assert sorted(i for b in batches for i in b) == list(range(7))
    with pytest.raises(ValueError, match="fewer than one batch"):
        PairBatchSampler(pairs.place, n_places=3, batch_size=4)


@cache
def _brute_force_batches(counts: tuple[int, ...], size: int) -> int:
    """The most batches of ``size`` distinct places, by trying every choice of places for the next batch."""
    best = 0
    for chosen in itertools.combinations([p for p, c in enumerate(counts) if c], size):
        rest = tuple(c - (p in chosen) for p, c in enumerate(counts))
        best = max(best, 1 + _brute_force_batches(rest, size))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_the_sampler_fills_as_many_batches_as_brute_force_finds(seed):
    rng = np.random.default_rng(seed)
    counts = [int(c) for c in rng.integers(0, 5, size=5)]
    counts[0] = max(counts[0], 1)
    size = int(rng.integers(1, 4))
    if sum(c > 0 for c in counts) < size:
        counts[: size] = [max(c, 1) for c in counts[:size]]
    expected = _brute_force_batches(tuple(counts), size)
    assert full_batches(np.array(counts), size) == expected
    pairs = epoch_pairs(_places(counts), views=("drone", "satellite"))
    sampler = PairBatchSampler(pairs.place, n_places=len(counts), batch_size=size, seed=seed)
    for epoch in range(10):  # the weighted draw never paints itself into a corner
        batches = _epoch(sampler, epoch)
        assert len(batches) == expected and all(len(set(pairs.place[b])) == size for b in batches)
        assert len({i for b in batches for i in b}) == expected * size


def test_plan_is_reproducible_per_epoch_and_shards_by_rank():
    pairs = epoch_pairs(_places([4] * 6), views=("drone", "satellite"))
    sampler = PairBatchSampler(pairs.place, n_places=6, batch_size=4, seed=3)
    first, again, other = _epoch(sampler, 0), _epoch(sampler, 0), _epoch(sampler, 1)
    assert first == again and first != other
    # a resumed run rebuilds the sampler: the same plan
    assert _epoch(PairBatchSampler(pairs.place, n_places=6, batch_size=4, seed=3), 1) == other
    ranks = [PairBatchSampler(pairs.place, n_places=6, batch_size=4, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    shards = [_epoch(r, 1) for r in ranks]
    assert [a + b for a, b in zip(*shards, strict=True)] == other


def test_gps_batches_hold_near_places():
    # 16 places on a line of latitudes, 3 pairs each: GPS batches of 4 hold near places
    places = _places([3] * 16)
    pairs = epoch_pairs(places, views=("drone", "satellite"))
    coords = np.array([[p.lat, p.lon] for p in places])
    spread = {}
    for strategy in ("random", "gps"):
        sampler = PairBatchSampler(pairs.place, n_places=16, batch_size=4, seed=0, strategy=strategy, coords=coords)
        batches = _epoch(sampler)
        assert sorted(i for b in batches for i in b) == list(range(48))
        assert all(len(set(pairs.place[b])) == 4 for b in batches)
        spread[strategy] = np.mean([np.ptp(pairs.place[b]) for b in batches])
    assert spread["gps"] < 0.6 * spread["random"]  # 5.25 vs 9.8 places apart


def test_embedding_neighbours_seed_the_batches():
    pairs = epoch_pairs(_places([2] * 8), views=("drone", "satellite"))
    sampler = PairBatchSampler(pairs.place, n_places=8, batch_size=2, seed=0, strategy="embedding")
    partner = np.array([1, 0, 3, 2, 5, 4, 7, 6])  # each place's most similar place
    sampler.set_neighbours(np.stack([partner, (partner + 2) % 8], axis=1))
    batches = _epoch(sampler)
    assert len(batches) == 8 and sorted(i for b in batches for i in b) == list(range(16))
    together = Counter(tuple(sorted(pairs.place[b].tolist())) for b in batches)
    assert sum(together[(a, a + 1)] for a in (0, 2, 4, 6)) >= 6  # mostly the similar partner


# ---------------------------------------------------------------------- both data pipelines
@pytest.fixture()
def two_view_world(tmp_path):
    """make_world's 8 places, with a second and third drone photo of every place."""
    root = make_world(tmp_path / "w")
    for drone in sorted((root / "drone").iterdir()):
        for k in (1, 2):
            Image.open(drone / "00.png").rotate(90 * k).save(drone / f"0{k}.png")
    return load_places(root)


def test_place_dataset_shows_the_pairs_images(two_view_world):
    places = two_view_world
    pairs = epoch_pairs(places, views=("drone", "satellite"))
    assert len(pairs) == 3 * len(places)
    shown = []
    transform = lambda image: torch.as_tensor(np.array(image)).permute(2, 0, 1).float()  # noqa: E731
    dataset = PlaceDataset(places, views=["drone", "satellite", "text"], pairs=pairs,
                           transforms={"drone": transform, "satellite": transform})
    assert len(dataset) == len(pairs)
    for index in range(len(pairs)):
        item = dataset[index]
        place = places[int(pairs.place[index])]
        assert item["place_index"] == pairs.place[index] and item["text"] in place.texts
        expected = transform(Image.open(place.images["drone"][pairs.query[index]]).convert("RGB"))
        assert torch.equal(item["images"]["drone"], expected)
        shown.append(item["images"]["drone"])
    # the three pairs of a place show its three different drone photos
    assert not torch.equal(shown[0], shown[1]) and not torch.equal(shown[1], shown[2])


def test_tensor_batches_show_the_pairs_images(two_view_world):
    places = two_view_world
    pairs = epoch_pairs(places, views=("drone", "satellite"))
    caches = {v: build_view_cache(places, v, size=(16, 16), interpolation="bilinear") for v in ("drone", "satellite")}
    sampler = PairBatchSampler(pairs.place, n_places=len(places), batch_size=4, seed=0)
    augment = {v: BatchAugment(v, mean=MEAN, std=STD, train=False) for v in caches}
    batches = TensorBatches(places, caches, sampler=sampler, augment=augment, use_text=True,
                            device=torch.device("cpu"), pairs=pairs)
    sampler.set_epoch(0)
    plan = list(sampler)
    seen = []
    for batch, items in zip(batches, plan, strict=True):
        assert batch["place_index"].tolist() == pairs.place[items].tolist()
        assert len(set(batch["place_index"].tolist())) == 4
        rows = caches["drone"].start[pairs.place[items]] + pairs.query[items]
        expected = augment["drone"](caches["drone"].images[torch.as_tensor(rows)], generator=torch.Generator())
        torch.testing.assert_close(batch["images"]["drone"], expected)
        seen.extend(items)
    assert sorted(seen) == list(range(len(pairs)))  # 24 pairs = 6 full batches: every pair once
