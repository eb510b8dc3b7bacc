"""``hermes-relay status``: what is paired (from the store) and how each link is doing (from the agent).

The agent is asked first, without autostart (looking must never start anything); its answer carries
the store's records already joined with the live states (``paired``), so with the agent up this is
one IPC round trip and no file read. With the agent down the store is read directly and merged here
by relay URL (a live relay also matches a record through its alternate routes). A store that cannot
be read is reported after everything else has been shown, as the command's error (exit 1), and the
file is left untouched.

Tokens are redacted unless ``--reveal-tokens``, in the text and in ``--json`` alike. This module is
on the hot path: heavy modules (the store, routes, pathlib, json) load only where they are needed.
"""

from __future__ import annotations

from ...core.errors import (
    EXIT_AGENT_NOT_RUNNING,
    AgentNotRunningError,
    HermesError,
    StateError,
    error_from_wire,
)
from ..context import Context, add_common_flags

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

NOT_RUNNING = "not running (start it with `hermes-relay agent start`)"
STATUS_TIMEOUT = 5.0  # seconds: status answers from memory; a slower agent is reported as not answering
_LABEL_WIDTH = 10


def register(sub: Any) -> None:
    import argparse

    p = sub.add_parser("status", help="paired relays and the live state of each link",
                       description="Show the paired relays from the session store and, when the agent "
                                   "is running, the live state of each link (`down` for a relay taken off "
                                   "with `hermes-relay down`). Never starts the agent: without one it "
                                   "reads the files, and with --no-autostart then exits 3.",
                       epilog="examples:\n"
                              "  hermes-relay status              # every relay, its link and its tools\n"
                              "  hermes-relay status --json       # the same for scripts (tokens redacted)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reveal-tokens", action="store_true", help="show session tokens instead of (redacted)")
    add_common_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from ...core import paths

    reveal = bool(getattr(args, "reveal_tokens", False))
    store_path = paths.sessions_file_str(ctx.env)
    store_error: HermesError | None = None
    agent_info: dict[str, Any] | None = None
    agent_error: HermesError | None = None
    entries: list[tuple[str, dict | None, dict | None]] | None = None
    derived: dict[str, tuple[list[str], str | None]] = {}
    live: list[dict[str, Any]] = []
    not_running = NOT_RUNNING
    try:
        with ctx.client(autostart=False) as client:
            reply = client.status(reveal_tokens=reveal, timeout=STATUS_TIMEOUT)
        agent_info = reply.get("agent") or {}
        live = [r for r in reply.get("relays") or [] if isinstance(r, dict)]
        paired = reply.get("paired")
        if isinstance(paired, list):  # the agent read the store: no second read here
            entries, derived = _from_agent(paired)
            wire_error = agent_info.get("store_error")
            if isinstance(wire_error, dict):
                store_error = error_from_wire(wire_error)
    except AgentNotRunningError as exc:
        if "another runtime directory" in exc.message:  # cli/client.py found the agent of this home elsewhere
            not_running = f"not reachable from this shell: {exc.message.split(': ', 1)[-1]}; {exc.hint}"
    except HermesError as exc:
        agent_error = exc

    if entries is None:
        sessions, store_error = _read_store(store_path)
        from ...core.store import join

        entries = _with_down(ctx, join(sessions, live))
    if getattr(args, "json", False):
        ctx.print_json(json_view(store_path, store_error, agent_info, agent_error, entries, reveal=reveal))
    else:
        from ..render import terminal_width, wrap_lines

        lines = text_view(ctx, store_path, store_error, agent_info, agent_error, entries, reveal=reveal,
                          derived=derived, not_running=not_running)
        for line in wrap_lines(lines, terminal_width(ctx.stdout, ctx.env)):
            ctx.out(line)
    if store_error is not None:
        raise store_error
    if agent_error is not None:
        raise agent_error
    if agent_info is None and not ctx.autostart:
        return EXIT_AGENT_NOT_RUNNING  # --no-autostart: the live state was asked for, and nothing runs to give it
    now = ctx.now()
    # A pairing that needs the user (a new code, or a certificate decision) makes status fail.
    return 1 if any(ended(record, state, now) or (state or {}).get("state") == "pin_mismatch"
                    for _, record, state in entries) else 0


