"""The package's import graph: no cycle, and no import from a lower layer up to a higher one.

Read from the source with `ast` (every import, also those inside functions and those under
`if TYPE_CHECKING:`: a circle through type hints is still a circle), so a refactor that reintroduces a
circle, or makes the model layer call up into the cache, fails here instead of in a later review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sentitune"

# Bottom to top. A module may import from its own layer or a lower one, never from a higher one.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("ground floor", ("errors", "paths", "atomic", "markdown", "claims", "metrics", "statistics", "runtime",
                      "distributed")),
    ("settings", ("kinds", "config", "precision")),
    ("data", ("data",)),
    ("models", ("models",)),
    ("feature cache", ("features",)),
    ("evaluation", ("evaluation",)),
    ("run directory", ("runs",)),
    ("recipes", ("loop", "train", "zero_shot", "classical", "ensemble")),
    ("export", ("export",)),
    ("using a run", ("scorers", "recipes", "inference")),
    ("serving", ("serve",)),
    ("bench", ("runset", "bench", "plots", "report", "search")),
    ("command line", ("cli", "__main__")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"sentitune.{module} is in no layer: add it to LAYERS (and docs/ARCHITECTURE.md)")


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The sentitune modules `path` imports (`from sentitune.x import y` counts y when y is a module)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):  # imports for type hints only count too: a circle is a circle
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [child.module] + [f"{child.module}.{a.name}" for a in child.names]
            else:
                names = []
            for name in names:
                if name.startswith("sentitune.") and name.removeprefix("sentitune.") in modules:
                    found.add(name.removeprefix("sentitune."))
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(module_name(path))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = sorted(SRC.rglob("*.py"))
    modules = {module_name(f) for f in files} - {""}
    return {module_name(f): imports_of(f, modules) for f in files if module_name(f)}


def test_the_graph_is_read(graph: dict[str, set[str]]) -> None:
    """Guards the checks below against reading nothing: known edges must be found."""
    assert "config" in graph["train"] and "models.methods" in graph["train"]
    assert "models.split" in graph["models.classifier"]
    assert "models.classifier" in graph["models.lora"] and "models.blocks" in graph["models.split"]


def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    done: set[str] = set()

    def walk(module: str, path: list[str]) -> None:
        if module in path:
            cycle = path[path.index(module):] + [module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            walk(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        walk(module, [])


def test_no_import_from_a_lower_layer_up(graph: dict[str, set[str]]) -> None:
    upward = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
              for a, targets in sorted(graph.items()) for b in sorted(targets) if layer_of(b) > layer_of(a)]
    assert not upward, "\n".join(upward)
