"""What the CLI checks in the session store itself before it contacts (or starts) the agent.

A command that needs a pairing fails at once on a machine with none, instead of starting an agent
that would then have nothing to keep connected. An unreadable store is not decided here: the agent
reports it with its fix.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import NotPairedError, StateError


def stored_sessions(ctx: Any) -> dict[str, dict[str, Any]] | None:
    """The store's records, or None when the store cannot be read (the agent will say why)."""
    from ..core import paths
    from ..core.store import SessionStore

    try:
        return SessionStore(paths.sessions_file(ctx.env)).sessions()
    except (StateError, OSError):
        return None


def paired_urls(sessions: dict[str, dict[str, Any]]) -> list[str]:
    from ..core.record import owner_urls

    return owner_urls(sessions)


def require_paired(ctx: Any, url: str | None = None) -> None:
    """Raise NotPairedError when the store shows no pairing (with ``url``: none owning that URL)."""
    from ..core.store import resolve_in

    sessions = stored_sessions(ctx)
    if sessions is None:
        return
    if url is None:
        if not paired_urls(sessions):
            raise NotPairedError("this computer is not paired with any relay")
        return
    if resolve_in(sessions, url) is None:
        listed = ", ".join(sessions) or "none"
        raise NotPairedError(f"no pairing stored for {url}", hint=f"paired relays: {listed}")


def find_pairing(ctx: Any, url: str, *alternatives: str) -> tuple[str, dict[str, Any]]:
    """The (store key, record) owning ``url`` (or one of ``alternatives``); NotPairedError otherwise."""
    from ..core import paths
    from ..core.store import SessionStore, resolve_in

    sessions = SessionStore(paths.sessions_file(ctx.env)).sessions()
    for candidate in (url, *alternatives):
        found = resolve_in(sessions, candidate)
        if found is not None:
            return found
    listed = ", ".join(sessions) or "none"
    raise NotPairedError(f"no pairing stored for {url}", hint=f"paired relays: {listed}")
