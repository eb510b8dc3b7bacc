"""The desktop channel on one relay link: heartbeat, dispatch, one response per request.

Per link, in one nursery:
- the heartbeat sends ``desktop.status`` at once, every ``HEARTBEAT_INTERVAL``, and as soon as the
  advertised set changes (the policy is polled about once a second). A host that may call nothing
  (restricted, or no record) is sent NO desktop envelope at all: both relays take an empty
  advertised list from a client as "a legacy client that serves everything". When a host that was
  sent tools loses them all, the link is re-established (``LinkPort.reconnect``) so the relay
  forgets this computer as a target;
- every ``desktop.command`` runs as its own task under its deadline: the tool's default, shortened
  by the caller's ``budget_ms`` (core/desktop.call_limit). An approval expires before it with a
  margin that scales with it. The policy is read from disk (``refresh``: a worker thread) and decided
  when the call arrives, again after an approval just before the tool starts, and at each change of the
  policy view while the call lives (the file watch wakes the heartbeat; without it, every second): a call whose host was
  lowered below what authorised it is withdrawn (its approval) or cancelled (its tool) at once;
- the audit: a ``tool.started`` record is written before the tool runs, or it does not run; every
  outcome is recorded, with how it was authorised, coalesced per (host, tool, outcome).
Whatever happens a call is answered at most once (never after its deadline; an ``aborted`` answer
when the deadline passed). Malformed commands are answered when they carry a usable ``request_id``
and dropped otherwise; nothing a relay sends or a tool returns can end the link from here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from ...core import desktop, policy
from ...core.confine import PENDING
from ...core.desktop import BadCommand, Command, RequestIds, ToolContext, ToolError
from ...core.envelope import Encoded
from ...core.errors import HermesError
from .. import clockwatch, memtrim
from .audit import AuditError
from .tools import _thread

if TYPE_CHECKING:
    from .ports import ChannelService, LinkPort

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 64  # calls running at once per link; more are refused, not queued past their deadline
BUSY = f"too many desktop calls in flight (limit {MAX_IN_FLIGHT}); try again when some have finished"
DRAIN_TIMEOUT = 1.0  # seconds withdrawn calls get to send their answers before the link reconnects
AUDIT_PREVIEW = 4096  # characters of stdout/stderr kept in an audit record
NOT_SERVED = ("this computer serves no desktop tools to this relay host (its access is restricted); "
              "the user can change that with `hermes-relay access`")
WITHDRAWN = ("withdrawn: the user lowered this relay host's desktop access while the call {what}; "
             "it did not run")
_RANK = {policy.DECIDE_DENY: 0, policy.DECIDE_ASK: 1, policy.DECIDE_ALLOW: 2}


def _as_dict(message: Any) -> dict[str, Any]:
    if isinstance(message, dict):
        return message
    return {"channel": getattr(message, "channel", None), "type": getattr(message, "type", None),
            "id": getattr(message, "id", None), "payload": getattr(message, "payload", None)}


@dataclass
class _Live:
    """A call between its arrival and its answer: what authorised it, and how to stop it."""

    tool: str
    level: str  # the decision that let it go on: allow (policy) or ask (the user answers / answered)
    scope: trio.CancelScope
    running: bool = False
    withdrawn: str | None = None
    how: list[str] = field(default_factory=list)


def _next_beat(now: float) -> float:
    """The next ``desktop.status``: on the agent's shared ``HEARTBEAT_INTERVAL`` tick (agent/clockwatch.py, so
    it wakes the agent with the other periodic looks), at least half an interval after ``now``."""
    at = clockwatch.next_tick(desktop.HEARTBEAT_INTERVAL)
    return at if at - now >= desktop.HEARTBEAT_INTERVAL / 2 else at + desktop.HEARTBEAT_INTERVAL


class DesktopChannel:
    def __init__(self, service: ChannelService, port: LinkPort):
        self.service = service
        self.port = port
        self.ids = RequestIds()
        self.in_flight = 0
        self.announced = False  # a desktop envelope went out on this connection: the relay knows us
        self._live: dict[str, _Live] = {}
        self._dropping = False
        self._idle = trio.Event()  # set when the last call in flight has answered

    async def run(self, inbound: trio.MemoryReceiveChannel[Any]) -> None:
        self.service.record_link(self.port.url, "agent.connected", route=self.port.route_url)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._heartbeat)
                try:
                    self._catch_up(nursery, inbound)
                    async for message in inbound:
                        self._dispatch(nursery, _as_dict(message))
                        self._catch_up(nursery, inbound)
                finally:
                    self.port.direct = None
                nursery.cancel_scope.cancel()
        finally:
            self.service.record_link(self.port.url, "agent.disconnected", route=self.port.route_url)
            self.service.audit.flush(everything=True)

    def _catch_up(self, nursery: trio.Nursery, inbound: trio.MemoryReceiveChannel[Any]) -> None:
        """Once nothing waits in ``inbound``, the link hands envelopes over directly (``LinkPort.direct``):
        dispatched in its reader's step, in order, without a pass through the scheduler for each."""
        if getattr(self.port, "direct", None) is None and not inbound.statistics().current_buffer_used:
            self.port.direct = lambda message: self._deliver(nursery, message)

    def _deliver(self, nursery: trio.Nursery, message: Any) -> None:
        try:
            self._dispatch(nursery, _as_dict(message))
        except Exception:  # a bug here must not end the link's reader: the service is restarted instead
            log.exception("desktop_dispatch_failed url=%s (reconnecting)", self.port.url)
            self.port.direct = None
            self._reconnect("the desktop service failed")

    async def _send(self, envelope: dict[str, Any]) -> bool:
        try:  # the port serialises sends (agent/transport.py SendLock)
            self.announced = True
            await self.port.send(envelope)
            return True
        except (HermesError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.info("desktop_send_failed url=%s type=%s error=%s", self.port.url, envelope.get("type"), exc)
            return False

    def _reconnect(self, reason: str) -> None:
        if self._dropping:
            return
        hook = getattr(self.port, "reconnect", None)
        if hook is None:
            log.warning("desktop_cannot_reconnect url=%s reason=%s", self.port.url, reason)
            return
        self._dropping = True
        log.info("desktop_reconnect url=%s reason=%s", self.port.url, reason)
        hook(reason)

    # -- heartbeat and policy watch --------------------------------------------------------------
    async def _heartbeat(self) -> None:
        """The status beat, and the policy watch's effects on this connection: sleeps until the next beat,
        a change of the policy files or view, the file watch's safety refresh (every second while no inotify
        watch covers the files), or an audit summary or memory trim falling due; an idle agent wakes rarely."""
        last: list[str] | None = None
        next_beat = trio.current_time()
        while True:
            changes = self.service.changes()  # taken before looking: a change from here on ends the wait
            if self.service.stale():
                await self.service.refresh()
            advertised = self.service.advertised(self.port.url)
            self._recheck()
            self.service.audit.flush()
            now = trio.current_time()
            self.service.memory.due(now)
            if not advertised:
                if self.announced and not self._dropping:  # the relay still routes to us: make it forget us
                    with trio.move_on_after(DRAIN_TIMEOUT):  # the withdrawn calls' answers go out first
                        while self.in_flight:
                            self._idle = trio.Event()
                            await self._idle.wait()
                    self._reconnect("this relay host may no longer call any desktop tool")
                last, next_beat = advertised, _next_beat(now)
            elif advertised != last or now >= next_beat:
                if last is not None and advertised != last:
                    log.info("desktop_advertised_changed url=%s tools=%d", self.port.url, len(advertised))
                await self._send(desktop.status_envelope(self.service.status_payload(self.port.url, advertised)))
                last, next_beat = advertised, _next_beat(now)
            wake = min(next_beat, self.service.look_again_at(trio.current_time()))
            for due in (self.service.audit.flush_at(), self.service.memory.due_at()):
                if due is not None:
                    wake = min(wake, due)
            with trio.move_on_at(wake):
                await changes.wait()

    def _recheck(self) -> None:
        """Withdraw or cancel every live call whose host now decides lower than what authorised it."""
        for live in self._live.values():
            if live.withdrawn is None and not live.scope.cancel_called and self._lowered(live):
                live.withdrawn = WITHDRAWN.format(what="was running" if live.running else "waited for approval")
                log.info("desktop_call_withdrawn url=%s tool=%s", self.port.url, live.tool)
                live.scope.cancel()

    def _lowered(self, live: _Live) -> bool:
        now = self.service.decide(self.port.url, live.tool)
        return _RANK.get(now, 0) < _RANK.get(live.level, 0) or not self.service.advertised(self.port.url)

    # -- commands --------------------------------------------------------------------------------
    def _dispatch(self, nursery: trio.Nursery, message: dict[str, Any]) -> None:
        typ = message.get("type")
        if message.get("channel") != desktop.CHANNEL:
            log.debug("message_ignored channel=%s type=%s", message.get("channel"), typ)
            return
        if typ in desktop.CONTROL_SESSION_END_TYPES:
            log.debug("control_session_end_ignored (no computer-use tools)")
            return
        if typ not in desktop.COMMAND_TYPES:
            log.debug("desktop_message_ignored type=%s", typ)
            return
        try:
            command = desktop.parse_command(message.get("payload"))
        except BadCommand as exc:
            log.info("desktop_command_rejected error=%s", exc)
            if exc.request_id is not None:
                nursery.start_soon(self._answer_now, exc.request_id, str(exc))
            return
        if not self.ids.admit(command.request_id):
            nursery.start_soon(self._answer_now, command.request_id, desktop.INVALID_ID)
            return
        if self.in_flight >= MAX_IN_FLIGHT:
            nursery.start_soon(self._answer_now, command.request_id, BUSY)
            return
        self.in_flight += 1
        nursery.start_soon(self._call, command)

    async def _answer_now(self, request_id: str, error: str) -> None:
        if not self.announced:
            return  # answering would make the relay take this connection for a legacy desktop client
        await self._send(desktop.response_envelope(request_id, False, error=error))

    async def _call(self, command: Command) -> None:
        try:
            await self._call_once(command)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    async def _call_once(self, command: Command) -> None:
        service, url = self.service, self.port.url
        spec = service.table.get(command.tool)
        started, wall = trio.current_time(), service.wall_clock()
        record: dict[str, Any] = {
            "ts": int(wall * 1000), "kind": "tool.completed",
            "tool": command.tool if spec is not None else _shown_name(command.tool),
            "category": desktop.category(spec.capability if spec else None), "ok": False,
            "request_id": command.request_id, "host_url": url,
            "args_preview": desktop.redact(desktop.args_preview(spec, command.args)),
        }
        error: str | None
        ok, result, error, how = False, None, desktop.ABORTED, "aborted"  # stays so when the link goes mid-call
        try:
            ok, result, error, how = await self._run(command, spec, record, started)
        except Exception as exc:  # supervision point: a bug here answers the call, never ends the link
            log.exception("desktop_call_failed tool=%s", command.tool)
            error, how = f"{command.tool} failed in the agent: {type(exc).__name__}", "failed"
        finally:
            record["duration_ms"] = int((trio.current_time() - started) * 1000)
            record["ok"] = ok
            record["authorised"] = how
            if error == desktop.ABORTED:
                record["aborted"] = True
            if error is not None:
                record["error"] = desktop.clip(desktop.redact(error), 1000)
            _add_outputs(record, result)
            outcome = "ok" if ok else "aborted" if error == desktop.ABORTED else "error"
            service.record_call(url, record, outcome=f"{how}:{outcome}")
        if how == "not_served" and not self.announced:
            return  # answering would make the relay take this connection for a legacy desktop client
        envelope = desktop.response_envelope(command.request_id, ok, result=result, error=error)
        try:
            bounded = desktop.bound_encoded(envelope)
        except (TypeError, ValueError, RecursionError) as exc:  # a tool returned what JSON cannot carry: answered
            log.error("desktop_result_not_json tool=%s error=%s", command.tool, exc)
            bounded = desktop.response_envelope(command.request_id, False,
                                                error=f"{command.tool} returned a result that is not JSON ({exc})")
        await self._send(bounded)
        # A cut answer (not Encoded) was bigger than the frame: its memory is worth giving back too.
        self.service.memory.note(len(bounded.data) if isinstance(bounded, Encoded) else memtrim.BIG,
                                 trio.current_time())

    async def _run(self, command: Command, spec: desktop.ToolSpec | None, record: dict[str, Any],
                   started: float) -> tuple[bool, Any, str | None, str]:
        """(ok, result, error, how it was authorised) of one call."""
        service, url = self.service, self.port.url
        limit = desktop.call_limit(service.table.deadline(command.tool), cap=service.deadline_cap,
                                   budget=command.budget)
        deadline = started + limit
        expired = False
        if not service.current():  # the policy as it is on disk now (read again only after a change)
            with trio.move_on_at(deadline) as reading:
                await service.refresh()
            expired = reading.cancelled_caught
        if not service.advertised(url):  # (a refusal; on a view the deadline cut short, one that ran nothing)
            return False, None, NOT_SERVED, "not_served"
        if expired:
            return False, None, desktop.ABORTED, "expired"
        if spec is None:
            return False, None, f"unknown tool: {_shown_name(command.tool)}", "unknown_tool"
        decision = service.decide(url, spec.name)
        if decision == policy.DECIDE_DENY:
            return False, None, (f"{spec.name} needs the '{spec.capability}' capability, which is disabled for "
                                 f"this relay on the desktop; the user can change it with `hermes-relay access`"), "denied"
        risky = desktop.risky_env(command.args)
        if risky:  # never run, never asked about (the tools refuse it too: core/envguard)
            return False, None, (f'refusing the environment override in "env": {desktop.dangerous_env(risky[0])}; '
                                 "set it inside the command instead, where the approval shows it"), "refused_env"
        live = _Live(spec.name, decision, trio.CancelScope(deadline=deadline))
        self._live[command.request_id] = live
        how = "policy"
        try:
            with live.scope:
                if decision == policy.DECIDE_ASK:
                    details = desktop.call_details(command.args, service.cwd)  # what the user is shown
                    if desktop.details_size(details) > desktop.MAX_SHOWN:
                        return False, None, (f"{spec.name}'s arguments are too large to show for approval (over "
                                             f"{desktop.MAX_SHOWN} bytes); refused without asking"), "not_asked"
                    answer = await service.approvals.request(
                        url=url, tool=spec.name, capability=spec.capability or "",
                        preview=desktop.args_preview(spec, command.args),
                        reason=str(command.args.get("reason") or f"Run {spec.name}"), details=details,
                        request_id=command.request_id,
                        expires_at=max(started, deadline - desktop.approval_margin(limit)))
                    if not answer.approved:
                        return False, None, answer.reason, answer.how or "denied"
                    how = answer.how or "user"
                    await service.refresh()  # the user took time: the policy as it is on disk now
                if decision == policy.DECIDE_ASK or trio.current_time() >= deadline:
                    # A deadline or a withdrawal that came meanwhile cancels here. Without an approval nothing
                    # awaited since the scope opened, so only the clock can have passed the deadline: no
                    # scheduler pass otherwise (the tool's thread hop checks for cancellation again).
                    await trio.lowlevel.checkpoint()
                if self._lowered(live):  # decided again, just before the tool starts
                    return False, None, WITHDRAWN.format(what="waited for approval"), "withdrawn"
                service.audit.write({**record, "kind": "tool.started", "authorised": how,
                                     "duration_ms": None, "ok": None}, essential=True)
                live.running = True
                context = ToolContext(home=service.home, cwd=service.cwd, deadline=deadline,
                                      env=dict(service.env), confinement=PENDING, resolve=service.confinement_plan(url),
                                      here=service.confinement_here(url))
                _thread.HOST.set(url)  # this task's tool threads count against this host's share
                try:
                    result = await spec.run(command.args, context)
                except ToolError as exc:
                    return False, None, str(exc) or "failed", how
                except HermesError as exc:
                    return False, None, exc.message, how
                except Exception as exc:  # supervision point: a tool bug answers the call, never ends the link
                    log.exception("desktop_tool_crashed tool=%s", spec.name)
                    return False, None, f"{spec.name} failed: {type(exc).__name__}: {exc}", how
        except AuditError as exc:  # the audit could not record the start: nothing ran
            log.error("desktop_call_refused_unaudited tool=%s error=%s", spec.name, exc.message)
            return False, None, exc.message, "audit_failed"
        finally:
            self._live.pop(command.request_id, None)
        if live.scope.cancelled_caught:
            if live.withdrawn is not None:
                return False, None, live.withdrawn, "withdrawn"
            return False, None, desktop.ABORTED, how if live.running else "expired"
        if spec.name == "desktop_patch" and isinstance(result, dict):
            result = {**result, "approved": "auto" if how == "policy" else "user"}
        return True, result, None, how


def _shown_name(tool: str) -> str:
    """A tool name a relay made up, as the audit, status and answers show it: short, visible, valid UTF-8."""
    return desktop.visible(desktop.clip(tool, 64), keep_newlines=False)


def _add_outputs(record: dict[str, Any], result: Any) -> None:
    if not isinstance(result, dict):
        return
    if isinstance(result.get("exit_code"), int):
        record["exit_code"] = result["exit_code"]
    for key in ("stdout", "stderr"):
        value = result.get(key)
        if isinstance(value, str):
            record[key] = desktop.redact(value[:AUDIT_PREVIEW])
            if len(value) > AUDIT_PREVIEW:
                record[f"{key}_truncated"] = True
