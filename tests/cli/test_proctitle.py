"""cli/proctitle.py: who counts as another user who could read the process list."""

from __future__ import annotations

import os
from pathlib import Path

from hermes_relay.cli import proctitle


def _fake_proc(tmp_path: Path, owner: int) -> Path:
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "self").mkdir()  # not a pid: ignored
    if os.geteuid() == 0:
        os.chown(proc / "4242", owner, owner)
    return proc


def test_a_process_of_another_human_uid_counts_and_system_accounts_do_not(tmp_path) -> None:
    other = 1234 if os.geteuid() == 0 else os.getuid()
    proc = _fake_proc(tmp_path, other)
    owner = (proc / "4242").stat().st_uid
    assert proctitle.other_users_present(str(proc), me=owner + 1) is (owner >= proctitle.HUMAN_UID_MIN)
    assert proctitle.other_users_present(str(proc), me=owner) is False  # only me
    assert proctitle.other_users_present(str(tmp_path / "missing"), me=0) is False
    assert proctitle._is_other_human(1001, 1000) and not proctitle._is_other_human(0, 1000)
    assert not proctitle._is_other_human(65534, 1000) and not proctitle._is_other_human(1000, 1000)


def test_scrub_without_a_match_changes_nothing() -> None:
    assert proctitle.scrub(["NOT-IN-MY-ARGV-7Q2"]) is False
    assert proctitle.scrub([]) is False


def test_pair_warns_when_other_users_could_have_seen_the_code(cli, make_agent, monkeypatch) -> None:
    monkeypatch.setattr(proctitle, "other_users_present", lambda: True)  # another user logging in: not causable here
    agent = make_agent(results={"pair.start": {"url": "ws://h:8767", "expires_at": None}})
    result = cli("pair", "F3W7EY", "--remote", "ws://h:8767", agent=agent)
    assert result.code == 0, result.err
    assert result.err.splitlines()[0] == (
        "warning: other users are on this machine and could read the code in the process list before it was "
        "hidden; use `--code -` (stdin), HERMES_RELAY_CODE or the prompt instead")
    quiet = cli("pair", "--remote", "ws://h:8767", agent=agent, environ={"HERMES_RELAY_CODE": "F3W7EY",
                                                                        "PATH": "/usr/bin:/bin"})
    assert "warning" not in quiet.err
