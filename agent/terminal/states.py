"""The states of a shell (agent/terminal/session.py) and the two kinds of relay it can talk to.

    ATTACHING → LIVE ⇄ SUSPENDED → REATTACHING → LIVE | LOST → CLOSED
"""

from __future__ import annotations

import enum

OURS, REFERENCE = "ours", "reference"  # our relay (exact offsets) or the reference relay (desktop-channel.md §2.4)
LAUNCH_CAP = 2.0  # seconds after the attach at the latest when the program is typed


class State(enum.Enum):
    ATTACHING = "attaching"
    LIVE = "live"
    SUSPENDED = "suspended"
    REATTACHING = "reattaching"
    LOST = "lost"
    CLOSED = "closed"


WAITING = (State.ATTACHING, State.REATTACHING)
ENDED = (State.LOST, State.CLOSED)
