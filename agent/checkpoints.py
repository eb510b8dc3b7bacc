"""Named crash points for tests: the agent ends as ``kill -9`` would, at one named write point.

A re-pairing makes the relay replace this device's session as soon as it accepts the code, and a
refresh retires the old token as soon as it answers: from that moment the credentials in the
relay's answer are the only ones that work. Each write point on the way from that answer to the
store is named here; ``HERMES_RELAY_TEST_KILL_AT=<name>`` in the agent's environment makes it die
there (SIGKILL: no cleanup, no flush), so an end-to-end test can kill it at every point in turn
and check the pairing still works after a restart (tests/e2e/test_repair_crash_e2e.py).

The only window left open is between the relay's answer arriving and the first fsync of the
agent's pending file (``*.kept``): nothing else happens in between.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

KILL_ENV = "HERMES_RELAY_TEST_KILL_AT"

# pair.start: the relay answered auth.ok to the code
PAIR_KEPT = "pair.kept"  # the new credentials are in the pending file (fsynced)
PAIR_STORED = "pair.stored"  # ... and in the shared store
PAIR_POLICY = "pair.policy"  # ... the desktop policy of a fresh pairing is written and old verdicts cleared
PAIR_DONE = "pair.done"  # ... the pending copy is gone
PAIR = (PAIR_KEPT, PAIR_STORED, PAIR_POLICY, PAIR_DONE)

# a link authenticated with its refresh token: the relay rotated both tokens
REFRESH_KEPT = "refresh.kept"
REFRESH_STORED = "refresh.stored"
REFRESH = (REFRESH_KEPT, REFRESH_STORED)


def checkpoint(env: Mapping[str, str], name: str) -> None:
    """Die here, as ``kill -9`` would, when the test switch names this point (a no-op otherwise)."""
    if env.get(KILL_ENV) == name:
        if hasattr(signal, "SIGKILL"):
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(137)  # pragma: no cover - Windows
