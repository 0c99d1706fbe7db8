"""Sharded, resumable gallery embedding (``geobridge embed``), one share of the shards per torchrun rank.

The gallery (``gallery_records``: view by view, place by place) is cut into shards of at most ``shard_size``
images of one view. Rank ``r`` of ``W`` embeds the shards ``k`` with ``k % W == r`` with a DataLoader whose
workers decode and resize the images; a shard's batches never depend on ``W``, so any number of ranks gives
the same vectors. The output folder holds:

* ``records.jsonl``: the index record of every image, in gallery order;
* ``shard-<k>.npy``: the (n_k, D) float32 embeddings of shard k, written atomically;
* ``shard-<k>.json``: the shard's done marker (its rows and the SHA-256 of its ``.npy``), written after it;
* ``manifest.json``: the plan (model, records checksum, shard ranges); ``complete`` and every shard's
  checksum once all shards are done.

A killed run is re-run with the same command: shards whose marker matches their file are skipped, the rest are
embedded. A folder planned for another gallery, model or shard size is refused. ``load_embeddings`` reads a
complete folder back for ``geobridge index build --from-embeddings``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geobridge._atomic import atomic_write_bytes, atomic_write_json
from geobridge._hashing import file_sha256
from geobridge.errors import GeoBridgeError, IndexFormatError

logger = logging.getLogger(__name__)

FORMAT = "geobridge-embeddings"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
RECORDS = "records.jsonl"


@dataclass(frozen=True)
class Shard:
    number: int
    view: str
    start: int  # first gallery row
    stop: int  # one past the last

    @property
    def stem(self) -> str:
        return f"shard-{self.number:05d}"


@dataclass(frozen=True)
class EmbedSummary:
    out: Path
    count: int
    shards: int
    embedded: list[int]  # shard numbers this rank embedded now
    skipped: list[int]  # this rank's shards that were already done


def plan_shards(records: Sequence[dict[str, Any]], *, shard_size: int) -> list[Shard]:
    """Consecutive runs of at most ``shard_size`` records of one view."""
    if shard_size < 1:
        raise GeoBridgeError(f"shard_size must be at least 1, got {shard_size}")
    shards: list[Shard] = []
    start = 0
    while start < len(records):
        view = records[start]["view"]
        stop = start
        while stop < len(records) and stop - start < shard_size and records[stop]["view"] == view:
            stop += 1
        shards.append(Shard(len(shards), view, start, stop))
        start = stop
    return shards


def embed_shards(
    model: Any,
    records: Sequence[dict[str, Any]],
    out: str | Path,
    *,
    shard_size: int = 4096,
    batch_size: int = 64,
    num_workers: int = 0,
    model_info: dict[str, Any] | None = None,
    weights_sha256: str | None = None,
    rank: int = 0,
    world_size: int = 1,
    agree: Any = None,
    show_progress_bar: bool = False,
) -> EmbedSummary:
    """Embed this rank's share of the shards of ``records`` into ``out``, skipping shards already done.

    ``agree(ok) -> bool`` (distributed: all ranks' flags and-ed, and a barrier) orders the ranks: rank 0
    writes the plan, then every rank embeds; ``None`` for one process. Rank 0 completes the manifest when
    ``agree`` reports every rank done. ``weights_sha256`` identifies the model in the plan.
    """
    out = Path(out)
    shards = plan_shards(records, shard_size=shard_size)
    records_bytes = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
    plan = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_info": dict(model_info or {}),
        "weights_sha256": weights_sha256,
        "dim": int(model.embed_dim),
        "count": len(records),
        "shard_size": shard_size,
        "records_sha256": hashlib.sha256(records_bytes).hexdigest(),
        "shards": [{"shard": s.number, "view": s.view, "start": s.start, "stop": s.stop} for s in shards],
    }
    sync = agree if agree is not None else (lambda ok: ok)
    problem = _plan_conflict(out, plan)
    if not sync(problem is None):  # every rank read the old manifest before rank 0 may replace it
        raise GeoBridgeError(problem or f"another rank refused the embeddings folder {out}; see its error")
    if rank == 0 and not (out / MANIFEST).is_file():
        atomic_write_bytes(out / RECORDS, records_bytes)
        atomic_write_json(out / MANIFEST, {**plan, "complete": False})
    sync(True)
    mine = [s for s in shards if s.number % world_size == rank]
    done = [s for s in mine if _shard_done(out, s, dim=plan["dim"]) is not None]
    todo = [s for s in mine if s not in done]
    failure: Exception | None = None
    try:
        if todo:
            _embed(model, records, todo, out, batch_size=batch_size, num_workers=num_workers,
                   show_progress_bar=show_progress_bar)
    except Exception as exc:  # reported to the other ranks first, or they would wait for this one forever
        failure = exc
    if not sync(failure is None):
        if failure is not None:
            raise failure
        raise GeoBridgeError(f"another rank failed while embedding into {out}; see its error (re-run to resume)")
    if rank == 0:
        digests = {}
        for shard in shards:
            digest = _shard_done(out, shard, dim=plan["dim"])
            if digest is None:
                raise GeoBridgeError(f"{out / shard.stem}.json is missing after every rank finished")
            digests[shard.stem] = digest
        atomic_write_json(out / MANIFEST, {**plan, "complete": True, "sha256": {RECORDS: plan["records_sha256"],
                                                                              **digests}})
    sync(True)
    return EmbedSummary(out=out, count=len(records), shards=len(shards),
                        embedded=[s.number for s in todo], skipped=[s.number for s in done])


def load_embeddings(folder: str | Path) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, Any]]:
    """The (N, D) vectors, N records and the manifest of a complete embeddings folder; every file is checked."""
    folder = Path(folder)
    manifest = _read_manifest(folder)
    if manifest is None:
        raise IndexFormatError(f"{folder} holds no {MANIFEST}; write it with `geobridge embed --out {folder}`")
    if not manifest.get("complete"):
        raise IndexFormatError(f"{folder}: the embedding is incomplete; re-run the same `geobridge embed` to finish it")
    digests = manifest.get("sha256", {})
    records_bytes = _read_bytes(folder / RECORDS)
    if hashlib.sha256(records_bytes).hexdigest() != digests.get(RECORDS):
        raise IndexFormatError(f"{folder / RECORDS}: checksum mismatch (the file is corrupt or was edited)")
    records = [json.loads(line) for line in records_bytes.decode().splitlines() if line.strip()]
    chunks = []
    for entry in manifest["shards"]:
        shard = Shard(int(entry["shard"]), str(entry["view"]), int(entry["start"]), int(entry["stop"]))
        path = folder / f"{shard.stem}.npy"
        data = _read_bytes(path)
        if hashlib.sha256(data).hexdigest() != digests.get(shard.stem):
            raise IndexFormatError(f"{path}: checksum mismatch (the file is corrupt)")
        vectors = np.load(io.BytesIO(data), allow_pickle=False)  # (n_k, D)
        expected = (shard.stop - shard.start, int(manifest["dim"]))
        if vectors.shape != expected:
            raise IndexFormatError(f"{path}: shape {vectors.shape}, the manifest says {expected}")
        chunks.append(vectors)
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, manifest["dim"]), dtype=np.float32)
    if len(vectors) != len(records):
        raise IndexFormatError(f"{folder}: {len(vectors)} vectors but {len(records)} records")
    return vectors, records, manifest


# ---------------------------------------------------------------------- internals
def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise IndexFormatError(f"cannot read {path}: {exc}") from exc


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{path}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{path} is not a GeoBridge embeddings manifest (format != {FORMAT!r})")
    return manifest


def _plan_conflict(out: Path, plan: dict[str, Any]) -> str | None:
    """Why ``out`` cannot take ``plan`` (it holds another gallery, model or shard size), or None."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file; the embeddings go into a folder"
    try:
        old = _read_manifest(out)
    except IndexFormatError as exc:
        return str(exc)
    if old is None:
        return None
    differ = [key for key in ("format_version", "weights_sha256", "dim", "count", "shard_size", "records_sha256")
              if old.get(key) != plan[key]]
    if differ:
        return (f"{out / MANIFEST} was planned for other embeddings ({', '.join(differ)} differ); "
                "use a new --out folder or delete this one")
    return None


def _shard_done(out: Path, shard: Shard, *, dim: int) -> str | None:
    """The checksum of a finished shard (its marker matches its file), else None."""
    marker = out / f"{shard.stem}.json"
    path = out / f"{shard.stem}.npy"
    if not (marker.is_file() and path.is_file()):
        return None
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if info.get("rows") != shard.stop - shard.start or info.get("dim") != dim or info.get("start") != shard.start:
        return None
    digest = file_sha256(path)
    return digest if digest == info.get("sha256") else None


class _GalleryImages:
    """Map-style dataset: gallery row -> (row, (3, H, W) tensor), decoded and resized in loader workers."""

    def __init__(self, records: Sequence[dict[str, Any]], transforms: dict[str, Any]) -> None:
        self.records = records
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, row: int) -> tuple[int, Any]:
        from geobridge.images import load_image

        record = self.records[row]
        return row, self.transforms[record["view"]](load_image(record["path"]))


