"""InfoNCE between two sets of embeddings matched by place label: one-directional and symmetric."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def match_labels(labels_a: torch.Tensor, labels_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (i, j) with ``labels_a[i] == labels_b[j]``; labels are unique within each side.

    Returns two (P,) long tensors: rows of ``a`` that have a partner in ``b`` and the partner's position.
    """
    equal = labels_a[:, None] == labels_b[None, :]  # (A, B)
    rows, cols = equal.nonzero(as_tuple=True)
    return rows, cols


def info_nce(
    emb_a: torch.Tensor,
    emb_b: torch.Tensor,
    labels_a: torch.Tensor,
    labels_b: torch.Tensor,
    *,
    logit_scale: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """The one-directional a->b InfoNCE over matched pairs: each ``a`` row picks its partner among all of ``b``.

    Shapes and labels as in ``symmetric_info_nce``; a zero that keeps the graph when no place is in both sides.
    """
    rows, cols = match_labels(labels_a, labels_b)
    if rows.numel() == 0:
        return emb_a.sum() * 0.0 + emb_b.sum() * 0.0
    logits = logit_scale.exp() * emb_a[rows] @ emb_b.T  # (P, B)
    return F.cross_entropy(logits, cols, label_smoothing=label_smoothing)


def symmetric_info_nce(
    emb_a: torch.Tensor,
    emb_b: torch.Tensor,
    labels_a: torch.Tensor,
    labels_b: torch.Tensor,
    *,
    logit_scale: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean of the a->b and b->a cross-entropies over matched pairs.

    ``emb_a`` (A, D) and ``emb_b`` (B, D) are unit vectors; each row is one place, labels (A,) and (B,) are
    place indices, unique within each side. The logits are ``exp(logit_scale) * cos``; for a matched pair
    (i, j) the a->b term is the cross-entropy of row i of the (A, B) logit matrix with target j, and every
    other column of ``b`` is a negative (places present in only one side still serve as negatives).
    Returns a zero that keeps the graph when no place is in both sides.
    """
    options = dict(logit_scale=logit_scale, label_smoothing=label_smoothing)
    loss_ab = info_nce(emb_a, emb_b, labels_a, labels_b, **options)
    loss_ba = info_nce(emb_b, emb_a, labels_b, labels_a, **options)
    return (loss_ab + loss_ba) / 2
