"""The package's structure: no import cycle between its modules, counting the imports inside
functions too (a lazy import only postpones a cycle), but not those made only for type
checking."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "rag_pipeline"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """rag_pipeline modules a module imports anywhere (module level or inside functions),
    except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("rag_pipeline"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("rag_pipeline"))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports(path):
            # "from rag_pipeline.stores.base import X" also runs rag_pipeline.stores.__init__.
            parts = imported.split(".")
            targets.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
        # A module's own parent packages are imported before it anyway: not an edge.
        ancestors = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
        edges[name] = {t for t in targets if t in modules and t != name and t not in ancestors}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle() -> None:
    edges = graph()
    assert "rag_pipeline.stores.milvus" in edges and "rag_pipeline.stores.filters" in edges
    assert "rag_pipeline.stores.base" in edges["rag_pipeline.stores.milvus"]
    assert find_cycle(edges) is None, find_cycle(edges)
