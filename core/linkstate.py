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

``TABLE`` below is the authority (``LinkMachine.handle`` applies its targets); the table above is its
reading. A verdict (revoked, expired, replaced, pin_mismatch) is decided in one place, ``verdict``,
recorded beside the pairing by the driver, and never deletes it.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, overload

from . import api, backoff
from .errors import HermesError
from .routes import Route, route_info


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


@dataclass(frozen=True)
class LinkError:
    """Why the link left a state, as ``status`` shows it (``last_error``: ``{code, message, data}``)."""

    code: str
    message: str
    hint: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)  # the wire ``data`` besides the hint

    @classmethod
    def of(cls, exc: HermesError) -> LinkError:
        return cls.from_wire(exc.to_wire())

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> LinkError:
        data = dict(obj.get("data") or {}) if isinstance(obj.get("data"), Mapping) else {}
        hint = data.pop("hint") if isinstance(data.get("hint"), str) else None
        return cls(str(obj.get("code") or "error"), str(obj.get("message") or ""), hint, data)

    def to_wire(self) -> dict[str, Any]:
        data = dict(self.data)
        if self.hint:
            data["hint"] = self.hint
        return {"code": self.code, "message": self.message, "data": data}


# -- events (what the driver observed) ----------------------------------------------------------
@dataclass(frozen=True)
class StoreUnreadable:
    error: LinkError


@dataclass(frozen=True)
class Unpaired:
    pass


@dataclass(frozen=True)
class VerdictStored:
    """The agent's own record says this token already got a verdict (survives restarts).
    ``replaced_by``: a newer pairing of the same relay the driver found in the store since."""

    verdict: LinkState
    error: LinkError | None
    replaced_by: str | None = None


@dataclass(frozen=True)
class Dial:
    routes: tuple[Route, ...] = ()
    server_version: str | None = None


@dataclass(frozen=True)
class Authenticated:
    route: Route
    latency_ms: float
    server_version: str | None


@dataclass(frozen=True)
class Dropped:
    """A network failure (dial, auth timeout, silent link, relay closed the socket)."""

    error: LinkError
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
    """auth.fail for the token and for the refresh token. ``expires_at``: the stored record's expiry;
    ``replaced_by``: a newer pairing of the same relay the driver found in the store."""

    error: LinkError
    expires_at: float | None
    replaced_by: str | None = None


@dataclass(frozen=True)
class PinChanged:
    error: LinkError


@dataclass(frozen=True)
class Limited:
    error: LinkError
    retry_after: float | None


@dataclass(frozen=True)
class Crashed:
    error: LinkError


Event = (StoreUnreadable | Unpaired | VerdictStored | Dial | Authenticated | Dropped | SessionEnded
         | Reauthenticate | Rejected | PinChanged | Limited | Crashed)
VerdictEvent = VerdictStored | Rejected | PinChanged

_ACTIVE: Final = frozenset({LinkState.CONNECTING, LinkState.CONNECTED})
_WAITING: Final = ANY - _ACTIVE

# The one transition table: event type -> (states it may arrive in, the state it leads to).
# ``None`` as the target means "decided by the verdict" (``verdict`` below). ``handle`` applies it.
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


# -- the verdict ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """What a refusal means for the pairing: recorded beside the token and shown by ``status``."""

    state: LinkState
    error: LinkError | None
    replaced_by: str | None = None


@overload
def verdict(url: str, event: VerdictEvent, now: float) -> Verdict: ...
@overload
def verdict(url: str, event: Event, now: float) -> Verdict | None: ...
def verdict(url: str, event: Event, now: float) -> Verdict | None:
    """The one place a verdict is decided, from the event (with the stored record's facts it carries)
    and the wall clock ``now``: a newer pairing of the same relay under another URL replaced it, its
    stored expiry passed, or (otherwise) it was revoked; a changed certificate is a pin mismatch.
    None for an event that is no verdict."""
    match event:
        case PinChanged(error=error):
            return Verdict(LinkState.PIN_MISMATCH, error)
        case VerdictStored(verdict=LinkState.REVOKED, replaced_by=str(newer)) | Rejected(replaced_by=str(newer)) if newer:
            return Verdict(LinkState.REPLACED, replaced_error(url, newer), newer)
        case VerdictStored(verdict=LinkState.REPLACED, error=error):
            stored = (error.data if error else {}).get("replaced_by")  # the newer URL, as recorded
            return Verdict(LinkState.REPLACED, error, stored if isinstance(stored, str) else None)
        case VerdictStored(verdict=state, error=error):
            return Verdict(state, error)
        case Rejected(error=error, expires_at=expires_at):
            expired = expires_at is not None and expires_at <= now
            return Verdict(LinkState.EXPIRED if expired else LinkState.REVOKED, error)
    return None


