"""One relay link as a sans-IO state machine: states, events, the transition table and its decisions.

``agent/link.py`` does the I/O (store, sockets, timers) and reports what happened as an event; this
module decides the next state, what to show in ``status`` and what the driver does next (dial now,
wait, wait for a wake-up, or serve the connection). Nothing here sleeps, reads a file or opens a socket,
so every transition is tested without either.

What happens to a link when the network changes (``NETWORK``: an interface or address change, a
wall-clock jump after sleep/resume, or ``reload``)::

    state          entered on                              while here                 on NETWORK
    -------------  --------------------------------------  -------------------------  -------------------
    connecting     Dial (store re-read, no verdict)        race the routes, auth      (dial already runs)
    connected      Authenticated                           ping every ping_interval;  ping now (probe
                                                           probe higher tiers;        timeout), probe the
                                                           re-auth at local expiry    higher tiers now
                                                           and on a failed bearer
                                                           check
    backoff        Dropped, SessionEnded, StoreUnreadable, full-jitter delay         skip the wait: dial
                   Crashed                                 (1 s doubling to 30 s)
    rate_limited   Limited (HTTP 429 / 1013)               wait out the block        nothing (the block
                                                                                      does not end sooner)
    revoked        Rejected (token and refresh refused)    nothing                    re-read the store: a
    expired        Rejected after the stored expiry                                   new token clears it
    replaced       Rejected; another pairing of the same
                   relay (other URL) holds a newer session
    pin_mismatch   PinChanged                              nothing                    re-read the store
    not_paired     Unpaired (record removed)               nothing                    re-read the store

``TABLE`` below is the authority; the table above is its reading. A verdict (revoked, expired,
replaced, pin_mismatch) is recorded beside the pairing and never deletes it.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from hermes_relay.core import api, backoff


class LinkState(str, enum.Enum):  # noqa: UP042 - StrEnum would change str() and format() of a state
    """The link's state; each value is the wire string ``status`` and ``watch`` show."""

    CONNECTING = api.CONNECTING
    CONNECTED = api.CONNECTED
    BACKOFF = api.BACKOFF
    RATE_LIMITED = api.RATE_LIMITED
    REVOKED = api.REVOKED
    EXPIRED = api.EXPIRED
    REPLACED = api.REPLACED
    PIN_MISMATCH = api.PIN_MISMATCH
    NOT_PAIRED = api.NOT_PAIRED


VERDICTS: Final = frozenset({LinkState.REVOKED, LinkState.EXPIRED, LinkState.REPLACED, LinkState.PIN_MISMATCH})
ANY: Final = frozenset(LinkState)
STORE_RETRY: Final = 30.0  # an unreadable store is re-read this often (or on a wake-up)


# -- events (what the driver observed) ----------------------------------------------------------
@dataclass(frozen=True)
class StoreUnreadable:
    error: dict[str, Any]


@dataclass(frozen=True)
class Unpaired:
    pass


@dataclass(frozen=True)
class VerdictStored:
    """The agent's own record says this token already got a verdict (survives restarts)."""

    verdict: LinkState
    error: dict[str, Any] | None
    replaced_by: str | None = None


@dataclass(frozen=True)
class Dial:
    routes: tuple[dict[str, Any], ...] = ()
    server_version: str | None = None


@dataclass(frozen=True)
class Authenticated:
    route: dict[str, Any]
    latency_ms: float
    server_version: str | None


@dataclass(frozen=True)
class Dropped:
    """A network failure (dial, auth timeout, silent link, relay closed the socket)."""

    error: dict[str, Any]
    connected_for: float | None = None  # seconds the link was up before this drop, if it was


@dataclass(frozen=True)
class SessionEnded:
    """The relay closed with CLOSE_AUTH_FAILED: ask again after the usual delay (only auth.fail decides)."""

    reason: str


@dataclass(frozen=True)
class Reauthenticate:
    """Dial again at once: a better route answered twice, the local expiry passed, or a bearer check failed."""

    reason: str


@dataclass(frozen=True)
class Rejected:
    """auth.fail for the token and for the refresh token."""

    error: dict[str, Any]
    expired: bool
    replaced_by: str | None = None


@dataclass(frozen=True)
class PinChanged:
    error: dict[str, Any]


@dataclass(frozen=True)
class Limited:
    error: dict[str, Any]
    retry_after: float | None


@dataclass(frozen=True)
class Crashed:
    error: dict[str, Any]


