"""Run an ONNX export of GeoBridge with onnxruntime: the same ``encode`` contract as ``GeoBridge.encode``.

Only onnxruntime, numpy, Pillow and (for MiniLM) the ``tokenizers`` library are needed; torch is not imported.
Images are decoded by ``geobridge.images`` and resized with Pillow's filter of the config's interpolation, which
is what the torch transform does, so the inputs match the torch path to the last bit.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from geobridge.errors import CheckpointError, GeoBridgeError
from geobridge.hashing_text import hash_text
from geobridge.images import as_image
from geobridge.text_runs import pack_runs
from geobridge.views import check_view

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
EXPORT_FORMAT = "geobridge-onnx"
EXPORT_VERSION = 1
TEXT_GRAPH = "text.onnx"
MAX_DECODE_THREADS = 4
_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST}


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of an export folder, checked for its format and version."""
    path = Path(path)
    file = path / MANIFEST_NAME
    if not file.is_file():
        raise CheckpointError(f"{path} is not an ONNX export of GeoBridge ({MANIFEST_NAME} is missing); "
                              "write one with 'geobridge export onnx'")
    try:
        manifest = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"invalid JSON in {file}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{file} is not a GeoBridge ONNX manifest (format != {EXPORT_FORMAT!r})")
    if int(manifest.get("format_version", -1)) > EXPORT_VERSION:
        raise CheckpointError(f"{file} was written by a newer GeoBridge (format_version "
                              f"{manifest['format_version']}); please upgrade")
    return manifest


class OnnxEncoder:
    """The exported graphs of one checkpoint: ``encode(items, view=...)`` -> (N, D) float32 unit vectors."""

    def __init__(self, path: str | Path, *, device: str = "cpu", threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise GeoBridgeError("--backend onnx needs onnxruntime: pip install 'geobridge[onnx]'") from exc
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.embed_dim = int(self.manifest["embed_dim"])
        self.config = SimpleNamespace(name=str(self.manifest.get("config", "onnx")),
                                      text=SimpleNamespace(kind=self.manifest["text"]["kind"]))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            providers.insert(0, "CUDAExecutionProvider")
        self._sessions: dict[str, Any] = {}
        for view, entry in {**self.manifest["images"], "text": self.manifest["text"]}.items():
            file = self.path / entry["file"]
            if not file.is_file():
                raise CheckpointError(f"{file} is missing from the ONNX export {self.path}")
            self._sessions[view] = ort.InferenceSession(str(file), options, providers=providers)
        self._tokenizer = _load_tokenizer(self.path, self.manifest["text"])

    def __repr__(self) -> str:
        return f"OnnxEncoder({str(self.path)!r}, views={sorted(self._sessions)})"

    def encode(
        self,
        items: Sequence[Any] | Any,
        *,
        view: str,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
        test_time_augment: bool = True,
        num_workers: int | None = None,
        precision: str = "fp32",
    ) -> np.ndarray:
        """Embed images of one view, or texts (``view="text"``); like ``GeoBridge.encode``.

        The graphs are float32 (``precision`` must be fp32); an image view exported with test-time augmentation
        has it inside its graph (``test_time_augment=False`` is refused there). ``num_workers`` decoding threads
        (None: none for one batch, else up to the cores minus one). ``show_progress_bar`` is accepted and unused.
        """
        check_view(view)
        if precision != "fp32":
            raise GeoBridgeError(f"ONNX graphs run in fp32; precision={precision!r} is not available")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if view == "text":
            outputs = [self._encode_texts(list(items[i : i + batch_size])) for i in range(0, len(items), batch_size)]
        else:
            entry = self.manifest["images"].get(view)
            if entry is None:
                raise GeoBridgeError(f"the ONNX export {self.path} has no graph for view {view!r}")
            if entry["test_time_augment"] and not test_time_augment:
                raise ValueError(f"the {view} graph of {self.path} includes test-time augmentation; "
                                 "re-export to embed without it")
            images = _as_images(items)
            if num_workers is None:
                num_workers = 0 if len(images) <= batch_size else min(MAX_DECODE_THREADS, (os.cpu_count() or 1) - 1)
            outputs = self._encode_images(images, view=view, entry=entry, batch_size=batch_size,
                                          num_workers=num_workers)
        if not outputs:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        vectors = np.concatenate(outputs).astype(np.float32, copy=False)  # (N, D)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def _encode_images(
        self, images: Sequence[Any], *, view: str, entry: dict[str, Any], batch_size: int, num_workers: int
    ) -> list[np.ndarray]:
        height, width = entry["input_size"]
        mean = np.asarray(entry["mean"], dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(entry["std"], dtype=np.float32).reshape(3, 1, 1)
        resample = _FILTERS[entry["interpolation"]]

        def pixels(item: Any) -> np.ndarray:
            return image_pixels(item, size=(height, width), mean=mean, std=std, resample=resample)

        session = self._sessions[view]
        outputs: list[np.ndarray] = []
        pool = ThreadPoolExecutor(num_workers) if num_workers > 0 else None
        try:
            for start in range(0, len(images), batch_size):
                chunk = images[start : start + batch_size]
                rows = list(pool.map(pixels, chunk)) if pool is not None else [pixels(x) for x in chunk]
                outputs.append(session.run(None, {"images": np.stack(rows)})[0])  # (B, D)
        finally:
            if pool is not None:
                pool.shutdown()
        return outputs

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"view='text' expects strings, got {type(text).__name__}")
        if not texts:
            raise ValueError("encode_text needs at least one text")
        if self.manifest["text"]["kind"] != "clip":
            return self._sessions["text"].run(None, self._tokenizer(texts))[0]  # (N, D)
        feed, owner = self._tokenizer(texts)
        session = self._sessions["text"]
        inputs = {i.name for i in session.get_inputs()}  # open_clip's graph has no mask: causal, pooled at the end
        features = session.run(None, {k: v for k, v in feed.items() if k in inputs})[0]  # (R, E): one per run
        sums = np.zeros((len(texts), features.shape[1]), dtype=np.float32)
        np.add.at(sums, np.asarray(owner), features)
        return sums / np.bincount(owner, minlength=len(texts))[:, None].astype(np.float32)  # (N, E)


