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
from geobridge.text_runs import pack_runs

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

    pad_id = 0

    def save_fast(self, file: Path) -> None:
        """The same BPE as a ``tokenizers`` JSON file (for the ONNX runtime, which runs without torch)."""
        from transformers import CLIPTokenizerFast

        with tempfile.TemporaryDirectory() as tmp:
            write_clip_bpe(Path(tmp))
            fast = CLIPTokenizerFast.from_pretrained(tmp, local_files_only=True)
            fast.backend_tokenizer.save(str(file))


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
        return len(self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._tokenizer(texts, padding="max_length", truncation=True, max_length=self.context_length,
                              return_tensors="pt")
        return out["input_ids"], out["attention_mask"]  # (N, L), (N, L)

    @property
    def pad_id(self) -> int:
        return int(self._tokenizer.pad_token_id)

    def save_fast(self, file: Path) -> None:
        """The tokenizer as a ``tokenizers`` JSON file (for the ONNX runtime)."""
        self._tokenizer.backend_tokenizer.save(str(file))

    def save(self, folder: Path) -> None:
        """Write the tokenizer files into ``folder``, each atomically."""
        with tempfile.TemporaryDirectory() as tmp:
            self._tokenizer.save_pretrained(tmp)
            for file in sorted(Path(tmp).iterdir()):
                atomic_write_bytes(folder / file.name, file.read_bytes())


def chunk_texts(texts: list[str], *, count: Callable[[str], int], limit: int) -> tuple[list[str], torch.Tensor]:
    """Runs of whole sentences of at most ``limit`` tokens and the (R,) index of each run's text (``text_runs``)."""
    runs, owner = pack_runs(texts, count=count, limit=limit)
    return runs, torch.tensor(owner, dtype=torch.long)


def write_clip_bpe(folder: Path, *, context_length: int = 77) -> None:
    """CLIP's BPE as Hugging Face tokenizer files (vocab.json, merges.txt, tokenizer_config.json), made from the
    vocabulary open_clip ships, with OpenAI's spelling of the start and end markers."""
    import json

    from open_clip.tokenizer import SimpleTokenizer

    bpe = SimpleTokenizer()
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    (folder / "vocab.json").write_text(json.dumps({names.get(k, k): v for k, v in bpe.encoder.items()}))
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": context_length, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "do_lower_case": True}))