def _with_down(ctx: Context, entries: list[tuple[str, dict | None, dict | None]]) -> list[tuple[str, dict | None, dict | None]]:
    """With the agent down: the relays ``hermes-relay down`` took off, from the agent's own file."""
    from ...core import offline, paths

    try:
        switch = offline.read(paths.down_file(ctx.env))
    except (StateError, OSError):
        return entries
    if not switch.any():
        return entries
    return [(url, record, state if state is not None or not switch.is_down(url)
             else offline.state(url, switch.since(url), record)) for url, record, state in entries]


def ended(record: dict | None, state: dict | None, now: float) -> str | None:
    """``revoked`` or ``expired`` when the pairing no longer works and needs a new code, else None.

    The agent's verdict wins; with the agent down (or not managing the relay) the stored expiry decides.
    """
    from .. import render

    live = (state or {}).get("state")
    if live in ("revoked", "expired"):
        return str(live)
    if live is None and record is not None and "ttl_expires_at" in record:
        if render.expiry(record.get("ttl_expires_at"), now) == "expired":
            return "expired"
    return None


def _read_store(store_path: str) -> tuple[dict[str, dict[str, Any]], HermesError | None]:
    from ...core.store import SessionStore

    try:
        return SessionStore(_as_path(store_path)).sessions(), None
    except StateError as exc:
        return {}, exc
    except OSError as exc:
        return {}, StateError(f"cannot read {store_path}: {exc.strerror or exc}")


def _as_path(text: str) -> Any:
    from pathlib import Path

    return Path(text)


def _from_agent(paired: list[Any]) -> tuple[list[tuple[str, dict | None, dict | None]],
                                             dict[str, tuple[list[str], str | None]]]:
    """Entries from the agent's ``paired`` view (api.PairedRelay), and each record's derived facts."""
    entries: list[tuple[str, dict | None, dict | None]] = []
    derived: dict[str, tuple[list[str], str | None]] = {}
    for item in paired:
        if not isinstance(item, dict):
            continue
        url = str(item.get("url") or "?")
        record = item.get("record") if isinstance(item.get("record"), dict) else None
        state = item.get("live") if isinstance(item.get("live"), dict) else None
        entries.append((url, record, state))
        alternates = [str(u) for u in item.get("alternates") or [] if isinstance(u, str)]
        role = item.get("role_label")
        derived[url] = (alternates, str(role) if role else None)
    return entries, derived


# -- text ------------------------------------------------------------------------------------------
def text_view(ctx: Context, store_path: str, store_error: HermesError | None, agent: dict | None,
              agent_error: HermesError | None, entries: list, *, reveal: bool,
              derived: dict[str, tuple[list[str], str | None]] | None = None,
              not_running: str = NOT_RUNNING) -> list[str]:
    from ...core import paths
    from .. import render

    now, style = ctx.now(), ctx.style
    lines = [f"agent: {_agent_text(agent, agent_error, now, style, not_running)}"]
    store_text = render.tilde(store_path, paths.home_dir_str(ctx.env))
    if store_error is not None:
        store_text += "  " + style.bad("(unreadable: see the error below)")
    lines.append(f"store: {store_text}")
    lines.append("")
    if not entries:
        if store_error is None:
            lines.append("No paired relays. Run `hermes-relay pair --remote ws://HOST:8767` to pair (it asks for the code).")
        return lines
    lines.append(style.bold(f"Paired relays ({len(entries)})"))
    policies = _policy_loader(ctx.env)
    for url, record, state in entries:
        alternates, role = (derived or {}).get(url, (None, None))
        lines.append("")
        lines.extend(relay_lines(url, record, state, now=now, style=style, reveal=reveal,
                                 agent_running=agent is not None, alternates=alternates, role=role,
                                 tools=tool_lines(url, record, state, now=now, style=style, policies=policies)))
    return lines


def tool_lines(url: str, record: dict | None, state: dict | None, *, now: float, style: Any,
               policies: Callable[[], Any]) -> list[str]:
    """Desktop tool access for one relay: the agent's live summary, else the policy file's words.

    ``policies()`` loads the policy file (once per ``status``; None when it is unreadable)."""
    if record is None:
        return []
    summary = state.get("desktop") if isinstance(state, dict) else None
    if isinstance(summary, dict):
        from ..render import desktop_status_lines

        return desktop_status_lines(summary, now, style)
    loaded = policies()
    if loaded is None:
        return ["restricted: the access policy file is unreadable (see `hermes-relay access`)"]
    from ...core import policy

    stored = loaded.for_url(url, legacy_consented=record.get("tools_consented") is True)
    return ["restricted: no desktop tools"] if stored.access_mode == policy.ASK else [stored.label]