Event = (StoreUnreadable | Unpaired | VerdictStored | Dial | Authenticated | Dropped | SessionEnded
         | Reauthenticate | Rejected | PinChanged | Limited | Crashed)

_ACTIVE: Final = frozenset({LinkState.CONNECTING, LinkState.CONNECTED})
_WAITING: Final = ANY - _ACTIVE

# The one transition table: event type -> (states it may arrive in, the state it leads to).
# ``None`` as the target means "decided by the event" (the verdict it carries).
TABLE: Final[Mapping[type, tuple[frozenset[LinkState], LinkState | None]]] = {
    StoreUnreadable: (ANY, LinkState.BACKOFF),
    Unpaired: (ANY, LinkState.NOT_PAIRED),
    VerdictStored: (ANY, None),
    Dial: (ANY, LinkState.CONNECTING),
    Authenticated: (frozenset({LinkState.CONNECTING}), LinkState.CONNECTED),
    Dropped: (_ACTIVE, LinkState.BACKOFF),
    SessionEnded: (_ACTIVE, LinkState.BACKOFF),
    Reauthenticate: (frozenset({LinkState.CONNECTED}), LinkState.CONNECTING),
    Rejected: (frozenset({LinkState.CONNECTING}), None),
    PinChanged: (frozenset({LinkState.CONNECTING}), LinkState.PIN_MISMATCH),
    Limited: (frozenset({LinkState.CONNECTING}), LinkState.RATE_LIMITED),
    Crashed: (ANY, LinkState.BACKOFF),
}


class InvalidTransition(Exception):
    """An event arrived in a state the table does not allow: a bug in the driver."""


# -- what the driver does next --------------------------------------------------------------------
class Do(enum.Enum):
    DIAL = "dial"  # connect now
    SERVE = "serve"  # connected: keep it alive until something happens
    WAIT = "wait"  # wait ``delay`` seconds; a wake-up (network change, reload) cuts it short
    WAIT_FULL = "wait_full"  # wait ``delay`` seconds whatever happens (a rate-limit block)
    IDLE = "idle"  # wait for a wake-up, then re-read the store


@dataclass(frozen=True)
class Next:
    do: Do
    delay: float = 0.0


# -- the status view ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinkSnapshot:
    """What ``status`` and ``watch`` show for one link (``RelayState`` in core/api.py)."""

    url: str
    state: LinkState
    route: dict[str, Any] | None
    since: float | None
    latency_ms: float | None
    attempts: int
    last_error: dict[str, Any] | None
    next_retry_at: float | None
    routes: list[dict[str, Any]]
    server_version: str | None
    replaced_by: str | None

    def to_wire(self) -> dict[str, Any]:
        return {"url": self.url, "state": self.state.value, "route": self.route, "since": self.since,
                "latency_ms": self.latency_ms, "attempts": self.attempts, "last_error": self.last_error,
                "next_retry_at": self.next_retry_at, "routes": list(self.routes),
                "server_version": self.server_version, "replaced_by": self.replaced_by}