def replaced_error(url: str, replaced_by: str) -> LinkError:
    return LinkError("replaced", f"{url}: replaced by a newer pairing ({replaced_by})",
                     f"this relay is paired as {replaced_by}; remove the old pairing with `hermes-relay forget {url}`",
                     {"replaced_by": replaced_by})


def token_refused(state: object) -> bool:
    """Whether a stored verdict (its wire string) means the relay no longer accepts the token, so
    sending it again only counts toward the relay's per-IP block."""
    return state in (LinkState.REVOKED.value, LinkState.EXPIRED.value)


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
    """What ``status`` and ``watch`` show for one link (``RelayState`` in core/apitypes.py)."""

    url: str
    state: LinkState
    route: Route | None
    since: float | None
    latency_ms: float | None
    attempts: int
    last_error: LinkError | None
    next_retry_at: float | None
    routes: tuple[Route, ...]
    server_version: str | None
    replaced_by: str | None

    def to_wire(self) -> dict[str, Any]:
        return {"url": self.url, "state": self.state.value,
                "route": route_info(self.route) if self.route else None, "since": self.since,
                "latency_ms": self.latency_ms, "attempts": self.attempts,
                "last_error": self.last_error.to_wire() if self.last_error else None,
                "next_retry_at": self.next_retry_at, "routes": [route_info(r) for r in self.routes],
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
    route: Route | None = None
    since: float | None = None
    latency_ms: float | None = None
    attempts: int = 0
    last_error: LinkError | None = None
    next_retry_at: float | None = None
    routes: tuple[Route, ...] = ()
    server_version: str | None = None
    replaced_by: str | None = None

    def __post_init__(self) -> None:
        self._delays = self._schedule()

    def _schedule(self) -> Iterator[float]:
        return backoff.full_jitter(base=self.backoff_base, cap=self.backoff_cap, rng=self.rng)

    def handle(self, event: Event, now: float) -> Next:
        """Apply ``event`` (observed at wall-clock ``now``): the state it leads to is TABLE's target
        (or, where TABLE says None, the verdict's); say what the driver does next."""
        allowed, target = TABLE[type(event)]
        if self.state not in allowed:
            raise InvalidTransition(f"{type(event).__name__} in state {self.state.value}")
        decided = verdict(self.url, event, now)
        state = target if target is not None else decided.state if decided is not None else None
        if state is None:
            raise InvalidTransition(f"{type(event).__name__}: the table names no target and no verdict decides one")
        match event:
            case StoreUnreadable(error=error):
                return self._wait(state, error, now, STORE_RETRY)
            case Crashed(error=error):
                return self._wait(state, error, now, self.backoff_cap)
            case Dropped(error=error, connected_for=up_for):
                if up_for is not None and up_for >= self.stable_after:
                    self._delays = self._schedule()
                self.attempts += 1
                return self._wait(state, error, now, next(self._delays))
            case SessionEnded():
                return self._wait(state, None, now, next(self._delays))
            case Limited(error=error, retry_after=retry_after):
                self.attempts += 1
                return self._wait(state, error, now, retry_after or self.rate_limit_wait, Do.WAIT_FULL)
            case Unpaired():
                self._leave(state, None, None)
                return Next(Do.IDLE)
            case VerdictStored() | Rejected() | PinChanged():
                assert decided is not None
                self._leave(state, decided.error, None)
                self.replaced_by = decided.replaced_by if state is LinkState.REPLACED else None
                return Next(Do.IDLE)
            case Dial(routes=routes, server_version=version):
                self.state, self.route, self.next_retry_at, self.replaced_by = state, None, None, None
                self.routes = tuple(routes)
                self.server_version = version or self.server_version
                return Next(Do.DIAL)
            case Authenticated(route=route, latency_ms=latency_ms, server_version=version):
                self.state, self.route, self.since = state, route, now
                self.latency_ms, self.last_error, self.attempts = latency_ms, None, 0
                self.server_version = version or self.server_version
                return Next(Do.SERVE)
            case Reauthenticate():
                self._delays = self._schedule()
                self.state, self.route, self.since, self.next_retry_at = state, None, None, None
                return Next(Do.DIAL)
        raise InvalidTransition(f"{type(event).__name__} is no link event")

    def measured(self, latency_ms: float) -> None:
        """A keepalive round trip while connected."""
        if self.state is LinkState.CONNECTED:
            self.latency_ms = latency_ms

    def _wait(self, state: LinkState, error: LinkError | None, now: float, delay: float,
              do: Do = Do.WAIT) -> Next:
        self._leave(state, error, now + delay)
        return Next(do, delay)

    def _leave(self, state: LinkState, error: LinkError | None, retry_at: float | None) -> None:
        self.state, self.last_error, self.next_retry_at = state, error, retry_at
        self.route, self.since = None, None

    def snapshot(self) -> LinkSnapshot:
        return LinkSnapshot(self.url, self.state, self.route, self.since, self.latency_ms, self.attempts,
                            self.last_error, self.next_retry_at, self.routes, self.server_version,
                            self.replaced_by)


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
