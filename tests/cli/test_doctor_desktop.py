"""``doctor``'s desktop section: which notifier shows waiting approvals, and what happens without one."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from hermes_relay import __version__
from hermes_relay.agent.desktop import notify

NOW = 1_800_000_000.0
HELLO = {"api_version": 1, "agent_version": __version__, "pid": 1, "started_at": NOW}


def desktop_check(cli: Any, make_agent: Any, info: dict[str, Any]) -> dict[str, Any]:
    agent = make_agent(results={"doctor": {"netwatch": {"backend": "netlink"}, "relays": [],
                                           "desktop": {"notify": info}}}, hello=HELLO)
    report = json.loads(cli("doctor", "--json", agent=agent).out)
    return {c["id"]: c for c in report["checks"]}["desktop.notify"]


def test_the_notifier_the_agent_uses_is_reported(cli, make_agent) -> None:
    check = desktop_check(cli, make_agent, {"program": "notify-send", "disabled": None})
    assert check["status"] == "ok" and check["summary"] == "desktop notifications for approvals: notify-send"


def test_without_a_notifier_doctor_says_where_approvals_show(cli, make_agent) -> None:
    check = desktop_check(cli, make_agent, {"program": None, "disabled": None})
    assert check["status"] == "warn"
    assert "approvals --watch" in check["detail"] and "[LAN !1]" in check["detail"]
    assert "notify-send" in check["fix"]
    off = desktop_check(cli, make_agent, {"program": None, "disabled": "HERMES_RELAY_NOTIFY=0"})
    assert off["summary"] == "desktop notifications are off (HERMES_RELAY_NOTIFY=0)"
    assert off["fix"].startswith("unset HERMES_RELAY_NOTIFY")


def test_the_text_view_has_a_desktop_section(cli, make_agent) -> None:
    agent = make_agent(results={"doctor": {"netwatch": {"backend": "netlink"}, "relays": [],
                                           "desktop": {"notify": {"program": None, "disabled": None}}}}, hello=HELLO)
    out = cli("doctor", agent=agent).out
    section = out.split("Desktop\n", 1)[1].split("\n\n", 1)[0]
    assert section.splitlines()[0] == "  ! no desktop notifier found (notify-send, osascript)"


@pytest.mark.skipif(os.name != "posix" or sys.platform == "darwin", reason="a shell-script stand-in for notify-send")
def test_the_agent_reports_the_notifier_on_its_path(tmp_path: Path) -> None:
    assert notify.notifier({"PATH": str(tmp_path)}) == {"program": None, "disabled": None}
    fake = tmp_path / "notify-send"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    assert notify.notifier({"PATH": str(tmp_path)})["program"] == "notify-send"
    assert notify.notifier({"PATH": str(tmp_path), "HERMES_RELAY_NOTIFY": "0"}) == \
        {"program": None, "disabled": "HERMES_RELAY_NOTIFY=0"}
