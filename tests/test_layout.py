"""The import graph: no arrow runs back up (bench does not import agents; agents and baselines do not import bench)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "unlearn_gym"


def _imports(path: Path) -> set[str]:
    """Every unlearn_gym module that ``path`` imports, at the top or inside a function, as a dotted name."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out |= {name} | {f"{name}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {n for n in out if n.startswith("unlearn_gym")}


def _reaches(names: set[str], target: str) -> bool:
    return any(n == target or n.startswith(target + ".") for n in names)


def test_the_runner_and_the_agents_import_each_other_in_one_direction_only():
    for path in (PACKAGE / "bench").glob("*.py"):
        assert not _reaches(_imports(path), "unlearn_gym.agents"), f"bench/{path.name} imports unlearn_gym.agents"
    for sub in ("agents", "baselines"):
        for path in (PACKAGE / sub).glob("*.py"):
            assert not _reaches(_imports(path), "unlearn_gym.bench"), f"{path.name} imports unlearn_gym.bench"
    # the policy-spec registry is what knows both
    registry = _imports(PACKAGE / "policy_specs.py")
    assert _reaches(registry, "unlearn_gym.agents") and _reaches(registry, "unlearn_gym.baselines")
