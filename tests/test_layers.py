"""The package's architecture, held by its imports: a written list of layers, each importing only from the layers
below it, and rooms on one floor that stay out of each other's way (data and models; synth, eval and index).

Every import counts, the lazy ones inside functions and the ``TYPE_CHECKING`` ones included: a lazy import hides
a dependency from the import time, not from the design.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "geobridge"

# Bottom to top. A room is a subpackage or a top-level module of geobridge; "<root>" is geobridge/__init__.py.
LAYERS: tuple[tuple[str, ...], ...] = (
    # leaf modules, shared by every floor (they may import one another)
    ("_atomic", "_hashing", "_provenance", "errors", "views", "version", "schema", "images", "hashing_text",
     "geodesy", "fusions", "robust", "seasons", "preprocess", "protocols", "text_runs"),
    ("data", "models"),  # what a place is and how it is read; what embeds it: neither imports the other
    ("losses",),
    ("train",),
    ("synth", "eval", "index"),  # consumers of a trained model (or of none): parallel, none imports another
    ("export",),
    ("serve", "demo"),
    ("cli",),
    ("__main__", "<root>"),  # python -m geobridge; the package's lazy exports (GeoBridge, GeoIndex)
)
SHARED_FLOOR = 0  # the only floor whose rooms may import one another


def _room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def _imports() -> list[tuple[str, str, int]]:
    """(importing module, imported geobridge module, line) for every import statement under src/geobridge."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = module if rel.name == "__init__" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    targets = [".".join([*base, node.module] if node.module else base)]
                else:
                    targets = [node.module or ""]
            else:
                continue
            found += [(module, target, node.lineno) for target in targets if target.split(".")[0] == "geobridge"]
    return found


def test_every_room_is_on_one_floor():
    floor_of = [room for floor in LAYERS for room in floor]
    assert len(floor_of) == len(set(floor_of)), "a room listed twice"
    rooms = {_room_of(module) for module, _, _ in _imports()}
    rooms |= {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
              if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert rooms - set(floor_of) == set(), "rooms missing from LAYERS: put each new module on a floor"


def test_no_module_imports_from_a_later_layer_or_a_sibling_room():
    floor = {room: level for level, rooms in enumerate(LAYERS) for room in rooms}
    wrong = []
    for module, target, line in _imports():
        here, there = _room_of(module), _room_of(target)
        if here == there:
            continue
        if floor[there] > floor[here] or (floor[there] == floor[here] and floor[here] != SHARED_FLOOR):
            wrong.append(f"{module}:{line} imports {target} ({there}: floor {floor[there]}, {here}: {floor[here]})")
    assert not wrong, "\n".join(wrong)


def test_the_layer_check_finds_a_violation():
    """The check above reads real imports: a model module importing the data package is one."""
    tree = ast.parse("from geobridge.data.transforms import make_view_transform\n")
    node = tree.body[0]
    assert isinstance(node, ast.ImportFrom) and _room_of(node.module) == "data"
    floor = {room: level for level, rooms in enumerate(LAYERS) for room in rooms}
    assert floor["data"] == floor["models"] != SHARED_FLOOR  # siblings: forbidden both ways
    assert any(target.startswith("geobridge.data") for module, target, _ in _imports() if _room_of(module) == "train")


@pytest.mark.parametrize("module", ["geobridge.data", "geobridge.data.layouts", "geobridge.data.check",
                                    "geobridge.data.degrade", "geobridge.geodesy", "geobridge.protocols"])
def test_readers_and_checks_import_without_torch(module):
    code = (f"import sys, {module}; heavy = sorted(m for m in ('torch', 'timm', 'torchvision', 'faiss') "
            "if m in sys.modules); print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import {module} loaded {out.stdout.strip()}"


def test_data_package_names_load_on_first_use():
    import geobridge.data as data

    assert data.load_places.__module__ == "geobridge.data.layouts"
    assert set(data.__all__) <= set(dir(data))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        data.nothing_here  # noqa: B018


def test_version_matches_pyproject():
    from geobridge import __version__

    pyproject = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text())
    assert __version__ == pyproject["project"]["version"]


MAX_FILE_LINES, MAX_FUNCTION_LINES = 500, 80
# files allowed to be longer, and why
LONG_FILES: dict[str, str] = {}  # a file over the limit, with the reason it stays whole


def test_files_and_functions_stay_short():
    long_files, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        text = path.read_text()
        if len(text.splitlines()) > MAX_FILE_LINES and rel not in LONG_FILES:
            long_files.append(f"{rel}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    assert not long_files, long_files
    assert not long_functions, long_functions
    assert set(LONG_FILES) <= {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")}
