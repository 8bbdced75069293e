"""The house's rules, held against the code's own imports (those inside functions included):
sub-packages in layers, each importing only lower ones; no circle between modules; no name
private to one sub-package taken by another; few modules directly in `etl/`, no sub-package
over twelve."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ETL = Path(__file__).resolve().parent.parent / "etl"
# lower layers first; a package may import its own layer's modules and those of lower layers
LAYERS = {"common": 0, "standard": 1, "mapping": 2, "source": 3, "target": 3, "media": 4,
          "pipeline": 5, "onboarding": 5, "report": 6, "orchestration": 7, "interface": 7, "": 8}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ETL.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(ETL.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports() -> dict[str, set[tuple[str, str]]]:
    """{module: {(imported module, name)}} from every `from etl... import name`."""
    modules = _modules()
    out: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.split(".")[0] == "etl":
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    out[name].add((full, "") if full in modules else (node.module, alias.name))
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (ETL / parts[1]).is_dir()) else ""


def test_each_sub_package_imports_only_lower_layers() -> None:
    wrong = sorted((a, b) for a, targets in _imports().items() for b, _ in targets
                   if _package(a) != _package(b) and LAYERS[_package(b)] >= LAYERS[_package(a)])
    assert wrong == [], wrong
    assert {_package(m) for m in _modules()} == set(LAYERS)


def test_no_circle_between_modules() -> None:
    graph = {a: {b for b, _ in targets if b != a} for a, targets in _imports().items()}
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert found == [], found


def test_no_sub_package_takes_another_ones_private_names() -> None:
    taken = sorted((a, b, n) for a, targets in _imports().items() for b, n in targets
                   if n.startswith("_") and _package(a) != _package(b))
    assert taken == [], taken


def test_few_modules_at_the_top_and_none_over_twelve_in_a_sub_package() -> None:
    top = [p.name for p in ETL.glob("*.py")]
    assert len(top) <= 8, top
    for package in (p for p in ETL.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        modules = [p.name for p in package.glob("*.py") if p.name != "__init__.py"]
        assert len(modules) <= 12, (package.name, modules)
