"""The desktop channel on one relay link: heartbeat, dispatch, one response per request.

Per link, in one nursery:
- the heartbeat sends ``desktop.status`` at once, every ``HEARTBEAT_INTERVAL``, and as soon as the
  advertised set changes (the policy is polled about once a second);
- every ``desktop.command`` runs as its own task under its deadline (approval wait included);
  whatever happens it is answered exactly once, with ``aborted`` when the deadline passed, and an
  audit record is written. Nothing runs after the deadline: the tool is started inside the
  deadline's cancel scope, so a late approval or a late start is cancelled before it begins.
Malformed commands are answered when they carry a usable ``request_id`` and dropped otherwise;
nothing a relay sends can end the link from here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from hermes_relay.core import desktop, policy
from hermes_relay.core.desktop import BadCommand, Command, RequestIds, ToolContext, ToolError
from hermes_relay.core.errors import HermesError

if TYPE_CHECKING:
    from hermes_relay.agent.desktop.service import DesktopService, LinkPort

log = logging.getLogger(__name__)

APPROVAL_MARGIN = 3.0  # an unanswered approval expires this long before the call's deadline
MAX_IN_FLIGHT = 64  # calls running at once per link; more are refused, not queued past their deadline
BUSY = f"too many desktop calls in flight (limit {MAX_IN_FLIGHT}); try again when some have finished"
AUDIT_PREVIEW = 4096  # bytes of stdout/stderr kept in an audit record


def _as_dict(message: Any) -> dict[str, Any]:
    if isinstance(message, dict):
        return message
    return {"channel": getattr(message, "channel", None), "type": getattr(message, "type", None),
            "id": getattr(message, "id", None), "payload": getattr(message, "payload", None)}


class DesktopChannel:
    def __init__(self, service: DesktopService, port: LinkPort):
        self.service = service
        self.port = port
        self.ids = RequestIds()
        self._send_lock = trio.Lock()
        self.in_flight = 0

    async def run(self, inbound: trio.MemoryReceiveChannel[Any]) -> None:
        self.service.record_link(self.port.url, "agent.connected", route=self.port.route_url)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._heartbeat)
                async for message in inbound:
                    self._dispatch(nursery, _as_dict(message))
                nursery.cancel_scope.cancel()
        finally:
            self.service.record_link(self.port.url, "agent.disconnected", route=self.port.route_url)

    async def _send(self, envelope: dict[str, Any]) -> bool:
        try:
            async with self._send_lock:
                await self.port.send(envelope)
            return True
        except (HermesError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.info("desktop_send_failed url=%s type=%s error=%s", self.port.url, envelope.get("type"), exc)
            return False

    # -- heartbeat -------------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        last: list[str] | None = None
        next_beat = trio.current_time()
        while True:
            advertised = self.service.advertised(self.port.url)
            now = trio.current_time()
            if advertised != last or now >= next_beat:
                if last is not None and advertised != last:
                    log.info("desktop_advertised_changed url=%s tools=%d", self.port.url, len(advertised))
                await self._send(desktop.status_envelope(self.service.status_payload(self.port.url, advertised)))
                last, next_beat = advertised, now + desktop.HEARTBEAT_INTERVAL
            await trio.sleep_until(min(next_beat, trio.current_time() + desktop.POLICY_POLL_INTERVAL))

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
        await self._send(desktop.response_envelope(request_id, False, error=error))

    async def _call(self, command: Command) -> None:
        service, url = self.service, self.port.url
        spec = service.table.get(command.tool)
        started, wall = trio.current_time(), service.wall_clock()
        preview = desktop.redact(desktop.args_preview(spec, command.args))
        record: dict[str, Any] = {
            "ts": int(wall * 1000), "kind": "tool.completed", "tool": command.tool,
            "category": desktop.category(spec.capability if spec else None), "ok": False,
            "request_id": command.request_id, "host_url": url, "args_preview": preview,
        }
        error: str | None
        ok, result, error = False, None, desktop.ABORTED  # stays so when the link goes mid-call
        try:
            ok, result, error = await self._run(command, spec, preview, started)
        finally:
            self.in_flight -= 1
            record["duration_ms"] = int((trio.current_time() - started) * 1000)
            record["ok"] = ok
            if error == desktop.ABORTED:
                record["aborted"] = True
            if error is not None:
                record["error"] = desktop.clip(desktop.redact(error), 1000)
            _add_outputs(record, result)
            service.record_call(url, record)
        envelope = desktop.response_envelope(command.request_id, ok, result=result, error=error)
        try:
            bounded = desktop.bound_response(envelope)
        except (TypeError, ValueError) as exc:  # a tool returned something JSON cannot carry: a bug, answered
            log.error("desktop_result_not_json tool=%s error=%s", command.tool, exc)
            bounded = desktop.response_envelope(command.request_id, False,
                                                error=f"{command.tool} returned a result that is not JSON ({exc})")
        await self._send(bounded)

    async def _run(self, command: Command, spec: desktop.ToolSpec | None, preview: str,
                   started: float) -> tuple[bool, Any, str | None]:
        url = self.port.url
        if spec is None:
            return False, None, f"unknown tool: {command.tool}"
        decision = self.service.decide(url, spec.name)
        if decision == policy.DECIDE_DENY:
            return False, None, (f"{spec.name} needs the '{spec.capability}' capability, which is disabled for "
                                 f"this relay on the desktop; the user can change it with `hermes-relay access`")
        cap = self.service.deadline_cap
        deadline = started + (spec.deadline if cap is None else min(spec.deadline, cap))
        approved = "auto"
        with trio.move_on_at(deadline) as scope:
            if decision == policy.DECIDE_ASK:
                answer = await self.service.approvals.request(
                    url=url, tool=spec.name, capability=spec.capability or "", preview=preview,
                    reason=str(command.args.get("reason") or f"Run {spec.name}")[:200],
                    request_id=command.request_id, expires_at=max(started, deadline - APPROVAL_MARGIN))
                if not answer.approved:
                    return False, None, answer.reason
                approved = "user"
                await trio.lowlevel.checkpoint()  # a deadline that passed meanwhile cancels here
            context = ToolContext(home=self.service.home, cwd=self.service.cwd, deadline=deadline,
                                  env=dict(self.service.env), confinement=self.service.confinement(url))
            try:
                result = await spec.run(command.args, context)
            except ToolError as exc:
                return False, None, str(exc) or "failed"
            except HermesError as exc:
                return False, None, exc.message
            except Exception as exc:  # supervision point: a tool bug answers the call, never ends the link
                log.exception("desktop_tool_crashed tool=%s", spec.name)
                return False, None, f"{spec.name} failed: {type(exc).__name__}: {exc}"
        if scope.cancelled_caught:
            return False, None, desktop.ABORTED
        if spec.name == "desktop_patch" and isinstance(result, dict):
            result = {**result, "approved": approved}
        return True, result, None


def _add_outputs(record: dict[str, Any], result: Any) -> None:
    if not isinstance(result, dict):
        return
    if isinstance(result.get("exit_code"), int):
        record["exit_code"] = result["exit_code"]
    for key in ("stdout", "stderr"):
        value = result.get(key)
        if isinstance(value, str):
            data = value.encode("utf-8")
            record[key] = desktop.redact(data[:AUDIT_PREVIEW].decode("utf-8", "ignore"))
            if len(data) > AUDIT_PREVIEW:
                record[f"{key}_truncated"] = True
