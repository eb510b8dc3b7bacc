"""Pairing: trade a one-time code for a session token and store it (the agent's side of ``pair``).

With an invite the routes are probed by strict priority (prober.race); each outcome is streamed to
the CLI as a progress line. The code is spent on the winning route only. The new record keeps any
fields another client stored for the same relay (consents, for example) and lists every route of
the invite, so the link can fail over and move back up later.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from hermes_relay.agent import prober, transport
from hermes_relay.agent.link import route_info
from hermes_relay.core import codes, payload
from hermes_relay.core.errors import AuthRejectedError, HermesError, PairingRejectedError, UsageError
from hermes_relay.core.routes import Route, make_routes, normalize_relay_url
from hermes_relay.core.store import resolve_in

if TYPE_CHECKING:
    from hermes_relay.agent.app import Agent

log = logging.getLogger(__name__)
Progress = Callable[[dict[str, Any]], Awaitable[None]]


def _plan(params: dict[str, Any]) -> tuple[list[Route], str, payload.Invite | None, bool]:
    invite_text = params.get("invite")
    if invite_text:
        invite = payload.parse(str(invite_text))
        return invite.routes, invite.code, invite, False
    url, code = params.get("url"), params.get("code")
    if not url:
        raise UsageError("no relay URL: pass --remote ws://HOST:8767 or an invite with --pair-qr")
    if not code:
        raise UsageError("no pairing code: pass it as an argument or with --code")
    normalized, port_added = normalize_relay_url(str(url))
    return make_routes([(normalized, None, 0)]), codes.validate_code(str(code)), None, port_added


def _verify(agent: Agent, invite: payload.Invite | None) -> tuple[bool | None, str]:
    if invite is None:
        return None, "paired by code (no invite to verify)"
    if not invite.signed:
        return None, "the invite carries no signature"
    secret = payload.load_secret(agent.config.qr_secret_file)
    if secret is None:
        return None, "the signing key stays on the relay host, so this computer cannot check it"
    if payload.verify(invite.raw, secret):
        return True, "signature verified with this host's relay key"
    return False, "the signature does not match this host's relay key (minted by another relay, or altered)"


async def pair(agent: Agent, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    routes, code, invite, port_added = _plan(params)
    device_name = _device_name(params)
    verified, note = _verify(agent, invite)
    if verified is False:
        await progress({"kind": "warn", "line": f"! invite signature: {note}"})
    if len(routes) > 1:
        await progress({"kind": "info", "line": f"Probing {len(routes)} routes (strict priority, racing inside a tier)…"})

    async def on_attempt(a: prober.Attempt) -> None:
        mark = "✓" if a.ok else "✗"
        detail = f"{a.ms:.0f} ms" if a.ok else a.error
        await progress({"kind": "probe", "ok": a.ok, "ms": round(a.ms, 1), "route": route_info(a.route),
                        "line": f"  {mark} {a.route.label:<10} {a.route.url}  {detail}"})

    outcome: list[Any] = []
    async with trio.open_nursery() as nursery:
        try:
            async def connect(route: Route) -> transport.Connected:
                pin = invite.pin_for(route.url) if invite is not None else None
                return await transport.connect(nursery, route, expected_pin=pin, timeout=agent.config.probe_timeout)

            won = await prober.race(routes, connect, transport.discard, stagger=agent.config.probe_stagger,
                                    timeout=agent.config.probe_timeout, cache=None, on_attempt=on_attempt)
            (dialed, ws) = won.value
            if len(routes) > 1:
                await progress({"kind": "pick", "route": route_info(won.route),
                                "line": f"→ using {won.route.label} route {won.route.url}"})
            try:
                outcome.append(await transport.authenticate(ws, agent.auth_payload(pairing_code=code, **device_name), url=won.route.url))
            finally:
                await transport.discard(won.value)
        except AuthRejectedError as exc:
            outcome.append(PairingRejectedError(f"pairing failed: {exc.data.get('reason') or exc.message}"))
        except HermesError as exc:
            outcome.append(exc)
        nursery.cancel_scope.cancel()
    if isinstance(outcome[0], HermesError):
        raise outcome[0]
    ok, route = outcome[0], won.route
    token = ok.get("session_token")
    if not isinstance(token, str) or not token:
        raise PairingRejectedError("the relay accepted the code but sent no session token", hint="is it a Hermes relay?")
    owner = _store(agent, route, routes, ok, dialed.pin, invite)
    agent.marks.clear(owner)
    agent.desktop.paired(owner)
    agent.reload()  # starts the link for the new record and stops one whose record this replaced
    log.info("paired url=%s route=%s", owner, route.url)
    return {
        "url": owner, "server_version": ok.get("server_version"), "route": route_info(route),
        "expires_at": ok.get("expires_at"), "grants": ok.get("grants") or {}, "port_added": port_added,
        "verified": verified, "verify_note": note, "attempts": [a.to_dict() for a in won.attempts],
        "store": str(agent.config.sessions_file),
    }


def _device_name(params: dict[str, Any]) -> dict[str, Any]:
    name = params.get("device_name")
    if name is None:
        return {}
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise UsageError("the device name must be 1 to 100 characters")
    return {"device_name": name.strip()}


def _store(agent: Agent, route: Route, routes: list[Route], ok: dict[str, Any], pin: str | None,
           invite: payload.Invite | None) -> str:
    now = agent.config.wall_clock()

    def apply(sessions: dict[str, dict[str, Any]]) -> str:
        previous: dict[str, Any] = {}
        for r in routes:  # one pairing per relay: a re-pair replaces the old record of any of its routes
            found = resolve_in(sessions, r.url)
            if found is not None:
                previous = {**sessions.pop(found[0]), **previous}
        record = dict(previous)
        record.update({
            "token": ok["session_token"],
            "server_version": ok.get("server_version"),
            "paired_at": int(now),
            "cert_pin_sha256": pin,
            "grants": ok.get("grants") or {},
            "ttl_expires_at": ok.get("expires_at"),
            "endpoint_role": route.role,
            "prefer_secure_routes": bool(previous.get("prefer_secure_routes", False)),
            "tools_consented": bool(previous.get("tools_consented", False)),
            "computer_use_consented": bool(previous.get("computer_use_consented", False)),
        })
        record.pop("route_cert_pins", None)  # a new pairing starts trust on first use afresh
        if isinstance(ok.get("refresh_token"), str):
            record["refresh_token"] = ok["refresh_token"]
        else:
            record.pop("refresh_token", None)
        if invite is not None and len(routes) > 1:
            record["route_candidates"] = invite.route_candidates()
        else:
            record.pop("route_candidates", None)
        sessions[route.url] = record
        return route.url

    return agent.store.update(apply)
