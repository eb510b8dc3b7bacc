"""CLI test fixtures: an isolated environment, an in-process runner and a scripted fake agent; for the shell,
a fake agent on the real IPC socket and the real CLI on a pty (``shell_agent``, ``shell_on_pty``).

Every test gets HOME, HERMES_HOME and HERMES_RELAY_RUNTIME_DIR under ``tmp_path``, so nothing reads or
writes the real home and no real agent is ever found. ``cli(...)`` runs ``invoke`` with StringIO
streams and a fixed clock; a test that passes no ``agent`` gets a connection that fails the test if
the command tries to reach the agent at all (validation must happen first).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from shell_fake import FakeShellAgent
from shell_pty import Terminal, shell_argv

from hermes_relay.cli.client import AgentCalls
from hermes_relay.cli.main import invoke
from hermes_relay.core import apitypes, paths
from hermes_relay.core.errors import AgentNotRunningError

NOW = 1_800_000_000.0


@dataclass
class Result:
    code: int
    out: str
    err: str


class FakeTTY(io.StringIO):
    """A StringIO that says it is a terminal (for the pairing prompt)."""

    def isatty(self) -> bool:
        return True


class FakeClient(AgentCalls):
    """The real client's typed methods over scripted answers; every answer must fit the IPC types."""

    def __init__(self, agent: FakeAgent):
        self.agent = agent
        self.hello = dict(agent.hello)
        self.path = "/fake/agent.sock"

    def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = 30.0,
             on_notify: Any = None) -> Any:
        self.agent.calls.append((method, dict(params or {}), timeout))
        for notify_method, notify_params in self.agent.notifies.get(method, []):
            assert on_notify is not None, f"{method} streams notifies but the CLI passed no on_notify"
            if notify_method in apitypes.NOTIFIES:
                assert not apitypes.check(notify_params, apitypes.NOTIFIES[notify_method], partial=True,
                                          where=notify_method)
            on_notify(notify_method, notify_params)
        result = self.agent.results[method]
        if callable(result):  # answers that depend on the params
            result = result(dict(params or {}))
        if isinstance(result, BaseException):
            raise result
        if method in apitypes.METHODS:
            problems = apitypes.check(result, apitypes.METHODS[method][1], partial=True, where=method)
            assert not problems, f"the fake's {method} reply does not fit core/apitypes.py: {problems}"
        return result

    def close(self) -> None:
        self.agent.closed += 1

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class FakeAgent:
    """Scripted answers per method; records every call and every connection's autostart flag."""

    results: dict[str, Any] = field(default_factory=dict)
    notifies: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    hello: dict[str, Any] = field(default_factory=lambda: {"api_version": 1, "agent_version": "0.1.0",
                                                          "pid": None, "started_at": NOW - 3 * 3600})
    calls: list[tuple[str, dict[str, Any], float | None]] = field(default_factory=list)
    autostarts: list[bool] = field(default_factory=list)
    running: bool = True
    closed: int = 0

    def connect(self, env: Any, *, autostart: bool, stderr: Any) -> FakeClient:
        self.autostarts.append(autostart)
        if not self.running:
            if not autostart:
                raise AgentNotRunningError("/fake/agent.sock")
            self.running = True
        return FakeClient(self)

    def methods(self) -> list[str]:
        return [c[0] for c in self.calls]


def _no_agent(env: Any, *, autostart: bool, stderr: Any) -> Any:
    raise AssertionError("the command contacted the agent before validating its input")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    home = tmp_path / "home"
    home.mkdir()
    # Unix socket paths are short (108 bytes): keep the runtime dir out of the deep tmp_path.
    run = Path(tempfile.mkdtemp(prefix="hr-cli-"))
    yield {"HOME": str(home), "HERMES_HOME": str(home / ".hermes"), "HERMES_RELAY_RUNTIME_DIR": str(run),
           "PATH": "/usr/bin:/bin"}
    for child in sorted(run.rglob("*"), reverse=True):
        child.unlink() if not child.is_dir() else child.rmdir()
    run.rmdir()


@pytest.fixture
def cli(env: dict[str, str]) -> Any:
    def run(*argv: str, agent: FakeAgent | None = None, real_client: bool = False, stdin: io.StringIO | None = None,
            now: float = NOW, environ: dict[str, str] | None = None) -> Result:
        """``real_client=True`` uses the real IPC client (which finds no agent in this environment)."""
        out, err = io.StringIO(), io.StringIO()
        connect = None if real_client else agent.connect if agent is not None else _no_agent
        code = invoke(list(argv), stdout=out, stderr=err, env=environ if environ is not None else env,
                      stdin=stdin if stdin is not None else io.StringIO(), connect=connect, now=lambda: now)
        return Result(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture
def make_agent() -> Any:
    """``make_agent(results={...}, notifies={...}, running=True, hello={...})`` -> FakeAgent."""
    return FakeAgent


@pytest.fixture
def tty() -> Any:
    """``tty("F3W7EY\\n")``: a stdin that claims to be a terminal."""
    return FakeTTY


@pytest.fixture
def shell_agent(env: dict[str, str]) -> Iterator[FakeShellAgent]:
    """A fake agent listening on the environment's IPC socket (tests/shell_fake.py)."""
    fake = FakeShellAgent(paths.socket_path(env))
    fake.listen()
    yield fake
    fake.close()


@pytest.fixture
def shell_on_pty(env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """``shell_on_pty(*args, extra_env=None, cols=, rows=, stdin=)``: `hermes-relay shell --no-autostart args` on a
    pty (tests/shell_pty.py); every one is closed after the test."""
    opened: list[Terminal] = []

    def start(*args: str, extra_env: dict[str, str] | None = None, **kw: Any) -> Terminal:
        sh = Terminal(shell_argv("--no-autostart", *args), {**env, **(extra_env or {})}, tmp_path / "shell.err", **kw)
        opened.append(sh)
        return sh

    yield start
    for sh in opened:
        sh.close()