def image_pixels(
    item: Any, *, size: tuple[int, int], mean: np.ndarray, std: np.ndarray, resample: Image.Resampling
) -> np.ndarray:
    """One image -> (3, H, W) float32, resized to ``size`` = (H, W) and normalised, as the torch transform does."""
    height, width = size
    if isinstance(item, np.ndarray) and item.ndim == 3 and item.shape[0] == 3 and item.dtype == np.uint8:
        if item.shape[1:] == (height, width):  # a (3, H, W) tensor's pixels at input size already
            return (item.astype(np.float32) / np.float32(255.0) - mean) / std
        item = np.ascontiguousarray(item.transpose(1, 2, 0))  # (H, W, 3)
    image = as_image(item)
    if image.size != (width, height):
        image = image.resize((width, height), resample=resample)
    array = np.asarray(image, dtype=np.uint8).astype(np.float32) / np.float32(255.0)  # (H, W, 3)
    return (array.transpose(2, 0, 1) - mean) / std  # (3, H, W)


def _as_images(items: Any) -> list[Any]:
    """Items as a list; uint8 torch tensors (N, 3, H, W) / (3, H, W) become numpy (3, H, W) arrays."""
    if hasattr(items, "numpy") and hasattr(items, "ndim") and not isinstance(items, np.ndarray):
        items = items.numpy()
        if items.ndim == 3:
            items = items[None]
        if items.ndim != 4 or items.shape[1] != 3 or items.dtype != np.uint8:
            raise ValueError(f"image tensors must be uint8 (N, 3, H, W) or (3, H, W), got {items.dtype} "
                             f"{items.shape}")
        return list(items)
    out = []
    for item in items:
        if hasattr(item, "numpy") and hasattr(item, "ndim") and not isinstance(item, np.ndarray):
            item = item.numpy()
            if item.ndim != 3 or item.shape[0] != 3 or item.dtype != np.uint8:
                raise ValueError(f"image tensors must be uint8 (3, H, W), got {item.dtype} {item.shape}")
        out.append(item)
    return out


def _load_tokenizer(path: Path, entry: dict[str, Any]) -> Any:
    """texts -> the text graph's feed (int64 ids and masks), for the export's tokenizer kind."""
    if entry["kind"] == "hashing":
        vocab_size = int(entry["vocab_size"])

        def hashing(texts: list[str]) -> dict[str, np.ndarray]:
            rows = [hash_text(t, vocab_size=vocab_size) for t in texts]
            length = max(len(r) for r in rows)
            ids = np.zeros((len(rows), length), dtype=np.int64)
            mask = np.zeros((len(rows), length), dtype=np.float32)
            for i, row in enumerate(rows):
                ids[i, : len(row)] = row
                mask[i, : len(row)] = 1.0
            return {"input_ids": ids, "mask": mask}

        return hashing
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise GeoBridgeError("the text graph needs the 'tokenizers' package: pip install tokenizers") from exc
    file = path / entry["tokenizer"]
    if not file.is_file():
        raise CheckpointError(f"{file} is missing from the ONNX export {path}")
    tokenizer = Tokenizer.from_file(str(file))
    if entry["kind"] == "clip":
        return _clip_runs(tokenizer, entry)
    tokenizer.enable_truncation(max_length=int(entry["max_length"]))
    tokenizer.enable_padding(pad_id=int(entry["pad_id"]), pad_token=str(entry["pad_token"]))

    def wordpiece(texts: list[str]) -> dict[str, np.ndarray]:
        encoded = tokenizer.encode_batch(texts)
        return {
            "input_ids": np.asarray([e.ids for e in encoded], dtype=np.int64),  # (N, L)
            "attention_mask": np.asarray([e.attention_mask for e in encoded], dtype=np.int64),
            "token_type_ids": np.asarray([e.type_ids for e in encoded], dtype=np.int64),
        }

    return wordpiece


def _clip_runs(tokenizer: Any, entry: dict[str, Any]) -> Any:
    """texts -> (the CLIP text graph's feed, the text index of each run): runs of whole sentences that fit the
    context (``text_runs.pack_runs``), or each text truncated (``long_text: truncate``)."""
    from tokenizers import Tokenizer

    context = int(entry["context_length"])
    counter = Tokenizer.from_str(tokenizer.to_str())  # a copy without padding and truncation, to count tokens
    counter.no_padding()
    counter.no_truncation()
    tokenizer.enable_truncation(max_length=context)
    tokenizer.enable_padding(pad_id=int(entry["pad_id"]), length=context)

    def count(text: str) -> int:
        return len(counter.encode(text, add_special_tokens=False).ids)

    def clip(texts: list[str]) -> tuple[dict[str, np.ndarray], list[int]]:
        if entry["long_text"] == "truncate":
            runs, owner = texts, list(range(len(texts)))
        else:
            runs, owner = pack_runs(texts, count=count, limit=context - 2)
        encoded = tokenizer.encode_batch(runs)
        feed = {"input_ids": np.asarray([e.ids for e in encoded], dtype=np.int64),  # (R, L)
                "attention_mask": np.asarray([e.attention_mask for e in encoded], dtype=np.int64)}
        return feed, owner

    return clip
