"""The IPC method table (core/apitypes.py types every method's params and result)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import trio

from hermes_relay import __version__
from hermes_relay.agent import doctor, forget, pairing, prober, transport
from hermes_relay.agent.ipc_server import AfterResponse, CallContext, Handler
from hermes_relay.core import api, codes, policy_log, record, wire
from hermes_relay.core.errors import (
    AmbiguousError,
    ForbiddenError,
    HttpStatusError,
    NotPairedError,
    PinMismatchError,
    SessionRevokedError,
    StateError,
    UsageError,
)
from hermes_relay.core.routes import role_label
from hermes_relay.core.store import join, redact_record, resolve_in
from hermes_relay.core.wire import TOKEN_PREFIX_LEN

if TYPE_CHECKING:
    from hermes_relay.agent.app import Agent


def table(agent: Agent) -> dict[str, Handler]:
    async def hello(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return {"api_version": api.API_VERSION, "agent_version": __version__, "pid": os.getpid(),
                "started_at": agent.started_at}

    async def status(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        reveal = bool(params.get("reveal_tokens"))
        store_error, problems = None, []
        sessions: dict[str, dict[str, Any]] = {}
        try:
            raw = agent.store.read()["sessions"]
            sessions = {url: rec for url, rec in raw.items() if isinstance(rec, dict)}
            parsed = record.parse_sessions(raw)
            records, problems = parsed.records, parsed.problems()
        except StateError as exc:
            records, store_error = {}, exc.to_wire()
        relays = []
        for state in agent.states():
            rec = records.get(state["url"])
            token = rec.token if rec is not None and rec.token else ""
            state = {**state, "token_prefix": token[:wire.TOKEN_PREFIX_LEN] if token else None,
                     "desktop": agent.desktop.status_for(state["url"])}
            if reveal:
                state["token"] = token
            relays.append(state)
        paused = agent.paused_states()
        relays.extend(state for state, _ in paused)
        view = paired_view(sessions, relays, reveal=reveal)
        kept = {state["url"]: rec for state, rec in paused}
        for item in view:  # a paused pairing shows the record the agent keeps for it
            if item["record"] is None and item["url"] in kept:
                item["record"] = kept[item["url"]] if reveal else _redacted(kept[item["url"]])
        watcher = agent.watcher
        return {
            "agent": {"pid": os.getpid(), "version": __version__, "started_at": agent.started_at,
                      "socket": agent.config.socket_path, "store": str(agent.config.sessions_file),
                      "store_error": store_error, "store_problems": problems,
                      "unsaved_pairings": pairing.pending_status(agent), "netwatch": getattr(watcher, "backend", None) or "off",
                      "knobs": agent.config.knobs.shown(),
                      **_resources(agent)},
            "relays": relays,
            "paired": view,
        }

    async def pair_start(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        async def progress(event: dict[str, Any]) -> None:
            await ctx.notify(api.PAIR_PROGRESS, event)

        return await pairing.pair(agent, params, progress)

    async def pair_check(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return await pairing.check(agent, params)

    async def devices_list(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        url, status_code, obj = await _http(agent, params, "GET", "/sessions")
        return {"url": url, "sessions": obj.get("sessions", []) if isinstance(obj, dict) else []}

    async def devices_revoke(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        prefix = _prefix(params)
        url, _, obj = await _http(agent, params, "DELETE", f"/sessions/{prefix}")
        obj = obj if isinstance(obj, dict) else {}
        mine = bool(obj.get("is_current") or obj.get("revoked_self"))  # ours: is_current; the reference: revoked_self
        return {"url": url, "revoked": obj.get("revoked", prefix), "is_current": mine, "revoked_self": mine}

    async def devices_extend(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        prefix = _prefix(params)
        ttl = params.get("ttl_seconds", 86400)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0:
            raise UsageError(f"ttl_seconds must be a non-negative integer (got {ttl!r})")
        try:
            url, _, obj = await _http(agent, params, "PATCH", f"/sessions/{prefix}", body={"ttl_seconds": ttl})
        except HttpStatusError as exc:
            if exc.status != 403:
                raise
            raise ForbiddenError(
                f"the relay refused to change {prefix}: {exc.message.split(': ', 1)[-1]}",
                hint="the relay only lets a device shorten its own session; extend from the relay host: "
                     f"hermes-relay-server sessions extend {prefix} --ttl …",
            ) from None
        session = _patched_session(obj)
        stored = await trio.to_thread.run_sync(_store_expiry, agent, url, session)  # under the store lock
        return {"url": url, "session": session, "store_updated": stored}

    async def route(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return dict(agent.indicator.current)

    async def watch(params: dict[str, Any], ctx: CallContext) -> None:
        send, receive = trio.open_memory_channel[dict[str, Any]](64)
        agent.watchers.add(send)
        try:
            async with trio.open_nursery() as nursery:

                async def until_client_leaves() -> None:
                    await ctx.closed.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(until_client_leaves)
                nursery.start_soon(_forward_approvals, agent, ctx)
                try:
                    for state in agent.states() + [paused for paused, _ in agent.paused_states()]:
                        await ctx.notify(api.STATE, state)
                    async with receive:
                        async for state in receive:
                            await ctx.notify(api.STATE, state)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    nursery.cancel_scope.cancel()
        finally:
            agent.watchers.discard(send)

    async def pin_accept(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        url = params.get("url")
        if not isinstance(url, str) or not url:
            raise UsageError("pin.accept needs the relay URL whose new certificate you trust")
        owner, raw = _resolve(agent, url)
        rec = record.from_dict(owner, raw)
        routes = rec.routes()
        if not routes:
            raise UsageError(f"the pairing for {owner} has no usable ws:// or wss:// URL",
                             hint="pair again: hermes-relay pair --remote URL CODE")
        route = next((r for r in routes if r.url.rstrip("/") == url.rstrip("/")), routes[0])
        if not route.secure:
            raise UsageError(f"{route.url} is plain ws://: there is no certificate to pin")
        old = rec.pin_for(route.url)
        dialed = await transport.dial(route, expected_pin=None, timeout=agent.config.probe_timeout)
        await dialed.aclose()
        new = dialed.pin
        changed = new != old
        shown = params.get("pin")
        if shown is not None and shown != new:
            raise PinMismatchError(route.url, str(shown), str(new))  # it changed again while the user decided
        if params.get("apply") is False or not changed:
            return {"url": route.url, "old_pin": old, "new_pin": new, "changed": changed, "applied": False}

        def apply(sessions: dict[str, dict[str, Any]]) -> None:
            found = resolve_in(sessions, owner)
            if found is None:
                raise NotPairedError(f"no stored session for {url}")
            record = found[1]
            if route.url == owner:
                record["cert_pin_sha256"] = new
            else:
                given = record.get("route_cert_pins")
                pins = given if isinstance(given, dict) else {}
                pins[route.url] = new
                record["route_cert_pins"] = pins

        await trio.to_thread.run_sync(agent.store.update, apply)
        await trio.to_thread.run_sync(lambda: agent.marks.clear(owner, only=api.PIN_MISMATCH))  # a revoked pairing stays revoked
        if owner not in agent.down:  # a relay taken off with `down` stays off
            agent.link_for(owner).wake()
        return {"url": route.url, "old_pin": old, "new_pin": new, "changed": True, "applied": True}

    async def forget_pairing(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        url = params.get("url")
        if not isinstance(url, str) or not url:
            raise UsageError("forget needs the relay URL of the pairing to remove")

        async def revoke(owner: str, rec: dict[str, Any], prefix: str) -> Any:
            return await _session_call(agent, owner, rec, "DELETE", f"/sessions/{prefix}")

        return await forget.forget(agent, url, revoke, contact_relay=params.get("contact_relay", True) is not False)

    async def reload(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return {"relays": agent.reload()}

    async def restore(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        url = params.get("url")
        if not isinstance(url, str) or not url:
            raise UsageError("restore needs the URL of the paused pairing (as `hermes-relay status` shows it)")
        return await agent.restore(url)

    async def down_up(params: dict[str, Any], down: bool) -> dict[str, Any]:
        url = params.get("url")
        if url is not None and (not isinstance(url, str) or not url):
            raise UsageError("down/up take a relay URL, or nothing for every relay")
        return await agent.set_down(url, down=down)

    async def down(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return await down_up(params, True)

    async def up(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return await down_up(params, False)

    async def approvals_list(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return {"approvals": agent.desktop.approvals.list()}

    async def approvals_decide(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        reason = params.get("reason")
        return await agent.desktop.approvals.decide(params.get("id"), params.get("approve"),
                                              always=params.get("always") is True,
                                              reason=reason if isinstance(reason, str) else None)

    async def access_changing(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        url = params.get("url")
        if not isinstance(url, str) or not url:
            raise UsageError("access.changing needs the relay URL whose policy is about to change")
        by = policy_log.BY_FORGET if params.get("command") == "forget" else policy_log.BY_ACCESS
        return {"url": agent.desktop.announce(url, by)}

    async def agent_stop(params: dict[str, Any], ctx: CallContext) -> AfterResponse:
        return AfterResponse({"stopping": True}, agent.stop)

    return {
        api.HELLO: hello, api.STATUS: status, api.PAIR_START: pair_start, api.DEVICES_LIST: devices_list,
        api.PAIR_CHECK: pair_check, api.DEVICES_REVOKE: devices_revoke, api.DEVICES_EXTEND: devices_extend, api.ROUTE: route,
        api.WATCH: watch, api.PIN_ACCEPT: pin_accept, api.RELOAD: reload, api.AGENT_STOP: agent_stop,
        api.DOCTOR: doctor.handler(agent), api.APPROVALS_LIST: approvals_list,
        api.APPROVALS_DECIDE: approvals_decide, api.FORGET: forget_pairing, api.ACCESS_CHANGING: access_changing,
        api.RESTORE: restore,
        api.DOWN_SET: down,
        api.UP_SET: up,
    }


async def _forward_approvals(agent: Agent, ctx: CallContext) -> None:
    """The watch stream's approval events: every pending request first, then each new one and outcome."""
    approvals = agent.desktop.approvals
    try:
        with approvals.subscribe() as events:
            for item in approvals.list():
                await ctx.notify(api.APPROVAL, {"event": "approval.requested", **item})
            async for event in events:
                await ctx.notify(api.APPROVAL, event)
    except (trio.BrokenResourceError, trio.ClosedResourceError):  # the client left
        pass


