"""Pair-based epochs: every (query item, reference item) pair of one view pair once per epoch.

Sample4Geo's University-1652 epoch iterates every drone photo paired with its building's satellite tile (about
54 pairs per building), and its CVUSA, CVACT and VIGOR epochs every street panorama paired with its tile, in
batches where no two pairs share a place: a second item of a place would be a false negative for InfoNCE's
in-batch negatives. ``epoch_pairs`` lists the pairs of a dataset and ``PairBatchSampler`` deals them into such
batches, reproducibly from ``(seed, epoch)``.

How the pairs are made: the *query* view's items of a place are iterated (every drone photo, every panorama, or
every description for ``text``), and the ``j``-th is paired with the reference view's item ``j mod r`` (``r``
items). With one reference item per place (a satellite tile) this is every (query, reference) pair; with as
many reference items as query items (GeoText-1652: one description per drone photo) it keeps them aligned.
Places that lack either view have no pairs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from geobridge.data.sampler import HardNegativeBatching, check_batching
from geobridge.data.types import Place
from geobridge.geodesy import unit_xyz
from geobridge.views import check_view


@dataclass(frozen=True)
class PairTable:
    """The pairs of a dataset: pair ``i`` is item ``query[i]`` and item ``reference[i]`` of place ``place[i]``.

    Item ``k`` of an image view is ``place.images[view][k]``; of ``text``, ``place.texts[k]``.
    """

    views: tuple[str, str]  # (query view, reference view)
    place: np.ndarray  # (N,) int64 place index of each pair
    query: np.ndarray  # (N,) int64
    reference: np.ndarray  # (N,) int64
    n_places: int

    def __len__(self) -> int:
        return int(self.place.shape[0])

    def item(self, pair: int, view: str) -> int | None:
        """Which item of ``view`` pair ``pair`` shows (None: the view is not one of the pair's)."""
        if view == self.views[0]:
            return int(self.query[pair])
        if view == self.views[1]:
            return int(self.reference[pair])
        return None


def _count(place: Place, view: str) -> int:
    return len(place.texts) if view == "text" else len(place.images.get(view, ()))


def epoch_pairs(places: Sequence[Place], *, views: Sequence[str]) -> PairTable:
    """The pairs of ``views = (query, reference)`` over ``places`` (see the module docstring)."""
    if len(views) != 2 or views[0] == views[1]:
        raise ValueError(f"pair views must be two different views, got {list(views)}")
    query_view, reference_view = (check_view(v) for v in views)
    place, query, reference = [], [], []
    for index, item in enumerate(places):
        n_query, n_reference = _count(item, query_view), _count(item, reference_view)
        if n_query and n_reference:
            place.extend([index] * n_query)
            query.extend(range(n_query))
            reference.extend(j % n_reference for j in range(n_query))
    as_array = lambda values: np.asarray(values, dtype=np.int64)  # noqa: E731
    return PairTable((query_view, reference_view), as_array(place), as_array(query), as_array(reference),
                     n_places=len(places))


def full_batches(counts: np.ndarray, batch_size: int) -> int:
    """The most batches of ``batch_size`` distinct places that ``counts[p]`` items of each place can fill.

    ``K`` such batches exist exactly when ``sum_p min(counts[p], K) >= K * batch_size`` (a place gives at most
    one item to each batch); the left side minus the right is concave in ``K`` and 0 at ``K = 0``, so the
    feasible ``K`` form an interval and a bisection finds its end.
    """
    lo, hi = 0, int(counts.sum()) // batch_size
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if int(np.minimum(counts, mid).sum()) >= mid * batch_size:
            lo = mid
        else:
            hi = mid - 1
    return lo


class PairBatchSampler(HardNegativeBatching):
    """Yields lists of pair indices; the pairs of one batch always belong to distinct places.

    ``pair_place[i]`` is the place of pair ``i`` (places ``0 .. n_places - 1``). Every epoch visits every pair
    at most once: ``full_batches`` full batches are built (the most the counts allow, ``len(pairs) //
    batch_size`` when no place holds too many pairs), and with ``drop_last=False`` the pairs left over follow
    in smaller place-unique batches, so that every pair is visited exactly once.

    Each batch draws its places at random with weights equal to their pairs still unused (Efraimidis-Spirakis
    keys), so places with many pairs left are spread over the epoch; places that must appear in every
    remaining batch for the full batches to fill are always taken. With ``strategy`` ``gps`` or ``embedding``
    a drawn place seeds the batch and its nearest places with unused pairs fill it (``PlaceBatchSampler``'s
    hard negatives). Which pair of a place comes next is a random order per epoch.

    With ``num_replicas > 1`` each global batch is split into contiguous per-rank slices, as in
    ``PlaceBatchSampler``.
    """

    def __init__(
        self,
        pair_place: Sequence[int] | np.ndarray,
        *,
        n_places: int,
        batch_size: int,
        drop_last: bool = True,
        seed: int = 0,
        strategy: str = "random",
        coords: np.ndarray | None = None,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        check_batching(strategy=strategy, batch_size=batch_size, num_replicas=num_replicas, rank=rank)
        self.pair_place = np.asarray(pair_place, dtype=np.int64)
        if self.pair_place.size and (self.pair_place.min() < 0 or self.pair_place.max() >= n_places):
            raise ValueError(f"pair places must lie in 0..{n_places - 1}")
        self.n_places = n_places
        self.counts = np.bincount(self.pair_place, minlength=n_places)  # (P,) pairs per place
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.seed = seed
        self.strategy = strategy
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.n_full = full_batches(self.counts, batch_size)
        if self.n_full == 0 and drop_last:
            with_pairs = int((self.counts > 0).sum())
            raise ValueError(f"{with_pairs} places have pairs, fewer than one batch of {batch_size} distinct places")
        self.points: np.ndarray | None = None
        if coords is not None:
            coords = np.asarray(coords, dtype=np.float64)
            if coords.shape != (n_places, 2):
                raise ValueError(f"coords must be (P, 2) for P={n_places} places, got {coords.shape}")
            self.points = unit_xyz(coords[:, 0], coords[:, 1])  # (P, 3)
        elif strategy == "gps":
            raise ValueError("strategy 'gps' needs coords")
        self.neighbours: np.ndarray | None = None

    def __len__(self) -> int:
        return self.n_full if self.drop_last else len(self._plan())

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._plan():
            yield self._rank_slice([int(i) for i in batch])

    # ------------------------------------------------------------------ the epoch's plan
    def _plan(self) -> list[np.ndarray]:
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(len(self.pair_place))
        by_place = order[np.argsort(self.pair_place[order], kind="stable")]  # pairs grouped by place, shuffled
        start = np.concatenate([[0], np.cumsum(self.counts)])  # place p's pairs: by_place[start[p]:start[p + 1]]
        used = np.zeros(self.n_places, dtype=np.int64)
        remaining = self.counts.copy()
        batches: list[np.ndarray] = []

        def take(places: np.ndarray) -> np.ndarray:
            pairs = by_place[start[places] + used[places]]
            used[places] += 1
            remaining[places] -= 1
            return pairs

        for built in range(self.n_full):
            batches.append(take(self._draw(rng, remaining, batches_left=self.n_full - built)))
        if not self.drop_last:
            while remaining.any():
                places = rng.permutation(np.flatnonzero(remaining))
                batches.extend(take(places[i : i + self.batch_size]) for i in range(0, len(places), self.batch_size))
        return [batches[i] for i in rng.permutation(len(batches))]

    def _draw(self, rng: np.random.Generator, remaining: np.ndarray, *, batches_left: int) -> np.ndarray:
        """``batch_size`` distinct places with unused pairs, such that ``batches_left - 1`` batches still fill."""
        size = self.batch_size
        with np.errstate(divide="ignore"):
            keys = np.where(remaining > 0, np.log(rng.random(self.n_places)) / np.maximum(remaining, 1), -np.inf)
        # a place with pairs for every batch left that sits this one out costs one unit of slack (the sum in
        # full_batches); at most ``slack`` of them may do so
        heavy = remaining >= batches_left
        slack = int(np.minimum(remaining, batches_left).sum()) - batches_left * size
        forced = max(0, int(heavy.sum()) - slack)
        chosen = list(_top(np.where(heavy, keys, -np.inf), forced)) if forced else []
        taken = np.zeros(self.n_places, dtype=bool)
        taken[chosen] = True
        if self.strategy != "random" and len(chosen) < size and (self.strategy == "gps" or self.neighbours is not None):
            if chosen:  # the batch gathers round the first forced place
                seed_place = chosen[0]
            else:
                seed_place = int(np.argmax(keys))
                chosen.append(seed_place)
                taken[seed_place] = True
            for candidate in self._candidates(seed_place):
                if len(chosen) == size:
                    break
                if remaining[candidate] > 0 and not taken[candidate]:
                    chosen.append(int(candidate))
                    taken[candidate] = True
        if len(chosen) < size:
            chosen.extend(_top(np.where(taken, -np.inf, keys), size - len(chosen)))
        return np.asarray(chosen, dtype=np.int64)


def _top(keys: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` largest finite keys, largest first."""
    best = np.argpartition(-keys, count - 1)[:count] if count < keys.size else np.arange(keys.size)
    best = best[np.argsort(-keys[best], kind="stable")]
    return best[np.isfinite(keys[best])]
