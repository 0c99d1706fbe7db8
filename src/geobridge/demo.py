"""The one-command demo: synthetic world -> training -> evaluation report -> localisation index.

``geobridge demo --out DIR`` runs :func:`run_demo`. Every stage writes into its own sub-folder of ``DIR``::

    DIR/world/    the generated GeoLoc-format dataset (and preview.png, a contact sheet)
    DIR/run/      the training run (config.yaml, metrics.jsonl, checkpoints, model/)
    DIR/report/   metrics.json, report.md and the plots
    DIR/index.gbx a GeoIndex over the test places' reference images, with fusion weights fitted on them
                  (``geobridge locate --index``)
    DIR/fusion.json  single-query vs fused localisation on the test places

A stage whose output already exists is reused, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from geobridge._atomic import atomic_write_json
from geobridge.errors import GeoBridgeError


@dataclass
class DemoConfig:
    places: int = 600
    # 1,800 more training places (2,200 in all): with per-view BatchNorm statistics, 2,200 training places beat
    # 1,000 at the same 1,426 steps on every street pair (+2-5 points R@1, mean of three worlds) for about 60 s
    # more generation (README, docs/model.md)
    extra_train_places: int = 1800
    train_street_views: int = 1  # street panoramas per training place (synth --train-street-views)
    test_places: int = 200
    image_size: int = 64
    seed: int = 0
    holdout_countries: tuple[str, ...] = ("NO", "EG")
    recipe: str = "tiny"  # a recipe shipped in geobridge/train/recipes, or a YAML path
    overrides: tuple[str, ...] = ()  # dot-list overrides of the training recipe
    index_views: tuple[str, ...] = ("satellite",)
    robustness: bool = True


def recipe_path(name_or_path: str) -> Path:
    """A training recipe shipped with the package (``tiny``, ...) or an existing YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise GeoBridgeError(f"training recipe not found: {path}")
        return path
    shipped = resources.files("geobridge.train") / "recipes" / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise GeoBridgeError(f"unknown training recipe {name_or_path!r}; give a YAML path or a shipped recipe name")
    return Path(str(shipped))


def run_demo(out: str | Path, config: DemoConfig | None = None) -> dict[str, Any]:
    """Run every stage and return a summary (stage timings, headline metrics, paths)."""
    config = config or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    world = out / "world"
    start = time.perf_counter()
    _stage("1/4 generating the synthetic world")
    _make_world(world, config)
    timings["synth_s"] = time.perf_counter() - start

    run_dir = out / "run"
    start = time.perf_counter()
    _stage(f"2/4 training the {config.recipe} recipe")
    _train(run_dir, world, config)
    timings["train_s"] = time.perf_counter() - start

    from geobridge.models import GeoBridge

    model = GeoBridge.from_pretrained(run_dir)
    start = time.perf_counter()
    index_path = out / "index.gbx"
    fusion = _index_and_fusion(model, world, index_path, views=config.index_views, checkpoint=run_dir)
    timings["index_s"] = time.perf_counter() - start

    report_dir = out / "report"
    start = time.perf_counter()
    _stage("4/4 evaluating every direction, cross-domain and robustness; writing the report")
    from geobridge.eval.pipeline import DEFAULT_CONDITIONS, evaluate_run
    from geobridge.eval.plots import plot_fusion
    from geobridge.eval.run_info import describe_run

    plot_fusion(fusion, report_dir / "fusion.png")

    run = describe_run(run_dir)  # the report's run section; its seed is the training seed
    metrics = evaluate_run(
        model,
        world,
        report_dir,
        conditions=DEFAULT_CONDITIONS if config.robustness else (),
        title="GeoBridge demo on the synthetic world",
        sections={
            "Model": f"`{config.recipe}` recipe trained in `{run_dir}`",
            "Data": f"`{world}`: {config.places + config.extra_train_places} places "
            f"({config.extra_train_places} of them extra training places"
            f"{_street_views_note(config.train_street_views)}), {config.test_places} test places, "
            f"held-out countries {', '.join(config.holdout_countries) or 'none'}; world seed {config.seed}, "
            f"training seed {run['seed']}",
            "Localisation with fusion": _fusion_table(fusion),
        },
        run=run,
        show_progress_bar=True,
    )
    timings["eval_s"] = time.perf_counter() - start
    summary = {
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "primary_metric": metrics["primary_metric"],
        "metrics": {k: metrics[k] for k in _HEADLINE if k in metrics},
        "fusion": fusion,
        "report": str(report_dir / "report.md"),
        "index": str(index_path),
        "model": str(run_dir / "model"),
    }
    atomic_write_json(out / "summary.json", summary)
    return summary