def _redacted(rec: dict[str, Any]) -> dict[str, Any]:
    """A record for the CLI without secrets; the token keeps only its prefix, which ``status`` shows."""
    out = redact_record(rec)
    token = record.from_dict("", rec).token
    if token:
        out["token"] = token[:TOKEN_PREFIX_LEN]
    return out


def paired_view(sessions: dict[str, dict[str, Any]], live: list[dict[str, Any]], *,
                reveal: bool) -> list[dict[str, Any]]:
    """Store records joined with live states (api.PairedRelay), so ``status`` needs no store read.

    Store order first, then relays only the agent knows; a live relay also matches a record through
    its alternate routes. Records are redacted unless ``reveal``.
    """
    out: list[dict[str, Any]] = []
    for url, rec, state in join(sessions, live):
        if rec is None:
            out.append({"url": url, "record": None, "live": state, "alternates": [], "role_label": None})
            continue
        view = record.from_dict(url, rec)
        role = view.endpoint_role
        out.append({"url": url, "record": rec if reveal else _redacted(rec), "live": state,
                    "alternates": [c.url for c in view.candidates], "role_label": role_label(role) if role else None})
    return out


def _resources(agent: Agent) -> dict[str, Any]:
    """Live trio tasks outside the IPC clients' own, and open files: both must stay flat across
    reconnects (the soak test and doctor read them)."""
    clients = agent.ipc.clients if agent.ipc is not None else None
    root = trio.lowlevel.current_root_task()
    count, todo = 0, [root] if root is not None else []
    while todo:
        task = todo.pop()
        count += 1
        for nursery in task.child_nurseries:
            if nursery is not clients:
                todo.extend(nursery.child_tasks)
    return {"tasks": count, "ipc_clients": len(clients.child_tasks) if clients is not None else 0,
            "open_files": _open_files()}


