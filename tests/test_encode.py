"""Fast encode (DataLoader workers, uint8 tensors), mixed precision in encode and training, grad checkpointing."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.transforms import str_to_pil_interp

from geobridge.errors import GeoBridgeError
from geobridge.images import ImageError
from geobridge.models import GeoBridge
from geobridge.models.encoding import ImageItems, default_num_workers, normalise


@pytest.fixture(scope="module")
def model(tiny_model_config):
    torch.manual_seed(0)
    return GeoBridge(tiny_model_config).eval()


def _arrays(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)  # (N, H, W, 3)


@pytest.mark.parametrize("size", [(64, 64), (48, 80)])  # the drone input size (no resize), and a resize
def test_uint8_tensors_encode_like_the_pil_images(model, size):
    arrays = _arrays(5, *size)
    ref = model.encode([Image.fromarray(a) for a in arrays], view="drone", num_workers=0)
    batch = torch.from_numpy(arrays).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
    np.testing.assert_allclose(model.encode(batch, view="drone", num_workers=0), ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.encode(list(batch), view="drone"), ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.encode(batch[2], view="drone"), ref[2:3], rtol=0, atol=1e-6)  # (3, H, W)
    with pytest.raises(ValueError, match="uint8"):
        model.encode(batch.float(), view="drone")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model.encode(batch[None], view="drone")


def test_workers_give_the_same_embeddings_and_errors(model, tmp_path):
    paths = []
    for i, array in enumerate(_arrays(7, 40, 72, seed=1)):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(array).save(paths[-1])
    ref = model.encode(paths, view="street", batch_size=3, num_workers=0)
    got = model.encode(paths, view="street", batch_size=3, num_workers=2)
    assert got.shape == (7, model.embed_dim)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    bad = [*paths[:4], tmp_path / "missing.png"]
    for workers in (0, 2):
        with pytest.raises(ImageError, match="missing.png") as info:
            model.encode(bad, view="street", batch_size=2, num_workers=workers)
        assert info.value.kind == "not_found"
    assert model.encode([], view="drone").shape == (0, model.embed_dim)
    assert default_num_workers(n_items=10, batch_size=64) == 0  # a few batches decode in the caller
    spare = (os.cpu_count() or 1) - torch.get_num_threads()  # the CPU forward's threads are not spare
    assert default_num_workers(n_items=10_000, batch_size=64) == min(4, max(0, spare))
    assert default_num_workers(n_items=10_000, batch_size=64, device_type="cuda") == min(4, (os.cpu_count() or 1) - 1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert default_num_workers(n_items=10_000, batch_size=64) == min(4, (os.cpu_count() or 1) - 1)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size", [(64, 64), (48, 80), (97, 131)])  # no resize, a resize, an odd up-scale
def test_worker_inputs_are_the_eval_transform_bit_for_bit(tiny_model_config, interpolation, size):
    config = copy.deepcopy(tiny_model_config)
    config.image.interpolation = interpolation
    config.image.mean, config.image.std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    model = GeoBridge(config).eval()
    arrays = _arrays(3, *size, seed=3)
    images = [Image.fromarray(a) for a in arrays]
    expected = torch.stack([model.transform("drone")(img) for img in images])  # (3, 3, 64, 64) float32
    items = ImageItems(images, size=tuple(config.image.input_size["drone"]), resample=str_to_pil_interp(interpolation))
    got = normalise(torch.stack([items.load(img) for img in images]), mean=config.image.mean, std=config.image.std)
    assert got.dtype == torch.float32 and torch.equal(got, expected)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model.encode_image(expected, view="drone"), dim=-1).numpy()
    np.testing.assert_allclose(model.encode(images, view="drone", test_time_augment=False), ref, rtol=0, atol=1e-6)


def test_encode_precision(model):
    images = [Image.fromarray(a) for a in _arrays(4, 64, 64, seed=2)]
    ref = model.encode(images, view="drone")
    bf16 = model.encode(images, view="drone", precision="bf16")
    assert bf16.dtype == np.float32 and np.allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-5)
    assert np.sum(bf16 * ref, axis=1).min() > 0.99 and not np.array_equal(bf16, ref)
    texts = model.encode(["a red tower", "a green field"], view="text", precision="bf16")
    assert np.sum(texts * model.encode(["a red tower", "a green field"], view="text"), axis=1).min() > 0.99
    with pytest.raises(GeoBridgeError, match="fp16 needs a CUDA device"):
        model.encode(images, view="drone", precision="fp16")
    with pytest.raises(GeoBridgeError, match="precision must be one of"):
        model.encode(images, view="drone", precision="fp8")


def _block_calls(tower) -> list[int]:
    calls = [0]
    tower.backbone.stages[0].blocks[0].register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_grad_checkpointing_gives_the_same_gradients(tiny_model_config):
    torch.manual_seed(0)
    plain = GeoBridge(tiny_model_config).train()
    config = copy.deepcopy(tiny_model_config)
    config.image.grad_checkpointing = True
    checkpointed = GeoBridge(config).train()
    checkpointed.load_state_dict(plain.state_dict())
    calls_plain, calls_ckpt = _block_calls(plain.image), _block_calls(checkpointed.image)
    images = torch.randn(4, 3, 64, 64)
    for model in (plain, checkpointed):
        model.encode_image(images, view="drone").pow(3).sum().backward()
    assert calls_plain[0] == 1 and calls_ckpt[0] == 2  # the block ran again in the backward pass
    grads = {n: p.grad for n, p in plain.named_parameters() if p.grad is not None}
    assert len(grads) > 10
    for name, param in checkpointed.named_parameters():
        if name in grads:
            torch.testing.assert_close(param.grad, grads[name], rtol=1e-5, atol=1e-6)


def test_training_precision_bf16_step_and_fp16_on_cpu(tmp_path):
    from test_data import make_geoloc

    from geobridge.train import load_config
    from geobridge.train.setup import build_model
    from geobridge.train.trainer import Trainer

    world = make_geoloc(tmp_path / "w", n=8, drone_views=1)
    base = [f"data.root={world}", "model.text_kind=hashing", "optim.batch_size=6", "data.augment=false",
            "train.device=cpu", "optim.epochs=1", "train.max_steps=1"]
    with pytest.raises(GeoBridgeError, match="train.precision=fp16 needs a CUDA device"):
        Trainer(load_config(None, [*base, "train.precision=fp16", f"out={tmp_path / 'fp16'}"]))
    with pytest.raises(GeoBridgeError, match="train.precision: expected one of"):
        load_config(None, [*base, "train.precision=half"])
    assert build_model(load_config(None, [*base, "model.grad_checkpointing=true"])).config.image.grad_checkpointing

    losses = {}
    for precision in ("fp32", "bf16"):
        trainer = Trainer(load_config(None, [*base, f"train.precision={precision}", f"out={tmp_path / precision}"]),
                          show_progress_bar=False)
        batch = next(iter(trainer.data))
        trainer.model.train()
        with torch.no_grad():
            losses[precision] = {k: float(v) for k, v in trainer._forward_losses(batch).items()}
        before = [p.detach().clone() for p in trainer.model.parameters() if p.requires_grad]
        result = trainer.fit()  # one full step: autocast forward, fp32 loss, backward, AdamW
        after = [p.detach() for p in trainer.model.parameters() if p.requires_grad]
        assert np.isfinite(result["loss"]) and any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
        trainer.close()
    assert losses["fp32"].keys() == losses["bf16"].keys()
    for key, value in losses["fp32"].items():
        assert losses["bf16"][key] == pytest.approx(value, rel=0.02, abs=0.02), key


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_on_cuda_encode_and_training_step(tmp_path, tiny_model_config):
    from test_data import make_geoloc

    from geobridge.train import load_config
    from geobridge.train.trainer import Trainer

    torch.manual_seed(0)
    model = GeoBridge(tiny_model_config).eval().to("cuda")
    images = [Image.fromarray(a) for a in _arrays(4, 64, 64, seed=4)]
    fp16 = model.encode(images, view="drone", precision="fp16")
    assert fp16.dtype == np.float32 and np.sum(fp16 * model.encode(images, view="drone"), axis=1).min() > 0.99
    world = make_geoloc(tmp_path / "w", n=8, drone_views=1)
    trainer = Trainer(load_config(None, [f"data.root={world}", "model.text_kind=hashing", "optim.batch_size=6",
                                         "train.device=cuda", "optim.epochs=1", "train.max_steps=2",
                                         "train.precision=fp16", f"out={tmp_path / 'run'}"]), show_progress_bar=False)
    assert trainer.scaler is not None
    assert np.isfinite(trainer.fit()["loss"]) and trainer.step == 2
    trainer.close()


def test_rot90_from_flips_equals_torch_rot90():
    """Test-time augmentation rotates with flips and a transpose (exportable to ONNX); it must equal torch.rot90."""
    from geobridge.models.symmetries import _rot90

    square, wide = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 4, 6)
    for turns in range(-1, 5):
        assert torch.equal(_rot90(square, turns), torch.rot90(square, turns, dims=(-2, -1)))
    assert torch.equal(_rot90(wide, 2), torch.rot90(wide, 2, dims=(-2, -1)))


def test_encode_restores_each_submodule_mode(tiny_model_config):
    model = GeoBridge(tiny_model_config).eval()
    model.image.train()  # a mixed state: the top module in eval mode, the image tower training
    before = {name: m.training for name, m in model.named_modules()}
    seen = []
    model.image.register_forward_pre_hook(lambda m, _args: seen.append(m.training))
    images = [Image.fromarray(a) for a in _arrays(2, 64, 64, seed=4)]
    got = model.encode(images, view="drone")
    assert seen and not any(seen)  # the tower ran in eval mode
    assert {name: m.training for name, m in model.named_modules()} == before  # and its own mode is back
    np.testing.assert_array_equal(got, model.eval().encode(images, view="drone"))
