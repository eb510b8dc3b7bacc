"""Yes/no confirmation before a destructive command: asked on a terminal, ``--yes`` for scripts.

Without a terminal and without ``--yes`` the command refuses (exit 2) instead of guessing: a script
that forgot the flag must not revoke or forget anything by accident, and must not hang on a prompt.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import UsageError


def add_yes_flag(parser: Any) -> None:
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation (for scripts)")


def require_answerable(ctx: Any, *, yes: bool, what: str) -> None:
    """Raise UsageError (before anything is contacted) when a confirmation would be needed and nobody can answer."""
    if not yes and (ctx.stdin is None or not _isatty(ctx.stdin)):
        raise UsageError(f"{what} needs confirmation: run it on a terminal or pass --yes")


def confirm(ctx: Any, question: str, *, yes: bool, what: str) -> bool:
    """True when the user agreed (or passed ``--yes``); raises UsageError when nobody can be asked."""
    if yes:
        return True
    require_answerable(ctx, yes=yes, what=what)
    stdin = ctx.stdin
    ctx.stderr.write(f"{question} [y/N] ")
    ctx.flush()
    answer = stdin.readline()
    if not answer:
        ctx.stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