_HEADLINE = (
    "drone->satellite/R@1",
    "satellite->drone/R@1",
    "street->satellite/R@1",
    "text->satellite/R@1",
    "mean/R@1",
)


def _street_views_note(count: int) -> str:
    return f"; {count} street panoramas per training place" if count > 1 else ""


def _make_world(world: Path, config: DemoConfig) -> None:
    """Generate the demo's world (and its contact sheet) unless a finished one is there."""
    if (world / "manifest.json").is_file():
        return
    from geobridge.synth import WorldConfig, generate_world, write_preview

    generate_world(
        world,
        WorldConfig(
            places=config.places,
            extra_train_places=config.extra_train_places,
            train_street_views=config.train_street_views,
            test_places=config.test_places,
            image_size=config.image_size,
            seed=config.seed,
            holdout_countries=config.holdout_countries,
        ),
        show_progress_bar=True,
    )
    write_preview(world, world / "preview.png")


def _train(run_dir: Path, world: Path, config: DemoConfig) -> None:
    """Train the recipe on the world (resuming an interrupted run) unless a finished model is there."""
    if (run_dir / "model" / "config.json").is_file():
        return
    from geobridge.eval.training import training_evaluator
    from geobridge.train import load_config, train

    overrides = [f"out={run_dir}", f"data.root={world}", *config.overrides]
    train_config = load_config(recipe_path(config.recipe), overrides)
    train(train_config, resume=True, evaluator=training_evaluator(train_config), evaluate=False)


def _stage(message: str) -> None:
    print(f"\n== {message}", flush=True)


def _index_and_fusion(
    model: Any, world: Path, index_path: Path, *, views: tuple[str, ...], checkpoint: Path
) -> dict[str, float]:
    """Build (or reuse) an index of the test places and measure single-query vs fused localisation."""
    _stage("3/4 building the localisation index and measuring query fusion")
    from geobridge.data import load_places
    from geobridge.index import GeoIndex, build_index, calibrate_index, evaluate_fusion, model_info_of

    places = load_places(world, split="test")
    if index_path.is_file():
        index = GeoIndex.load(index_path)
    else:
        info = model_info_of(model, checkpoint=checkpoint)
        index = build_index(model, places, views=views, show_progress_bar=True, model_info=info)
    if index.fusion_weights is None:
        # weights for the served index ('geobridge locate/serve' fuse with them by default); the fusion table
        # below never scores a place with weights fitted on it (evaluate_fusion cross-fits them)
        index.fusion_weights = calibrate_index(model, index, places, show_progress_bar=False)
        index.save(index_path)
    fusion_file = index_path.parent / "fusion.json"
    if fusion_file.is_file():
        return json.loads(fusion_file.read_text())
    fusion = evaluate_fusion(model, index, places)
    atomic_write_json(fusion_file, fusion)  # its presence marks the stage as done, so never half-written
    return fusion


def _fusion_table(fusion: dict[str, float]) -> str:
    rows = sorted(k[: -len("/R@1")] for k in fusion if k.endswith("/R@1"))
    lines = [
        "Queries from the test places located against an index of their satellite tiles; "
        "R@1 = the true place is the top estimate.",
        "",
        "| queries | R@1 | median km |",
        "|---|---:|---:|",
    ]
    for row in rows:
        km = fusion.get(f"{row}/median_km")
        lines.append(f"| {row} | {fusion[row + '/R@1']:.1f} | {'' if km is None else f'{km:.1f}'} |")
    lines += ["", "![localisation R@1 of single and fused queries](fusion.png)"]
    weights = {k.rsplit("/w_", 1)[1]: v for k, v in fusion.items() if k.startswith("drone+street+text/weighted/w_")}
    if weights:
        fitted = ", ".join(f"{view} {weight:.1f}" for view, weight in sorted(weights.items()))
        lines += ["", f"`weighted`: one weight per query view, fitted on the other half of the places (2-fold "
                      f"cross-fit), so no place is scored with weights fitted on it. drone+street+text: {fitted}. "
                      "A place's weighted score is the logit sum over queries of weight x cosine similarity "
                      "(unbounded; only differences count): a place scoring 1 more is e = 2.7 times as likely, "
                      "so a weight of 20 makes 0.05 more similarity in that view worth a factor e."]
    return "\n".join(lines)
