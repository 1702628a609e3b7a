"""Measure the shape of the code: longest functions, string-key subscripts, imports between layers.

Run from the repository root (``python benchmarks/structure.py``, or ``--json`` for one object).
It parses the sources with ``ast`` and imports nothing, so it runs in any checkout, and two
revisions can be compared side by side:

- the N longest functions (lines from ``def`` to the last line of the body);
- the number of ``x["literal"]`` subscripts in ``dataprep/build/`` (dicts passed between modules);
- module import cycles inside ``dataprep`` and ``trainer`` (imports anywhere in a module count,
  function-level ones too, because they couple the modules just the same);
- imports across the layers, which must both be absent: ``dataprep`` (outside ``dataprep.commands``
  and ``dataprep.cli``) -> ``trainer``, and ``trainer`` -> ``dataprep.commands`` / ``dataprep.cli``.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

PACKAGES = ("dataprep", "trainer")
CLI_MODULES = ("dataprep.commands", "dataprep.cli")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def iter_modules(root: Path):
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            yield module_name(root, path), path


def imported_modules(name: str, path: Path, tree: ast.AST, known: set[str]) -> set[str]:
    """The project modules `name` imports (``from a import b`` counts module ``a.b``)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def function_lengths(path: Path, tree: ast.AST, root: Path) -> list[tuple[int, str]]:
    rows = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            rows.append(
                (node.end_lineno - node.lineno + 1, f"{path.relative_to(root)}:{node.name}")
            )
    return rows


def string_subscripts(tree: ast.AST) -> int:
    return sum(
        isinstance(node, ast.Subscript)
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, str)
        for node in ast.walk(tree)
    )


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def is_cli(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in CLI_MODULES)


def measure(root: Path, top: int = 10) -> dict:
    modules = dict(iter_modules(root))
    trees = {name: ast.parse(path.read_text(), str(path)) for name, path in modules.items()}
    known = set(modules)
    graph = {name: imported_modules(name, modules[name], trees[name], known) for name in modules}
    # A package's __init__ importing its own submodules is how it exposes its API, not a cycle.
    graph_no_init = {
        name: {t for t in targets if not t.startswith(name + ".")}
        for name, targets in graph.items()
    }
    lengths = sorted(
        (row for name in modules for row in function_lengths(modules[name], trees[name], root)),
        reverse=True,
    )
    layer_violations = sorted(
        f"{src} -> {dst}"
        for src, targets in graph.items()
        for dst in targets
        if (src.startswith("dataprep") and not is_cli(src) and dst.startswith("trainer"))
        or (src.startswith("trainer") and is_cli(dst))
    )
    build = [name for name in modules if name.startswith("dataprep.build")]
    return {
        "largest_functions": [{"lines": n, "function": f} for n, f in lengths[:top]],
        "string_subscripts_in_build": sum(string_subscripts(trees[name]) for name in build),
        "import_cycles": find_cycles(graph_no_init),
        "layer_violations": layer_violations,
        "modules": len(modules),
        "trainer_top_level_files": len(list((root / "trainer").glob("*.py"))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--top", type=int, default=10, help="how many of the longest functions")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = measure(args.root, args.top)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print("largest functions (lines):")
    for row in result["largest_functions"]:
        print(f"  {row['lines']:5d}  {row['function']}")
    print(f"string-key subscripts in dataprep/build/: {result['string_subscripts_in_build']}")
    print(f"import cycles: {len(result['import_cycles'])}")
    for cycle in result["import_cycles"]:
        print("  " + " <-> ".join(cycle))
    print(f"layer violations: {len(result['layer_violations'])}")
    for row in result["layer_violations"]:
        print("  " + row)
    print(
        f"modules: {result['modules']}; files at trainer/ top level: "
        f"{result['trainer_top_level_files']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
