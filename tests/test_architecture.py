"""The house, held in code: who may import whom, no circles, no TensorFlow where it does not
belong, no module too long. ``../shared/DESIGN.md`` draws the same order in prose.

Imports are read with ``ast`` from the source (module level and inside functions alike: a lazy
import is still a dependency), so nothing here imports TensorFlow.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The packages and modules of tfcam from the top (shells) to the bottom (leaves). A module may
#: import from its own layer or any layer below it, never from a layer above. The longest matching
#: prefix places a module, so a TensorFlow-free table inside a package can sit lower than its
#: package (the backbone registry and the shapes vocabulary are data that config validates).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("tfcam.cli", "tfcam.serve"),  # shells: parse, call one library function, print or answer
    ("tfcam",),  # the notebook face (tfcam/__init__.py)
    ("tfcam.train",),  # fit, callbacks, sweeps, strategies (may use explain for panels)
    ("tfcam.explain",),  # engine, method table, metrics, receptive fields, files per image
    ("tfcam.report",),  # HTML pages and compare tables (no TensorFlow)
    ("tfcam.runs",),  # the run directory contract
    ("tfcam.data", "tfcam.models"),  # tf.data pipelines and sources; registry, heads, graphs
    ("tfcam.config",),  # experiments as frozen dataclasses (no TensorFlow)
    # TF-free tables config validates against (hub: the keras-hub rows and their config rules)
    ("tfcam.models.registry", "tfcam.models.hub", "tfcam.data.shapes"),
    (
        "tfcam.viz",
        "tfcam.io",
        "tfcam.locks",
        "tfcam.progress",
        "tfcam.errors",
        "tfcam.paths",
        "tfcam.typed",
        "tfcam.experiments",
    ),
)

#: Packages and modules that must not import TensorFlow or Keras at module level.
TF_FREE = (
    "tfcam.viz",
    "tfcam.report",
    "tfcam.config",
    "tfcam.typed",
    "tfcam.progress",
    "tfcam.cli",
    "tfcam.explain.methods",
)
HEAVY = ("tensorflow", "keras", "tf_keras_vis", "tensorboard")
MAX_LINES = 600


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    """``{dotted name: file}`` for every module of the ``tfcam`` package under ``root``."""
    return {module_name(p, root): p for p in sorted((root / "tfcam").rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> list[tuple[str, int, bool]]:
    """``(imported tfcam module or external top-level name, line, at module level)``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    top_level = {id(node) for node in tree.body}
    # Imports under ``if TYPE_CHECKING:`` at module level run for type checkers only.
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            top_level.update(id(n) for n in ast.walk(node))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                # ``import tfcam.experiments`` names a data package that only exists installed.
                out.append((alias.name, node.lineno, id(node) in top_level))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = sub if sub in known else _resolve(base, known)
                out.append((target, node.lineno, id(node) in top_level))
    return out


def _resolve(name: str, known: set[str]) -> str:
    """The longest known module that ``name`` is or lies in; else its top-level package."""
    while name and name not in known and "." in name:
        name = name.rpartition(".")[0]
    return name


def layer_of(module: str) -> int:
    best, index = -1, None
    for i, names in enumerate(LAYERS):
        for prefix in names:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    if index is None:
        raise AssertionError(f"{module} is in no layer of LAYERS: add it to the house first")
    return index


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """``{module: {imported tfcam module: line}}``."""
    mods = modules(root)
    known = set(mods)
    graph: dict[str, dict[str, int]] = {}
    for name, path in mods.items():
        edges: dict[str, int] = {}
        for target, line, _ in imports_of(path, name, known):
            if target in known and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import circle (``[a, b, …, a]``), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def order_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    out = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            # A package's __init__ may re-export its own modules.
            if target.startswith(module + "."):
                continue
            if layer_of(target) < layer_of(module):
                out.append(f"{module}:{line} imports {target}, which lies above it in the house")
    return out


# --------------------------------------------------------------------------------------------


def test_every_module_has_a_place_in_the_house():
    for name in modules():
        layer_of(name)


def test_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_imports_follow_the_order_of_the_house():
    bad = order_violations(import_graph())
    assert not bad, "\n".join(bad)


def test_no_library_module_imports_the_cli():
    graph = import_graph()
    bad = [
        f"{m}:{line}"
        for m, edges in graph.items()
        if not m.startswith("tfcam.cli")
        for t, line in edges.items()
        if t.startswith("tfcam.cli")
    ]
    assert not bad, "library modules importing the CLI: " + ", ".join(bad)


def test_tensorflow_free_modules_do_not_import_it_at_module_level():
    mods = modules()
    known = set(mods)
    bad = []
    for name, path in mods.items():
        if not any(name == p or name.startswith(p + ".") for p in TF_FREE):
            continue
        for target, line, top in imports_of(path, name, known):
            if top and target.split(".")[0] in HEAVY:
                bad.append(f"{name}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def test_no_module_is_longer_than_600_lines():
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_cli_command_function_is_longer_than_40_lines():
    from tfcam.cli import cli

    long = {}
    for name, command in cli.commands.items():
        fn = inspect.unwrap(command.callback)
        lines, _ = inspect.getsourcelines(fn)  # from the first decorator: count from the def
        start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("def "))
        if len(lines) - start > 40:
            long[name] = len(lines) - start
    assert not long, f"command functions over 40 lines: {long}"


# The test of the tests: each rule fails on a house that breaks it. ----------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return tmp_path


def test_a_circle_is_found(tmp_path):
    root = _package(
        tmp_path,
        {
            "tfcam/__init__.py": "",
            "tfcam/explain/__init__.py": "",
            "tfcam/explain/a.py": "from tfcam.explain.b import g\n",
            "tfcam/explain/b.py": "def g():\n    from tfcam.explain import a\n",
        },
    )
    cycle = find_cycle(import_graph(root))
    assert cycle is not None and set(cycle) == {"tfcam.explain.a", "tfcam.explain.b"}


def test_no_circle_in_a_clean_pair(tmp_path):
    root = _package(
        tmp_path,
        {
            "tfcam/__init__.py": "",
            "tfcam/explain/__init__.py": "",
            "tfcam/explain/a.py": "from tfcam.explain.b import g\n",
            "tfcam/explain/b.py": "import numpy\n",
        },
    )
    assert find_cycle(import_graph(root)) is None


def test_an_upward_import_is_found(tmp_path):
    root = _package(
        tmp_path,
        {
            "tfcam/__init__.py": "",
            "tfcam/cli/__init__.py": "",
            "tfcam/train/__init__.py": "",
            "tfcam/train/sweep.py": "def f():\n    from tfcam.cli import helper\n",
        },
    )
    assert order_violations(import_graph(root)) == [
        "tfcam.train.sweep:2 imports tfcam.cli, which lies above it in the house"
    ]


@pytest.mark.parametrize(
    ("module", "layer"),
    [("tfcam.models.registry", "tfcam.models.registry"), ("tfcam.models.build", "tfcam.data")],
)
def test_the_longest_prefix_places_a_module(module, layer):
    assert layer_of(module) == layer_of(layer)
