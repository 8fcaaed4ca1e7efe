"""The house's layers: no module imports from a layer above its own, and the CLI uses no private function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "coronet"
#: package or module -> layer; training and deploy share a layer but must not import each other.
LAYERS = {
    "errors": 0,
    "config": 0,
    "tasks": 0,
    "paper": 0,
    "layout": 0,
    "versions": 0,
    "data": 1,
    "models": 2,
    "training": 3,
    "deploy": 3,
    "evaluation": 4,
    "reproduce": 5,
    "cli": 6,
    "__main__": 7,  # python -m coronet: the CLI
}


def top(module: str) -> str:
    return module.split(".")[0]


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported coronet module, names) for every import in ``path``, absolute or relative."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                module = node.module or ""
            if module.startswith("coronet"):
                found.append((module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.startswith("coronet")]
    return found


MODULES = sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(SRC)) for p in MODULES])
def test_no_module_reaches_up_a_layer(path):
    own = top(str(path.relative_to(SRC).with_suffix("")).replace("/", "."))
    if own == "__init__":
        return
    for module, _names in imports(path):
        parts = module.split(".")[1:]
        if not parts:  # "from coronet import __version__"
            continue
        other = parts[0]
        assert LAYERS[other] <= LAYERS[own], f"{path.relative_to(SRC)} imports {module} (a higher layer)"
        if LAYERS[other] == LAYERS[own] and other != own:
            pytest.fail(f"{path.relative_to(SRC)} imports {module}: {own} and {other} are siblings")


def test_the_cli_uses_no_private_function_of_a_lower_layer():
    for path in (SRC / "cli").glob("*.py"):
        for module, names in imports(path):
            if not module.startswith("coronet.cli"):
                # Dunder names (``__version__``) are the package's public metadata, not private.
                private = [n for n in names if n.startswith("_") and not n.endswith("__")]
                assert not private, f"{path.name} imports {private} from {module}"


def module_name(path: Path) -> str:
    """``coronet.deploy.predict`` for ``.../coronet/deploy/predict.py``; a package's ``__init__.py`` is the package."""
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """coronet module -> the coronet modules importing it runs, function-level imports included (a lazy import
    closes a circle as surely, only later). Importing ``a.b.c`` runs ``a`` and ``a.b`` first, except the
    importer's own packages (their ``__init__`` is already running or done); ``from a import b`` runs ``a.b``
    when ``b`` is a module."""
    known = {module_name(p) for p in MODULES}
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        own = module_name(path)
        mine = {".".join(own.split(".")[:k]) for k in range(1, own.count(".") + 2)}
        targets = set()
        for module, names in imports(path):
            parts = module.split(".")
            chain = {".".join(parts[:k]) for k in range(1, len(parts) + 1)}
            chain |= {f"{module}.{name}" for name in names}
            targets |= {m for m in chain if m in known and m not in mine}
        graph[own] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The import circles of ``graph``: its strongly connected components of more than one module (Tarjan)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in order:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], order[nxt])
        if low[node] == order[node]:
            component = {stack.pop()}
            while node not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return found


def test_no_import_circle():
    found = circles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(sorted(c)) for c in found)


def test_the_circle_check_finds_a_circle():
    """The check above can fail: a lazy import back from runtimes to the predictor is a circle."""
    graph = import_graph()
    assert "coronet.deploy.runtimes.record" in graph["coronet.deploy.predict"]  # the predictor asks the choice
    assert not [c for c in circles(graph) if "coronet.deploy.predict" in c]
    graph["coronet.deploy.runtimes.choice"] = graph["coronet.deploy.runtimes.choice"] | {"coronet.deploy.predict"}
    assert [c for c in circles(graph) if {"coronet.deploy.predict", "coronet.deploy.runtimes"} <= c]


#: Every module of src/ is held to the size limits (issue 28): modules of at most MODULE_LINES lines,
#: functions of at most FUNCTION_LINES.
MODULE_LINES, FUNCTION_LINES = 500, 60
LIMITED_MODULES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", LIMITED_MODULES, ids=[str(p.relative_to(SRC)) for p in LIMITED_MODULES])
def test_modules_and_functions_are_short(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MODULE_LINES, f"{path.relative_to(SRC)}: {lines} lines (> {MODULE_LINES})"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > FUNCTION_LINES
    ]
    assert not long, f"{path.relative_to(SRC)}: functions over {FUNCTION_LINES} lines: {', '.join(long)}"


def test_the_size_check_sees_every_package():
    """A wrong SRC would check nothing: the limits must see the packages split for issue 28."""
    seen = {str(p.parent.relative_to(SRC)) for p in LIMITED_MODULES}
    assert {"training", "reproduce", "evaluation/audit", "deploy/serve", "data/imageio", "layout"} <= seen


def test_the_former_homes_are_gone():
    """``coronet.model`` and ``coronet.imageio`` were re-exports of ``coronet.models.coronet`` and
    ``coronet.data.imageio``; nothing imports them any more."""
    assert not (SRC / "model.py").exists() and not (SRC / "imageio.py").exists()
    for path in MODULES:
        for module, _names in imports(path):
            assert module not in ("coronet.model", "coronet.imageio"), f"{path.relative_to(SRC)} imports {module}"
