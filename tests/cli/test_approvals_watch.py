"""``approvals --watch`` against a scripted agent: it follows the agent across restarts and closes the
prompt of a request that is gone. Each watch connection plays a script in the stream thread; the test
drives stdin through a pipe and waits on what the CLI prints (events, never sleeps)."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from hermes_relay.cli import approvals_watch
from hermes_relay.cli.client import AgentCalls
from hermes_relay.cli.main import invoke
from hermes_relay.core.errors import AgentNotRunningError, IpcError

URL = "ws://192.168.1.5:8767"
PROMPT = approvals_watch.PROMPT


def requested(pid: str, tool: str = "desktop_terminal") -> tuple[str, dict[str, Any]]:
    return ("approval", {"event": "approval.requested", "id": pid, "url": URL, "tool": tool, "capability": "commands",
                         "preview": "uname -a", "reason": "", "request_id": "r", "created_at": 1.0,
                         "expires_at": 1_800_000_022.0})


def resolved(pid: str, outcome: str) -> tuple[str, dict[str, Any]]:
    return ("approval", {"event": "approval.resolved", "id": pid, "outcome": outcome, "tool": "desktop_terminal",
                         "url": URL})


class Screen(io.StringIO):
    """stdout that lets the test wait for text to appear."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = threading.Condition()

    def write(self, text: str) -> int:
        with self.changed:
            n = super().write(text)
            self.changed.notify_all()
            return n

    def wait_for(self, text: str, count: int = 1, timeout: float = 10.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.getvalue().count(text) >= count, timeout), \
                f"{text!r} x{count} not shown; screen:\n{self.getvalue()}"


class Scripted:
    """One script per watch connection: a callable(on_notify) that returns (stream ended) or raises (agent gone).
    ``down`` connection attempts fail as if no agent were running, before each scripted connection but the first."""

    def __init__(self, scripts: list[Callable[[Any], None]], *, down: int = 0):
        self.scripts = scripts
        self.down = down
        self.connects: list[bool] = []
        self.decided: list[dict[str, Any]] = []

    def connect(self, env: Any, *, autostart: bool, stderr: Any) -> Any:
        self.connects.append(autostart)
        if len(self.connects) > 1 and self.down > 0:
            self.down -= 1
            raise AgentNotRunningError("/fake/agent.sock")
        agent = self

        class Client(AgentCalls):  # the real client's typed methods over this script
            def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: Any = None,
                     on_notify: Any = None) -> Any:
                if method == "watch":
                    script = agent.scripts.pop(0)
                    return script(on_notify)
                assert method == "approvals.decide"
                agent.decided.append(dict(params or {}))
                return {"id": params["id"], "approved": params["approve"], "always": False,  # type: ignore[index]
                        "tool": "desktop_terminal", "url": URL, "capability": "commands"}

            def close(self) -> None:
                pass

        return Client()


def run_watch(env: dict[str, str], agent: Scripted, stdin: Any, out: Screen) -> tuple[threading.Thread, list[int]]:
    code: list[int] = []

    def main() -> None:
        code.append(invoke(["approvals", "--watch"], stdout=out, stderr=out, env=env, stdin=stdin,
                           connect=agent.connect, now=lambda: 1_800_000_000.0))

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    return thread, code


def play(*steps: Any, then: BaseException | None = None) -> Callable[[Any], None]:
    """A watch connection: each step is an (method, params) notify or a callable to wait on; then end or raise."""
    def script(on_notify: Any) -> None:
        for step in steps:
            if callable(step):
                step()
            else:
                on_notify(*step)
        if then is not None:
            raise then

    return script


@pytest.fixture
def pipe() -> Any:
    r, w = os.pipe()
    reader, writer = os.fdopen(r, "r"), os.fdopen(w, "w")
    yield reader, writer
    for f in (writer, reader):  # the writer first: a reader blocked in readline gets EOF and lets go
        try:
            f.close()
        except OSError:
            pass


@pytest.fixture
def quick_answers(monkeypatch) -> None:
    """The test types at once; a person needs longer than the stale-answer window to read a new request."""
    monkeypatch.setattr(approvals_watch, "STALE_ANSWER_WINDOW", 0.0)


def test_the_watch_follows_the_agent_across_a_restart(env, pipe, quick_answers) -> None:
    stdin, keys = pipe
    out = Screen()
    gone = IpcError("the agent closed the connection")
    agent = Scripted([play(requested("aaaa0001"), then=gone), play(requested("bbbb0002"))], down=2)
    thread, code = run_watch(env, agent, stdin, out)
    out.wait_for("agent restarted; watching again")
    out.wait_for("id bbbb0002")
    keys.write("y\n")
    keys.flush()
    out.wait_for("approved bbbb0002")
    keys.close()
    thread.join(10)
    assert code == [0]
    text = out.getvalue()
    assert PROMPT + "gone with the agent (it did not run)" in text
    assert "the agent went away (the agent closed the connection); waiting for it to come back" in text
    assert agent.decided == [{"id": "bbbb0002", "approve": True}]  # never the request lost with the old agent
    assert agent.connects[0] is True and not any(agent.connects[1:])  # reconnects never start an agent


def test_an_expired_request_closes_its_prompt_and_the_next_one_is_asked(env, pipe, quick_answers) -> None:
    stdin, keys = pipe
    out = Screen()
    agent = Scripted([play(requested("aaaa0001"), lambda: out.wait_for(PROMPT),  # its prompt is open
                           resolved("aaaa0001", "expired"), requested("bbbb0002"))])
    thread, code = run_watch(env, agent, stdin, out)
    out.wait_for("id bbbb0002")
    keys.write("n\n")
    keys.flush()
    out.wait_for("denied bbbb0002")
    keys.close()
    thread.join(10)
    assert code == [0]
    assert PROMPT + "expired (nobody answered in time; it did not run)" in out.getvalue()
    assert agent.decided == [{"id": "bbbb0002", "approve": False}]


def test_an_answer_typed_for_an_expired_request_is_not_taken_for_the_next(env, pipe, monkeypatch) -> None:
    monkeypatch.setattr(approvals_watch, "STALE_ANSWER_WINDOW", 60.0)
    stdin, keys = pipe
    out = Screen()
    agent = Scripted([play(requested("aaaa0001"), lambda: out.wait_for(PROMPT),
                           resolved("aaaa0001", "expired"), requested("bbbb0002"))])
    thread, code = run_watch(env, agent, stdin, out)
    out.wait_for("id bbbb0002")
    keys.write("y\n")  # meant for aaaa0001: arrives right after bbbb0002 was shown
    keys.flush()
    out.wait_for("typed for the request that expired")
    keys.write("n\n")
    keys.flush()
    out.wait_for("denied bbbb0002")
    keys.close()
    thread.join(10)
    assert code == [0]
    assert agent.decided == [{"id": "bbbb0002", "approve": False}]


def test_the_first_connection_failing_is_an_error_as_before(cli, make_agent) -> None:
    agent = make_agent(running=False)
    result = cli("--no-autostart", "approvals", "--watch", agent=agent)
    assert result.code == 3