def _policy_loader(env: Any) -> Callable[[], Any]:
    """A loader that reads the desktop policy file on first use only (relays the agent reports need none)."""
    cache: list[Any] = []

    def load() -> Any:
        if not cache:
            from ...core import policy
            from ...core.errors import HermesError

            try:
                cache.append(policy.load(policy.policy_file(env)))
            except HermesError:
                cache.append(None)
        return cache[0]

    return load


def relay_lines(url: str, record: dict | None, state: dict | None, *, now: float, style: Any,
                reveal: bool, agent_running: bool, alternates: list[str] | None = None,
                role: str | None = None, tools: list[str] | None = None) -> list[str]:
    """The block for one relay: stored facts, then the live state when the agent reported one.

    ``alternates`` and ``role`` come with the agent's view; without it they are derived here.
    """
    from .. import render

    rec = record or {}
    st = state or {}
    lines = [f"  {style.bold(url)}"]
    server = render.printable(str(rec.get("server_version") or st.get("server_version") or "(unknown)"))
    lines.append(_field("server", str(server), 4))
    if record is None:
        lines.append(_field("paired", "not in the store (known only to the agent)", 4))
    else:
        lines.append(_field("paired", render.ago(rec.get("paired_at"), now), 4))
    if record is not None or st.get("token"):
        token_line = render.token_text(rec.get("token") if record is not None else st.get("token"), reveal=reveal)
    elif st.get("token_prefix"):
        token_line = f"{st['token_prefix']}… " + ("(prefix only)" if reveal else render.REDACTED)
    else:
        token_line = render.NONE_MARK
    lines.append(_field("token", token_line, 4))
    verdict = ended(record, state, now)
    stale = verdict is not None or st.get("state") == "replaced"  # the stored expiry and grants no longer apply
    if record is not None:
        if verdict == "expired":
            lines.append(_field("expires", style.bad("expired"), 4))
        elif not stale:
            expires = render.expiry(rec.get("ttl_expires_at"), now) if "ttl_expires_at" in rec else "unknown"
            lines.append(_field("expires", expires, 4))
        if rec.get("grants") and not stale:
            lines.append(_field("grants", render.grants_text(rec.get("grants"), now), 4))
        if rec.get("endpoint_role"):
            if role is None:
                from ...core.routes import role_label

                role = role_label(str(rec["endpoint_role"]))
            lines.append(_field("route", role, 4))
        if alternates is None:
            from ...core.store import route_urls

            alternates = route_urls(rec)
        if alternates:
            lines.append(_field("routes", ", ".join(alternates), 4))
        if rec.get("cert_pin_sha256"):
            lines.append(_field("cert", str(rec["cert_pin_sha256"]), 4))
    for text in tools or ():
        lines.append(_field("tools", text, 4))
    if state is not None:
        lines.extend(_live_lines(st, now, style, fixed=verdict is not None))
    elif agent_running:
        lines.append(_field("live", style.dim("not managed by the agent (run `hermes-relay agent restart`?)"), 4))
    if verdict is not None:
        lines.append(_field("fix", "run hermes-pair on the relay host, then "
                                   f"hermes-relay pair --remote {url} (it asks for the code)", 4))
    elif st.get("state") == "replaced":
        lines.append(_field("fix", f"remove the old pairing: hermes-relay forget {url}", 4))
    return lines


