"""Pending approvals for ``ask`` capabilities: the call waits here for the user, inside its deadline.

A request lives until the user decides (``approvals.decide`` over IPC), or until ``expires_at``,
which the dispatcher sets shortly before the call's deadline so the refusal still reaches the relay
in time, or until its call is cancelled (the host was lowered meanwhile: withdrawn). An expired or
decided request is gone: a late ``approve`` finds nothing and runs nothing. Every request and
outcome is published to subscribers (the agent's watch stream) and, when the platform has one, shown
as a desktop notification.

What the user is shown is what runs: ``details`` (core/desktop.call_details: the whole command,
cwd, env overrides, stdin, resolved paths, the host's reason) is never redacted or cut, only made
visible (control, ANSI and bidi characters escaped). Requests and notifications are rate-limited per
host (token buckets): a host that asks faster is refused without asking.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from ...core import desktop
from ...core.errors import NotFoundError, UsageError
from . import notify

if TYPE_CHECKING:
    from ...core.apitypes import ApprovalsDecideReply

log = logging.getLogger(__name__)

REQUESTED = "approval.requested"
RESOLVED = "approval.resolved"
MAX_PENDING = 32  # more waiting requests than anyone can read are refused at once
APPROVED, DENIED, EXPIRED, WITHDRAWN = "approved", "denied", "expired", "withdrawn"
REQUEST_BURST, REQUEST_EVERY = 6, 5.0  # per host: 6 at once, then one more every 5 s (12 a minute)
NOTIFY_BURST, NOTIFY_EVERY = 3, 10.0  # per host: desktop notifications beyond this are skipped (watch/list still show)
NOTIFY_TEXT = 300  # characters of the command in a notification; `approvals show ID` has the rest


class Bucket:
    """A token bucket on trio's clock: ``take()`` is True while the host is within its rate."""

    def __init__(self, burst: int, every: float):
        self.burst, self.every = burst, every
        self.tokens = float(burst)
        self.at = trio.current_time()

    def take(self) -> bool:
        now = trio.current_time()
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) / self.every)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass(frozen=True)
class Decision:
    approved: bool
    reason: str
    always: bool = False
    how: str = ""  # for the audit: "user", "always", "rejected" (by the user), "expired" or "not_asked"


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
    details: dict[str, Any] = field(default_factory=dict)
    done: trio.Event = field(default_factory=trio.Event)
    decision: Decision | None = None

    def public(self) -> dict[str, Any]:
        """The request as the CLI shows it: every text made visible (and valid UTF-8 for IPC), nothing cut."""
        return {"id": self.id, "url": desktop.visible(self.url), "tool": desktop.visible(self.tool),
                "capability": self.capability, "preview": desktop.visible(self.preview, keep_newlines=False),
                "reason": desktop.visible(self.reason), "request_id": desktop.visible(self.request_id),
                "created_at": self.created_at, "expires_at": self.expires_at, "details": _shown(self.details)}


def _shown(value: Any) -> Any:
    if isinstance(value, dict):
        return {desktop.visible(str(k)): _shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shown(v) for v in value]
    return desktop.visible(value) if isinstance(value, str) else value


def notification(pending: Pending) -> tuple[str, str]:
    """Title and body of the desktop notification: visible text only, the command bounded."""
    details = pending.details
    what = details.get("command") or next(iter((details.get("paths") or {}).values()), None) or pending.preview
    text = desktop.visible(str(what))
    if len(text) > NOTIFY_TEXT:
        text = text[:NOTIFY_TEXT] + f"… (see `hermes-relay approvals show {pending.id}`)"
    warn = ""
    if details.get("dangerous_env"):
        warn = "\n⚠ changes " + ", ".join(desktop.visible(n) for n in details["dangerous_env"])
    return (f"Hermes: allow {desktop.visible(pending.tool)}?",
            f"{desktop.visible(pending.url)}: {text}{warn}\nhermes-relay approvals approve {pending.id}")


class Approvals:
    def __init__(self, *, wall_clock: Callable[[], float], env: Mapping[str, str],
                 on_always: Callable[[str, str], None]):
        self._wall = wall_clock
        self._env = env
        self._on_always = on_always
        self.pending: dict[str, Pending] = {}
        self._subscribers: set[trio.MemorySendChannel[dict[str, Any]]] = set()
        self._asks: dict[str, Bucket] = {}
        self._notes: dict[str, Bucket] = {}

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
                      request_id: str, expires_at: float, details: dict[str, Any] | None = None) -> Decision:
        """Wait for the user until ``expires_at`` (trio time). Cancellation withdraws the request."""
        if len(self.pending) >= MAX_PENDING:
            return Decision(False, f"{len(self.pending)} desktop calls are already waiting for approval; "
                                   "refused without asking", how="not_asked")
        if not self._asks.setdefault(url, Bucket(REQUEST_BURST, REQUEST_EVERY)).take():
            log.info("approval_rate_limited url=%s tool=%s", url, tool)
            return Decision(False, f"this relay host asks for approvals faster than {REQUEST_BURST} at once and one "
                                   f"every {REQUEST_EVERY:g}s; refused without asking the user", how="not_asked")
        now_trio, now_wall = trio.current_time(), self._wall()
        pid = secrets.token_hex(4)
        while pid in self.pending:
            pid = secrets.token_hex(4)
        pending = Pending(pid, url, tool, capability, preview, reason, request_id, now_wall,
                          now_wall + max(0.0, expires_at - now_trio), dict(details or {}))
        self.pending[pid] = pending
        self._publish({"event": REQUESTED, **pending.public()})
        log.info("approval_requested id=%s tool=%s url=%s", pid, tool, url)
        outcome = WITHDRAWN  # the call ended (deadline, link lost) before anyone answered
        try:
            async with trio.open_nursery() as nursery:
                if self._notes.setdefault(url, Bucket(NOTIFY_BURST, NOTIFY_EVERY)).take():
                    nursery.start_soon(notify.notify, *notification(pending), self._env)
                with trio.move_on_at(expires_at):
                    await pending.done.wait()
                nursery.cancel_scope.cancel()
            decision = pending.decision or Decision(
                False, f"approval timed out: nobody answered `hermes-relay approvals approve {pid}` in time",
                how="expired")
            outcome = APPROVED if decision.approved else DENIED if pending.decision else EXPIRED
            return decision
        finally:
            self.pending.pop(pid, None)
            self._publish({"event": RESOLVED, "id": pid, "outcome": outcome, "tool": desktop.visible(tool),
                           "url": desktop.visible(url)})
            log.info("approval_resolved id=%s outcome=%s", pid, outcome)

    async def decide(self, pid: Any, approve: Any, *, always: bool = False, reason: str | None = None) -> ApprovalsDecideReply:
        if not isinstance(pid, str) or not pid:
            raise UsageError("approvals.decide needs the approval id `hermes-relay approvals` shows")
        if not isinstance(approve, bool):
            raise UsageError("approvals.decide needs approve: true or false")
        pending = self._waiting(pid)
        always = always and approve
        pending.decision = Decision(approve, "approved" if approve else (reason or "Rejected from CLI"), always,
                                    how="always" if always else "user" if approve else "rejected")
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
