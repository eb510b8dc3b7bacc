"""Blocking I/O cannot starve the agent, end to end: content searches over FIFOs (which used to hold a
thread, and trio's default limiter token, forever) leave the agent answering tool calls and pairing."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from procs import AgentEnv, RelayProc, wait_state
from test_desktop_e2e import access, call, served

pytestmark = pytest.mark.integration


def test_fifo_searches_leave_tool_calls_and_pairing_working(
        make_relay: Callable[..., RelayProc], make_agent_env: Callable[..., AgentEnv], tmp_path: Path) -> None:
    home = tmp_path / "u"
    work = home / "work"
    work.mkdir(parents=True)
    for n in range(3):
        os.mkfifo(work / f"pipe{n}")  # nobody ever writes: an open() for reading would block for good
    (work / "notes.txt").write_text("needle\n")
    relay = make_relay("relay")
    env = make_agent_env(HOME=str(home), HERMES_HOME=str(home / ".hermes"))
    env.pair(relay)
    wait_state(env, lambda s: s["state"] == "connected")
    access(env, relay, "trusted")
    served(relay, "desktop_search_files")

    answers: list[dict] = []

    def search() -> None:
        answers.append(call(relay, "desktop_search_files", {"pattern": "needle", "cwd": str(work), "content": True})[1])

    threads = [threading.Thread(target=search) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == 50 and all(a.get("ok") for a in answers), [a for a in answers if not a.get("ok")][:2]
    assert all(a["result"]["matches"] == [str(work / "notes.txt")] for a in answers), answers[0]

    status, body = call(relay, "desktop_read_file", {"path": str(work / "notes.txt")})
    # A starved agent never answers: the relay would say 504 after its 30 s timeout (the call waits 40 s).
    assert status == 200 and body["ok"] is True and body["result"] == "needle\n", body

    second = make_relay("second")  # pairing uses worker threads too (store lock and writes)
    result = env.pair(second)
    assert result["url"] == second.url
