"""No import cycles between the project's modules (agent/, cli/, core/): every import counts, at any depth,
including those under ``if TYPE_CHECKING:`` and inside functions; and agent and relay never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import hermes_relay

ROOT = Path(hermes_relay.__file__).resolve().parent
PACKAGE = "hermes_relay"
CHECKED = ("agent", "cli", "core")

# Cycles other work removes (issue 19): a listed group may still hold a cycle among its own members, but no
# module outside it may join one, and none may be added. Remove a group once it is untied.
KNOWN_CYCLES: tuple[frozenset[str], ...] = (
    # agent/desktop/channel.py <-> service.py (being rewritten separately).
    frozenset({"agent.desktop.channel", "agent.desktop.service"}),
    # cli/access_apply.py <-> cli/commands/access.py (function-level imports both ways; the CLI's to untie).
    frozenset({"cli.access_apply", "cli.commands.access"}),
    # cli/service/manager.py <-> plan.py (issue 19 item 4).
    frozenset({"cli.service.manager", "cli.service.plan"}),
)


def _modules(tops: tuple[str, ...]) -> dict[str, Path]:
    found = {}
    for top in tops:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its source (names relative to the package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([PACKAGE, *base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}"[len(PACKAGE) + 1:] in known else module
                       for a in node.names]
        else:
            continue
        out.update(t[len(PACKAGE) + 1:] for t in targets if t.startswith(PACKAGE + ".") and t[len(PACKAGE) + 1:] in known)
    out.discard(name)
    return out


def _graph(tops: tuple[str, ...]) -> dict[str, set[str]]:
    mods = _modules(tops)
    return {name: _imports(path, name, set(mods)) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(frozenset(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_sees_a_cycle_and_only_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_counts_type_checking_and_function_level_imports() -> None:
    graph = _graph(CHECKED)
    assert "agent.ipc_server" in graph["agent.handlers"]  # a module-level import
    assert "core.apitypes" in graph["cli.client"]  # under TYPE_CHECKING
    assert "cli._winpipe" in graph["cli.client"]  # inside a function


def test_no_import_cycle_outside_the_known_groups() -> None:
    for group in cycles(_graph(CHECKED)):
        assert any(group <= known for known in KNOWN_CYCLES), f"import cycle: {sorted(group)}"


def test_the_agent_modules_import_no_agent_back() -> None:
    """The agent's operations take narrow Protocols, never the Agent: nothing in agent/ is in a cycle."""
    assert [sorted(g) for g in cycles(_graph(("agent",))) if "agent.desktop.channel" not in g] == []
    graph = _graph(("agent",))
    assert sorted(m for m, deps in graph.items() if "agent.app" in deps) == ["agent.main", "agent.runner"]


def test_agent_and_relay_never_import_each_other() -> None:
    graph = _graph(("agent", "relay"))
    crossing = sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps if a.split(".")[0] != b.split(".")[0])
    assert crossing == []
