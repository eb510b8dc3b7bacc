"""A pairing code given on the command line disappears from the process list (/proc/<pid>/cmdline)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from procs import _READERS, BlackHole, read_line

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/cmdline")]


def test_the_code_is_overwritten_in_the_process_arguments(agent_env) -> None:
    hole = BlackHole()  # the pairing hangs on the probe, so the process is still there to look at
    url = f"ws://127.0.0.1:{hole.port}"
    proc = subprocess.Popen([sys.executable, "-m", "hermes_relay.cli", "pair", "K7Q2ZP", "--remote", url],
                            env={**agent_env.env, "HERMES_RELAY_PROBE_TIMEOUT": "10"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        while not read_line(proc, 20).startswith("Pairing with"):  # printed after the arguments were scrubbed
            pass
        with open(f"/proc/{proc.pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
        assert b"K7Q2ZP" not in b" ".join(argv)
        assert argv[-5:-1] == [b"pair", b"******", b"--remote", url.encode()]
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        _READERS.pop(proc.stdout.fileno(), None)
        proc.stdout.close()
        hole.close()