def _embed(
    model: Any,
    records: Sequence[dict[str, Any]],
    shards: list[Shard],
    out: Path,
    *,
    batch_size: int,
    num_workers: int,
    show_progress_bar: bool,
) -> None:
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    views = sorted({s.view for s in shards})
    dataset = _GalleryImages(records, {view: model.transform(view) for view in views})
    # a shard's batches are fixed by the shard alone, so the vectors do not depend on the number of ranks
    batches = [list(range(b, min(b + batch_size, s.stop))) for s in shards for b in range(s.start, s.stop, batch_size)]
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, worker_init_fn=_one_thread)
    model.eval()
    pending = iter(shards)
    shard = next(pending)
    parts: list[np.ndarray] = []
    bar = tqdm(total=sum(s.stop - s.start for s in shards), desc="embed", unit="img", disable=not show_progress_bar)
    with torch.no_grad():
        for rows, images in loader:  # (b,), (b, 3, H, W)
            tta = shard.view in model.config.image.test_time_augment
            emb = model.encode_image(images.to(model.device), view=shard.view, test_time_augment=tta)  # (b, D)
            parts.append(emb.float().cpu().numpy())
            bar.update(len(rows))
            if int(rows[-1]) == shard.stop - 1:
                _write_shard(out, shard, np.concatenate(parts).astype(np.float32, copy=False))
                parts = []
                shard = next(pending, shard)
    bar.close()


def _write_shard(out: Path, shard: Shard, vectors: np.ndarray) -> None:
    """The ``.npy`` first, then its marker: a marker always names a complete file."""
    buffer = io.BytesIO()
    np.save(buffer, vectors, allow_pickle=False)
    data = buffer.getvalue()
    atomic_write_bytes(out / f"{shard.stem}.npy", data)
    atomic_write_json(out / f"{shard.stem}.json", {"shard": shard.number, "view": shard.view, "start": shard.start,
                                                   "rows": int(vectors.shape[0]), "dim": int(vectors.shape[1]),
                                                   "sha256": hashlib.sha256(data).hexdigest()})


def _one_thread(worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)  # decoding workers must not each start a full OpenMP pool
