"""Exact top-k over a Flat index's stored vectors: faiss's own search, faiss's scan split over the rows in threads
(fewer queries than threads), or a blocked torch matmul + topk, whichever this processor runs faster for the
search's shape, chosen by measurement.

faiss parallelises a search over its queries only, so a single query scans the whole gallery on one core. Split
over the rows, each thread scans a block with the same faiss kernel and the blocks' top k are merged (a score can
differ in the last bit: faiss groups rows differently within a block). Measured on the AMD EPYC (2 cores, 256-d,
one query, quiet): 10k rows (10 MB, held in the L3 cache) 380 -> 200 us, where one core cannot use the cache's
bandwidth alone; 100k rows (100 MB, read from memory) 10 ms either way.

Which kernel wins depends on the CPU, on the BLAS each library was built with and on the number of queries: faiss
scores a batch with its own SIMD loop below ``faiss.cvar.distance_compute_blas_threshold`` queries x dimensions and
with sgemm above it. Measured on an AMD EPYC (2 cores, 65,536 x 256-d rows): torch was 2.5-4x faster from 20 to 400
queries (faiss's loop), faiss 1.3-2.4x faster from 500 queries on (its sgemm); on an Intel Xeon faiss was 1.6x
torch at 1,000 queries. So the choice is never written in as a constant: the first search of a *shape class* (the
query count rounded down to a power of 2 up to 4,096, whether faiss takes its sgemm path, the stored rows rounded
down to a power of 4 up to 65,536, the dimension and the thread counts) times both kernels on a probe cut from that
search (its first queries, up to 4,096, against as many leading stored rows as keep queries x rows near
``probe_products``; blocks faiss, (faiss-rows,) torch, twice, each one untimed call on a quarter of the rows, then
the median of at least ``repeats`` calls and at least 20 ms of them; each kernel keeps its better block) and keeps
faiss unless torch is ``TORCH_MARGIN`` or faiss-rows ``ROWS_MARGIN`` times faster, for every later search of that
class. The ratio between
the kernels hardly moves with the number of rows (1,000 queries: 1.84 at 16k rows, 1.56 at 1M), which is what
lets a bounded probe stand for a large gallery. A probe costs about 0.2-0.8 s at 256-d on 2 cores, once per
class and per process: every ``GeoIndex`` uses ``process_chooser()``, so two indexes of the same vectors answer
alike in one process (the kernels agree on the neighbours; their scores can differ in the last bit).

Every kernel reads the stored vectors in place (no copy) and returns the best first.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

KERNELS = ("faiss", "faiss-rows", "torch")
# torch is taken only where its probe is this much faster than faiss's: faiss also answers the filtered, prior and
# approximate searches, and alternating two OpenMP thread pools (faiss's and torch's) slows both (measured, 2
# cores, 10k x 256-d rows, 8 queries: faiss 0.7 ms and torch 1.3 ms each alone, 2.9 and 5.2 ms alternating); a
# single query on 10k rows probed 1.27x faster with torch and ran 1.3x slower in a stream. Where torch wins it
# wins by far (20-400 queries: 2.5-4x), so the margin costs little.
TORCH_MARGIN = 1.5
# faiss-rows is faiss's own scan, so a smaller margin only guards against probe noise
ROWS_MARGIN = 1.1


# ---------------------------------------------------------------------------------------------------------------------
# the kernels: (N, D) stored rows, (Q, D) unit queries, k -> (Q, min(k, N)) scores and row numbers, best first
def faiss_topk(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss's exhaustive inner-product search (the kernel of ``IndexFlatIP.search``) over rows held in place.

    The kernel is called directly, without ``faiss.knn``'s wrapper (a few microseconds of a single query's time);
    the index's storage and ``as_matrix``'s queries are C-contiguous float32 already, so nothing is copied.
    """
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)  # (N, D)
    queries = np.ascontiguousarray(queries, dtype=np.float32)  # (Q, D)
    n_queries, k_eff = len(queries), min(k, len(gallery))
    scores = np.empty((n_queries, k_eff), dtype=np.float32)  # (Q, k')
    rows = np.empty((n_queries, k_eff), dtype=np.int64)  # (Q, k')
    faiss.knn_inner_product(faiss.swig_ptr(queries), faiss.swig_ptr(gallery), gallery.shape[1], n_queries,
                            len(gallery), k_eff, faiss.swig_ptr(scores), faiss.swig_ptr(rows))
    return scores, rows


