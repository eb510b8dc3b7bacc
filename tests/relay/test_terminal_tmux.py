"""The terminal channel with tmux, on a private server (``TMUX_TMPDIR`` under tmp_path, its own socket name):
sessions in the reference's namespace outlive attachments, resume without a repaint, list, kill, redraw."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from terminal_clients import WAIT, Term, connect, exited, pair_device, settings

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@pytest.fixture
def relay_test_guard() -> float:
    return 60.0


@pytest.fixture
def tmux_settings(tmp_path: Path) -> Iterator[dict]:
    """Settings for a private tmux server; the server is killed afterwards."""
    short = Path(os.environ.get("TMPDIR", "/tmp")) / f"hr-tmux-{os.getpid()}-{id(tmp_path) % 100000}"
    short.mkdir()  # a unix socket path must stay short: tmp_path can be too long for one
    cfg = {"tmux": True, "tmux_tmpdir": short, "tmux_socket": "hermes-test"}
    try:
        yield cfg
    finally:
        env = {"PATH": "/usr/bin:/bin", "TMUX_TMPDIR": str(short)}
        subprocess.run(["tmux", "-L", "hermes-test", "kill-server"], env=env, capture_output=True, check=False)
        shutil.rmtree(short, ignore_errors=True)


def tmux_sessions(cfg: dict) -> list[str]:
    env = {"PATH": "/usr/bin:/bin", "TMUX_TMPDIR": str(cfg["tmux_tmpdir"])}
    done = subprocess.run(["tmux", "-L", "hermes-test", "list-sessions", "-F", "#{session_name}"], env=env,
                          capture_output=True, text=True, check=False)
    return done.stdout.split()


async def test_a_tmux_session_outlives_its_attachment_and_resumes_without_a_repaint(relay_factory, tmp_path: Path,
                                                                                 tmux_settings: dict):
    relay = await relay_factory(terminal=settings(tmp_path, **tmux_settings))
    ws, auth = await pair_device(relay)
    term = Term(ws, name="work.1")
    attached = await term.attach()
    assert attached["payload"]["tmux_available"] is True and attached["payload"]["shell"] == "tmux"
    assert (tmp_path / "tmux.conf").read_text().count("escape-time 0") == 1  # written when absent
    await term.type(b"echo tm$((20+3))\r")
    await term.until_output(b"tm23")
    await term.until_acked(len(term.typed))
    assert "hermes-work_1" in tmux_sessions(tmux_settings)

    await term.ws.aclose()
    term.ws = await connect(relay, auth["session_token"])
    reply = await term.attach()
    r = reply["payload"]["resume"]
    assert (r["resumed"], r["gap"], r["out_seq"], r["in_seq"]) == (True, False, term.out_seq, len(term.typed))
    start = term.out_seq
    await term.type(b"echo again$((4+4))\r")
    await term.until_output(b"again8", start)

    start = term.out_seq
    await term.send("terminal.redraw", {})  # tmux repaints the screen: the text on it comes again
    await term.until_output(b"again8", start)
    await term.send("terminal.detach", {})
    assert (await term.expect("terminal.detached"))["payload"]["reason"] == "client detach"
    assert "hermes-work_1" in tmux_sessions(tmux_settings)  # the tmux session lives on

    await term.send("terminal.list", {})
    listed = (await term.expect("terminal.sessions"))["payload"]
    assert listed["tmux_available"] is True
    [s] = [s for s in listed["sessions"] if s["name"] == "work_1"]
    assert s["tmux_name"] == "hermes-work_1" and s["owned_by_client"] is False and s["windows"] == 1

    await term.send("terminal.kill", {"session_name": "work.1"})
    assert (await term.expect("terminal.detached"))["payload"]["reason"] == "client kill"
    assert "hermes-work_1" not in tmux_sessions(tmux_settings)


async def test_a_reference_clients_dropped_socket_leaves_no_tmux_client_behind(relay_factory, tmp_path: Path,
                                                                               tmux_settings: dict):
    relay = await relay_factory(terminal=settings(tmp_path, grace_reference=0.2, **tmux_settings))
    ws, _ = await pair_device(relay)
    term = Term(ws, name="ref", resume=False)
    pid = (await term.attach())["payload"]["pid"]
    await term.type(b"echo r$((5+5))\r")
    await term.until_output(b"r10")
    env = {"PATH": "/usr/bin:/bin", "TMUX_TMPDIR": str(tmux_settings["tmux_tmpdir"])}
    clients = ["tmux", "-L", "hermes-test", "list-clients", "-F", "#{client_tty}"]
    assert len(subprocess.run(clients, env=env, capture_output=True, text=True).stdout.split()) == 1
    await ws.aclose()
    await exited(pid)  # the reference would keep this client (and its PTY) until it restarts
    with trio.fail_after(WAIT):  # the server notices the client's socket closing a moment later
        while subprocess.run(clients, env=env, capture_output=True, text=True).stdout.split():
            await trio.sleep(0.05)
    assert "hermes-ref" in tmux_sessions(tmux_settings)  # the session itself lives on


async def test_a_new_stream_on_a_living_tmux_session_is_a_reattach_not_a_resume(relay_factory, tmp_path: Path,
                                                                                 tmux_settings: dict):
    """As the reference: ``reattach`` says the tmux session was already there (the agent then types no
    launch line into it and sends the keys queued during a gap); ``resume.resumed`` says the attachment
    itself continued. A relay restart loses every attachment but not the tmux session."""
    relay = await relay_factory(terminal=settings(tmp_path, **tmux_settings))
    ws, auth = await pair_device(relay)
    first = Term(ws, name="keep")
    assert (await first.attach())["payload"]["reattach"] is False  # a new tmux session
    await first.type(b"echo k$((1+1))\r")
    await first.until_output(b"k2")
    await first.send("terminal.detach", {})
    assert (await first.expect("terminal.detached"))["payload"]["reason"] == "client detach"

    second = Term(await connect(relay, auth["session_token"]), name="keep")  # another stream: a new attachment
    p = (await second.attach())["payload"]
    assert p["reattach"] is True  # the tmux session lived on
    assert (p["resume"]["resumed"], p["resume"]["in_seq"]) == (False, 0)
    ref = Term(await connect(relay, auth["session_token"]), name="keep", resume=False)
    assert (await ref.attach())["payload"]["reattach"] is True


async def test_a_new_attachment_to_a_tmux_session_that_lives_on_is_a_reattach(relay_factory, tmp_path: Path,
                                                                               tmux_settings: dict):
    """After a relay restart the agent attaches with the same stream, which the relay no longer knows: a new
    attachment (resumed false, offsets from 0), but to the same shell (reattach true), so the keys typed
    meanwhile are sent to it rather than dropped as meant for a new shell."""
    relay = await relay_factory(terminal=settings(tmp_path, **tmux_settings))
    ws, auth = await pair_device(relay)
    first = Term(ws, name="kept")
    p = (await first.attach())["payload"]
    assert (p["reattach"], p["resume"]["resumed"]) == (False, False)  # a new tmux session
    await first.type(b"echo one$((0+1))\r")
    await first.until_output(b"one1")
    second = Term(await connect(relay, auth["session_token"]), name="kept")  # another stream: a new attachment
    p = (await second.attach())["payload"]
    assert (p["reattach"], p["resume"]["resumed"], p["resume"]["in_seq"]) == (True, False, 0)
    await second.type(b"echo two$((1+1))\r")
    await second.until_output(b"two2")
