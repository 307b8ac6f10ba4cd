"""The package's import structure: no import cycles between modules, and no module importing another module's
private (underscore) names. Read from the source with `ast`, so lazy imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tl_nlp"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """`(module, imported names)` for every import of a package module in `path`."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.startswith("tl_nlp")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("tl_nlp"):
                continue
            names = [alias.name for alias in node.names]
            # `from package import submodule` imports the submodule.
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            found += [(module, []) for module in submodules]
            found.append((target, [n for n in names if f"{target}.{n}" not in modules]))
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, with the packages that importing them runs (a module importing
    `tl_nlp.a.b` also runs `tl_nlp.a`, unless it is inside `tl_nlp.a` itself)."""
    modules = package_modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _ in imports_of(name, path, modules):
            parts = target.split(".")
            for end in range(2, len(parts) + 1):
                parent = ".".join(parts[:end])
                if parent in modules and parent != name and not (name + ".").startswith(parent + "."):
                    graph[name].add(parent)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_no_import_cycles_between_modules():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_module_imports_another_modules_private_names():
    modules = package_modules()
    private = []
    for name, path in modules.items():
        for target, names in imports_of(name, path, modules):
            private += [f"{name} imports {target}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
    assert private == []
