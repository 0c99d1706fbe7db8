"""Embedding throughput: ``model.encode`` (PIL images in) against a bare timm forward of the same backbone.

For each config (random weights, nothing downloaded; the text tower is the hashing one, it is not used):

* ``encode``: ``model.encode(pil_images, view="drone", batch_size=B)``, the full user path (per-image resize and
  normalisation, stacking, forward, L2 normalisation, numpy copy). The PIL images are already decoded.
* ``encode_image``: ``model.encode_image(tensor, view="drone")`` on a pre-made (B, 3, H, W) batch under
  ``torch.no_grad``: the model (backbone + view embedding + adapter + projection + normalisation).
* ``bare``: the timm backbone alone, ``model.image.backbone(tensor)``, same batch (the baseline).
* ``preprocess``: the per-image transform and ``torch.stack`` alone, to show where the encode overhead goes.

Then speed-ups tried on ``encode_image``: channels_last, bf16 autocast, int8 dynamic quantisation of the Linear
layers, torch.compile and ONNX Runtime (if installed), each with the cosine similarity of its embeddings to fp32.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import Context, Findings, make_images, make_model, ratio, time_it

NAME = "encode"
TITLE = "Embedding throughput: model.encode vs bare timm forward"
TARGET = "model.encode time <= 1.05x bare timm forward of the same backbone and batch"
OVERHEAD_TARGET = 1.05


def plan(*, quick: bool) -> list[dict[str, Any]]:
    if quick:
        return [
            {"config": "gb-tiny", "n_images": 8, "batch_size": 8, "repeat": 2, "variants": ["channels_last", "int8"]}
        ]
    return [
        {
            "config": "gb-tiny",
            "n_images": 128,
            "batch_size": 64,
            "repeat": 5,
            "variants": ["channels_last", "bf16", "int8", "compile", "onnxruntime"],
        },
        {
            "config": "gb-vit-base",
            "n_images": 8,
            "batch_size": 8,
            "repeat": 3,
            "variants": ["bf16", "int8", "onnxruntime"],
        },
    ]


def backbone_of(model: Any) -> Any:
    tower = getattr(model, "image_tower", None) or model.image
    return tower.backbone


def measure_config(ctx: Context, spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    name, batch_size, repeat = spec["config"], spec["batch_size"], spec["repeat"]
    model = make_model(name)
    height, width = model.config.image.input_size["drone"]
    images = make_images(spec["n_images"], size=(int(width * 1.5), int(height * 1.5)))  # resized down by encode
    transform = model.transform("drone")
    tensor = torch.stack([transform(img) for img in images[:batch_size]])  # (B, 3, H, W)
    n_batches = spec["n_images"] // batch_size
    backbone = backbone_of(model)
    out: dict[str, Any] = {"config": name, "input_size": [height, width], **spec}

    def bare() -> None:
        with torch.no_grad():
            for _ in range(n_batches):
                backbone(tensor)

    def encode_image() -> None:
        with torch.no_grad():
            for _ in range(n_batches):
                model.encode_image(tensor, view="drone")

    def encode() -> None:
        model.encode(images, view="drone", batch_size=batch_size, show_progress_bar=False)

    def preprocess() -> None:
        for start in range(0, spec["n_images"], batch_size):
            torch.stack([transform(img) for img in images[start : start + batch_size]])

    # interleave the measurements so that load changes on a shared machine hit every method alike
    timings: dict[str, list[float]] = {"bare": [], "encode_image": [], "encode": [], "preprocess": []}
    functions = {"bare": bare, "encode_image": encode_image, "encode": encode, "preprocess": preprocess}
    for fn in functions.values():
        fn()  # warm-up
    for _ in range(repeat):
        for key, fn in functions.items():
            start = time.perf_counter()
            fn()
            timings[key].append(time.perf_counter() - start)
    for key, values in timings.items():
        out[f"{key}_s"] = float(np.median(values))
        out[f"{key}_images_per_s"] = spec["n_images"] / out[f"{key}_s"]
    ctx.log(
        NAME,
        f"{name}: encode {out['encode_images_per_s']:.1f} img/s, encode_image {out['encode_image_images_per_s']:.1f}, "
        f"bare {out['bare_images_per_s']:.1f}, preprocess {out['preprocess_images_per_s']:.0f}",
    )

    with torch.no_grad():
        reference = model.encode_image(tensor, view="drone")  # (B, D)
    out["variants"] = {}
    for variant in spec["variants"]:
        try:
            result = run_variant(variant, model, tensor, reference=reference, repeat=repeat, n_batches=n_batches)
        except Exception as exc:  # noqa: BLE001 - a failed optimisation is a result, not a crash
            result = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        if "s" in result:
            result["images_per_s"] = spec["n_images"] / result["s"]
            result["speedup_vs_fp32_encode_image"] = out["encode_image_s"] / result["s"]
            ctx.log(
                NAME,
                f"{name}: {variant} {result['images_per_s']:.1f} img/s "
                f"({result['speedup_vs_fp32_encode_image']:.2f}x fp32, "
                f"cos {result.get('cosine_to_fp32', float('nan')):.4f})",
            )
        else:
            ctx.log(NAME, f"{name}: {variant} failed: {result.get('error')}")
        out["variants"][variant] = result
    return out


def run_variant(
    variant: str, model: Any, tensor: Any, *, reference: Any, repeat: int, n_batches: int
) -> dict[str, Any]:
    """Time one optimisation of ``encode_image`` on the same batch; returns seconds per pass and the cosine to fp32."""
    import torch
    import torch.nn.functional as F

    extra: dict[str, Any] = {}
    if variant == "channels_last":
        variant_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        batch = tensor.contiguous(memory_format=torch.channels_last)

        def forward() -> Any:
            return variant_model.encode_image(batch, view="drone")

    elif variant == "bf16":

        def forward() -> Any:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model.encode_image(tensor, view="drone").float()

    elif variant == "int8":
        variant_model = copy.deepcopy(model)
        variant_model.image = torch.ao.quantization.quantize_dynamic(
            variant_model.image, {torch.nn.Linear}, dtype=torch.qint8
        )

        def forward() -> Any:
            return variant_model.encode_image(tensor, view="drone")

    elif variant == "compile":
        compiled = torch.compile(model.image)
        start = time.perf_counter()
        with torch.no_grad():
            compiled(tensor, view="drone")
        extra["compile_s"] = time.perf_counter() - start

        def forward() -> Any:
            return F.normalize(compiled(tensor, view="drone"), dim=-1)

    elif variant == "onnxruntime":
        return run_onnxruntime(model, tensor, reference=reference, repeat=repeat, n_batches=n_batches)
    else:
        raise ValueError(f"unknown variant {variant!r}")

    with torch.no_grad():
        output = forward()
        timing = time_it(lambda: [forward() for _ in range(n_batches)], repeat=repeat, warmup=1)
    cosine = float(F.cosine_similarity(output.float(), reference, dim=-1).mean())
    return {"s": timing.median_s, "cosine_to_fp32": cosine, **extra}


def run_onnxruntime(model: Any, tensor: Any, *, reference: Any, repeat: int, n_batches: int) -> dict[str, Any]:
    import torch

    try:
        import onnxruntime as ort
    except ImportError:
        return {"error": "onnxruntime is not installed (pip install onnxruntime onnx)"}

    class DroneEncoder(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner.encode_image(x, view="drone")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "encoder.onnx"
        start = time.perf_counter()
        torch.onnx.export(
            DroneEncoder(model).eval(),
            (tensor,),
            str(path),
            input_names=["images"],
            output_names=["embeddings"],
            dynamo=False,
        )
        export_s = time.perf_counter() - start
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {"images": tensor.numpy()}
        output = session.run(None, feed)[0]
        timing = time_it(lambda: [session.run(None, feed) for _ in range(n_batches)], repeat=repeat, warmup=1)
    ref = reference.numpy()
    cosine = float(np.mean(np.sum(output * ref, axis=1) / np.linalg.norm(output, axis=1) / np.linalg.norm(ref, axis=1)))
    return {"s": timing.median_s, "cosine_to_fp32": cosine, "export_s": export_s, "onnxruntime": ort.__version__}


def bench(ctx: Context) -> dict[str, Any]:
    import torch

    specs = plan(quick=ctx.quick)
    measured = [measure_config(ctx, spec) for spec in specs]
    found = Findings()
    found.notes += [
        "Random weights (nothing downloaded); drone view; PIL images 1.5x the input size, already decoded "
        "(encode resizes and normalises them). Measurements are interleaved per repetition; median reported.",
        f"torch intra-op threads: {torch.get_num_threads()}.",
    ]
    for m in measured:
        name = m["config"]
        found.medians[f"{name}/encode_images_per_s"] = m["encode_images_per_s"]
        found.medians[f"{name}/encode_image_images_per_s"] = m["encode_image_images_per_s"]
        found.medians[f"{name}/preprocess_images_per_s"] = m["preprocess_images_per_s"]
        found.baselines[f"{name}/bare_timm_forward_images_per_s"] = m["bare_images_per_s"]
        share = ratio(m["preprocess_s"], m["encode_s"])
        size = f"{m['input_size'][0]}x{m['input_size'][1]}"
        overheads = [  # (method, row, note)
            ("encode", f"{name} ({size}, batch {m['batch_size']}): model.encode(PIL) vs bare timm forward",
             f"preprocessing alone: {m['preprocess_images_per_s']:.0f} img/s ({100 * share:.0f}% of encode time)"),
            ("encode_image", f"{name}: model.encode_image(tensor) vs bare timm forward",
             "model overhead only: view embedding, adapter, projection, normalisation"),
        ]
        for method, metric, note in overheads:
            found.compare(metric, value=m[f"{method}_images_per_s"], baseline=m["bare_images_per_s"], unit="img/s",
                          key=f"{name}/{method}_overhead_vs_bare", ratio_value=ratio(m[f"{method}_s"], m["bare_s"]),
                          ratio_name="overhead (time / bare time)", op="<=", threshold=OVERHEAD_TARGET, note=note)
        found.ratios[f"{name}/preprocess_share_of_encode"] = share
        for variant, result in m["variants"].items():
            if "s" not in result:
                found.notes.append(f"{name} {variant}: {result.get('error')}")
                continue
            found.medians[f"{name}/{variant}_images_per_s"] = result["images_per_s"]
            found.ratios[f"{name}/{variant}_speedup_vs_fp32"] = result["speedup_vs_fp32_encode_image"]
            found.medians[f"{name}/{variant}_cosine_to_fp32"] = result["cosine_to_fp32"]
            extra = ""
            if "compile_s" in result:
                extra = f"; compile {result['compile_s']:.0f} s"
            if "export_s" in result:
                extra = f"; export {result['export_s']:.0f} s"
            found.compare(f"{name}: encode_image with {variant} vs fp32", value=result["images_per_s"],
                          baseline=m["encode_image_images_per_s"], unit="img/s",
                          ratio_value=result["speedup_vs_fp32_encode_image"], ratio_name="speed-up",
                          note=f"cosine to fp32 {result['cosine_to_fp32']:.4f}{extra}")
    if ctx.quick:
        found.notes.append("--quick: gb-tiny only, 8 images; the base config runs in the full suite.")
    return found.result(
        NAME,
        title=TITLE,
        parameters={
            "configs": [{k: v for k, v in s.items()} for s in specs],
            "view": "drone",
            "warmup": "1 untimed pass of each method",
            "torch_threads": torch.get_num_threads(),
        },
        target=TARGET,
        details={"per_config": [{k: v for k, v in m.items()} for m in measured]},
    )
