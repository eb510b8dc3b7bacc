"""Which relay a command means: a URL or a name, else ``HERMES_RELAY_URL``, else the default relay.

The precedence is the reference client's: ``--remote`` > ``HERMES_RELAY_URL`` > ``relay_url`` in
``~/.hermes/desktop-control.json`` (set with ``hermes-relay use``) > the only pairing. A relay name
(``hermes-relay rename URL NAME``) is accepted wherever a URL is. Commands that destroy something
(``forget``) take no default: they call ``explicit`` and need the relay spelled out, by URL or name.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import HermesError, UsageError


def control(ctx: Any) -> Any:
    """The default relay and names (core/hosts.py Control); the file's problems raise with their fix."""
    from ..core import hosts

    return hosts.load(hosts.control_file(ctx.env))


def explicit(ctx: Any, word: str) -> str:
    """The relay URL ``word`` names (a name given with ``rename``, or a URL), normalised.

    A word that is not a URL and close to a known name gets a did-you-mean.
    """
    from ..core.routes import normalize_relay_url

    text = word.strip()
    if "://" not in text:
        names = control(ctx)
        url = names.url_for(text)
        if url is not None:
            return normalize_relay_url(url)[0]
        _suggest(text, list(names.aliases.values()))
    return normalize_relay_url(text)[0]


def resolve(ctx: Any, word: str | None) -> str | None:
    """The one relay a command works on, or None: the agent then takes the only pairing, or answers
    AmbiguousError (its hint names ``use``) when several are paired and nothing picks one."""
    if word:
        return explicit(ctx, word)
    env_url = ctx.env.get("HERMES_RELAY_URL")
    if env_url:
        return explicit(ctx, env_url)
    from ..core.store import resolve_in
    from .local import paired_urls, stored_sessions

    sessions = stored_sessions(ctx)
    if sessions is None:  # unreadable store: the agent explains it
        return None
    try:
        default = control(ctx).relay_url
    except HermesError:
        if len(paired_urls(sessions)) > 1:  # the default matters: say what is wrong with its file
            raise
        return None  # one pairing: the agent takes it, whatever the damaged names file says
    if default:
        found = resolve_in(sessions, default)
        if found is not None:
            return found[0]
    return None


def label(ctx: Any, url: str) -> str:
    """``name (url)`` when the relay has a name, else the URL."""
    try:
        name = control(ctx).name_for(url)
    except HermesError:  # a display never fails on the names file
        name = None
    return f"{name} ({url})" if name else url


def _suggest(word: str, names: list[str]) -> None:
    import difflib

    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    if close:
        raise UsageError(f"{word!r} is not a relay URL or the name of a relay",
                         hint=f"did you mean {close[0]!r}? names: {', '.join(names)}")