def _live_lines(st: dict[str, Any], now: float, style: Any, *, fixed: bool = False) -> list[str]:
    """The agent's view of one link; ``fixed`` when a fix line follows (the error's own hint is then left out)."""
    from .. import render

    state = str(st.get("state") or "unknown")
    route = st.get("route") if isinstance(st.get("route"), dict) else None
    via = ""
    if route:
        via = f" via {route.get('label') or route.get('role') or '?'}" + (f" ({route['url']})" if route.get("url") else "")
    attempts = st.get("attempts") or 0
    if state == "connected":
        text = style.ok("●") + f" connected{via}"
        if st.get("since") is not None:
            text += f" since {render.ago(st.get('since'), now)}"
        if isinstance(st.get("latency_ms"), (int, float)):
            text += f", {st['latency_ms']:.0f} ms"
    elif state == "connecting":
        text = "◌ connecting" + (f" (attempt {attempts})" if attempts else "")
    elif state == "backoff":
        text = style.warn("○") + f" waiting to reconnect (attempt {attempts}, {_next_try(st, now)})"
    elif state == "rate_limited":
        text = style.warn("○") + f" rate limited by the relay ({_next_try(st, now)})"
    elif state == "revoked":
        text = style.bad("✗") + " revoked: the relay no longer accepts this computer's session"
    elif state == "expired":
        text = style.bad("✗") + " session expired"
    elif state == "replaced":
        newer = st.get("replaced_by")
        text = style.warn("○") + " replaced by a newer pairing" + (f" ({render.printable(str(newer))})" if newer else "")
    elif state == "pin_mismatch":
        text = style.bad("✗") + " stopped: the relay's certificate changed"
    elif state == "down":
        since = f" since {render.ago(st.get('since'), now)}" if st.get("since") else ""
        text = style.warn("↓") + f" down{since}: taken off with `hermes-relay down` (no link: the relay host cannot call tools)"
        return [_field("live", text, 4), " " * (4 + _LABEL_WIDTH) + f"hint: back on: hermes-relay up {st.get('url')}"]
    elif state == "paused":
        text = style.warn("‖") + " paused: another client removed it from the store (this computer keeps it)"
    elif state == "not_paired":
        text = "○ not paired (no session token in the store)"
    else:
        text = state
    lines = [_field("live", text, 4)]
    if attempts and state not in ("connected", "connecting", "backoff"):  # those lines carry it already
        lines.append(_field("attempts", str(attempts), 4))
    error = st.get("last_error")
    if isinstance(error, dict) and error.get("message"):
        lines.append(_field("error", str(error["message"]), 4))
        hint = None if fixed else _error_hint(error)
        if hint:
            lines.append(" " * (4 + _LABEL_WIDTH) + f"hint: {hint}")
    return lines


def _error_hint(error: dict[str, Any]) -> str | None:
    """The hint of an error object: top-level, or inside ``data`` as HermesError.to_wire() puts it."""
    hint = error.get("hint")
    data = error.get("data")
    if not hint and isinstance(data, dict):
        hint = data.get("hint")
    return str(hint) if hint else None


def _agent_text(agent: dict | None, agent_error: HermesError | None, now: float, style: Any,
                not_running: str = NOT_RUNNING) -> str:
    from .. import render

    if agent_error is not None:
        return style.bad(f"not answering ({agent_error.message})")
    if agent is None:
        return not_running
    parts = [f"pid {agent.get('pid', '?')}"]
    if agent.get("version"):
        parts.append(str(agent["version"]))
    if agent.get("started_at") is not None:
        parts.append(f"up {render.uptime(agent.get('started_at'), now)}")
    return "running (" + ", ".join(parts) + ")"


def _field(label: str, value: str, indent: int = 0) -> str:
    return " " * indent + f"{label + ':':<{_LABEL_WIDTH}}{value}"


# -- json ------------------------------------------------------------------------------------------
def json_view(store_path: str, store_error: HermesError | None, agent: dict | None,
              agent_error: HermesError | None, entries: list, *, reveal: bool) -> dict[str, Any]:
    from ...core.store import redact_record
    from .. import render

    relays = []
    for url, record, state in entries:
        rec = record or {}
        live = dict(state) if state is not None else None
        if live is not None and not reveal:
            live = redact_record(live)
        token = rec.get("token")
        relays.append({
            "url": url,
            "in_store": record is not None,
            "server_version": rec.get("server_version") or (state or {}).get("server_version"),
            "paired_at": render.to_epoch(rec.get("paired_at")),
            "expires_at": render.to_epoch(rec.get("ttl_expires_at")),
            "token": token if reveal or not token else render.REDACTED,
            "token_prefix": render.token_prefix(token) or (state or {}).get("token_prefix"),
            "grants": rec.get("grants") or {},
            "role": rec.get("endpoint_role"),
            "cert_pin_sha256": rec.get("cert_pin_sha256"),
            "record": (rec if reveal else redact_record(rec)) if record is not None else None,
            "live": live,
        })
    return {
        "store": store_path,
        "store_error": _error_json(store_error),
        "agent": agent,
        "agent_error": _error_json(agent_error),
        "relays": relays,
    }


def _error_json(exc: HermesError | None) -> dict[str, Any] | None:
    if exc is None:
        return None
    return {"code": exc.code, "message": exc.message, "hint": exc.hint}


def _next_try(st: dict[str, Any], now: float) -> str:
    """``next try in 9s``, or ``retrying now`` once the time has come."""
    from .. import render

    when = render.countdown(st.get("next_retry_at"), now)
    return "retrying now" if when == "now" else f"next try {when}"
