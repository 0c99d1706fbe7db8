"""Contrastive-aware gradient accumulation (the GradCache scheme of Gao et al., 2021).

Accumulating plain gradients over ``M`` micro-batches computes the contrastive loss inside each micro-batch, so
the negatives never grow past one micro-batch. :func:`cached_accumulation` instead makes the loss see all
``M`` micro-batches at once while holding the autograd graph of only one:

1. every micro-batch is embedded without a graph (the torch RNG state before each is saved);
2. the loss runs on the concatenated embeddings, held as leaf tensors, and its backward gives
   ``d loss / d embedding`` for every row (and for the logit scale);
3. every micro-batch is embedded again, with a graph and its saved RNG state replayed (the same dropout), and
   its embeddings are back-propagated with their cached gradients (``embedding.backward(grad)``).

The parameter gradients are those of the whole accumulated batch (chain rule; only the order of floating
point sums differs). The logit scale is a forward output of every micro-batch; its cached gradient is shared
out equally among them.

BatchNorm: statistics of a batch are taken per micro-batch in both passes (the GradCache caveat: they never
see the whole accumulated batch). The module's buffers (running statistics) are restored after the first pass,
so each micro-batch updates them once, as without the cache. The GeoBridge towers use LayerNorm only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Embedded = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]  # embeddings, labels, logit scale
LossFn = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class RngState:
    """The torch CPU generator and the CUDA generators of ``devices``, to replay a forward's randomness."""

    cpu: torch.Tensor
    cuda: dict[int, torch.Tensor]

    @classmethod
    def capture(cls, devices: Sequence[torch.device]) -> RngState:
        cuda = {d.index or 0: torch.cuda.get_rng_state(d) for d in devices if d.type == "cuda"}
        return cls(cpu=torch.get_rng_state(), cuda=cuda)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        for index, state in self.cuda.items():
            torch.cuda.set_rng_state(state, index)


@contextlib.contextmanager
def _buffers_kept(module: nn.Module) -> Iterator[None]:
    """Undo any in-place change of ``module``'s buffers (BatchNorm running statistics) made inside the block."""
    saved = [(buf, buf.detach().clone()) for buf in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def cached_accumulation(
    micro_batches: Sequence[Any],
    *,
    embed: Callable[[Any, bool], Embedded],
    loss_fn: LossFn,
    module: nn.Module,
    no_sync: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    devices: Sequence[torch.device] = (),
) -> dict[str, torch.Tensor]:
    """Back-propagate ``loss_fn`` over all ``micro_batches`` together, one micro-batch graph at a time.

    ``embed(batch, with_graph)`` returns one micro-batch's ``({view: (B_v, D)}, {view: (B_v,) labels},
    logit_scale)``; called with ``with_graph=False`` it may use the bare module (no DDP hooks). ``loss_fn``
    gets the embeddings of all micro-batches concatenated per view (the caller gathers across ranks inside it
    if it does so without accumulation) and returns named ``*_loss`` terms, which are summed. ``module``'s
    buffers are restored after the first pass. ``no_sync`` wraps the backward of every micro-batch but the
    last (DDP: reduce the gradients once). Leaves the summed gradients in the parameters' ``.grad`` and returns
    the detached loss terms.
    """
    if not micro_batches:
        raise ValueError("cached_accumulation needs at least one micro-batch")
    states: list[RngState] = []
    cached: list[dict[str, torch.Tensor]] = []
    all_labels: list[dict[str, torch.Tensor]] = []
    scale: torch.Tensor | None = None
    with _buffers_kept(module), torch.no_grad():
        for batch in micro_batches:
            states.append(RngState.capture(devices))
            emb, labels, logit_scale = embed(batch, False)
            cached.append({v: e.detach() for v, e in emb.items()})
            all_labels.append(labels)
            scale = logit_scale.detach() if scale is None else scale
    assert scale is not None
    after_first_pass = RngState.capture(devices)
    views = list(dict.fromkeys(v for emb in cached for v in emb))  # first-seen order
    leaves = {v: torch.cat([emb[v] for emb in cached if v in emb]).requires_grad_(True) for v in views}  # (ΣB_v, D)
    pairs = list(zip(all_labels, cached, strict=True))
    labels_cat = {v: torch.cat([lab[v] for lab, emb in pairs if v in emb]) for v in views}  # (ΣB_v,)
    scale_leaf = scale.clone().requires_grad_(True)
    losses = loss_fn(leaves, labels_cat, scale_leaf)
    total = sum(losses.values())
    assert isinstance(total, torch.Tensor)
    total.backward()
    grads = {v: leaf.grad if leaf.grad is not None else torch.zeros_like(leaf) for v, leaf in leaves.items()}
    scale_grad = scale_leaf.grad if scale_leaf.grad is not None else torch.zeros_like(scale_leaf)
    offsets = dict.fromkeys(views, 0)
    for i, (batch, state) in enumerate(zip(micro_batches, states, strict=True)):
        state.restore()  # the same dropout (and any other torch randomness) as in the first pass
        last = i == len(micro_batches) - 1
        with contextlib.nullcontext() if last else no_sync():
            emb, _, logit_scale = embed(batch, True)
            outputs, out_grads = [logit_scale], [scale_grad / len(micro_batches)]
            for view, e in emb.items():
                start = offsets[view]
                outputs.append(e)
                out_grads.append(grads[view][start : start + e.shape[0]])  # (B_v, D) this micro-batch's rows
                offsets[view] = start + e.shape[0]
            torch.autograd.backward(outputs, out_grads)
    after_first_pass.restore()  # leave the generators where one pass over the micro-batches leaves them
    return {key: value.detach() for key, value in losses.items()}
