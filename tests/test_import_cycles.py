"""No import cycles between the project's modules: every import counts, at any depth, including those
under ``if TYPE_CHECKING:`` and inside functions (a cycle hidden there is still a design back-edge)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hermes_relay

ROOT = Path(hermes_relay.__file__).resolve().parent
PACKAGE = "hermes_relay"
SCANNED = ("core", "agent", "cli", "relay")

# Cycles still to remove: each listed group may still hold a cycle
# among its own members, but no module outside it may join one. Remove a group once it is fixed.
KNOWN_CYCLES: tuple[frozenset[str], ...] = ()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "tests" not in path.relative_to(ROOT).parts:
                found[module_name(path)] = path
    return found


def imported(source: str, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in ``source`` (names relative to the package)."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                absolute = ".".join([PACKAGE, *base, *([node.module] if node.module else [])])
            else:
                absolute = node.module or ""
            # `from pkg import sub` depends on the module sub; `from mod import name` on mod.
            targets = [f"{absolute}.{alias.name}" if _short(f"{absolute}.{alias.name}") in known else absolute
                       for alias in node.names]
        else:
            continue
        found.update(short for short in map(_short, targets) if short in known)
    found.discard(name)
    return found


def _short(target: str) -> str:
    return target[len(PACKAGE) + 1:] if target.startswith(PACKAGE + ".") else ""


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    edges = {}
    for name, path in mods.items():
        edges[name] = imported(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", known)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


@pytest.mark.parametrize(("source", "name", "expected"), [
    ("from hermes_relay.relay import api, http\nimport os", "relay.server", {"relay.api", "relay.http"}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hermes_relay.relay.server import Relay\n",
     "relay.api", {"relay.server"}),
    ("def f():\n    import hermes_relay.relay.core as c\n", "relay.api", {"relay.core"}),
    ("from . import core\nfrom .core import RelayCore\nfrom ..core import knobs\n", "relay.server",
     {"relay.core", "core.knobs"}),
    ("from hermes_relay.core import envelope\nfrom hermes_relay import core\n", "relay.core", {"core.envelope", "core"}),
])
def test_the_scanner_sees_every_kind_of_import(source: str, name: str, expected: set[str]) -> None:
    known = {"relay.api", "relay.http", "relay.server", "relay.core", "core.knobs", "core", "core.envelope"}
    assert imported(source, name, False, known) == expected


def test_the_cycle_finder_finds_a_back_edge_and_only_it() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(edges) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_scan_covers_every_package() -> None:
    edges = graph()
    for top in SCANNED:
        assert sum(1 for name in edges if name.split(".")[0] == top) >= 5, top
    assert "relay.server" in edges["relay.main"] or "relay.server" in set().union(*edges.values())


def test_no_new_import_cycle() -> None:
    new = [sorted(c) for c in cycles(graph()) if not any(c <= known for known in KNOWN_CYCLES)]
    assert new == [], "import cycles between project modules (break the back-edge with a narrow Protocol)"


@pytest.mark.parametrize("package", ["relay", "cli", "core", "agent"])
def test_these_packages_have_no_cycle_at_all(package: str) -> None:
    assert [sorted(c) for c in cycles(graph()) if any(m.startswith(package + ".") for m in c)] == []


@pytest.mark.parametrize(("importer", "imported_package"), [("agent", "relay"), ("relay", "agent")])
def test_agent_and_relay_never_import_each_other(importer: str, imported_package: str) -> None:
    edges = graph()
    crossing = sorted(f"{name} -> {target}" for name, targets in edges.items() if name.split(".")[0] == importer
                      for target in targets if target.split(".")[0] == imported_package)
    assert crossing == []


def test_only_the_runner_and_the_entry_point_import_the_backend() -> None:
    # The backend split: pairing, forget, doctor, the local API take narrow Protocols, never the backend.
    edges = graph()
    assert sorted(m for m, deps in edges.items() if "agent.backend" in deps) == ["agent.main", "agent.runner"]