@dataclass
class LinkMachine:
    """The state of one link and every decision about it. ``now`` values are wall-clock seconds."""

    url: str
    backoff_base: float = backoff.DEFAULT_BASE
    backoff_cap: float = backoff.DEFAULT_CAP
    stable_after: float = 60.0
    rate_limit_wait: float = 300.0
    rng: random.Random = field(default_factory=random.Random)
    state: LinkState = LinkState.CONNECTING
    route: dict[str, Any] | None = None
    since: float | None = None
    latency_ms: float | None = None
    attempts: int = 0
    last_error: dict[str, Any] | None = None
    next_retry_at: float | None = None
    routes: list[dict[str, Any]] = field(default_factory=list)
    server_version: str | None = None
    replaced_by: str | None = None

    def __post_init__(self) -> None:
        self._delays = self._schedule()

    def _schedule(self) -> Iterator[float]:
        return backoff.full_jitter(base=self.backoff_base, cap=self.backoff_cap, rng=self.rng)

    def handle(self, event: Event, now: float) -> Next:
        """Apply ``event`` (observed at wall-clock ``now``) and say what the driver does next."""
        allowed, target = TABLE[type(event)]
        if self.state not in allowed:
            raise InvalidTransition(f"{type(event).__name__} in state {self.state.value}")
        if isinstance(event, StoreUnreadable):
            self._leave(LinkState.BACKOFF, event.error, now + STORE_RETRY)
            return Next(Do.WAIT, STORE_RETRY)
        if isinstance(event, Unpaired):
            self._leave(LinkState.NOT_PAIRED, None, None)
            return Next(Do.IDLE)
        if isinstance(event, VerdictStored):
            self._leave(event.verdict, event.error, None)
            self.replaced_by = event.replaced_by if event.verdict is LinkState.REPLACED else None
            return Next(Do.IDLE)
        if isinstance(event, Dial):
            self.state, self.route, self.next_retry_at, self.replaced_by = LinkState.CONNECTING, None, None, None
            self.routes = list(event.routes)
            self.server_version = event.server_version or self.server_version
            return Next(Do.DIAL)
        if isinstance(event, Authenticated):
            self.state, self.route, self.since = LinkState.CONNECTED, event.route, now
            self.latency_ms, self.last_error, self.attempts = event.latency_ms, None, 0
            self.server_version = event.server_version or self.server_version
            return Next(Do.SERVE)
        if isinstance(event, Dropped):
            if event.connected_for is not None and event.connected_for >= self.stable_after:
                self._delays = self._schedule()
            delay = next(self._delays)
            self.attempts += 1
            self._leave(LinkState.BACKOFF, event.error, now + delay)
            return Next(Do.WAIT, delay)
        if isinstance(event, SessionEnded):
            delay = next(self._delays)
            self._leave(LinkState.BACKOFF, None, now + delay)
            return Next(Do.WAIT, delay)
        if isinstance(event, Reauthenticate):
            self._delays = self._schedule()
            self.state, self.route, self.since, self.next_retry_at = LinkState.CONNECTING, None, None, None
            return Next(Do.DIAL)
        if isinstance(event, Rejected):
            verdict = verdict_for(expired=event.expired, replaced_by=event.replaced_by)
            self._leave(verdict, event.error, None)
            self.replaced_by = event.replaced_by if verdict is LinkState.REPLACED else None
            return Next(Do.IDLE)
        if isinstance(event, PinChanged):
            self._leave(LinkState.PIN_MISMATCH, event.error, None)
            return Next(Do.IDLE)
        if isinstance(event, Limited):
            wait = event.retry_after or self.rate_limit_wait
            self.attempts += 1
            self._leave(LinkState.RATE_LIMITED, event.error, now + wait)
            return Next(Do.WAIT_FULL, wait)
        assert isinstance(event, Crashed) and target is LinkState.BACKOFF
        self._leave(LinkState.BACKOFF, event.error, now + self.backoff_cap)
        return Next(Do.WAIT, self.backoff_cap)

    def measured(self, latency_ms: float) -> None:
        """A keepalive round trip while connected."""
        if self.state is LinkState.CONNECTED:
            self.latency_ms = latency_ms

    def _leave(self, state: LinkState, error: dict[str, Any] | None, retry_at: float | None) -> None:
        self.state, self.last_error, self.next_retry_at = state, error, retry_at
        self.route, self.since = None, None

    def snapshot(self) -> LinkSnapshot:
        return LinkSnapshot(self.url, self.state, self.route, self.since, self.latency_ms, self.attempts,
                            self.last_error, self.next_retry_at, list(self.routes), self.server_version,
                            self.replaced_by)


def verdict_for(*, expired: bool, replaced_by: str | None) -> LinkState:
    """Why the relay refused this pairing's credentials: a newer pairing of the same relay under
    another URL replaced it, its stored expiry passed, or (otherwise) it was revoked."""
    if replaced_by:
        return LinkState.REPLACED
    return LinkState.EXPIRED if expired else LinkState.REVOKED


@dataclass
class Upgrade:
    """Hysteresis for moving up to a higher-priority route while connected on a lower one.

    Probe every ``interval`` (or on a network change); after a first answer, probe again exactly
    ``hysteresis`` later whatever the network does meanwhile; move only after two answers in a row,
    so a route that flaps during a Wi-Fi join is not chosen.
    """

    interval: float
    hysteresis: float
    confirmations: int = 0

    def next_wait(self) -> tuple[float, bool]:
        """(seconds until the next probe, whether a network change may cut the wait short)."""
        if self.confirmations:
            return self.hysteresis, False
        return self.interval, True

    def observe(self, answered: bool) -> bool:
        """Record one probe's outcome; True means move up now."""
        self.confirmations = self.confirmations + 1 if answered else 0
        return self.confirmations >= 2