def _open_files() -> int | None:
    """Open file descriptors of this process (Linux; None elsewhere)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def _patched_session(obj: Any) -> dict[str, Any]:
    """The session from a PATCH answer: ours nests it under ``session``, the reference relay's is flat."""
    if not isinstance(obj, dict):
        return {}
    if isinstance(obj.get("session"), dict):
        return obj["session"]
    return {k: obj[k] for k in ("token_prefix", "expires_at", "grants") if k in obj}


def _store_expiry(agent: Agent, owner: str, session: dict[str, Any]) -> bool:
    """Copy a new expiry (and grants) into the stored record when the changed session is this device's."""
    prefix = session.get("token_prefix")
    if not isinstance(prefix, str) or "expires_at" not in session:
        return False

    def apply(sessions: dict[str, dict[str, Any]]) -> bool:
        rec = sessions.get(owner)
        if not isinstance(rec, dict):
            return False
        token = rec.get("token")
        if not isinstance(token, str) or not prefix or not token.startswith(prefix):
            return False
        rec["ttl_expires_at"] = session["expires_at"]
        if isinstance(session.get("grants"), dict):
            rec["grants"] = session["grants"]
        return True

    return bool(agent.store.update(apply))


def _prefix(params: dict[str, Any]) -> str:
    prefix = params.get("prefix")
    if not isinstance(prefix, str):
        raise UsageError("a token prefix is required (as `hermes-relay devices` shows it)")
    return codes.validate_token_prefix(prefix)


