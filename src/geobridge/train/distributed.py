"""Distributed helpers: process-group setup from torchrun's environment and differentiable feature gathering."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group that ``torchrun`` describes (gloo on CPU, nccl on CUDA); a no-op otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def gather_rows(x: torch.Tensor, info: DistInfo, *, with_grad: bool) -> torch.Tensor:
    """Concatenate every rank's ``x`` (N_r, ...) along dim 0 in rank order, keeping gradients for the local part.

    Ranks may hold different numbers of rows: sizes are exchanged first and rows are padded to the largest.
    The backward of ``torch.distributed.nn.functional.all_gather`` sums the gradients of all ranks, so with
    DDP's gradient averaging the parameter gradients equal those of one process on the global batch.
    """
    if not info.enabled:
        return x
    size = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(info.world_size)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    if longest == 0:
        return x
    pad = x.new_zeros((longest - x.shape[0], *x.shape[1:]))
    padded = torch.cat([x, pad]) if pad.shape[0] else x
    if with_grad:  # every rank must take the same branch, or the backward's collectives deadlock
        parts = dist_fn.all_gather(padded)
    else:
        parts = [torch.zeros_like(padded) for _ in range(info.world_size)]
        dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)])


def all_reduce_mean(value: float, info: DistInfo) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
