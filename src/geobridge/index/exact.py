"""Exact top-k over a Flat index's stored vectors: faiss's own search or a blocked torch matmul + topk, whichever
this processor runs faster, chosen by measurement.

Which kernel wins depends on the CPU and on the BLAS each library was built with: on an AMD EPYC torch's sgemm +
topk ran about twice as fast as faiss's Flat search, on an Intel Xeon faiss ran 1.6x torch. So the choice is never
written in as a constant: the first search of a *shape class* (the count of queries and of stored rows, each
rounded down to a power of 4 and capped at the probe's size, the dimension and the thread counts) times both
kernels on a probe cut from that search (its first ``probe_queries`` queries against the first ``probe_rows``
stored rows; one untimed call each, then the best of ``repeats`` interleaved calls) and keeps the faster one for
every later search of that class. A probe is bounded (256 x 65,536 x D multiply-adds per call, about 0.1 s at
D = 256 on 2 cores) and is made once per class and per process: every ``GeoIndex`` uses ``process_chooser()``, so
two indexes of the same vectors answer alike in one process (the kernels agree on the neighbours; their scores
can differ in the last bit).

Both kernels read the stored vectors in place (no copy) and return the same neighbours: the best first, rows with
fewer than k candidates padded with row -1 and score -inf.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

KERNELS = ("faiss", "torch")


# ---------------------------------------------------------------------------------------------------------------------
# the kernels: (N, D) stored rows, (Q, D) unit queries, k -> (Q, min(k, N)) scores and row numbers, best first
def faiss_topk(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss's exhaustive inner-product search (the kernel of ``IndexFlatIP.search``) over rows held in place."""
    scores, rows = faiss.knn(queries, gallery, min(k, len(gallery)), metric=faiss.METRIC_INNER_PRODUCT)
    return scores, rows  # (Q, k'), (Q, k')


def torch_topk(
    gallery: np.ndarray, queries: np.ndarray, k: int, *, block_floats: int = 1 << 22
) -> tuple[np.ndarray, np.ndarray]:
    """Blocked ``queries @ gallery.T`` + ``topk`` per block of stored rows, then a top-k of the blocks' winners.

    ``block_floats`` bounds one similarity block (Q x rows): the default, 16 MiB of float32, stays in a server
    CPU's last-level cache, so ``topk`` reads what the matmul has just written.
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


def run_kernel(name: str, gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if name == "faiss":
        return faiss_topk(gallery, queries, k)
    if name == "torch":
        return torch_topk(gallery, queries, k)
    raise ValueError(f"unknown exact-search kernel {name!r}; expected one of {', '.join(KERNELS)}")


# ---------------------------------------------------------------------------------------------------------------------
# the choice
@dataclass(frozen=True)
class Decision:
    """The kernel chosen for one shape class, and the probe's best seconds per call of each kernel."""

    kernel: str
    probe_seconds: dict[str, float]
    probe_shape: tuple[int, int, int]  # (queries, rows, dim) of the probe

    def to_dict(self) -> dict[str, Any]:
        return {"kernel": self.kernel, "probe_seconds": dict(self.probe_seconds), "probe_shape": list(self.probe_shape)}


class KernelChooser:
    """Searches with the faster exact kernel for each shape class, measured on the first search of that class.

    ``force`` names a kernel to use always (tests, benchmarks of one path); ``probe_queries``/``probe_rows`` bound
    the probe; ``repeats`` timed calls per kernel (interleaved, best kept). Thread-safe: probes are serialised so
    that two threads never time their kernels against each other.
    """

    def __init__(
        self, *, force: str | None = None, probe_queries: int = 256, probe_rows: int = 65_536, repeats: int = 2
    ) -> None:
        if force is not None and force not in KERNELS:
            raise ValueError(f"unknown exact-search kernel {force!r}; expected one of {', '.join(KERNELS)}")
        self.force = force
        self.probe_queries, self.probe_rows, self.repeats = int(probe_queries), int(probe_rows), int(repeats)
        self._decisions: dict[tuple[int, ...], Decision] = {}
        self._lock = threading.Lock()

    @property
    def decisions(self) -> dict[str, dict[str, Any]]:
        """Every decision so far, keyed ``q<queries>/n<rows>/d<dim>/t<torch threads>,<faiss threads>``."""
        return {_describe(key): decision.to_dict() for key, decision in sorted(self._decisions.items())}

    def search(self, gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, min(k, N)) float32 scores and int64 row numbers of the exact top k of each query, best first."""
        kernel = self.force or self.choose(gallery, queries, k)
        scores, rows = run_kernel(kernel, gallery, queries, k)
        return scores, rows.astype(np.int64, copy=False)

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

    def _shape_class(self, n_queries: int, n_rows: int, dim: int) -> tuple[int, ...]:
        import torch

        q_class = _power_of_4_floor(min(n_queries, self.probe_queries))
        n_class = _power_of_4_floor(min(n_rows, self.probe_rows))
        return q_class, n_class, dim, torch.get_num_threads(), faiss.omp_get_max_threads()

    def _probe(self, gallery: np.ndarray, queries: np.ndarray, k: int) -> Decision:
        probe_x = np.ascontiguousarray(queries[: self.probe_queries])  # (q, D)
        probe_g = gallery[: self.probe_rows]  # (n, D), a view: contiguous rows
        best = {name: float("inf") for name in KERNELS}
        for name in KERNELS:
            run_kernel(name, probe_g, probe_x, k)  # untimed: thread pools, first-touch allocations
        for _ in range(max(1, self.repeats)):
            for name in KERNELS:  # interleaved, so that a load change hits both kernels alike
                start = time.perf_counter()
                run_kernel(name, probe_g, probe_x, k)
                best[name] = min(best[name], time.perf_counter() - start)
        kernel = min(KERNELS, key=lambda name: best[name])  # a tie goes to faiss (listed first)
        return Decision(kernel=kernel, probe_seconds=best, probe_shape=(len(probe_x), len(probe_g), gallery.shape[1]))


@functools.cache
def process_chooser() -> KernelChooser:
    """The chooser shared by every index of this process (its decisions are facts about this machine)."""
    return KernelChooser()


def _power_of_4_floor(n: int) -> int:
    """The largest power of 4 not above ``n`` (0 for 0): the shape classes' boundaries."""
    return 0 if n < 1 else 4 ** ((int(n).bit_length() - 1) // 2)


def _describe(key: tuple[int, ...]) -> str:
    q_class, n_class, dim, torch_threads, faiss_threads = key
    return f"q{q_class}/n{n_class}/d{dim}/t{torch_threads},{faiss_threads}"
