from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_data import make_geoloc

from geobridge.errors import GeoBridgeError
from geobridge.train import load_config
from geobridge.train.setup import lr_at
from geobridge.train.state import optimizer_from_flat, optimizer_to_flat

TINY = ["model.text_kind=hashing", "optim.batch_size=8", "data.num_workers=0"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_geoloc(tmp_path_factory.mktemp("world") / "w", n=32)


def _cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "geobridge.cli.main", *args], env=env, capture_output=True,
                          text=True, **kwargs)


def test_config_layers_and_errors(tmp_path):
    yaml = tmp_path / "c.yaml"
    yaml.write_text("optim:\n  epochs: 7\n  lr: 0.5\nloss:\n  use_anchors: false\n")
    config = load_config(yaml, ["optim.lr=0.25", "sampler.strategy=gps"])
    assert config.optim.epochs == 7 and config.optim.lr == 0.25 and not config.loss.use_anchors
    assert config.sampler.strategy == "gps" and config.optim.batch_size == 32  # default kept
    with pytest.raises(GeoBridgeError, match="optim.lrr|lrr"):
        load_config(yaml, ["optim.lrr=1"])
    with pytest.raises(GeoBridgeError, match="strategy"):
        load_config(None, ["sampler.strategy=nearest"])
    with pytest.raises(GeoBridgeError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(GeoBridgeError, match="street_drone"):
        load_config(None, ["loss.pair_weights.street_drone=0.5"])


@pytest.mark.parametrize("name", ["tiny", "geoloc-pretrain", "university1652-finetune", "geoloc-pretrain-clip",
                                  "university1652-finetune-clip"])
def test_shipped_recipes_load(name):
    from geobridge.losses import GeoBridgeLoss
    from geobridge.models import get_model_config

    config = load_config(Path(__file__).parents[1] / "configs" / f"{name}.yaml")
    assert get_model_config(config.model.name).embed_dim > 0
    loss = GeoBridgeLoss(config.loss)
    assert set(loss.pair_weights) == {"drone_satellite", "drone_street", "satellite_street"}
    if name == "tiny":
        assert config.model.name == "gb-small" and loss.pair_weights["drone_street"] == 0.3


def test_lr_schedule_warmup_and_cosine():
    kw = dict(total_steps=100, warmup_steps=10, base_lr=1.0, min_lr_ratio=0.1)
    assert lr_at(0, **kw) == pytest.approx(0.1) and lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(55, **kw) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert lr_at(100, **kw) == pytest.approx(0.1)


def test_optimizer_state_round_trip_without_pickle():
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    tensors, meta = optimizer_to_flat(opt.state_dict())
    json.dumps(meta)  # the metadata is plain JSON
    restored = optimizer_from_flat(tensors, json.loads(json.dumps(meta)))
    fresh = torch.optim.AdamW(model.parameters(), lr=0.1)
    fresh.load_state_dict(restored)
    for a, b in zip(opt.state_dict()["state"].values(), fresh.state_dict()["state"].values(), strict=True):
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key]))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


@pytest.mark.parametrize("pipeline,epoch_unit", [("pil", "places"), ("tensor", "places"), ("pil", "pairs"),
                                                 ("tensor", "pairs")])
