"""Import rules (house style B2): core stays pure, and the CLI never pays for importing trio."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import hermes_relay.core

FORBIDDEN_IN_CORE = frozenset({"trio", "trio_websocket", "netifaces"})
CORE_DIR = Path(hermes_relay.core.__file__).parent
_cli_spec = importlib.util.find_spec("hermes_relay.cli")
assert _cli_spec is not None and _cli_spec.submodule_search_locations
CLI_DIR = Path(next(iter(_cli_spec.submodule_search_locations)))


def forbidden_imports(source: str, filename: str = "<source>") -> list[str]:
    """``line: module`` for every import, at any depth, whose top-level package is forbidden."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{node.lineno}: {name}" for name in names if name.split(".")[0] in FORBIDDEN_IN_CORE]
    return found


@pytest.mark.parametrize(
    ("source", "hits"),
    [
        ("import trio", ["1: trio"]),
        ("import os, trio.lowlevel as ll", ["1: trio.lowlevel"]),
        ("from trio_websocket import open_websocket_url", ["1: trio_websocket"]),
        ("def f():\n    import netifaces\n", ["2: netifaces"]),
        ("try:\n    pass\nexcept ImportError:\n    from trio import sleep\n", ["4: trio"]),
        ("import triodb\nimport msgpack\nfrom . import trio\nfrom hermes_relay.core import framing", []),
    ],
)
def test_the_import_checker_finds_nested_and_dotted_imports(source: str, hits: list[str]) -> None:
    assert forbidden_imports(source) == hits


def test_core_modules_exist_where_we_look() -> None:
    assert (CORE_DIR / "framing.py").is_file()
    assert len(list(CORE_DIR.glob("*.py"))) >= 10


