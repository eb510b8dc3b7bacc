"""``approvals``, ``access`` and ``audit``: golden output against a scripted agent and real files."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from hermes_relay.cli import render
from hermes_relay.cli.commands import audit as audit_cmd
from hermes_relay.core import policy
from hermes_relay.core.errors import NotFoundError

NOW = 1_800_000_000.0
URL = "ws://192.168.1.5:8767"
PENDING = {"id": "a1b2c3d4", "url": URL, "tool": "desktop_terminal", "capability": "commands",
           "preview": "uname -a", "reason": "Run desktop_terminal", "request_id": "r-1",
           "created_at": NOW - 5, "expires_at": NOW + 22}


# -- approvals -------------------------------------------------------------------------------------
def test_approvals_list_golden(cli, make_agent) -> None:
    agent = make_agent(results={"approvals.list": {"approvals": [PENDING]}})
    result = cli("approvals", agent=agent)
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "  ID        TOOL              RELAY                  EXPIRES  WHAT",
        f"  a1b2c3d4  desktop_terminal  {URL}  in 22s   uname -a",
        "",
        "answer: hermes-relay approvals approve ID [--always] | deny ID [--reason TEXT]",
    ]
    assert cli("approvals", "list", agent=make_agent(results={"approvals.list": {"approvals": []}})).out == \
        "(no desktop calls waiting for approval)\n"


def test_approve_always_and_deny_with_reason(cli, make_agent) -> None:
    decided = {"id": "a1b2c3d4", "approved": True, "always": True, "tool": "desktop_terminal", "url": URL,
               "capability": "commands"}
    agent = make_agent(results={"approvals.decide": decided})
    result = cli("approvals", "approve", "a1b2c3d4", "--always", agent=agent)
    assert result.code == 0, result.err
    assert agent.calls[-1][:2] == ("approvals.decide", {"id": "a1b2c3d4", "approve": True, "always": True})
    assert result.out.splitlines() == [
        f"✓ approved a1b2c3d4 (desktop_terminal for {URL})",
        f"  commands is now allowed for {URL} (see `hermes-relay access`)",
    ]
    agent = make_agent(results={"approvals.decide": {**decided, "approved": False, "always": False}})
    result = cli("approvals", "deny", "a1b2c3d4", "--reason", "not on a Friday", agent=agent)
    assert agent.calls[-1][1] == {"id": "a1b2c3d4", "approve": False, "reason": "not on a Friday"}
    assert result.out == f"✗ denied a1b2c3d4 (desktop_terminal for {URL})\n"


def test_a_late_approval_is_an_error_and_bad_ids_never_reach_the_agent(cli, make_agent) -> None:
    agent = make_agent(results={"approvals.decide": NotFoundError("no pending approval 'a1b2c3d4': it expired",
                                                                  hint="see the pending ones with `hermes-relay approvals`")})
    result = cli("approvals", "approve", "a1b2c3d4", agent=agent)
    assert result.code == 1
    assert "expired" in result.err and "hint:" in result.err
    bad = cli("approvals", "approve", "../../x")
    assert bad.code == 2 and "not an approval id" in bad.err
    assert cli("approvals", "deny", "a1b2c3d4", "--reason", " ").code == 2
    assert cli("approvals", "--watch", "approve", "x").code == 2


def test_approvals_watch_prompts_and_answers(cli, make_agent) -> None:
    second = {**PENDING, "id": "e5f6a7b8", "tool": "desktop_write_file", "capability": "files", "preview": "/tmp/x"}

    def decide(params: dict) -> dict:
        tool = "desktop_terminal" if params["id"] == "a1b2c3d4" else "desktop_write_file"
        return {"id": params["id"], "approved": params["approve"], "always": False, "tool": tool, "url": URL,
                "capability": "commands"}

    agent = make_agent(
        results={"watch": None, "approvals.decide": decide},
        notifies={"watch": [
            ("state", {"url": URL, "state": "connected"}),
            ("approval", {"event": "approval.requested", **PENDING}),
            ("approval", {"event": "approval.requested", **second}),  # waits for its turn
            ("approval", {"event": "approval.resolved", "id": "ffff0000", "outcome": "expired"}),
        ]})
    result = cli("approvals", "--watch", agent=agent, stdin=io.StringIO("maybe\ny\nn\n"))
    assert result.code == 0, result.err
    assert [c[:2] for c in agent.calls if c[0] == "approvals.decide"] == [
        ("approvals.decide", {"id": "a1b2c3d4", "approve": True}),
        ("approvals.decide", {"id": "e5f6a7b8", "approve": False})]
    assert agent.calls[0] == ("watch", {}, None)
    prompt = "allow? [y]es / [n]o / [a]lways (this capability, for this host): "  # always is per capability
    out = result.out.replace("\n  ffff0000: expired\n" + prompt, "")  # wherever it landed: it is about another request
    assert "  ffff0000: expired" in result.out
    assert out.splitlines() == [
        "waiting for desktop calls that need your approval (Ctrl-C to stop)",
        f"{URL} wants to run desktop_terminal (commands)",
        "  uname -a",
        "  reason: Run desktop_terminal",
        "  id a1b2c3d4, expires in 22s",
        prompt + prompt + f"  ✓ approved a1b2c3d4 (desktop_terminal for {URL})",
        f"{URL} wants to run desktop_write_file (files)",
        "  /tmp/x",
        "  reason: Run desktop_terminal",
        "  id e5f6a7b8, expires in 22s",
        prompt + f"  ✗ denied e5f6a7b8 (desktop_write_file for {URL})",
    ]


def test_desktop_status_lines() -> None:
    summary = {"tools_advertised": 18, "policy": "trusted", "policy_label": "trusted", "calls_today": 4, "policy_error": None,
               "last_call": {"tool": "desktop_terminal", "ok": True, "ts": NOW - 120}, "pending_approvals": 1}
    assert render.desktop_status_lines(summary, NOW) == [
        "trusted · 18 tools · 4 calls today · last desktop_terminal ✓ 2m ago",
        "1 call(s) waiting for approval: hermes-relay approvals",
    ]
    assert render.desktop_status_lines({"policy": "ask", "policy_label": "restricted", "tools_advertised": 0, "calls_today": 0}, NOW) == [
        "restricted · 0 tools · 0 calls today"]
    assert render.desktop_status_lines(None, NOW) == []


# -- audit -----------------------------------------------------------------------------------------
@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


RECORDS = [
    {"ts": int(NOW * 1000), "kind": "connection.state", "tool": "agent.connected", "host_url": URL},
    {"ts": int(NOW * 1000) + 1000, "kind": "tool.completed", "tool": "desktop_terminal", "category": "command",
     "ok": True, "request_id": "r-1", "host_url": URL, "duration_ms": 14, "exit_code": 0, "args_preview": "uname -a"},
    {"ts": int(NOW * 1000) + 2000, "kind": "tool.completed", "tool": "desktop_terminal", "category": "command",
     "ok": False, "aborted": True, "request_id": "r-2", "host_url": URL, "duration_ms": 30000,
     "args_preview": "sleep 99", "error": "aborted"},
]


def _write_audit(env: dict[str, str], records: list[dict], name: str = "desktop-audit.jsonl") -> Path:
    path = Path(env["HERMES_HOME"]) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def test_audit_golden(cli, env, utc) -> None:
    _write_audit(env, RECORDS[:1], "desktop-audit.jsonl.1")
    path = _write_audit(env, RECORDS[1:])
    with path.open("a") as f:
        f.write('{"cut mid-line\n')
    result = cli("audit")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        f"2027-01-15 08:00:00  · agent.connected  {URL}",
        f"2027-01-15 08:00:01  ✓ desktop_terminal  14 ms  {URL}  uname -a",
        f"2027-01-15 08:00:02  ⏱ desktop_terminal  30000 ms  {URL}  sleep 99  error: aborted",
    ]
    assert len(cli("audit", "-n", "1").out.splitlines()) == 1
    as_json = [json.loads(line) for line in cli("audit", "--json", "-n", "2").out.splitlines()]
    assert [r["request_id"] for r in as_json] == ["r-1", "r-2"]
    assert cli("audit", "-n", "-1").code == 2


def test_audit_skips_a_rotated_part_it_cannot_read(cli, env, utc) -> None:
    (Path(env["HERMES_HOME"]) / "desktop-audit.jsonl.1").mkdir(parents=True)  # not a file: unreadable
    _write_audit(env, RECORDS[1:2])
    result = cli("audit")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [f"2027-01-15 08:00:01  ✓ desktop_terminal  14 ms  {URL}  uname -a"]


def test_audit_without_a_log(cli, env) -> None:
    result = cli("audit")
    assert result.code == 0 and result.out.startswith("(no desktop calls recorded yet in ")


def test_audit_follow_prints_new_records_across_a_rotation(cli, env, utc, monkeypatch) -> None:
    path = _write_audit(env, RECORDS[:1])
    steps = iter([
        lambda: _write_audit(env, RECORDS[1:2]),
        lambda: (path.rename(path.with_name(path.name + ".1")), _write_audit(env, RECORDS[2:3])),
        lambda: None,
    ])

    def fake_sleep(seconds: float) -> None:
        step = next(steps, None)
        if step is None:
            raise KeyboardInterrupt
        step()

    monkeypatch.setattr(audit_cmd, "_sleep", fake_sleep)
    result = cli("audit", "-f")
    assert result.code == 130
    assert [line.split("  ")[1] for line in result.out.splitlines()] == [
        "· agent.connected", "✓ desktop_terminal", "⏱ desktop_terminal"]


def test_policy_module_path_override(env) -> None:
    assert policy.policy_file({**env, "HERMES_RELAY_HOST_ACCESS_POLICY_PATH": "/x/p.json"}) == Path("/x/p.json")