def _resolve(agent: Agent, url: str | None) -> tuple[str, dict[str, Any]]:
    sessions = agent.store.sessions()
    if url:
        found = resolve_in(sessions, url)
        if found is None:
            raise NotPairedError(f"no pairing stored for {url}")
        return found
    paired = [(k, sessions[k]) for k in record.owner_urls(sessions)]
    if not paired:
        raise NotPairedError("this computer is not paired with any relay")
    if len(paired) > 1:
        raise AmbiguousError(f"{len(paired)} relays are paired; choose one with --remote URL|NAME",
                             hint="or set a default: hermes-relay use URL|NAME; paired: " + ", ".join(k for k, _ in paired))
    return paired[0]


async def _http(agent: Agent, params: dict[str, Any], method: str, path: str,
                body: dict[str, Any] | None = None) -> tuple[str, int, Any]:
    """Call the relay's session API with the pairing's token on a fresh HTTP connection over the best
    reachable route (not through the live link); refused up front when the token is known to be dead."""
    owner, rec = _resolve(agent, params.get("url"))
    mark = agent.marks.get(owner, record.from_dict(owner, rec).token)
    if mark is not None and mark.get("state") in (api.REVOKED, api.EXPIRED):
        # Sending a token the relay already refused only counts toward its per-IP block.
        raise SessionRevokedError(f"the session for {owner} was {mark['state']}; the relay no longer accepts it",
                                  hint=f"pair again: hermes-relay pair --remote {owner} CODE")
    return await _session_call(agent, owner, rec, method, path, body)


async def _session_call(agent: Agent, owner: str, rec: dict[str, Any], method: str, path: str,
                        body: dict[str, Any] | None = None) -> tuple[str, int, Any]:
    view = record.from_dict(owner, rec)
    routes = view.routes()
    if not routes:
        raise UsageError(f"the pairing for {owner} has no usable ws:// or wss:// URL",
                         hint="pair again: hermes-relay pair --remote URL CODE")

    async def connect(route: Any) -> transport.Dialed:
        return await transport.dial(route, expected_pin=view.pin_for(route.url), timeout=agent.config.probe_timeout)

    async def discard(d: transport.Dialed) -> None:
        await d.aclose()

    won = await prober.race(routes, connect, discard, stagger=agent.config.probe_stagger,
                            timeout=agent.config.probe_timeout, cache=agent.cache)
    status, obj = await transport.http_request(won.value, method, path, token=view.token, body=body)
    if not 200 <= status < 300:
        raise transport.http_error(won.route.url, method, path, status, obj)
    return owner, status, obj
