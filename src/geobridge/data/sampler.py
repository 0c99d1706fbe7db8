"""Batch sampling where a place never appears twice in a batch, with GPS or similarity hard negatives."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from geobridge.geodesy import unit_xyz

STRATEGIES = ("random", "gps", "embedding")


def check_batching(*, strategy: str, batch_size: int, num_replicas: int, rank: int) -> None:
    """Refuse an unknown strategy, a batch that does not split over the replicas, or a rank out of range."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    if batch_size < 1 or batch_size % num_replicas:
        raise ValueError(f"batch_size {batch_size} must be a positive multiple of num_replicas {num_replicas}")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} out of range for {num_replicas} replicas")


class HardNegativeBatching:
    """What the place and pair batch samplers share: the epoch, the neighbours, hard-negative candidates and
    the per-rank slice of a global batch. Subclasses set the attributes below in ``__init__``."""

    n_places: int
    strategy: str
    batch_size: int
    num_replicas: int
    rank: int
    epoch: int
    points: np.ndarray | None  # (P, 3) unit vectors, for "gps"
    neighbours: np.ndarray | None  # (P, k), for "embedding"

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_neighbours(self, neighbours: np.ndarray) -> None:
        """(P, k) indices of each place's most similar places (in the sampler's order of places)."""
        neighbours = np.asarray(neighbours)
        if neighbours.ndim != 2 or neighbours.shape[0] != self.n_places:
            raise ValueError(f"neighbours must be (P, k) with P={self.n_places}, got {neighbours.shape}")
        self.neighbours = neighbours

    def _candidates(self, place: int) -> np.ndarray:
        """Other places, most similar first: by neighbours ("embedding") or by distance on the sphere ("gps")."""
        if self.strategy == "embedding":
            return self.neighbours[place]  # type: ignore[index]
        distance = np.sum((self.points - self.points[place]) ** 2, axis=1)  # type: ignore[operator]
        return np.argsort(distance, kind="stable")[1:]

    def _rank_slice(self, items: list[int]) -> list[int]:
        """This rank's contiguous slice of a global batch (the whole batch with one replica)."""
        if self.num_replicas == 1:
            return items
        per_rank = self.batch_size // self.num_replicas
        return items[self.rank * per_rank : (self.rank + 1) * per_rank]


class PlaceBatchSampler(HardNegativeBatching):
    """Yields lists of dataset indices; the samples of one batch always belong to distinct places.

    ``place_keys[i]`` is the place of dataset item ``i`` (several items may share a place, e.g. one per drone
    image). Each epoch every place contributes one of its items, so each place appears once per epoch
    (leftovers dropped with ``drop_last``).

    Strategies:
      * ``random``: shuffled places.
      * ``gps``: hard negatives by location (as in Sample4Geo): a random unused place seeds a group of
        ``group_size`` places (by default the whole batch), which it fills with its nearest unused places on the
        sphere; the next unused place in the shuffled order seeds the next group, until the batch is full.
      * ``embedding``: the same with neighbours from ``set_neighbours`` (e.g. nearest places in the
        model's embedding space, refreshed every few epochs).

    With ``num_replicas > 1`` each global batch is split into contiguous per-rank slices, so every rank sees a
    disjoint part of the same global batch (for DDP with features gathered across ranks).
    """

    def __init__(
        self,
        place_keys: Sequence[str],
        *,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        strategy: str = "random",
        coords: np.ndarray | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        group_size: int | None = None,
    ) -> None:
        """``group_size``: places per group of near neighbours in a hard-negative batch (None: the whole batch)."""
        check_batching(strategy=strategy, batch_size=batch_size, num_replicas=num_replicas, rank=rank)
        if group_size is not None and group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.group_size = batch_size if group_size is None else min(group_size, batch_size)
        self.keys = list(place_keys)
        groups: dict[str, list[int]] = {}
        for item, key in enumerate(self.keys):
            groups.setdefault(key, []).append(item)
        self.items_of = [np.array(items) for items in groups.values()]  # places in order of first appearance
        self.n_places = len(self.items_of)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.strategy = strategy
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.points: np.ndarray | None = None
        if coords is not None:
            coords = np.asarray(coords, dtype=np.float64)
            if coords.shape != (len(self.keys), 2):
                raise ValueError(f"coords must be (N, 2) for N={len(self.keys)} items, got {coords.shape}")
            first_item = np.array([items[0] for items in self.items_of])
            self.points = unit_xyz(coords[first_item, 0], coords[first_item, 1])  # (P, 3), one point per place
        elif strategy == "gps":
            raise ValueError("strategy 'gps' needs coords")
        self.neighbours: np.ndarray | None = None

    def __len__(self) -> int:
        full, rest = divmod(self.n_places, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def _place_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        order = rng.permutation(self.n_places) if self.shuffle else np.arange(self.n_places)
        if self.strategy == "random" or (self.strategy == "embedding" and self.neighbours is None):
            return [order[i : i + self.batch_size] for i in range(0, self.n_places, self.batch_size)]
        used = np.zeros(self.n_places, dtype=bool)
        batches: list[np.ndarray] = []
        batch: list[int] = []
        for seed_place in order:  # each unused place seeds a group; its nearest unused places join it
            if used[seed_place]:
                continue
            batch.append(int(seed_place))
            used[seed_place] = True
            room = min(self.group_size, self.batch_size - len(batch) + 1) - 1
            for candidate in self._candidates(seed_place):
                if room == 0:
                    break
                if not used[candidate]:
                    used[candidate] = True
                    batch.append(int(candidate))
                    room -= 1
            if len(batch) == self.batch_size:
                batches.append(np.array(batch))
                batch = []
        if batch:  # the epoch's last places (a short batch, dropped with drop_last)
            batches.append(np.array(batch))
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        batches = self._place_batches(rng)
        batches = [b for b in batches if len(b) == self.batch_size or not self.drop_last]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        for batch in batches:
            yield self._rank_slice([int(self.items_of[p][rng.integers(len(self.items_of[p]))]) for p in batch])
