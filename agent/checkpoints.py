"""Named crash points for tests: the agent ends as ``kill -9`` would, at one named write point.

A re-pairing makes the relay replace this device's session as soon as it accepts the code, and a
refresh retires the old token as soon as it answers: from that moment the credentials in the
relay's answer are the only ones that work. Each write point on the way from that answer to the
store is named here; the knob ``HERMES_RELAY_TEST_KILL_AT=<name>`` (core/knobs.py) makes the agent die
there (SIGKILL: no cleanup, no flush), so an end-to-end test can kill it at every point in turn
and check the pairing still works after a restart (tests/e2e/test_repair_crash_e2e.py).

Before the first of them (``pair.sent``: the code is sent and the relay's answer has arrived, not yet
read) only the relay can help: ours keeps the replaced session's refresh token on standby for the new
session until that session is first used or a grace passes (relay/sessions.py), so an agent restarted
with its old credentials refreshes into the new session. The reference relay has no such standby.
"""

from __future__ import annotations

import os
import signal

# pair.start, then the code is sent and the relay decides (it replaces this device's session)
PAIR_SENT = "pair.sent"  # the relay's answer has arrived and is not read yet: only the relay knows the new tokens
PAIR_KEPT = "pair.kept"  # the new credentials are in the pending file (fsynced)
PAIR_STORED = "pair.stored"  # ... and in the shared store
PAIR_POLICY = "pair.policy"  # ... the desktop policy of a fresh pairing is written and old verdicts cleared
PAIR_DONE = "pair.done"  # ... the pending copy is gone
PAIR = (PAIR_SENT, PAIR_KEPT, PAIR_STORED, PAIR_POLICY, PAIR_DONE)

# a link authenticated with its refresh token: the relay rotated both tokens
REFRESH_KEPT = "refresh.kept"
REFRESH_STORED = "refresh.stored"
REFRESH = (REFRESH_KEPT, REFRESH_STORED)


def checkpoint(kill_at: str | None, name: str) -> None:
    """Die here, as ``kill -9`` would, when the kill-at knob names this point (a no-op otherwise).

    Code calls it through ``AgentConfig.checkpoint``, which passes the parsed knob."""
    if kill_at == name:
        if hasattr(signal, "SIGKILL"):
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(137)  # pragma: no cover - Windows
