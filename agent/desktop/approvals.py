"""Pending approvals for ``ask`` capabilities: the call waits here for the user, inside its deadline.

A request lives until the user decides (``approvals.decide`` over IPC), or until ``expires_at``,
which the dispatcher sets a few seconds before the call's deadline so the refusal still reaches the
relay in time. An expired or decided request is gone: a late ``approve`` finds nothing and runs
nothing. Every request and outcome is published to subscribers (the agent's watch stream) and, when
the platform has one, shown as a desktop notification.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from hermes_relay.agent.desktop import notify
from hermes_relay.core.errors import NotFoundError, UsageError

log = logging.getLogger(__name__)

REQUESTED = "approval.requested"
RESOLVED = "approval.resolved"
MAX_PENDING = 32  # more waiting requests than anyone can read are refused at once
APPROVED, DENIED, EXPIRED, WITHDRAWN = "approved", "denied", "expired", "withdrawn"


@dataclass(frozen=True)
class Decision:
    approved: bool
    reason: str
    always: bool = False


@dataclass
class Pending:
    id: str
    url: str
    tool: str
    capability: str
    preview: str
    reason: str
    request_id: str
    created_at: float  # wall clock
    expires_at: float  # wall clock
    done: trio.Event = field(default_factory=trio.Event)
    decision: Decision | None = None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "tool": self.tool, "capability": self.capability,
                "preview": self.preview, "reason": self.reason, "request_id": self.request_id,
                "created_at": self.created_at, "expires_at": self.expires_at}


class Approvals:
    def __init__(self, *, wall_clock: Callable[[], float], env: Mapping[str, str],
                 on_always: Callable[[str, str], None]):
        self._wall = wall_clock
        self._env = env
        self._on_always = on_always
        self.pending: dict[str, Pending] = {}
        self._subscribers: set[trio.MemorySendChannel[dict[str, Any]]] = set()

    def list(self) -> list[dict[str, Any]]:
        return [p.public() for p in sorted(self.pending.values(), key=lambda p: p.created_at)]

    @contextmanager
    def subscribe(self, size: int = 64) -> Iterator[trio.MemoryReceiveChannel[dict[str, Any]]]:
        """Events from now on: ``{event: approval.requested, ...}`` and ``{event: approval.resolved, ...}``."""
        send, receive = trio.open_memory_channel[dict[str, Any]](size)
        self._subscribers.add(send)
        try:
            yield receive
        finally:
            self._subscribers.discard(send)
            send.close()

    def _publish(self, event: dict[str, Any]) -> None:
        for chan in list(self._subscribers):
            try:
                chan.send_nowait(event)
            except trio.WouldBlock:
                log.debug("approval_event_dropped subscriber_slow")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.discard(chan)

    async def request(self, *, url: str, tool: str, capability: str, preview: str, reason: str,
                      request_id: str, expires_at: float) -> Decision:
        """Wait for the user until ``expires_at`` (trio time). Cancellation withdraws the request."""
        if len(self.pending) >= MAX_PENDING:
            return Decision(False, f"{len(self.pending)} desktop calls are already waiting for approval; "
                                   "refused without asking")
        now_trio, now_wall = trio.current_time(), self._wall()
        pid = secrets.token_hex(4)
        while pid in self.pending:
            pid = secrets.token_hex(4)
        pending = Pending(pid, url, tool, capability, preview, reason, request_id, now_wall,
                          now_wall + max(0.0, expires_at - now_trio))
        self.pending[pid] = pending
        self._publish({"event": REQUESTED, **pending.public()})
        log.info("approval_requested id=%s tool=%s url=%s", pid, tool, url)
        outcome = WITHDRAWN  # the call ended (deadline, link lost) before anyone answered
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(notify.notify, f"Hermes: allow {tool}?",
                                   f"{preview}\nhermes-relay approvals approve {pid}", self._env)
                with trio.move_on_at(expires_at):
                    await pending.done.wait()
                nursery.cancel_scope.cancel()
            decision = pending.decision or Decision(
                False, f"approval timed out: nobody answered `hermes-relay approvals approve {pid}` in time")
            outcome = APPROVED if decision.approved else DENIED if pending.decision else EXPIRED
            return decision
        finally:
            self.pending.pop(pid, None)
            self._publish({"event": RESOLVED, "id": pid, "outcome": outcome, "tool": tool, "url": url})
            log.info("approval_resolved id=%s outcome=%s", pid, outcome)

    async def decide(self, pid: Any, approve: Any, *, always: bool = False, reason: str | None = None) -> dict[str, Any]:
        if not isinstance(pid, str) or not pid:
            raise UsageError("approvals.decide needs the approval id `hermes-relay approvals` shows")
        if not isinstance(approve, bool):
            raise UsageError("approvals.decide needs approve: true or false")
        pending = self._waiting(pid)
        pending.decision = Decision(approve, "approved" if approve else (reason or "Rejected from CLI"),
                                    always and approve)
        pending.done.set()
        if approve and always:  # after the call was let go: the policy file is written under its lock, in a thread
            await trio.to_thread.run_sync(self._on_always, pending.url, pending.capability)
        return {"id": pid, "approved": approve, "always": always and approve, "tool": pending.tool,
                "url": pending.url, "capability": pending.capability}

    def _waiting(self, pid: str) -> Pending:
        pending = self.pending.get(pid)
        if pending is None or pending.done.is_set():
            raise NotFoundError(f"no pending approval {pid!r}: it was already answered, it expired, or its call ended",
                                hint="see the pending ones with `hermes-relay approvals`")
        return pending
