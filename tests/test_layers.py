"""The import graph of the project: no circles, no arrow from a lower layer to a higher one, and imports inside
functions only where a module's start-up cost (torch, Ray, matplotlib, ...) would otherwise be paid by every user.

The layers, lowest first, are the story of a request (docs/architecture.md): the clock and the wire; the links;
the pure world (radio, energy, hardware, policies); the loaded topology; the DNN; records and results; the plan
made before anything starts; the actors; the trainer; the reports; the driver; the command line and the API.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("testbed", "actors", "throttling")
LAYERS = (
    "testbed.base",
    "throttling",
    "testbed.domain",
    "testbed.config",
    "testbed.model",
    "testbed.results",
    "testbed.plan",
    "actors",
    "testbed.train",
    "testbed.report",
    "testbed.run",
    "testbed.api",
    "testbed.cli",
)
# Third-party modules slow enough to import that only the functions that need them do.
HEAVY = {"torch", "torchvision", "ray", "matplotlib", "sklearn", "nbclient", "nbformat"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            out[name] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(tree: ast.AST, inside_function: bool = False):
    """(module imported, line, inside a function) for every import that runs, skipping `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, inside_function
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield (sub if sub in MODULES else node.module), node.lineno, inside_function
        yield from _imports(node, inside_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))


def _project(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, list[tuple[str, int, bool]]]:
    graph = {}
    for name, path in MODULES.items():
        graph[name] = [(target, line, inner) for target, line, inner in _imports(ast.parse(path.read_text()))]
    return graph


GRAPH = _graph()


def _layer(module: str) -> int:
    for i, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return i
    raise AssertionError(f"{module} is in no layer; add it to LAYERS in {__file__}")


def _top_level_heavy() -> set[str]:
    """Project modules whose top-level imports pull in a heavy library, directly or through other modules."""
    heavy = {m for m, edges in GRAPH.items() if any(t.split(".")[0] in HEAVY and not inner for t, _, inner in edges)}
    changed = True
    while changed:
        changed = False
        for m, edges in GRAPH.items():
            if m not in heavy and any(_project(t) in heavy and not inner for t, _, inner in edges):
                heavy.add(m)
                changed = True
    return heavy


def test_every_module_is_in_a_layer():
    for module in MODULES:
        if module not in PACKAGES:
            _layer(module)


def test_no_import_goes_up_a_layer():
    upward = []
    for module, edges in GRAPH.items():
        if module in PACKAGES:
            continue
        for target, line, _ in edges:
            dep = _project(target)
            if dep and dep not in PACKAGES and _layer(dep) > _layer(module):
                upward.append(f"{MODULES[module].relative_to(ROOT)}:{line}: {module} ({LAYERS[_layer(module)]}) "
                              f"imports {dep} ({LAYERS[_layer(dep)]})")
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    edges = {m: {_project(t) for t, _, _ in e} - {None, m, *PACKAGES} for m, e in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges[m]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (circle := visit(m)):
            pytest.fail("import circle: " + " -> ".join(circle))


def test_imports_inside_functions_only_for_start_up_cost_and_say_why():
    heavy = _top_level_heavy()
    problems = []
    for module, edges in GRAPH.items():
        lines = MODULES[module].read_text().splitlines()
        for target, line, inner in edges:
            if not inner:
                continue
            costly = target.split(".")[0] in HEAVY or _project(target) in heavy
            where = f"{MODULES[module].relative_to(ROOT)}:{line}"
            if not costly:
                problems.append(f"{where}: {target} is cheap to import; import it at the top of the module")
            elif "#" not in lines[line - 1]:
                problems.append(f"{where}: say in a comment why {target} is imported here")
    assert not problems, "\n".join(problems)


def test_the_walker_catches_an_upward_import_and_a_circle(monkeypatch):
    """The checks above can fail: a clock that imports the driver is both an upward arrow and a circle."""
    fake = {**GRAPH, "testbed.base.clock": [("testbed.run.experiment", 1, False)]}
    monkeypatch.setattr(sys.modules[__name__], "GRAPH", fake)
    with pytest.raises(AssertionError, match="testbed.base.clock"):
        test_no_import_goes_up_a_layer()
    with pytest.raises(pytest.fail.Exception, match="import circle: .*testbed.base.clock"):
        test_no_import_circles()
