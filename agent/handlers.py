"""The IPC method table (see core/api.py for every method's params and result)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import trio

from hermes_relay import __version__
from hermes_relay.agent import doctor, pairing, prober, transport
from hermes_relay.agent.ipc_server import AfterResponse, CallContext, Handler
from hermes_relay.core import api, codes, record, wire
from hermes_relay.core.errors import (
    AmbiguousError,
    NotPairedError,
    SessionRevokedError,
    StateError,
    UsageError,
)
from hermes_relay.core.store import resolve_in

if TYPE_CHECKING:
    from hermes_relay.agent.app import Agent


def table(agent: Agent) -> dict[str, Handler]:
    async def hello(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return {"api_version": api.API_VERSION, "agent_version": __version__, "pid": os.getpid(),
                "started_at": agent.started_at}

    async def status(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        store_error, problems = None, []
        try:
            parsed = agent.store.records()
            records, problems = parsed.records, parsed.problems()
        except StateError as exc:
            records, store_error = {}, exc.to_wire()
        relays = []
        for state in agent.states():
            rec = records.get(state["url"])
            token = rec.token if rec is not None and rec.token else ""
            state = {**state, "token_prefix": token[:wire.TOKEN_PREFIX_LEN] if token else None}
            if params.get("reveal_tokens"):
                state["token"] = token
            relays.append(state)
        watcher = agent.watcher
        return {
            "agent": {"pid": os.getpid(), "version": __version__, "started_at": agent.started_at,
                      "socket": agent.config.socket_path, "store": str(agent.config.sessions_file),
                      "store_error": store_error, "store_problems": problems,
                      "unsaved_pairings": pairing.pending_status(agent), "netwatch": getattr(watcher, "backend", None) or "off",
                      **_resources(agent)},
            "relays": relays,
        }

    async def pair_start(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        async def progress(event: dict[str, Any]) -> None:
            await ctx.notify(api.PAIR_PROGRESS, event)

        return await pairing.pair(agent, params, progress)

    async def devices_list(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        url, status_code, obj = await _http(agent, params, "GET", "/sessions")
        return {"url": url, "sessions": obj.get("sessions", []) if isinstance(obj, dict) else []}

    async def devices_revoke(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        prefix = _prefix(params)
        url, _, obj = await _http(agent, params, "DELETE", f"/sessions/{prefix}")
        return {"url": url, "revoked": obj.get("revoked", prefix), "is_current": bool(obj.get("is_current"))}

    async def devices_extend(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        prefix = _prefix(params)
        ttl = params.get("ttl_seconds", 86400)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0:
            raise UsageError(f"ttl_seconds must be a non-negative integer (got {ttl!r})")
        url, _, obj = await _http(agent, params, "PATCH", f"/sessions/{prefix}", body={"ttl_seconds": ttl})
        return {"url": url, "session": obj.get("session", {})}

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
                try:
                    for state in agent.states():
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

        def apply(sessions: dict[str, dict[str, Any]]) -> None:
            found = resolve_in(sessions, owner)
            if found is None:
                raise NotPairedError(f"no stored session for {url}")
            record = found[1]
            if route.url == owner:
                record["cert_pin_sha256"] = new
            else:
                pins = record.get("route_cert_pins") if isinstance(record.get("route_cert_pins"), dict) else {}
                pins[route.url] = new
                record["route_cert_pins"] = pins

        await trio.to_thread.run_sync(agent.store.update, apply)
        await trio.to_thread.run_sync(lambda: agent.marks.clear(owner, only=api.PIN_MISMATCH))  # a revoked pairing stays revoked
        agent.link_for(owner).wake()
        return {"url": route.url, "old_pin": old, "new_pin": new}

    async def reload(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return {"relays": agent.reload()}

    async def agent_stop(params: dict[str, Any], ctx: CallContext) -> AfterResponse:
        return AfterResponse({"stopping": True}, agent.stop)

    return {
        api.HELLO: hello, api.STATUS: status, api.PAIR_START: pair_start, api.DEVICES_LIST: devices_list,
        api.DEVICES_REVOKE: devices_revoke, api.DEVICES_EXTEND: devices_extend, api.ROUTE: route,
        api.WATCH: watch, api.PIN_ACCEPT: pin_accept, api.RELOAD: reload, api.AGENT_STOP: agent_stop,
        api.DOCTOR: doctor.handler(agent),
    }


def _resources(agent: Agent) -> dict[str, Any]:
    """Live trio tasks outside the IPC clients' own, and open files: both must stay flat across
    reconnects (the soak test and doctor read them)."""
    clients = agent.ipc.clients if agent.ipc is not None else None
    count, todo = 0, [trio.lowlevel.current_root_task()]
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


def _prefix(params: dict[str, Any]) -> str:
    prefix = params.get("prefix")
    if not isinstance(prefix, str):
        raise UsageError("a token prefix is required (the 8 characters `hermes-relay devices` shows)")
    return codes.validate_token_prefix(prefix)


def _resolve(agent: Agent, url: str | None) -> tuple[str, dict[str, Any]]:
    sessions = agent.store.sessions()
    if url:
        found = resolve_in(sessions, url)
        if found is None:
            raise NotPairedError(f"no pairing stored for {url}")
        return found
    paired = [(k, v) for k, v in sessions.items() if isinstance(v.get("token"), str) and v.get("token")]
    if not paired:
        raise NotPairedError("this computer is not paired with any relay")
    if len(paired) > 1:
        raise AmbiguousError(f"{len(paired)} relays are paired; choose one with --remote URL",
                             hint="paired: " + ", ".join(k for k, _ in paired))
    return paired[0]


async def _http(agent: Agent, params: dict[str, Any], method: str, path: str,
                body: dict[str, Any] | None = None) -> tuple[str, int, Any]:
    """Call the relay's session API over the live route if there is one, else the best reachable route."""
    owner, rec = _resolve(agent, params.get("url"))
    mark = agent.marks.get(owner, rec.get("token") if isinstance(rec.get("token"), str) else None)
    if mark is not None and mark.get("state") in (api.REVOKED, api.EXPIRED):
        # Sending a token the relay already refused only counts toward its per-IP block.
        raise SessionRevokedError(f"the session for {owner} was {mark['state']}; the relay no longer accepts it",
                                  hint=f"pair again: hermes-relay pair --remote {owner} CODE")
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