def test_resume_after_kill_is_exact(world, tmp_path, pipeline, epoch_unit):
    # pairs: 2 drone photos per place, so an epoch is 7 steps instead of 3 (data/pairs.py); 2 epochs suffice
    epochs = 4 if epoch_unit == "places" else 2
    args = ["train", "--data", str(world), "--no-eval", f"optim.epochs={epochs}", f"data.pipeline={pipeline}",
            f"data.epoch_unit={epoch_unit}", *TINY]
    ref = _cli([*args, "--out", str(tmp_path / "ref")], timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    run = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "geobridge.cli.main", *args, "--out", str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (run / "latest.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # kill -9 mid-training, after the first checkpoint
    proc.wait()
    assert not (run / "model").exists(), "training finished before it could be killed; make it longer"
    resumed = _cli([*args, "--out", str(run), "--resume"], timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _weights(tmp_path / "ref"), _weights(run)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    ref_log = [json.loads(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    got_log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert ref_log[-1]["loss"] == pytest.approx(got_log[-1]["loss"], abs=1e-6)


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
                    reason="torchrun not installed")
@pytest.mark.parametrize(
    ("pipeline", "epoch_unit", "accum"),
    [("pil", "places", 1), ("tensor", "places", 1), ("tensor", "pairs", 1), ("tensor", "places", 2)],
)
def test_ddp_two_processes_match_single_process(world, tmp_path, pipeline, epoch_unit, accum):
    """2-process gloo DDP on the CPU vs one process on the same global batch: the same losses and weights
    (tolerance 1e-5: only the order of floating-point sums differs). With ``grad_accum=2`` the cached
    accumulation gathers every rank's cached embeddings, so the loss still sees the whole accumulated batch."""
    args = ["--data", str(world), "--no-eval", "optim.epochs=1", f"train.max_steps={3 // accum}", "data.augment=false",
            f"data.pipeline={pipeline}", f"data.epoch_unit={epoch_unit}", f"optim.grad_accum={accum}", *TINY]
    single = _cli(["train", "--out", str(tmp_path / "single"), *args], timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "geobridge.cli.main", "train",
         "--out", str(tmp_path / "ddp"), *args],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    log_single = json.loads((tmp_path / "single" / "metrics.jsonl").read_text().splitlines()[-1])
    log_ddp = json.loads((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()[-1])
    for key in [k for k in log_single if k.endswith("loss")]:
        assert log_ddp[key] == pytest.approx(log_single[key], abs=1e-5), key
    a, b = _weights(tmp_path / "single"), _weights(tmp_path / "ddp")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5)


def _log_records(run: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock field, which no two runs share."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in records]


def _train_killed_at_epoch_1(monkeypatch, config) -> None:
    """Train until epoch 1's checkpoint would be written, then die there (its log line is written already)."""
    from geobridge.train import train
    from geobridge.train import trainer as trainer_module

    real_save = trainer_module.save_checkpoint

    def killed_at_epoch_1(run_dir, **kwargs):
        if kwargs["epoch"] == 1:  # the epoch's line is logged, its checkpoint never commits
            raise KeyboardInterrupt("kill -9")
        return real_save(run_dir, **kwargs)

    monkeypatch.setattr(trainer_module, "save_checkpoint", killed_at_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        train(config, evaluate=False)
    monkeypatch.setattr(trainer_module, "save_checkpoint", real_save)


def test_resume_after_kill_between_log_line_and_checkpoint_logs_each_epoch_once(world, tmp_path, monkeypatch):
    from geobridge.train import train

    def config(run: Path):
        return load_config(None, [f"out={run}", f"data.root={world}", "optim.epochs=3", *TINY])

    train(config(tmp_path / "ref"), evaluate=False)
    _train_killed_at_epoch_1(monkeypatch, config(tmp_path / "run"))
    crashed = _log_records(tmp_path / "run")
    assert [r["epoch"] for r in crashed] == [0, 1]  # the crash window: epoch 1 logged, not checkpointed
    assert json.loads((tmp_path / "run" / "latest.json").read_text())["epoch"] == 0
    with open(tmp_path / "run" / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 2, "st')  # and a torn line from a write cut short
    train(config(tmp_path / "run"), resume=True, evaluate=False)
    ref, got = _log_records(tmp_path / "ref"), _log_records(tmp_path / "run")
    assert [r["epoch"] for r in got] == [0, 1, 2]
    for a, b in zip(ref, got, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], abs=1e-6), key
    elapsed = [json.loads(line)["elapsed_s"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert elapsed == sorted(elapsed)  # the clock continues across the resume
    from geobridge._provenance import code_commit
    from geobridge.eval.run_info import describe_run

    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["commit"] == code_commit() and record["epochs"] == 3 and record["steps"] == ref[-1]["step"]
    assert record["train_s"] >= elapsed[-1] and record["started"] <= record["finished"]
    info = describe_run(tmp_path / "run" / "model")  # the model folder of a run finds its run
    assert info["epochs"] == "3 of 3" and info["seed"] == "0" and info["training commit"] == code_commit()


def test_truncate_metrics_keeps_epochs_before_the_resumed_one(tmp_path):
    from geobridge.train.state import truncate_metrics

    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"epoch": e, "step": 4 * (e + 1)}) + "\n" for e in (0, 1, 2)) + "[1]\n{\"ep")
    assert truncate_metrics(log, before_epoch=2) == 3
    assert [json.loads(x)["epoch"] for x in log.read_text().splitlines()] == [0, 1]
    assert truncate_metrics(log, before_epoch=2) == 0 and truncate_metrics(tmp_path / "none.jsonl", before_epoch=0) == 0
    assert not list(tmp_path.glob(".*.tmp"))


def test_grad_accum_resume_is_exact_and_adds_negatives(world, tmp_path, monkeypatch):
    """grad_accum=2 (GradCache): a run interrupted after epoch 0 and resumed ends with the uninterrupted run's
    weights and log; an optimizer step takes two micro-batches of 8 places."""
    from geobridge.data import load_places
    from geobridge.train import train

    def config(run: Path):
        return load_config(None, [f"out={run}", f"data.root={world}", "optim.epochs=2", "data.pipeline=tensor",
                                  "optim.grad_accum=2", *TINY])

    train(config(tmp_path / "ref"), evaluate=False)
    _train_killed_at_epoch_1(monkeypatch, config(tmp_path / "run"))
    train(config(tmp_path / "run"), resume=True, evaluate=False)
    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "run")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    ref, got = _log_records(tmp_path / "ref"), _log_records(tmp_path / "run")
    n_train = len(load_places(world, split="train"))
    steps = n_train // 8 // 2
    assert steps >= 1 and [r["step"] for r in ref] == [steps, 2 * steps]
    assert ref == got


class _NoModel:
    def save_pretrained(self, folder: Path) -> None:
        folder.mkdir(parents=True)


def _stepped_scaler(steps: int) -> torch.amp.GradScaler:
    """A CPU GradScaler (enabled) after ``steps`` steps of a toy model, one of them with an overflow."""
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    for i in range(steps):
        optimizer.zero_grad()
        scaler.scale((param * (float("inf") if i == 1 else 2.0)).sum()).backward()
        scaler.step(optimizer)
        scaler.update()
    return scaler


def test_grad_scaler_state_round_trips_and_fp32_checkpoints_have_none(tmp_path):
    from geobridge.errors import CheckpointError
    from geobridge.train.state import load_train_state, save_checkpoint

    scaler = _stepped_scaler(7)  # grows, backs off at the overflow, grows twice: scale 2**11, tracker 1
    state = scaler.state_dict()
    assert state["scale"] != 2.0**10 and state["_growth_tracker"] > 0  # it moved away from a fresh scaler
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    folder = save_checkpoint(tmp_path / "fp16", model=_NoModel(), optimizer=optimizer, epoch=0, step=6, extra={},
                             grad_scaler=state)
    loaded = load_train_state(folder)["grad_scaler"]
    assert loaded == state
    fresh = torch.amp.GradScaler("cpu")
    fresh.load_state_dict(loaded)
    assert fresh.state_dict() == state and fresh.get_scale() == scaler.get_scale()

    plain = save_checkpoint(tmp_path / "fp32", model=_NoModel(), optimizer=optimizer, epoch=0, step=6, extra={})
    meta = json.loads((plain / "train_state.json").read_text())
    assert set(meta) == {"epoch", "step", "optimizer", "extra"}  # an fp32 checkpoint is as before
    assert load_train_state(plain)["grad_scaler"] is None
    disabled = torch.amp.GradScaler("cpu", enabled=False).state_dict()  # {}: nothing is written for it
    assert "grad_scaler" not in json.loads((save_checkpoint(
        tmp_path / "off", model=_NoModel(), optimizer=optimizer, epoch=0, step=6, extra={},
        grad_scaler=disabled) / "train_state.json").read_text())
    meta["grad_scaler"] = {**state, "scale": "big"}
    (plain / "train_state.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"train_state\.json: grad_scaler\.scale must be a finite number"):
        load_train_state(plain)


def test_resumed_run_continues_the_grad_scaler_and_old_checkpoints_start_it_fresh(tmp_path, monkeypatch):
    """fp16 needs CUDA, so a CPU GradScaler stands in for it on an fp32 run: its power-of-two scaling leaves the
    gradients exact, and its loss scale after an interrupted and resumed run must equal the uninterrupted run's.
    8 places in batches of 4: one step per epoch, and the scale doubles at every step."""
    from geobridge.train import train
    from geobridge.train import trainer as trainer_module
    from geobridge.train.state import latest_checkpoint, load_train_state

    monkeypatch.setattr(trainer_module, "grad_scaler",
                        lambda precision, *, device: torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=1))
    world = make_geoloc(tmp_path / "world", n=8)

    def config(run: Path):
        return load_config(None, [f"out={run}", f"data.root={world}", "optim.epochs=2", *TINY, "optim.batch_size=4"])

    train(config(tmp_path / "ref"), evaluate=False)
    ref_scaler = load_train_state(latest_checkpoint(tmp_path / "ref"))["grad_scaler"]
    assert ref_scaler["scale"] > 2.0**8  # it grew over the run's steps: a restart from 2**8 would show
    _train_killed_at_epoch_1(monkeypatch, config(tmp_path / "run"))
    saved = load_train_state(latest_checkpoint(tmp_path / "run"))["grad_scaler"]
    assert saved is not None and 2.0**8 < saved["scale"] < ref_scaler["scale"]
    train(config(tmp_path / "run"), resume=True, evaluate=False)
    assert load_train_state(latest_checkpoint(tmp_path / "run"))["grad_scaler"] == ref_scaler  # continued from saved
    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "run")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)

    state_json = latest_checkpoint(tmp_path / "run") / "train_state.json"
    meta = json.loads(state_json.read_text())
    del meta["grad_scaler"]  # a checkpoint written before the scaler was saved
    state_json.write_text(json.dumps(meta))
    trainer = trainer_module.Trainer(config(tmp_path / "run"), show_progress_bar=False)
    try:
        assert trainer.resume() and trainer.step > 0 and trainer.scaler.get_scale() == 2.0**8  # fresh, no error
    finally:
        trainer.close()


def test_channels_last_trains_the_same_model_and_saves_contiguous_weights(tmp_path):
    from test_robust_augment import _tiny_resnet

    from geobridge.models import GeoBridge
    from geobridge.train import load_config
    from geobridge.train.trainer import Trainer

    world = make_geoloc(tmp_path / "w", n=20)
    common = [f"data.root={world}", f"model.name={_tiny_resnet(tmp_path / 'tiny.json')}", "optim.batch_size=8",
              "optim.epochs=2", "data.pipeline=tensor"]
    losses = {}
    for flag in (False, True):
        out = tmp_path / f"run-{flag}"
        trainer = Trainer(load_config(None, [*common, f"out={out}", f"train.channels_last={str(flag).lower()}"]),
                          show_progress_bar=False)
        conv = trainer.model.image.backbone.conv1.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == flag
        losses[flag] = trainer.fit()["loss"]
        saved = load_file(out / "model" / "model.safetensors")
        assert all(t.is_contiguous() for t in saved.values())
        loaded = GeoBridge.from_pretrained(out / "model").eval()
        trainer.model.eval()
        images = torch.rand(4, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(loaded.encode_image(images, view="drone"),
                                       trainer.model.encode_image(images, view="drone"), rtol=1e-4, atol=1e-5)
        trainer.close()
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)  # the same model; only the summation order differs


def test_training_takes_its_evaluation_from_the_caller(world, tmp_path):
    """The trainer imports no evaluation code: periodic evaluation needs an evaluator, and the one given is used."""
    from geobridge.train.trainer import Trainer, train

    common = [f"data.root={world}", "optim.epochs=1", "train.max_steps=1", *TINY]
    with pytest.raises(GeoBridgeError, match="needs an evaluator"):
        Trainer(load_config(None, [*common, f"out={tmp_path / 'a'}", "train.eval_every=1"]))
    seen = []

    def evaluator(model):
        seen.append(type(model).__name__)
        return {"probe/R@1": 42.0}

    result = train(load_config(None, [*common, f"out={tmp_path / 'b'}", "train.eval_every=1"]), evaluator=evaluator)
    assert seen == ["GeoBridge", "GeoBridge"]  # after the epoch (eval_every) and at the end
    assert result["probe/R@1"] == 42.0
    assert json.loads((tmp_path / "b" / "eval.json").read_text()) == {"probe/R@1": 42.0}
    log = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert log[0]["eval/probe/R@1"] == 42.0
    bare = Trainer(load_config(None, [*common, f"out={tmp_path / 'c'}"]))
    with pytest.raises(GeoBridgeError, match="no evaluator"):
        bare.evaluate()


@pytest.mark.parametrize("pipeline", ["tensor", "pil"])
def test_training_data_builds_either_pipeline_without_a_trainer(world, pipeline):
    """data/pipeline.py: the places, sampler and batches of a run from the data and sampler sections alone."""
    from geobridge.data.pipeline import ImageInputs, TrainingData

    config = load_config(None, [f"data.root={world}", f"data.pipeline={pipeline}", "data.robust_augment=true",
                                "data.robust_from_epoch=1", *TINY])
    image = ImageInputs(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                        input_size={"drone": (32, 32), "satellite": (32, 32), "street": (16, 32)})
    data = TrainingData(config.data, config.sampler, views=["drone", "satellite", "street", "text"], image=image,
                        batch_size=8, seed=0, device=torch.device("cpu"), show_progress_bar=False)
    assert len(data) == len(data.places) // 8 == 3  # 30 training places, full batches of 8
    data.set_epoch(0)
    batch = next(iter(data))
    assert batch["place_index"].shape == (8,) and len(set(batch["place_index"].tolist())) == 8
    assert batch["images"]["street"].shape == (8, 3, 16, 32) and batch["images"]["drone"].shape == (8, 3, 32, 32)
    assert len(batch["text"]) == batch["text_index"].shape[0] == 8  # one description per place
    assert data.robust_at(0) is None and data.robust_at(1) == config.data.robust


def test_training_data_cuts_holes_only_in_the_views_named(world):
    from geobridge.data.pipeline import ImageInputs, TrainingData

    config = load_config(None, [f"data.root={world}", "data.pipeline=tensor", "data.cutout.p=1.0",
                                "data.cutout.views=[street]", *TINY])
    image = ImageInputs(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                        input_size={"drone": (32, 32), "satellite": (32, 32), "street": (16, 32)})
    data = TrainingData(config.data, config.sampler, views=["drone", "satellite", "street", "text"], image=image,
                        batch_size=8, seed=0, device=torch.device("cpu"), show_progress_bar=False)
    data.set_epoch(0)
    images = next(iter(data))["images"]
    holes = {view: (x == 0).all(dim=1).flatten(1).any(dim=1) for view, x in images.items()}  # (B,) per view
    assert holes["street"].all() and not holes["drone"].any() and not holes["satellite"].any()
