"""CLIP's tokenizers, and descriptions longer than CLIP's context.

CLIP reads at most ``context_length`` tokens (77: 75 of text between the start and end markers). A longer text
is handled by ``clip.long_text``:

- ``"chunks"`` (the default): the text is split at sentence ends (. ! ? ;) and its sentences packed, in order, into
  as few runs as fit 75 tokens each; each run is embedded and the text's embedding is the mean of its runs' (before
  normalisation). Nothing is cut unless one sentence alone is longer than 75 tokens (it is truncated). A text that
  fits is one run: exactly CLIP's embedding of it.
- ``"truncate"``: the tokens beyond the context are dropped, as CLIP itself does.

CLIP's BPE splits text into words before merging, so a run's token count is the sum of its sentences' counts.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from geobridge._atomic import atomic_write_bytes
from geobridge.errors import CheckpointError
from geobridge.models.text_tower import split_sentences

SPECIAL_TOKENS = 2  # <|startoftext|> and <|endoftext|>


class OpenClipTokens:
    """open_clip's CLIP BPE (its vocabulary ships inside the package, nothing is downloaded)."""

    def __init__(self, *, context_length: int) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.folder = None  # nothing to save: the vocabulary is open_clip's
        self.context_length = context_length
        self._tokenizer = SimpleTokenizer(context_length=context_length)

    def count(self, text: str) -> int:
        """Tokens of ``text`` without the start and end markers."""
        return len(self._tokenizer.encode(text))

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, L) token ids, truncated to the context with the end marker kept, and their (N, L) attention mask."""
        ids = self._tokenizer(texts)  # (N, L), zero-padded
        return ids, (ids != 0).long()


class HFTokens:
    """A Hugging Face CLIP tokenizer read from local files."""

    def __init__(self, folder: str | Path, *, context_length: int) -> None:
        from transformers import CLIPTokenizerFast

        self.folder = Path(folder)
        self.context_length = context_length
        try:
            self._tokenizer = CLIPTokenizerFast.from_pretrained(str(self.folder), local_files_only=True)
        except (OSError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"{self.folder}: no CLIP tokenizer files (vocab.json and merges.txt, or tokenizer.json): "
                f"{' '.join(str(exc).split())[:200]}"
            ) from exc

    def count(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._tokenizer(texts, padding="max_length", truncation=True, max_length=self.context_length,
                              return_tensors="pt")
        return out["input_ids"], out["attention_mask"]  # (N, L), (N, L)

    def save(self, folder: Path) -> None:
        """Write the tokenizer files into ``folder``, each atomically."""
        with tempfile.TemporaryDirectory() as tmp:
            self._tokenizer.save_pretrained(tmp)
            for file in sorted(Path(tmp).iterdir()):
                atomic_write_bytes(folder / file.name, file.read_bytes())


def chunk_texts(texts: list[str], *, count: Callable[[str], int], limit: int) -> tuple[list[str], torch.Tensor]:
    """Runs of whole sentences of at most ``limit`` tokens, in order, and the (R,) index of each run's text.

    ``count(text)`` is a text's token count. A text within ``limit`` is one run of its own, unchanged.
    """
    runs: list[str] = []
    owner: list[int] = []
    for i, text in enumerate(texts):
        if count(text) <= limit:
            runs.append(text)
            owner.append(i)
            continue
        sentences, _ = split_sentences([text])
        current: list[str] = []
        used = 0
        for sentence in sentences:
            tokens = count(sentence)
            if current and used + tokens > limit:
                runs.append(" ".join(current))
                owner.append(i)
                current, used = [], 0
            current.append(sentence)
            used += tokens
        runs.append(" ".join(current))
        owner.append(i)
    return runs, torch.tensor(owner, dtype=torch.long)
