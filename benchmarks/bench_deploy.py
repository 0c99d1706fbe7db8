"""Deployment paths: fast ``model.encode`` (workers), ONNX Runtime against torch, bf16 against fp32, on the CPU.

For each config (gb-tiny with random weights; gb-lite0 with its packaged ImageNet backbone; the hashing text
tower, text is not timed), drone view, test-time augmentation off so every method runs one forward per image:

* ``bare``: the timm backbone alone on a pre-made (B, 3, H, W) batch (the baseline of the encode target);
* ``encode_pil``: ``model.encode(pil_images)`` with its default DataLoader workers (decode/resize in workers,
  prefetch); ``encode_pil_w0``: the same with ``num_workers=0`` (everything in the caller, the old path);
* ``encode_files``: ``model.encode(png_paths)`` (decoding included), default workers;
* ``preprocess_pil`` / ``preprocess_files``: the input work alone, in this process: what a worker does (decode,
  resize, uint8) and the caller's ``normalise``. With the bare forward already keeping every core busy, no
  pipeline hides it: ``encode_*_floor_if_cores_busy`` = 1 + (input work / cores) / bare forward is the least
  overhead any schedule of the two can reach on this machine;
* ``onnx_graph``: onnxruntime on the exported drone graph, same batch, against ``model.encode_image``;
  ``onnx_encode``: ``OnnxEncoder.encode(pil_images)`` against ``model.encode(pil_images)``;
* ``bf16``: ``encode_image`` of one batch under bf16 autocast, and an image-tower training step (forward,
  backward, batch 8) under bf16 autocast, each against fp32.

The PIL images are 1.5x the input size, so every encode path resizes. Measurements are interleaved per
repetition so that load changes on a shared machine hit every method alike; medians are reported.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import Context, Findings, interleaved, make_images, make_model, ratio

NAME = "deploy"
TITLE = "Deployment: encode with workers vs bare timm forward, ONNX Runtime vs torch, bf16 vs fp32 (CPU)"
TARGET = "model.encode (PIL and files) <= 1.1x a bare timm forward of the same backbone and batch"
OVERHEAD_TARGET = 1.1


def plan(*, quick: bool) -> list[dict[str, Any]]:
    if quick:
        return [{"config": "gb-tiny", "n_images": 16, "batch_size": 8, "repeat": 1, "onnx": False}]
    return [
        {"config": "gb-tiny", "n_images": 512, "batch_size": 64, "repeat": 5, "onnx": True},
        {"config": "gb-lite0", "n_images": 128, "batch_size": 32, "repeat": 3, "onnx": True},
    ]


def _interleaved(functions: dict[str, Any], *, repeat: int) -> dict[str, float]:
    """``interleaved`` for functions that take no call number."""
    return interleaved({key: (lambda _call, fn=fn: fn()) for key, fn in functions.items()}, calls=repeat)


def _cosine(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.min(np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def measure_config(ctx: Context, spec: dict[str, Any], *, tmp: Path) -> dict[str, Any]:
    import torch

    from geobridge.models.view_norm import active_view
    from geobridge.views import IMAGE_VIEWS

    name, n, batch_size = spec["config"], spec["n_images"], spec["batch_size"]
    model = make_model(name)
    height, width = model.config.image.input_size["drone"]
    images = make_images(n, size=(int(width * 1.5), int(height * 1.5)))
    folder = tmp / name
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"{i:05d}.png")
        image.save(paths[-1])
    transform = model.transform("drone")
    tensor = torch.stack([transform(img) for img in images[:batch_size]])  # (B, 3, H, W)
    n_batches = n // batch_size
    backbone = model.image.backbone
    out: dict[str, Any] = {"config": name, "input_size": [height, width], **spec}

    def bare() -> None:  # the drone view's BatchNorm statistics, as encode uses (per-view statistics)
        with torch.no_grad(), active_view(IMAGE_VIEWS.index("drone")):
            for _ in range(n_batches):
                backbone(tensor)

    def encode_pil() -> None:
        model.encode(images, view="drone", batch_size=batch_size, test_time_augment=False, show_progress_bar=False)

    def encode_pil_w0() -> None:
        model.encode(images, view="drone", batch_size=batch_size, test_time_augment=False, num_workers=0,
                     show_progress_bar=False)

    def encode_files() -> None:
        model.encode(paths, view="drone", batch_size=batch_size, test_time_augment=False, show_progress_bar=False)

    from timm.data.transforms import str_to_pil_interp

    from geobridge.models.encoding import ImageItems, normalise

    items = ImageItems(images, size=(height, width), resample=str_to_pil_interp(model.config.image.interpolation))
    file_items = ImageItems(paths, size=(height, width), resample=items.resample)

    def preprocess(dataset: ImageItems) -> Any:
        def run() -> None:  # what the workers do (decode, resize, uint8), then the caller's normalise
            for start in range(0, n, batch_size):
                batch = torch.stack([dataset.load(dataset.items[i]) for i in range(start, start + batch_size)])
                normalise(batch, mean=model.config.image.mean, std=model.config.image.std)

        return run

    ctx.log(NAME, f"{name}: encode vs bare ({n} images, batch {batch_size})")
    out["s"] = _interleaved({"bare": bare, "encode_pil": encode_pil, "encode_pil_w0": encode_pil_w0,
                             "encode_files": encode_files, "preprocess_pil": preprocess(items),
                             "preprocess_files": preprocess(file_items)}, repeat=spec["repeat"])
    from geobridge.models.encoding import default_num_workers

    out["default_workers"] = default_num_workers(n_items=n, batch_size=batch_size)

    # one batch each: bf16 autocast on a CPU without native bf16 is many times slower than fp32
    def fp32_forward() -> Any:
        with torch.no_grad():
            return model.encode_image(tensor, view="drone")

    def bf16_forward() -> Any:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model.encode_image(tensor, view="drone")

    train_batch = tensor[: min(8, batch_size)]

    def step(precision: str) -> Any:
        def run() -> None:
            model.image.zero_grad(set_to_none=True)
            if precision == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    emb = model.image(train_batch, view="drone")
            else:
                emb = model.image(train_batch, view="drone")
            emb.float().pow(2).mean().backward()

        return run

    ctx.log(NAME, f"{name}: bf16 vs fp32")
    model.train()
    out["s"].update(_interleaved({"train_step_fp32": step("fp32"), "train_step_bf16": step("bf16")},
                                 repeat=spec["repeat"]))
    model.eval()
    out["s"].update(_interleaved({"encode_image_fp32": fp32_forward, "encode_image_bf16": bf16_forward},
                                 repeat=spec["repeat"]))
    out["bf16_cosine_to_fp32"] = _cosine(bf16_forward().float(), fp32_forward())

    if spec["onnx"]:
        out.update(measure_onnx(ctx, model, images, tensor, tmp=tmp / f"{name}-ckpt", spec=spec,
                                n_batches=n_batches, timings=out["s"]))
    return out


def measure_onnx(
    ctx: Context, model: Any, images: list[Any], tensor: Any, *, tmp: Path, spec: dict[str, Any], n_batches: int,
    timings: dict[str, float],
) -> dict[str, Any]:
    import torch

    try:
        from geobridge.export import OnnxEncoder, export_onnx
    except ImportError as exc:  # pragma: no cover
        return {"onnx_error": str(exc)}
    ctx.log(NAME, f"{spec['config']}: ONNX export and onnxruntime vs torch")
    model.config.image.test_time_augment = []  # the graph of one forward per image, like the torch timings
    model.save_pretrained(tmp)
    start = time.perf_counter()
    try:
        manifest = export_onnx(tmp, tmp.with_name(tmp.name + "-onnx"), views=("drone",))
    except Exception as exc:  # noqa: BLE001 - a failed export is a result
        return {"onnx_error": f"{type(exc).__name__}: {exc}"}
    export_s = time.perf_counter() - start
    encoder = OnnxEncoder(tmp.with_name(tmp.name + "-onnx"))
    session = encoder._sessions["drone"]
    feed = {"images": tensor.numpy()}
    batch_size = spec["batch_size"]

    def onnx_graph() -> Any:
        return [session.run(None, feed)[0] for _ in range(n_batches)][-1]

    def torch_graph() -> Any:
        with torch.no_grad():
            return [model.encode_image(tensor, view="drone") for _ in range(n_batches)][-1]

    def onnx_encode() -> Any:
        return encoder.encode(images, view="drone", batch_size=batch_size)

    def torch_encode() -> Any:
        return model.encode(images, view="drone", batch_size=batch_size, show_progress_bar=False)

    timings.update(_interleaved({"onnx_graph": onnx_graph, "torch_graph": torch_graph, "onnx_encode": onnx_encode,
                                 "torch_encode": torch_encode}, repeat=spec["repeat"]))
    return {"onnx_export_s": export_s, "onnx_check": manifest["check"],
            "onnx_cosine_to_torch": _cosine(onnx_graph(), torch_graph().numpy())}


def bench(ctx: Context) -> dict[str, Any]:
    import torch

    specs = plan(quick=ctx.quick)
    with tempfile.TemporaryDirectory() as tmp:
        measured = [measure_config(ctx, spec, tmp=Path(tmp)) for spec in specs]
    found = Findings(notes=[
        "Drone view, test-time augmentation off; PIL images 1.5x the input size (every path resizes); PNG files "
        "for encode_files. Interleaved repetitions, medians.",
        f"torch intra-op threads: {torch.get_num_threads()}; os.cpu_count() = {os.cpu_count()}.",
    ])
    for m in measured:
        name, s, n = m["config"], m["s"], m["n_images"]
        per_s = {k: n / v for k, v in s.items()}
        found.baselines[f"{name}/bare_timm_forward_images_per_s"] = per_s["bare"]
        for key in ("encode_pil", "encode_pil_w0", "encode_files"):
            found.medians[f"{name}/{key}_images_per_s"] = per_s[key]
            found.ratios[f"{name}/{key}_overhead_vs_bare"] = ratio(s[key], s["bare"])
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        for key in ("pil", "files"):
            # the input work in one process against the bare forward; if the forward keeps every core busy, no
            # pipeline can hide it, and encode costs at least 1 + (input work / cores) / bare forward
            found.medians[f"{name}/preprocess_{key}_images_per_s"] = per_s[f"preprocess_{key}"]
            found.ratios[f"{name}/preprocess_{key}_vs_bare"] = ratio(s[f"preprocess_{key}"], s["bare"])
            found.ratios[f"{name}/encode_{key}_floor_if_cores_busy"] = 1.0 + s[f"preprocess_{key}"] / cores / s["bare"]
        for key, label in (("encode_pil", "model.encode(PIL)"), ("encode_files", "model.encode(PNG paths)")):
            found.compare(
                f"{name} ({m['input_size'][0]}x{m['input_size'][1]}, batch {m['batch_size']}): {label} "
                f"vs bare timm forward", value=per_s[key], baseline=per_s["bare"], unit="img/s",
                ratio_value=found.ratios[f"{name}/{key}_overhead_vs_bare"], ratio_name="overhead (time / bare time)",
                op="<=", threshold=OVERHEAD_TARGET, note=f"{m['default_workers']} DataLoader workers (default); "
                f"without workers {found.ratios[f'{name}/encode_pil_w0_overhead_vs_bare']:.2f}x; input work alone "
                f"{found.ratios[f'{name}/preprocess_{key[7:]}_vs_bare']:.2f}x the bare forward's time (floor "
                f"{found.ratios[f'{name}/encode_{key[7:]}_floor_if_cores_busy']:.2f}x on {cores} busy cores)")
        for what in ("encode_image", "train_step"):
            batch = m["batch_size"] if what == "encode_image" else min(8, m["batch_size"])
            note = f"cosine to fp32 {m['bf16_cosine_to_fp32']:.4f}" if what == "encode_image" else (
                "image tower forward + backward")
            _speed_up(found, f"{name}: {what} bf16 autocast vs fp32 (CPU)", name=name, s=s, n=batch,
                      new=f"{what}_bf16", old=f"{what}_fp32", key=f"{what}_bf16_speedup_vs_fp32", note=note)
        found.medians[f"{name}/bf16_cosine_to_fp32"] = m["bf16_cosine_to_fp32"]
        if "onnx_graph" in s:
            for what, label in (("graph", "drone graph on a batch"), ("encode", "encode(PIL), end to end")):
                _speed_up(found, f"{name}: ONNX Runtime vs torch, {label}", name=name, s=s, n=n,
                          new=f"onnx_{what}", old=f"torch_{what}", key=f"onnx_{what}_speedup_vs_torch",
                          note=f"cosine to torch {m['onnx_cosine_to_torch']:.6f}; export {m['onnx_export_s']:.0f} s")
            found.medians[f"{name}/onnx_cosine_to_torch"] = m["onnx_cosine_to_torch"]
        elif "onnx_error" in m:
            found.notes.append(f"{name} onnx: {m['onnx_error']}")
    if ctx.quick:
        found.notes.append("--quick: gb-tiny only, 16 images, no ONNX export.")
    return found.result(
        NAME, title=TITLE,
        parameters={"configs": specs, "view": "drone", "test_time_augment": False,
                    "warmup": "1 untimed pass of each method", "torch_threads": torch.get_num_threads()},
        target=TARGET, details={"per_config": measured},
    )


def _speed_up(
    found: Findings, metric: str, *, name: str, s: dict[str, float], n: int, new: str, old: str, key: str, note: str
) -> None:
    """Medians ``new`` and baseline ``old`` as images per second of ``n`` images, the speed-up old / new time
    as ``{name}/{key}`` and its summary row."""
    found.medians[f"{name}/{new}_images_per_s"] = n / s[new]
    found.baselines[f"{name}/{old}_images_per_s"] = n / s[old]
    found.ratios[f"{name}/{key}"] = ratio(s[old], s[new])
    found.compare(metric, value=n / s[new], baseline=n / s[old], unit="img/s",
                  ratio_value=found.ratios[f"{name}/{key}"], ratio_name="speed-up", note=note)
