"""The package as a whole: its entry points and the README's command-line examples."""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _readme_commands(name: str) -> list[list[str]]:
    """The README's ``geobridge <name> ...`` command lines, split as a shell would (comments dropped)."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    return [shlex.split(line, comments=True)[1:] for line in lines if line.startswith(f"geobridge {name} ")]


def test_python_dash_m_geobridge_runs_the_command():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    from geobridge import __version__

    version = subprocess.run([sys.executable, "-m", "geobridge", "--version"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.strip() == f"geobridge {__version__}"
    bad = subprocess.run([sys.executable, "-m", "geobridge", "locate", "--index", "missing.gbx", "--text", "x"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "geobridge locate: error:" in bad.stderr and "Traceback" not in bad.stderr


def test_readme_locate_example_queries_a_test_place_of_the_readme_world(tmp_path, monkeypatch):
    from geobridge.cli.main import build_parser
    from geobridge.cli.synth import world_config
    from geobridge.demo import DemoConfig
    from geobridge.synth.writer import plan_places, render_place

    monkeypatch.chdir(tmp_path)  # the parser checks that input paths exist: the README's, made empty here
    for folder in ("runs/tiny", "runs/world/drone/p00009"):
        Path(folder).mkdir(parents=True)
    for file in ("runs/sat.gbx", "runs/world/drone/p00009/00.png"):
        Path(file).write_bytes(b"")
    parser = build_parser()
    (synth,) = (parser.parse_args(c) for c in _readme_commands("synth") if "--format" not in c)  # the GeoLoc world
    (build,) = (parser.parse_args(c) for c in _readme_commands("index build") if "--data" in c)
    (example,) = (parser.parse_args(c) for c in _readme_commands("locate") if "runs/sat.gbx" in c)
    config = world_config(synth)
    demo = DemoConfig()  # the README's world is the demo's
    assert (config.places, config.extra_train_places, config.test_places, config.image_size, config.seed,
            tuple(config.holdout_countries)) == (demo.places, demo.extra_train_places, demo.test_places,
                                                  demo.image_size, demo.seed, tuple(demo.holdout_countries))
    assert build.data == synth.out and build.out == example.index and build.views == ("satellite",)
    (image,) = example.image
    match = re.fullmatch(rf"{re.escape(synth.out)}/{example.view}/(p\d+)/00\.png", image)
    assert match, image
    spec = next(s for s in plan_places(config) if s.place_id == match.group(1))
    assert spec.split == build.split == "test"  # so the index holds its satellite tile
    (text,) = example.text
    words = set(" ".join(render_place(spec, config).texts).lower().replace(",", " ").replace(".", " ").split())
    assert set(text.lower().split()) - {"a", "the", "with", "on", "in"} <= words  # the place's own description


def test_fusion_names_live_in_one_faiss_free_module():
    from geobridge import fusions

    probe = ("import sys, geobridge.fusions, geobridge.cli.main as m; m.build_parser(); "
             "print('faiss' in sys.modules, 'torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    loaded = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert loaded.stdout.split() == ["False", "False"], loaded.stderr
    from geobridge.cli.main import build_parser
    from geobridge.index import FUSIONS, LOCATE_FUSIONS

    assert FUSIONS is fusions.FUSIONS and LOCATE_FUSIONS is fusions.LOCATE_FUSIONS
    locate_action = next(a for a in build_parser()._subparsers._group_actions[0].choices["locate"]._actions
                         if a.dest == "fusion")
    assert tuple(locate_action.choices) == fusions.LOCATE_FUSIONS
    assert set(fusions.SCORE_MEANINGS) == set(fusions.FUSIONS)
    # no other source spells the list out
    spelled = re.compile(r"""["']consensus["']\s*,\s*["']max["']""")
    sources = [p for p in (ROOT / "src" / "geobridge").rglob("*") if p.suffix in (".py", ".js", ".html")]
    assert [p.name for p in sources if spelled.search(p.read_text(encoding="utf-8"))] == ["fusions.py"]


def test_demo_fusion_table_explains_the_weighted_numbers():
    from geobridge.demo import _fusion_table

    table = _fusion_table({"drone/R@1": 30.0, "drone+street+text/weighted/R@1": 40.0,
                           "drone+street+text/weighted/w_drone": 20.0, "drone+street+text/weighted/w_text": 2.5})
    assert "drone 20.0, text 2.5" in table and "logit" in table and "as likely" in table


def _import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at any depth of the file, ``if TYPE_CHECKING:`` blocks aside).
    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module, else ``a.b``."""
    modules: dict[str, Path] = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}
        edges: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    edges |= {full} if full in modules else ({node.module} & modules.keys())
        graph[name] = edges - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the checker works
    graph = _import_graph(ROOT / "src" / "geobridge")
    assert {"geobridge.index.store", "geobridge.errors"} <= graph["geobridge.index.calibrate"]  # it sees imports
    assert _cycles(graph) == []
