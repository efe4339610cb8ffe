"""The import graph of ``unlearn_gym``: no cycle, and every arrow points down the layers.

Every module of the package is parsed with ``ast``; its imports, at the top, inside functions and
under ``if TYPE_CHECKING:`` alike, become edges to the package's modules they name (relative imports
resolved against the importing module's package; ``from p import x`` is an edge to the module
``p.x`` where that is a module, else to ``p``). A name that is not a module of the package (a
class, a constant) resolves to the longest dotted prefix that is one.

Decision on packages: importing ``a.b`` runs ``a/__init__.py`` first, but that implicit edge is not
added. Were it added, every package whose ``__init__`` re-exports its own submodules would be a
cycle by construction (``a.b`` → ``a`` → ``a.b``), which is how Python packages are meant to work and
is safe. The explicit edges all count, an ``__init__``'s edges to its own submodules included: a
submodule that imports its own package's ``__init__`` (``from . import SOME_NAME``) does close a
cycle, and this test fails on it.

The layers, from the bottom (each may import the ones below it, never one above):
``objectives``, ``models``, ``data`` → ``engines`` → ``envs`` → ``bench`` → ``cli``, with ``metrics``
(evaluation: classifier, forget rate, Table 1, robustness) beside ``engines``, below ``envs``; ``agents`` and
``baselines`` do not import ``bench`` (the policy registry, :mod:`unlearn_gym.policy_specs`, knows
both and sits above them), and ``bench`` does not import ``agents``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "unlearn_gym"
ROOT = PACKAGE.name

FORBIDDEN = {
    "objectives": ("engines", "envs", "bench", "cli"),
    "models": ("engines", "envs", "bench", "cli"),
    "data": ("engines", "envs", "bench", "cli"),
    "metrics": ("engines", "envs", "bench", "agents", "baselines", "cli"),
    "engines": ("envs", "bench", "agents", "cli"),
    "envs": ("bench", "cli"),
    "agents": ("bench",),
    "baselines": ("bench",),
    "bench": ("agents",),
}
"""Layer (a subpackage of ``unlearn_gym``) → the subpackages its modules never import."""

CLI_IMPORTERS = ("cli", "__main__")
"""The only modules (and packages) that may import ``unlearn_gym.cli``."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    """Dotted name → path of every module of the package (a package is its ``__init__.py``)."""
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest dotted prefix of ``name`` that is a module of the package (None: outside it)."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        candidate = ".".join(parts[:k])
        if candidate in modules:
            return candidate
    return None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            names = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
        else:
            continue
        out |= {m for m in (_resolve(n, modules) for n in names if n.split(".")[0] == ROOT) if m is not None}
    out.discard(module)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _layer(module: str) -> str | None:
    """The subpackage (or top-level module) of ``unlearn_gym`` that ``module`` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_graph_sees_the_imports_it_should(graph):
    # module level, relative and resolved to the submodule
    assert "unlearn_gym.bench.config" in graph["unlearn_gym.bench.runner"]
    # inside a function, two levels up, a name of a module (the class is not a module)
    assert "unlearn_gym.metrics.forget" in graph["unlearn_gym.bench.episodes"]
    # a package's __init__ re-exporting its submodules
    assert "unlearn_gym.bench.runner" in graph["unlearn_gym.bench"]


def test_no_import_cycle(graph):
    """Depth-first search for a back edge; the message names one cycle."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n) :] + [n]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_every_arrow_points_down_the_layers(graph):
    wrong = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if _layer(target) in FORBIDDEN.get(_layer(module), ()):
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_nothing_imports_the_cli_but_the_cli(graph):
    wrong = [
        f"{module} imports {target}"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if _layer(target) == "cli" and _layer(module) not in CLI_IMPORTERS
    ]
    assert wrong == []


def test_the_policy_registry_knows_both_agents_and_baselines(graph):
    registry = {_layer(t) for t in graph["unlearn_gym.policy_specs"]}
    assert {"agents", "baselines"} <= registry
