"""The shell's errors that are not the core tree's: the relay refused or does not serve a terminal."""

from __future__ import annotations

from hermes_relay.core.errors import HermesError


class TerminalRefusedError(HermesError):
    """The relay refused a terminal message (a limit, an unknown session) or never answered it (it serves
    no terminal). A missing grant is a ForbiddenError instead."""

    code = "terminal_refused"
