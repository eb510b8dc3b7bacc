"""The shell rows of the bench (issue 20 item 6): ``hermes-relay shell --raw`` on a pty, end to end.

``ShellRows(bench, add, log).run()`` is called by bench/run.py (``--only shell`` or the full run). It starts
our relay and runs the steps in turn; one step that fails adds an ``error`` row and the others still run.
``BENCH_SHELL_STEPS=latency,pauses`` runs some of them (development). The steps, each ``step(rows)``:

- bench/shell_echo.py: ``latency``, ``reference_latency``, ``flood`` (keystroke to echo, a ``yes`` flood);
- bench/shell_failover.py: ``pauses``, ``integrity`` (failovers while typing, on our relay);
- bench/ref_soak.py: ``reference_integrity`` (the same soak on the reference relay).

What they share (the relay, agents, shells on a pty, failures) is bench/shell_setup.py's ``ShellSetup``.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable

from ref_soak import reference_integrity
from shell_echo import flood, latency, reference_latency
from shell_failover import integrity, pauses
from shell_setup import ShellSetup

STEPS: list[Callable[[ShellSetup], None]] = [latency, reference_latency, flood, pauses, integrity,
                                             reference_integrity]


class ShellRows(ShellSetup):
    def run(self) -> None:
        self.start_relay()
        steps = STEPS
        if os.environ.get("BENCH_SHELL_STEPS"):  # development: a subset
            steps = [s for s in steps if s.__name__ in os.environ["BENCH_SHELL_STEPS"].split(",")]
        for step in steps:
            try:
                step(self)
            except Exception as exc:  # one broken measurement must not hide the others
                self.log(f"shell {step.__name__} failed: {exc!r}\n{''.join(traceback.format_exception(exc))}")
                self.add(f"shell {step.__name__}", f"error: {type(exc).__name__}: {exc}"[:160], "-", False)
