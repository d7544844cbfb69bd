"""The architecture as a specification (``docs/architecture.md``): layers whose imports only point down,
no import cycle between modules or packages, no library code importing a command-line module, and no
module over 600 lines.

The import graph is read from the source with :mod:`ast`, so every import counts: those at the top of
a module, those inside functions (deferred imports hide cycles, they do not remove them) and those
under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS: dict[str, set[str]] = {
    "toolkit_core": set(),
    "rfo_bench": {"toolkit_core"},
    "synth": {"rfo_bench", "toolkit_core"},
    "vision_unlearn": {"rfo_bench", "toolkit_core"},
    "rfo_toolkit": {"synth", "vision_unlearn", "rfo_bench", "toolkit_core"},
}
"""Package -> the first-party packages it may import (the layer diagram of docs/architecture.md)."""

VISION_UNLEARN_USES = ("rfo_bench.io", "rfo_bench.metrics", "rfo_bench.detectors.ultralytics_setup",
                       "rfo_bench.categories")
"""What the general unlearning library takes from the chest X-ray benchmark: image and dataset I/O,
the COCO evaluator and the safe Ultralytics set-up. Nothing of its training, CLI or reports."""

MAX_LINES = 600


def _is_cli(module: str) -> bool:
    """Command-line modules: argument parsing and the entry points."""
    last = module.rsplit(".", 1)[-1]
    return last in {"cli", "commands"} or last.startswith("cli_")


def _modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The first-party module that defines ``name`` (a module or a name inside one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """``(imported first-party module, line)`` for every import statement of the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _owner(alias.name)
                if target:
                    yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                target = _owner(f"{source}.{alias.name}") or _owner(source)
                if target:
                    yield target, node.lineno


GRAPH: dict[str, dict[str, int]] = {}
for _name, _path in MODULES.items():
    GRAPH[_name] = {}
    for _target, _line in _imports(_name, _path):
        if _target != _name:
            GRAPH[_name].setdefault(_target, _line)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _where(source: str, target: str) -> str:
    return f"{MODULES[source].relative_to(ROOT)}:{GRAPH[source][target]} imports {target}"


def test_the_graph_sees_deferred_and_relative_imports() -> None:
    """The reader itself: imports inside functions count (the entry points import every library lazily)."""
    assert "vision_unlearn.cli" in GRAPH["rfo_toolkit.cli"]
    assert "rfo_bench.cli" in GRAPH["rfo_toolkit.cli"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_cycle() -> None:
    cycles = _cycles({name: set(targets) for name, targets in GRAPH.items()})
    details = []
    for component in cycles:
        members = set(component)
        details.append("; ".join(_where(s, t) for s in component for t in GRAPH[s] if t in members))
    assert not cycles, "import cycles:\n" + "\n".join(details)


def test_packages_import_only_the_layers_below() -> None:
    wrong = []
    for source, targets in GRAPH.items():
        package = source.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if other != package and other not in LAYERS[package]:
                wrong.append(_where(source, target))
    assert not wrong, "imports pointing up or sideways:\n" + "\n".join(sorted(wrong))


def test_unlearning_library_takes_only_io_and_evaluation_from_the_benchmark() -> None:
    wrong = [_where(source, target) for source, targets in GRAPH.items() if source.startswith("vision_unlearn")
             for target in targets if target.startswith("rfo_bench")
             and not any(target == use or target.startswith(use + ".") for use in VISION_UNLEARN_USES)]
    assert not wrong, "vision_unlearn importing more of rfo_bench than I/O and evaluation:\n" + "\n".join(wrong)


def test_library_code_never_imports_a_command_line_module() -> None:
    wrong = [_where(source, target) for source, targets in GRAPH.items() if not _is_cli(source)
             for target in targets if _is_cli(target)]
    assert not wrong, "library modules importing CLI modules:\n" + "\n".join(sorted(wrong))


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_no_module_over_600_lines(package: str) -> None:
    long = {str(path.relative_to(ROOT)): n for name, path in MODULES.items() if name.split(".")[0] == package
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
