"""``export_onnx``: one ONNX graph per image view plus the text tower, checked against torch with onnxruntime.

Each image graph maps (B, 3, H, W) normalised float32 images to (B, D) unit vectors, test-time augmentation
included for the views the config lists. The text graph maps token ids and masks to (N, D) unit vectors: the
MiniLM transformer, mean pooling and normalisation, then the projection (the tokenizer is saved beside it), or
the hashing encoder's bag of ids, or CLIP's text encoder over runs of whole sentences that fit its context
(averaged by the runtime). Each graph's metadata holds the preprocessing (mean, std, input size,
interpolation), the view, the embedding dimension and the checkpoint's hash; ``manifest.json`` lists them all.

The folder is written under a temporary name beside ``out`` and renamed into place only after the self-check
passed, so ``out`` is either the previous export or the complete new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geobridge._atomic import atomic_write_json
from geobridge._hashing import file_sha256
from geobridge.errors import ExportError
from geobridge.export.onnx_runtime import EXPORT_FORMAT, EXPORT_VERSION, MANIFEST_NAME, TEXT_GRAPH, OnnxEncoder
from geobridge.models import GeoBridge
from geobridge.models.geobridge import CONFIG_NAME, WEIGHTS_NAME
from geobridge.views import IMAGE_VIEWS

DEFAULT_OPSET = 17
MIN_COSINE = 0.9999
# short texts, and one past MiniLM's 256 tokens (the truncation path)
CHECK_TEXTS = ("a red tower beside a river", "green fields and a small village", "harbour, cranes and ships " * 60,
               "A white church north of the lake. " * 12)  # several sentences past CLIP's 77 tokens: its runs


class _ImageGraph(nn.Module):
    def __init__(self, model: GeoBridge, *, view: str, tta: bool) -> None:
        super().__init__()
        self.model, self.view, self.tta = model, view, tta

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, D)
        return self.model.encode_image(images, view=self.view, test_time_augment=self.tta)


class _HashingTextGraph(nn.Module):
    """EmbeddingBag(mode="mean") over padded ids: masked mean of the embeddings, then the projection."""

    def __init__(self, model: GeoBridge) -> None:
        super().__init__()
        self.weight = model.text.encoder.bag.weight
        self.proj = model.text.proj

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (N, L), (N, L) -> (N, D)
        emb = self.weight[input_ids] * mask.unsqueeze(-1)  # (N, L, W)
        pooled = emb.sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)  # (N, W)
        return F.normalize(self.proj(pooled), dim=-1)


class _MiniLMTextGraph(nn.Module):
    """BERT -> mean pooling over the attention mask -> L2 normalisation (all-MiniLM) -> projection."""

    def __init__(self, model: GeoBridge) -> None:
        super().__init__()
        st = model.text.encoder.model
        self.bert = st[0].auto_model
        self.normalize = any(type(m).__name__ == "Normalize" for m in st)
        self.proj = model.text.proj

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:  # (N, L) each -> (N, D)
        tokens = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state  # (N, L, 384)
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)  # (N, L, 1)
        pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (N, 384)
        if self.normalize:
            pooled = F.normalize(pooled, dim=-1)
        return F.normalize(self.proj(pooled), dim=-1)


class _ClipTextGraph(nn.Module):
    """CLIP's text encoder and projection over one run of tokens: (R, L) ids and mask -> (R, E) features.

    Unnormalised: the runtime averages a long text's runs (``text_runs.pack_runs``) and normalises the mean, as
    ``ClipTextTower`` does.
    """

    def __init__(self, model: GeoBridge) -> None:
        super().__init__()
        self.encoder = model.text.encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids, attention_mask)


def checkpoint_hash(folder: Path) -> dict[str, str]:
    """sha256 of the checkpoint's config and weights, and one hash over both (``sha256``)."""
    files = {name: file_sha256(folder / name) for name in (CONFIG_NAME, WEIGHTS_NAME)}
    combined = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()
    return {"sha256": combined, **{f"{k}_sha256": v for k, v in files.items()}}


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    *,
    views: tuple[str, ...] = IMAGE_VIEWS,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    min_cosine: float = MIN_COSINE,
) -> dict[str, Any]:
    """Export the model in ``checkpoint`` (a model or run folder) to the folder ``out``; return the manifest.

    Raises ExportError when ``out`` exists (unless ``overwrite``) or when onnxruntime's embeddings of a few
    random images per view and a few texts fall below ``min_cosine`` to torch's.
    """
    try:
        import onnx
    except ImportError as exc:
        raise ExportError("ONNX export needs onnx and onnxruntime: pip install 'geobridge[onnx]'") from exc
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists; pass --force (overwrite=True) to replace it")
    unknown = sorted(set(views) - set(IMAGE_VIEWS))
    if unknown or not views:
        raise ExportError(f"views must be some of {', '.join(IMAGE_VIEWS)}, got {list(views)}")
    folder = Path(checkpoint)
    if not (folder / CONFIG_NAME).is_file() and (folder / "model" / CONFIG_NAME).is_file():
        folder = folder / "model"
    model = GeoBridge.from_pretrained(folder).eval()
    model.image.set_grad_checkpointing(False)  # a training-time option; the traced graph is the plain forward
    config = model.config
    hashes = checkpoint_hash(folder)
    common = {"embed_dim": model.embed_dim, "checkpoint_sha256": hashes["sha256"], "config": config.name,
              "format": EXPORT_FORMAT, "format_version": EXPORT_VERSION}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        manifest: dict[str, Any] = {**common, "checkpoint": str(folder.resolve()), "checkpoint_hashes": hashes,
                                    "opset": opset, "images": {}, "torch": torch.__version__}
        for view in views:
            height, width = config.image.input_size[view]
            tta = view in config.image.test_time_augment
            entry = {"file": f"{view}.onnx", "view": view, "input_size": [height, width],
                     "mean": list(config.image.mean), "std": list(config.image.std),
                     "interpolation": config.image.interpolation, "test_time_augment": tta}
            sample = torch.randn(2, 3, height, width)
            _export(_ImageGraph(model, view=view, tta=tta), (sample,), tmp / entry["file"], opset=opset,
                    inputs={"images": {0: "batch"}}, outputs={"embeddings": {0: "batch"}})
            _stamp(onnx, tmp / entry["file"], {**common, "kind": "image", **entry})
            manifest["images"][view] = entry
        manifest["text"] = _export_text(model, tmp, opset=opset)
        _stamp(onnx, tmp / TEXT_GRAPH, {**common, "kind": "text", "view": "text", **manifest["text"]})
        for entry in [*manifest["images"].values(), manifest["text"]]:
            entry["sha256"] = file_sha256(tmp / entry["file"])
        atomic_write_json(tmp / MANIFEST_NAME, manifest)
        manifest["check"] = self_check(model, tmp, views=views, min_cosine=min_cosine)
        atomic_write_json(tmp / MANIFEST_NAME, manifest)
        _readable(tmp)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def self_check(model: GeoBridge, folder: Path, *, views: tuple[str, ...], min_cosine: float) -> dict[str, float]:
    """The smallest cosine between onnxruntime's and torch's embeddings per view; ExportError below ``min_cosine``."""
    from PIL import Image

    encoder = OnnxEncoder(folder)
    rng = np.random.default_rng(0)
    cosines: dict[str, float] = {}
    for view in views:
        height, width = model.config.image.input_size[view]
        # one image at the input size (no resize), two larger ones (the resize path)
        shapes = [(height, width), (height * 3 // 2, width * 3 // 2), (height * 2, width * 2)]
        images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in shapes]
        cosines[view] = _min_cosine(model.encode(images, view=view, num_workers=0),
                                    encoder.encode(images, view=view, num_workers=0))
    cosines["text"] = _min_cosine(model.encode(list(CHECK_TEXTS), view="text"),
                                  encoder.encode(list(CHECK_TEXTS), view="text"))
    failed = {k: v for k, v in cosines.items() if not v >= min_cosine}
    if failed:
        raise ExportError(f"ONNX export self-check failed: cosine to torch below {min_cosine} for "
                          + ", ".join(f"{k} ({v:.6f})" for k, v in failed.items()))
    return cosines


def _export_text(model: GeoBridge, folder: Path, *, opset: int) -> dict[str, Any]:
    text_config = model.config.text
    if text_config.pooling != "text":
        raise ExportError(f"text.pooling={text_config.pooling!r} is not exported yet: the text graph embeds whole "
                          "descriptions (text.pooling='text')")
    if text_config.kind == "hashing":
        ids = torch.zeros(2, 5, dtype=torch.long)
        mask = torch.ones(2, 5)
        _export(_HashingTextGraph(model), (ids, mask), folder / TEXT_GRAPH, opset=opset,
                inputs={"input_ids": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"}},
                outputs={"embeddings": {0: "batch"}})
        return {"file": TEXT_GRAPH, "kind": "hashing", "vocab_size": text_config.vocab_size}
    if text_config.kind == "clip":
        return _export_clip_text(model, folder, opset=opset)
    st = model.text.encoder.model
    tokenizer = st[0].tokenizer
    tokenizer_dir = folder / "tokenizer"
    tokenizer.save_pretrained(str(tokenizer_dir))
    if not (tokenizer_dir / "tokenizer.json").is_file():
        raise ExportError(f"the MiniLM tokenizer did not save a tokenizer.json into {tokenizer_dir}")
    feed = tokenizer(["a short text", "a somewhat longer text for the export"], padding=True, return_tensors="pt")
    axes = {0: "batch", 1: "tokens"}
    _export(_MiniLMTextGraph(model), (feed["input_ids"], feed["attention_mask"], feed["token_type_ids"]),
            folder / TEXT_GRAPH, opset=opset,
            inputs={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes},
            outputs={"embeddings": {0: "batch"}})
    return {"file": TEXT_GRAPH, "kind": "minilm", "tokenizer": "tokenizer/tokenizer.json",
            "max_length": int(st.max_seq_length), "pad_id": int(tokenizer.pad_token_id),
            "pad_token": str(tokenizer.pad_token)}


def _export_clip_text(model: GeoBridge, folder: Path, *, opset: int) -> dict[str, Any]:
    clip = model.config.clip
    tokens = model.text.tokens
    (folder / "tokenizer").mkdir()
    tokens.save_fast(folder / "tokenizer" / "tokenizer.json")
    ids, mask = tokens(["a short text", "a somewhat longer text for the export"])  # (2, L) each
    axes = {0: "runs", 1: "tokens"}
    _export(_ClipTextGraph(model), (ids, mask), folder / TEXT_GRAPH, opset=opset,
            inputs={"input_ids": axes, "attention_mask": axes}, outputs={"features": {0: "runs"}})
    return {"file": TEXT_GRAPH, "kind": "clip", "tokenizer": "tokenizer/tokenizer.json",
            "context_length": clip.context_length, "pad_id": tokens.pad_id, "long_text": clip.long_text}


def _export(
    module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, *, opset: int,
    inputs: dict[str, dict[int, str]], outputs: dict[str, dict[int, str]],
) -> None:
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's inference fast path (open_clip's CLIP) is one fused op the ONNX exporter lacks
    torch.backends.mha.set_fastpath_enabled(False)
    with _quiet(), torch.no_grad():
        try:
            torch.onnx.export(module.eval(), args, str(path), input_names=list(inputs), output_names=list(outputs),
                              dynamic_axes={**inputs, **outputs}, opset_version=opset, dynamo=False)
        except Exception as exc:  # noqa: BLE001 - any exporter failure is reported with the graph's name
            raise ExportError(f"could not export {path.name}: {type(exc).__name__}: {exc}") from exc
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)


def _stamp(onnx: Any, path: Path, metadata: dict[str, Any]) -> None:
    """Write ``metadata`` (JSON for lists and bools) into the graph's metadata_props and check the model."""
    import json

    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    for key, value in sorted(metadata.items()):
        prop = graph.metadata_props.add()
        prop.key, prop.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))


def _readable(folder: Path) -> None:
    """Give the folder and its files the permissions of the umask (mkdtemp and mkstemp make them private)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _move_into_place(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
