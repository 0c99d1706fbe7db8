"""Synthetic embeddings for the search benchmarks: a clustered mixture on the unit sphere.

Real embeddings are clustered and have a low intrinsic dimension (places of one region, one landscape type, look
alike), which is what approximate indexes exploit; iid uniform noise on the sphere has neither and makes every
neighbour almost equidistant. Each mixture component k has a random unit centre ``c_k`` and its own random
``r``-dimensional orthonormal basis ``B_k``; a point is ``normalise(c_k + spread * z @ B_k + noise * e)`` with
``z ~ N(0, I_r / r)`` and ``e ~ N(0, I_D / D)``. Queries are fresh draws from the same mixture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Mixture:
    centres: np.ndarray  # (K, D) unit vectors
    bases: np.ndarray  # (K, r, D) orthonormal rows
    spread: float
    noise: float

    @property
    def dim(self) -> int:
        return int(self.centres.shape[1])

    @classmethod
    def make(
        cls,
        *,
        dim: int = 256,
        n_clusters: int = 1000,
        intrinsic_dim: int = 16,
        spread: float = 0.9,
        noise: float = 0.25,
        seed: int = 0,
    ) -> Mixture:
        rng = np.random.default_rng(seed)
        centres = rng.standard_normal((n_clusters, dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        raw = rng.standard_normal((n_clusters, dim, intrinsic_dim), dtype=np.float32)
        bases = np.linalg.qr(raw)[0].transpose(0, 2, 1).astype(np.float32)  # (K, r, D)
        return cls(centres=centres, bases=np.ascontiguousarray(bases), spread=spread, noise=noise)

    def sample(self, n: int, *, seed: int, chunk: int = 131072) -> np.ndarray:
        """(n, D) float32 unit vectors; generated in chunks so that the peak is the output plus one chunk."""
        rng = np.random.default_rng(seed)
        n_clusters, rank, dim = self.bases.shape
        out = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            size = stop - start
            labels = rng.integers(0, n_clusters, size)
            block = self.noise / np.sqrt(dim) * rng.standard_normal((size, dim), dtype=np.float32)  # (S, D)
            z = self.spread / np.sqrt(rank) * rng.standard_normal((size, rank), dtype=np.float32)  # (S, r)
            order = np.argsort(labels, kind="stable")
            bounds = np.searchsorted(labels[order], np.arange(n_clusters + 1))
            for k in range(n_clusters):
                rows = order[bounds[k] : bounds[k + 1]]
                if rows.size:
                    block[rows] += self.centres[k] + z[rows] @ self.bases[k]
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            out[start:stop] = block
        return out


def gallery_and_queries(
    ctx_cache: dict, *, n: int, n_queries: int, dim: int = 256, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The run's shared clustered gallery (the first ``n`` rows of one big draw) and query set, cached in the
    runner's context so that exact search, scaling and ANN all see the same vectors."""
    key = ("clustered", dim, seed)
    entry = ctx_cache.get(key)
    if entry is None or entry["gallery"].shape[0] < n or entry["queries"].shape[0] < n_queries:
        mixture = Mixture.make(dim=dim, seed=seed)
        size = max(n, entry["gallery"].shape[0] if entry else 0)
        entry = {
            "gallery": mixture.sample(size, seed=seed + 1),
            "queries": mixture.sample(max(n_queries, 1000), seed=seed + 2),
            "mixture": mixture,
        }
        ctx_cache[key] = entry
    return entry["gallery"][:n], entry["queries"][:n_queries]
