"""The README's first command: `hermes-relay demo` runs everything locally and cleans up after itself."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def after(text: str, line: str) -> list[str]:
    """The lines printed after the first line that starts with ``line``."""
    lines = text.splitlines()
    start = next(n for n, x in enumerate(lines) if x.startswith(line))
    return lines[start + 1:]


def test_demo_pairs_runs_desktop_tools_reconnects_keeps_a_shell_and_cleans_up(tmp_path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "TMPDIR": str(tmp_path), "HERMES_RELAY_NOTIFY": "0"}
    out = subprocess.run([sys.executable, "-m", "hermes_relay.cli", "demo"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "✓ Paired. Token stored in" in text
    assert "● connected via LAN" in text and "(this device)" in text
    # The relay host runs `uname -a` here through POST /desktop/desktop_terminal under the trusted policy.
    assert "✓ ws://127.0.0.1:" in text and ": trusted" in text
    uname = after(text, "$ hermes-relay-server call --relay ws://127.0.0.1:")[0]
    assert uname.startswith(os.uname().sysname + " ") and os.uname().release in uname
    # An ask_every_time call waits, is listed by `hermes-relay approvals`, approved by a real subprocess.
    assert ": ask every time" in text
    listed = after(text, "$ hermes-relay approvals")
    assert "desktop_terminal" in listed[1] and "echo approved on $(uname -n)" in listed[1]
    request_id = listed[1].split()[0]
    assert f"$ hermes-relay approvals approve {request_id}" in text
    assert f"✓ approved {request_id} (desktop_terminal for ws://127.0.0.1:" in text
    answer = after(text, "the relay host's call returned (exit status 0):")
    assert answer[0] == f"approved on {socket.gethostname()}"
    assert text.index("✓ approved") < text.index("the relay host's call returned")
    assert "offline (backoff)" in text and "reconnected" in text
    # A shell on a second relay (--terminal) over LAN (a forwarder the demo cuts) and Public: a counter runs there.
    shell = after(text, "==> A shell on the relay host that keeps running while the route changes")
    assert any(x.startswith("$ hermes-relay-server --port 0 --terminal") for x in shell)
    assert "→ using LAN route ws://127.0.0.1:" in text and "  Grants: " in text and "terminal" in text
    assert "✂ the LAN route is cut" in shell and "● connected via LAN (ws://127.0.0.1:" in text
    cut = shell.index("✂ the LAN route is cut")
    assert any(x.startswith("● connected via Public (ws://127.0.0.1:") for x in shell[cut:])
    ticks = [int(x.split("-")[1]) for x in shell if re.fullmatch(r"  │ tick-\d+", x)]
    assert ticks == list(range(1, 21))  # what the demo printed from the pty: every tick once, in order
    assert any(x == "  │ tick-4" for x in shell[:cut]) and any(x == "  │ tick-20" for x in shell[cut:])
    assert [x for x in shell if x == "  │ 42-typed-in-the-gap"] == ["  │ 42-typed-in-the-gap"]
    assert any(x.startswith("✓ the counter arrived 1..20 in order across the route change") for x in shell)
    assert not (tmp_path / ".hermes").exists()  # the user's own home is never touched
    assert [p for p in tmp_path.iterdir() if p.name.startswith("hermes-relay-demo-")] == []