def torch_topk(
    gallery: np.ndarray, queries: np.ndarray, k: int, *, block_floats: int = 1 << 20
) -> tuple[np.ndarray, np.ndarray]:
    """Blocked ``queries @ gallery.T`` + ``topk`` per block of stored rows, then a top-k of the blocks' winners.

    ``block_floats`` bounds one similarity block (Q x rows): the default, 4 MiB of float32, stays in cache, so
    ``topk`` reads what the matmul has just written (measured at 1,000 x 256-d queries on 1M rows, 2 cores: 4.2 s
    with 4 MiB blocks, 4.8 s with 16 MiB, 5.7 s with 128 MiB).
    """
    import torch

    n, k_eff = len(gallery), min(k, len(gallery))
    block = max(k_eff, block_floats // max(1, len(queries)))  # stored rows per matmul
    stored, x = torch.from_numpy(gallery), torch.from_numpy(queries)  # (N, D), (Q, D): views, no copy
    best_scores, best_rows = [], []
    with torch.inference_mode():
        for start in range(0, n, block):
            sims = x @ stored[start : start + block].T  # (Q, B)
            top = torch.topk(sims, min(k_eff, sims.shape[1]), dim=1)
            best_scores.append(top.values)
            best_rows.append(top.indices + start)
        if len(best_scores) == 1:
            return best_scores[0].numpy(), best_rows[0].numpy()
        cand_scores, cand_rows = torch.cat(best_scores, dim=1), torch.cat(best_rows, dim=1)  # (Q, k' * blocks)
        top = torch.topk(cand_scores, k_eff, dim=1)
        rows = torch.gather(cand_rows, 1, top.indices)  # (Q, k')
    return top.values.numpy(), rows.numpy()


def faiss_rows_topk(
    gallery: np.ndarray, queries: np.ndarray, k: int, *, pool: ThreadPoolExecutor, parts: int
) -> tuple[np.ndarray, np.ndarray]:
    """``faiss_topk`` over ``parts`` contiguous blocks of rows at once (``parts - 1`` in ``pool``, one in this
    thread; faiss releases the GIL), then the top k of the blocks' winners, best first (ties: lower row first)."""
    n, k_eff = len(gallery), min(k, len(gallery))
    bounds = np.linspace(0, n, max(1, parts) + 1).astype(np.int64)  # (parts + 1,) block edges
    blocks = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
    futures = [pool.submit(faiss_topk, gallery[a:b], queries, k) for a, b in blocks[1:]]
    results = [faiss_topk(gallery[blocks[0][0] : blocks[0][1]], queries, k)] + [f.result() for f in futures]
    scores = np.concatenate([r[0] for r in results], axis=1)  # (Q, candidates)
    rows = np.concatenate([r[1] + a for r, (a, _) in zip(results, blocks, strict=True)], axis=1)  # (Q, candidates)
    order = np.lexsort((rows, -scores), axis=1)[:, :k_eff]  # by score, then row
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


def run_kernel(name: str, gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss's or torch's kernel (``faiss-rows`` needs a thread pool: ``KernelChooser.run``)."""
    if name == "faiss":
        return faiss_topk(gallery, queries, k)
    if name == "torch":
        return torch_topk(gallery, queries, k)
    raise ValueError(f"unknown exact-search kernel {name!r}; expected one of {', '.join(KERNELS)}")


# ---------------------------------------------------------------------------------------------------------------------
# the choice
@dataclass(frozen=True)
class Decision:
    """The kernel chosen for one shape class, and the probe's seconds per call of each kernel (its better block)."""

    kernel: str
    probe_seconds: dict[str, float]
    probe_shape: tuple[int, int, int]  # (queries, rows, dim) of the probe

    def to_dict(self) -> dict[str, Any]:
        return {"kernel": self.kernel, "probe_seconds": dict(self.probe_seconds), "probe_shape": list(self.probe_shape)}


class KernelChooser:
    """Searches with the faster exact kernel for each shape class, measured on the first search of that class.

    ``force`` names a kernel to use always (tests, benchmarks of one path); ``probe_queries`` and ``probe_products``
    (queries x rows) bound the probe; ``repeats`` timed calls per kernel and block at least (median kept).
    Thread-safe: probes are serialised so that two threads never time their kernels against each other.
    """

    def __init__(
        self, *, force: str | None = None, probe_queries: int = 4096, probe_products: int = 1 << 24, repeats: int = 2
    ) -> None:
        if force is not None and force not in KERNELS:
            raise ValueError(f"unknown exact-search kernel {force!r}; expected one of {', '.join(KERNELS)}")
        self.force = force
        self.probe_queries, self.probe_products, self.repeats = int(probe_queries), int(probe_products), int(repeats)
        self._decisions: dict[tuple[int, ...], Decision] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None  # faiss-rows' helper threads, started on first use
        self._pool_pid = 0  # the process that started them: a forked child starts its own
        self._pool_lock = threading.Lock()

    @property
    def decisions(self) -> dict[str, dict[str, Any]]:
        """Every decision so far, keyed ``q<queries>[blas]/n<rows>/d<dim>/t<torch threads>,<faiss threads>``."""
        return {_describe(key): decision.to_dict() for key, decision in sorted(self._decisions.items())}

    def search(self, gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, min(k, N)) float32 scores and int64 row numbers of the exact top k of each query, best first."""
        scores, rows = self.run(self.kernel_for(gallery, queries, k), gallery, queries, k)
        return scores, rows.astype(np.int64, copy=False)

    def run(self, name: str, gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Kernel ``name`` on (N, D) ``gallery`` rows and (Q, D) unit ``queries``: (Q, min(k, N)), best first."""
        if name != "faiss-rows":
            return run_kernel(name, gallery, queries, k)
        parts = max(1, faiss.omp_get_max_threads())
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(max_workers=max(1, parts - 1), thread_name_prefix="geobridge-scan")
                self._pool_pid = os.getpid()
        return faiss_rows_topk(gallery, queries, k, pool=self._pool, parts=parts)

    def kernel_for(self, gallery: np.ndarray, queries: np.ndarray, k: int) -> str:
        """``force`` if set, else the measured choice for this search's shape class (``choose``)."""
        return self.force or self.choose(gallery, queries, k)

    def choose(self, gallery: np.ndarray, queries: np.ndarray, k: int) -> str:
        """The kernel for this search's shape class, probing both the first time the class is seen."""
        key = self._shape_class(len(queries), len(gallery), gallery.shape[1])
        decision = self._decisions.get(key)
        if decision is None:
            with self._lock:
                decision = self._decisions.get(key)
                if decision is None:
                    decision = self._decisions[key] = self._probe(gallery, queries, k)
        return decision.kernel

    def _timed(self, name: str, gallery: np.ndarray, queries: np.ndarray, k: int) -> float:
        start = time.perf_counter()
        self.run(name, gallery, queries, k)
        return time.perf_counter() - start

    def _shape_class(self, n_queries: int, n_rows: int, dim: int) -> tuple[int, ...]:
        import torch

        q_class = _power_of_2_floor(min(n_queries, self.probe_queries))
        faiss_blas = int(n_queries * dim >= faiss.cvar.distance_compute_blas_threshold)  # faiss's sgemm path
        n_class = _power_of_4_floor(min(n_rows, 65_536))
        return q_class, faiss_blas, n_class, dim, torch.get_num_threads(), faiss.omp_get_max_threads()

    def _probe(self, gallery: np.ndarray, queries: np.ndarray, k: int) -> Decision:
        probe_x = np.ascontiguousarray(queries[: self.probe_queries])  # (q, D): the search's own queries
        n_rows = max(min(len(gallery), 1024), self.probe_products // len(probe_x))
        probe_g = gallery[:n_rows]  # (n, D), a view: contiguous rows
        # faiss-rows only where faiss leaves cores idle: fewer queries than threads
        candidates = ["faiss", "torch"]
        if len(probe_x) < faiss.omp_get_max_threads():
            candidates.insert(1, "faiss-rows")
        seconds = {name: float("inf") for name in candidates}
        for name in candidates * 2:  # blocks faiss, (faiss-rows,) torch, twice; each keeps its better block
            # one kernel at a time: switching between two OpenMP thread pools costs by itself, and the pool that
            # ran last may still hold the cores for a while; the repeat gives each kernel a block after the other
            self.run(name, probe_g[: max(k, len(probe_g) // 4)], probe_x, k)  # untimed: pools, first touch
            times = [self._timed(name, probe_g, probe_x, k)]
            calls = min(50, max(self.repeats, int(0.02 / max(times[0], 1e-6))))  # >= ~20 ms of calls when cheap
            times += [self._timed(name, probe_g, probe_x, k) for _ in range(calls - 1)]
            seconds[name] = min(seconds[name], float(np.median(times)))
        margin = {"faiss": 1.0, "faiss-rows": ROWS_MARGIN, "torch": TORCH_MARGIN}  # faiss unless clearly beaten
        kernel = min(candidates, key=lambda name: seconds[name] * margin[name])  # ties: the first, faiss
        shape = (len(probe_x), len(probe_g), gallery.shape[1])
        return Decision(kernel=kernel, probe_seconds=seconds, probe_shape=shape)


@functools.cache
def process_chooser() -> KernelChooser:
    """The chooser shared by every index of this process (its decisions are facts about this machine)."""
    return KernelChooser()


def _power_of_2_floor(n: int) -> int:
    return 0 if n < 1 else 1 << (int(n).bit_length() - 1)


def _power_of_4_floor(n: int) -> int:
    """The largest power of 4 not above ``n`` (0 for 0): the shape classes' boundaries."""
    return 0 if n < 1 else 4 ** ((int(n).bit_length() - 1) // 2)


def _describe(key: tuple[int, ...]) -> str:
    q_class, faiss_blas, n_class, dim, torch_threads, faiss_threads = key
    return f"q{q_class}{'blas' if faiss_blas else ''}/n{n_class}/d{dim}/t{torch_threads},{faiss_threads}"