@pytest.mark.parametrize("module", sorted(CORE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_core_imports_no_trio_or_netifaces(module: Path) -> None:
    assert forbidden_imports(module.read_text(encoding="utf-8"), str(module)) == []


@pytest.mark.parametrize(
    "module",
    ["hermes_relay.cli.client", "hermes_relay.cli.main", "hermes_relay.cli.commands.shell",
     "hermes_relay.cli.commands.sessions", "hermes_relay.cli.shellsession"],
)
def test_cli_import_does_not_load_trio(module: str, tmp_path: Path) -> None:
    code = f"import {module}, sys; assert 'trio' not in sys.modules, sorted(m for m in sys.modules if m.startswith('trio'))"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# The hot paths (house style: start-up is a feature). Each lists every module the command may add
# to what the interpreter loaded at start; anything else (pathlib, json, typing, argparse, socket,
# the store, another command's module) is a regression this test names.
_HOT_BASE = {
    "__future__", "hermes_relay", "hermes_relay.cli", "hermes_relay.cli.main", "hermes_relay.cli.commands",
    "hermes_relay.cli.context", "hermes_relay.cli.render", "hermes_relay.core", "hermes_relay.core.errors",
    "hermes_relay.core.paths", "hermes_relay.core.timefmt", "hermes_relay.core.wire", "math",
}
_MSGPACK = {"msgpack", "msgpack.exceptions", "msgpack.ext", "msgpack._cmsgpack", "msgpack.fallback", "datetime",
            "_datetime", "collections", "_collections", "keyword", "operator", "_operator", "reprlib", "itertools",
            "math", "_struct", "struct", "cython_runtime"}
HOT_PATH_ALLOWED = {
    "route": _HOT_BASE | {"hermes_relay.cli.commands.route"},
    "status": _HOT_BASE | _MSGPACK | {"hermes_relay.cli.commands.status", "hermes_relay.cli.client", "_socket",
                                      "errno", "hermes_relay.core.api", "hermes_relay.core.rpc",
                                      "hermes_relay.core.framing", "hermes_relay.core.ownership"},
}

_HOT_PROBE = r"""
import os, sys, io
before = set(sys.modules)
from hermes_relay.cli.main import invoke

class Agent:
    def __enter__(self): return self
    def __exit__(self, *exc): pass
    def status(self, **kw):
        live = {"url": "ws://h:1", "state": "connected", "route": {"url": "ws://h:1", "role": "lan", "label": "LAN",
                "priority": 0}, "since": 1.0, "latency_ms": 2.0, "attempts": 0, "last_error": None,
                "next_retry_at": None, "routes": [], "server_version": "1",
                "desktop": {"tools_advertised": 18, "policy": "trusted", "policy_label": "trusted", "policy_error": None, "calls_today": 2,
                            "last_call": {"tool": "desktop_terminal", "ok": True, "ts": 2.0}, "pending_approvals": 0}}
        return {"agent": {"pid": 1, "version": "1", "started_at": 1.0, "store_error": None}, "relays": [live],
                "paired": [{"url": "ws://h:1", "record": {"token": "(redacted)", "paired_at": 1.0,
                            "ttl_expires_at": 9e9, "grants": {"chat": None}, "endpoint_role": "lan"},
                            "live": live, "alternates": ["ws://h:1"], "role_label": "LAN"}]}

out = io.StringIO()
code = invoke(sys.argv[1:], stdout=out, stderr=out, connect=lambda env, **kw: Agent())
assert code == 0, out.getvalue()
print("\n".join(sorted(set(sys.modules) - before)))
"""


@pytest.mark.parametrize("argv", sorted(HOT_PATH_ALLOWED))
def test_hot_paths_import_only_their_listed_modules(argv: str, tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "HERMES_HOME": str(tmp_path / "h"), "HERMES_RELAY_RUNTIME_DIR": str(tmp_path / "r"),
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", _HOT_PROBE, argv], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    loaded = {name for name in done.stdout.split() if not name.startswith("_cython_")}  # msgpack's runtime
    assert f"hermes_relay.cli.commands.{argv}" in loaded  # the probe ran the command
    assert loaded - HOT_PATH_ALLOWED[argv] == set()


PACKAGE_ROOT = CORE_DIR.parent
WEBSOCKET_BOUNDARY = {PACKAGE_ROOT / "agent" / "transport.py"}


def imports_of(source: str, filename: str, package: str) -> list[str]:
    """``line: module`` for every import of top-level package ``package``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{node.lineno}: {name}" for name in names if name.split(".")[0] == package]
    return found


def _package_modules() -> list[Path]:
    """Every module of the package (the relay serves WebSockets with wsproto itself, relay/ws.py)."""
    found: set[Path] = set()
    for name in ("agent", "cli", "core", "packaging", "relay"):
        if (PACKAGE_ROOT / name).is_dir():
            found.update((PACKAGE_ROOT / name).rglob("*.py"))
    return sorted(found)


def test_the_websocket_library_is_found_where_it_is_used() -> None:
    transport = (PACKAGE_ROOT / "agent" / "transport.py").read_text(encoding="utf-8")
    assert imports_of(transport, "transport.py", "trio_websocket")
    assert len(_package_modules()) >= 40


@pytest.mark.parametrize("module", _package_modules(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_only_the_agents_transport_imports_trio_websocket(module: Path) -> None:
    """One error boundary: trio_websocket's exceptions never reach code above agent/transport.py, and the
    relay does not use it at all (its connections are relay/ws.py's)."""
    if module in WEBSOCKET_BOUNDARY:
        return
    assert imports_of(module.read_text(encoding="utf-8"), str(module), "trio_websocket") == []


def test_the_relay_host_subcommands_load_no_server(tmp_path: Path) -> None:
    """`hermes-relay-server call|sessions` are blocking HTTP clients: no trio, WebSocket or TLS stack."""
    code = ("import sys, hermes_relay.relay.main, hermes_relay.relay.call_cmd, hermes_relay.relay.sessions_cmd; "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'trio_websocket', 'cryptography')); "
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
