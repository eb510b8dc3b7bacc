"""The README's first command: `hermes-relay demo` runs everything locally and cleans up after itself."""

from __future__ import annotations

import os
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


def test_demo_pairs_runs_desktop_tools_reconnects_and_cleans_up(tmp_path) -> None:
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
    assert not (tmp_path / ".hermes").exists()  # the user's own home is never touched
    assert [p for p in tmp_path.iterdir() if p.name.startswith("hermes-relay-demo-")] == []
