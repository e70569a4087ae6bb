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
    ("ground floor", ("errors", "extras", "paths", "atomic", "markdown", "claims", "metrics", "statistics", "runtime",
                      "distributed")),
    ("settings", ("kinds", "coerce", "config", "precision")),
    ("data", ("data",)),
    ("models", ("models",)),
    ("feature cache", ("features",)),
    ("evaluation", ("evaluation",)),
    ("run directory", ("runs",)),
    ("recipes", ("loop", "training", "zero_shot", "self_training", "classical", "ensemble", "tracking")),
    ("export", ("export",)),
    ("using a run", ("scorers", "recipes", "inference")),
    ("serving", ("serve",)),
    ("bench", ("runset", "benching", "plots", "report", "search")),
    ("command line and Python", ("cli", "__main__", "api")),
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
    assert "config" in graph["training"] and "models.methods" in graph["training"]
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


# ----------------------------------------------------------------------------- sizes a reader can hold

MAX_MODULE_LINES = 400  # config.py's dataclass fields do not count: they are the settings' reference
MAX_FUNCTION_LINES = 80  # one screen
REGISTRY = {"kinds", "recipes", "scorers"}  # where a kind of run is named; everything else asks them
MAX_KIND_BRANCHES = 4


def _trees() -> dict[str, tuple[Path, ast.Module]]:
    return {module_name(f) or "sentitune": (f, ast.parse(f.read_text(encoding="utf-8"))) for f in SRC.rglob("*.py")}


def _field_lines(tree: ast.Module) -> int:
    """Lines of field definitions (annotated assignments) in the module's dataclasses."""
    return sum(node.end_lineno - node.lineno + 1  # type: ignore[operator]
               for cls in tree.body if isinstance(cls, ast.ClassDef)
               and any("dataclass" in ast.unparse(d) for d in cls.decorator_list)
               for node in cls.body if isinstance(node, ast.AnnAssign))


def test_no_module_too_long_to_read() -> None:
    long = []
    for module, (path, tree) in sorted(_trees().items()):
        lines = len(path.read_text(encoding="utf-8").splitlines()) - _field_lines(tree)
        if lines > MAX_MODULE_LINES:
            long.append(f"sentitune.{module}: {lines} lines (dataclass fields not counted)")
    assert not long, "split by concept:\n" + "\n".join(long)


def test_no_function_longer_than_a_screen() -> None:
    long = [f"sentitune.{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines"  # type: ignore[operator]
            for module, (_, tree) in sorted(_trees().items()) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]  # type: ignore[operator]
    assert not long, "\n".join(long)


def test_no_private_name_imported_from_another_module() -> None:
    """A `_name` is its module's own: a caller elsewhere means it is public (rename it) or in the wrong place."""
    found = [f"sentitune.{module} imports {node.module}.{alias.name}"
             for module, (_, tree) in sorted(_trees().items()) for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sentitune")
             for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not found, "\n".join(found)


def test_the_kind_of_run_is_named_in_few_places_outside_the_registry() -> None:
    """Comparisons with one kind (`kind is ZERO_SHOT`, `method == "tfidf"`) outside kinds/recipes/scorers:
    everything else asks the registry what a run can do (`kind_of(cfg).trains`, `.exports`...)."""
    from sentitune.kinds import CLASSIFIER, KINDS

    names = {k.name.upper().replace("-", "_") for k in KINDS}
    methods = {m for k in KINDS if k is not CLASSIFIER for m in k.methods}
    branches = []
    for module, (_, tree) in sorted(_trees().items()):
        if module.split(".")[0] in REGISTRY:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            parts = [node.left, *node.comparators]
            if any(isinstance(p, ast.Name) and p.id in names for p in parts) or any(
                    isinstance(p, ast.Constant) and p.value in methods for p in parts):
                branches.append(f"sentitune.{module}:{node.lineno}: {ast.unparse(node)}")
    assert len(branches) <= MAX_KIND_BRANCHES, "ask the registry (kinds.py) instead:\n" + "\n".join(branches)
    assert branches or methods, "nothing to look for: the check reads no kind"


def test_every_module_is_on_the_map() -> None:
    """docs/ARCHITECTURE.md is the map: a module it does not name is one a newcomer cannot find."""
    text = (SRC.parents[1] / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = [str(f.relative_to(SRC)) for f in sorted(SRC.rglob("*.py"))
               if f.name != "__init__.py" and f"{f.name}`" not in text]
    assert not missing, "name these in docs/ARCHITECTURE.md: " + ", ".join(missing)
