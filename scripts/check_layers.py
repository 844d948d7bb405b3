#!/usr/bin/env python3
"""Check the package's layering: imports go only downward and no modules import each other in a circle.

Layers, lowest first: ``core`` (torch and lightning only) < ``tracking`` (+ MLflow) < ``apps`` and
``examples``. The package root (``lightning_wd/__init__.py``, ``__main__.py``) is the public facade: it may
import anything, and nothing inside the package imports it. Every ``import`` statement counts, also those
inside functions (a lazy import is still a dependency). Third-party rules: ``mlflow`` and ``optuna`` may
not be imported by ``core``; ``optuna`` not by ``tracking``.

Run from anywhere::

    python scripts/check_layers.py          # prints each violation and a summary line, exits 1 on a violation
    python scripts/check_layers.py ROOT     # checks ROOT/lightning_wd instead (tests feed it a broken package)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "lightning_wd"
RANK = {"core": 0, "tracking": 1, "apps": 2, "examples": 2}
FORBIDDEN = {"core": ("mlflow", "optuna"), "tracking": ("optuna",)}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def imports(path: Path, module: str, is_package: bool, modules: set[str]) -> list[tuple[str, int]]:
    """The package modules the file imports (``from x import y``: ``x.y`` when that is a module, else ``x``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                name = f"{base}.{alias.name}"
                found.append((name if name in modules else base, node.lineno))
    return found


def check(root: Path) -> list[str]:
    files = {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}
    graph: dict[str, set[str]] = {m: set() for m in files}
    problems = []
    for module, path in files.items():
        own = layer(module)
        for name, line in imports(path, module, path.name == "__init__.py", set(files)):
            top = name.split(".")[0]
            if own in FORBIDDEN and top in FORBIDDEN[own]:
                problems.append(f"{path}:{line}: {own} module {module} imports {top}")
            if top != PACKAGE or name not in files:
                continue
            if name == module:
                continue
            target = layer(name)
            if name == PACKAGE and own is not None:
                problems.append(f"{path}:{line}: {module} imports the package root (the facade); import the module")
            elif own is not None and target is not None and RANK[target] > RANK[own]:
                problems.append(f"{path}:{line}: upward import: {own} module {module} imports {target} module {name}")
            graph[module].add(name)
    problems += [f"import circle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component) + [sorted(component)[0]])

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]).resolve() if args else Path(__file__).resolve().parents[1]
    if not (root / PACKAGE).is_dir():
        print(f"check_layers: no {PACKAGE}/ package under {root}", file=sys.stderr)
        return 2
    problems = check(root)
    for problem in problems:
        print(problem)
    files = sorted(module_name(p, root) for p in (root / PACKAGE).rglob("*.py"))
    counts = {name: sum(layer(m) == name for m in files) for name in RANK}
    print(f"{len(files)} modules ({', '.join(f'{k} {v}' for k, v in counts.items())}): "
          f"{'OK, no upward import and no circle' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
