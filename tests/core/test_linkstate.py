"""The link state machine without sockets or clocks: every (state, event) pair, the backoff schedule,
verdicts, hysteresis and the status view."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from hermes_relay.core import api, backoff
from hermes_relay.core import linkstate as ls
from hermes_relay.core.linkstate import Do, LinkError, LinkMachine, LinkState
from hermes_relay.core.routes import Route

ERR = LinkError("connect_refused", "refused")
ERR_WIRE = {"code": "connect_refused", "message": "refused", "data": {}}
LAN = Route(0, 0, "lan", "ws://10.0.0.2:8767")
ROUTE = {"url": "ws://10.0.0.2:8767", "role": "lan", "label": "LAN", "priority": 0}
NOW = 1_000_000.0


class CeilingRng(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


def sample(kind: type) -> ls.Event:
    examples: dict[type, Any] = {
        ls.StoreUnreadable: ls.StoreUnreadable(ERR),
        ls.Unpaired: ls.Unpaired(),
        ls.VerdictStored: ls.VerdictStored(LinkState.REVOKED, ERR),
        ls.Dial: ls.Dial((LAN,), "1.9.0"),
        ls.Authenticated: ls.Authenticated(LAN, 12.5, "1.9.0"),
        ls.Dropped: ls.Dropped(ERR),
        ls.SessionEnded: ls.SessionEnded("code 4001"),
        ls.Reauthenticate: ls.Reauthenticate("expiry passed"),
        ls.Rejected: ls.Rejected(ERR, expires_at=None),
        ls.PinChanged: ls.PinChanged(ERR),
        ls.Limited: ls.Limited(ERR, 120.0),
        ls.Crashed: ls.Crashed(ERR),
    }
    return examples[kind]


def machine(state: LinkState = LinkState.CONNECTING, **kw: Any) -> LinkMachine:
    m = LinkMachine("ws://relay:8767", rng=CeilingRng(), **kw)
    m.state = state
    return m


EXPECTED_TARGET = {
    ls.StoreUnreadable: LinkState.BACKOFF, ls.Unpaired: LinkState.NOT_PAIRED, ls.VerdictStored: LinkState.REVOKED,
    ls.Dial: LinkState.CONNECTING, ls.Authenticated: LinkState.CONNECTED, ls.Dropped: LinkState.BACKOFF,
    ls.SessionEnded: LinkState.BACKOFF, ls.Reauthenticate: LinkState.CONNECTING, ls.Rejected: LinkState.REVOKED,
    ls.PinChanged: LinkState.PIN_MISMATCH, ls.Limited: LinkState.RATE_LIMITED, ls.Crashed: LinkState.BACKOFF,
}
EXPECTED_NEXT = {
    ls.StoreUnreadable: Do.WAIT, ls.Unpaired: Do.IDLE, ls.VerdictStored: Do.IDLE, ls.Dial: Do.DIAL,
    ls.Authenticated: Do.SERVE, ls.Dropped: Do.WAIT, ls.SessionEnded: Do.WAIT, ls.Reauthenticate: Do.DIAL,
    ls.Rejected: Do.IDLE, ls.PinChanged: Do.IDLE, ls.Limited: Do.WAIT_FULL, ls.Crashed: Do.WAIT,
}


def test_every_event_type_has_one_row_and_an_example() -> None:
    assert set(ls.TABLE) == set(EXPECTED_TARGET) == set(EXPECTED_NEXT)


@pytest.mark.parametrize(("state", "kind"), list(itertools.product(LinkState, ls.TABLE)),
                         ids=lambda v: v.value if isinstance(v, LinkState) else v.__name__)
def test_every_state_event_pair_follows_the_table(state: LinkState, kind: type) -> None:
    m = machine(state)
    allowed, _ = ls.TABLE[kind]
    if state not in allowed:
        with pytest.raises(ls.InvalidTransition):
            m.handle(sample(kind), NOW)
        assert m.state is state  # a refused event changes nothing
        return
    nxt = m.handle(sample(kind), NOW)
    assert m.state is EXPECTED_TARGET[kind]
    assert nxt.do is EXPECTED_NEXT[kind]


def test_state_values_are_the_wire_strings() -> None:
    assert {s.value for s in LinkState} == {api.CONNECTING, api.CONNECTED, api.BACKOFF, api.REVOKED, api.EXPIRED,
                                            api.REPLACED, api.PIN_MISMATCH, api.RATE_LIMITED, api.NOT_PAIRED}
    assert LinkState.CONNECTED == api.CONNECTED and LinkState("replaced") is LinkState.REPLACED


def test_a_connection_cycle_and_what_status_shows() -> None:
    m = machine()
    assert m.handle(ls.Dial((LAN,), "1.9.0"), NOW).do is Do.DIAL
    m.handle(ls.Authenticated(LAN, 7.5, None), NOW + 1)
    snap = m.snapshot().to_wire()
    assert snap == {"url": "ws://relay:8767", "state": "connected", "route": ROUTE, "since": NOW + 1,
                    "latency_ms": 7.5, "attempts": 0, "last_error": None, "next_retry_at": None,
                    "routes": [ROUTE], "server_version": "1.9.0", "replaced_by": None}
    assert type(snap["state"]) is str  # plain msgpack data, not the enum
    m.measured(3.0)
    nxt = m.handle(ls.Dropped(ERR, connected_for=5.0), NOW + 10)
    snap = m.snapshot().to_wire()
    assert (snap["state"], snap["route"], snap["since"], snap["attempts"]) == ("backoff", None, None, 1)
    assert snap["last_error"] == ERR_WIRE and snap["next_retry_at"] == NOW + 10 + nxt.delay
    m.measured(99.0)  # a late keepalive answer does not touch a link that is down
    assert m.latency_ms == 3.0


def test_network_failures_back_off_by_the_full_jitter_ceiling_and_reset_after_a_stable_link() -> None:
    m = machine(backoff_base=1.0, backoff_cap=30.0, stable_after=60.0)
    delays = []
    for _ in range(7):
        m.handle(ls.Dial(), NOW)
        delays.append(m.handle(ls.Dropped(ERR), NOW).delay)
    assert delays == [backoff.ceiling(i, base=1.0, cap=30.0) for i in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert m.attempts == 7
    m.handle(ls.Dial(), NOW)
    m.handle(ls.Authenticated(LAN, 1.0, None), NOW)
    assert m.attempts == 0
    assert m.handle(ls.Dropped(ERR, connected_for=59.0), NOW).delay == 30  # not stable: schedule continues
    m.handle(ls.Dial(), NOW)
    m.handle(ls.Authenticated(LAN, 1.0, None), NOW)
    assert m.handle(ls.Dropped(ERR, connected_for=60.0), NOW).delay == 1  # stable: starts over


def test_a_relay_closing_the_session_waits_like_a_drop_but_counts_no_attempt() -> None:
    m = machine(LinkState.CONNECTED)
    nxt = m.handle(ls.SessionEnded("code 4001"), NOW)
    assert (nxt.do, nxt.delay, m.attempts, m.last_error) == (Do.WAIT, 1.0, 0, None)


def test_reauthenticate_dials_at_once_and_restarts_the_schedule() -> None:
    m = machine(LinkState.CONNECTING)
    for _ in range(3):
        m.handle(ls.Dropped(ERR), NOW)
        m.handle(ls.Dial(), NOW)
    m.handle(ls.Authenticated(LAN, 1.0, None), NOW)
    assert m.handle(ls.Reauthenticate("moving up to LAN"), NOW) == ls.Next(Do.DIAL)
    assert (m.state, m.route, m.since) == (LinkState.CONNECTING, None, None)
    assert m.handle(ls.Dropped(ERR), NOW).delay == 1.0


@pytest.mark.parametrize(("expired", "replaced_by", "verdict"), [
    (False, None, LinkState.REVOKED),
    (True, None, LinkState.EXPIRED),
    (False, "ws://100.64.0.2:8767", LinkState.REPLACED),
    (True, "ws://100.64.0.2:8767", LinkState.REPLACED),
])
def test_rejected_credentials_become_the_right_verdict(expired: bool, replaced_by: str | None,
                                                       verdict: LinkState) -> None:
    m = machine()
    expires_at = NOW if expired else None
    assert m.handle(ls.Rejected(ERR, expires_at=expires_at, replaced_by=replaced_by), NOW).do is Do.IDLE
    snap = m.snapshot()
    error = ls.replaced_error(m.url, replaced_by) if replaced_by else ERR
    assert (snap.state, snap.replaced_by, snap.last_error, snap.next_retry_at) == (verdict, replaced_by, error, None)
    m.handle(ls.Dial(), NOW)  # a new pairing: the old verdict's details go
    assert m.snapshot().replaced_by is None


def test_a_stored_replaced_verdict_keeps_the_newer_url() -> None:
    m = machine()
    stored = LinkError("replaced", "replaced", data={"replaced_by": "ws://b:8767"})
    m.handle(ls.VerdictStored(LinkState.REPLACED, stored), NOW)
    assert m.snapshot().to_wire()["replaced_by"] == "ws://b:8767"
    m.handle(ls.VerdictStored(LinkState.REVOKED, stored), NOW)
    assert m.snapshot().replaced_by is None


def test_rate_limit_waits_the_relays_retry_after_or_its_longest_block() -> None:
    m = machine(rate_limit_wait=300.0)
    assert m.handle(ls.Limited(ERR, 42.0), NOW) == ls.Next(Do.WAIT_FULL, 42.0)
    assert m.next_retry_at == NOW + 42.0 and m.attempts == 1
    m.handle(ls.Dial(), NOW)
    assert m.handle(ls.Limited(ERR, None), NOW) == ls.Next(Do.WAIT_FULL, 300.0)


def test_store_trouble_and_crashes_retry_on_their_own_schedule() -> None:
    m = machine(backoff_cap=30.0)
    assert m.handle(ls.StoreUnreadable(ERR), NOW) == ls.Next(Do.WAIT, ls.STORE_RETRY)
    assert m.handle(ls.Crashed(ERR), NOW) == ls.Next(Do.WAIT, 30.0)
    assert m.next_retry_at == NOW + 30.0


def test_upgrade_needs_two_answers_a_hysteresis_apart() -> None:
    up = ls.Upgrade(interval=30.0, hysteresis=5.0)
    assert up.next_wait() == (30.0, True)  # first probe: periodic, or sooner on a network change
    assert up.observe(True) is False
    assert up.next_wait() == (5.0, False)  # confirmation: exactly the hysteresis later, whatever happens
    assert up.observe(False) is False  # flapped: start over
    assert up.next_wait() == (30.0, True)
    assert up.observe(True) is False
    assert up.observe(True) is True


@pytest.mark.parametrize("kind", [ls.Dropped, ls.Crashed, ls.Unpaired, ls.Limited])
def test_the_table_is_what_decides_the_target(kind: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """A target changed in TABLE alone changes where the machine goes: no second copy of it exists."""
    allowed, _ = ls.TABLE[kind]
    monkeypatch.setitem(ls.TABLE, kind, (allowed, LinkState.NOT_PAIRED if kind is not ls.Unpaired
                                         else LinkState.BACKOFF))
    m = machine(LinkState.CONNECTING)
    m.handle(sample(kind), NOW)
    assert m.state is ls.TABLE[kind][1]


def test_a_row_without_a_target_for_an_event_that_is_no_verdict_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ls.TABLE, ls.Dropped, (ls.ANY, None))
    m = machine(LinkState.CONNECTED)
    with pytest.raises(ls.InvalidTransition, match="no target"):
        m.handle(sample(ls.Dropped), NOW)
    assert m.state is LinkState.CONNECTED


URL, NEWER = "ws://relay:8767", "ws://100.64.0.2:8767"
PIN = LinkError("pin_mismatch", "certificate changed", "run `hermes-relay pin accept`")


FOUND = ls.replaced_error(URL, NEWER)  # the error a newer pairing found in the store reads as


@pytest.mark.parametrize(("event", "state", "replaced_by", "error"), [
    (ls.Rejected(ERR, expires_at=None), LinkState.REVOKED, None, ERR),
    (ls.Rejected(ERR, expires_at=NOW + 0.001), LinkState.REVOKED, None, ERR),  # not yet
    (ls.Rejected(ERR, expires_at=NOW), LinkState.EXPIRED, None, ERR),  # the expiry instant itself has passed
    (ls.Rejected(ERR, expires_at=NOW - 3600), LinkState.EXPIRED, None, ERR),
    (ls.Rejected(ERR, expires_at=NOW, replaced_by=NEWER), LinkState.REPLACED, NEWER, FOUND),  # replaced wins
    (ls.Rejected(ERR, expires_at=None, replaced_by=""), LinkState.REVOKED, None, ERR),
    (ls.PinChanged(PIN), LinkState.PIN_MISMATCH, None, PIN),
    (ls.VerdictStored(LinkState.REVOKED, ERR), LinkState.REVOKED, None, ERR),
    (ls.VerdictStored(LinkState.REVOKED, ERR, replaced_by=NEWER), LinkState.REPLACED, NEWER, FOUND),
    (ls.VerdictStored(LinkState.EXPIRED, ERR, replaced_by=NEWER), LinkState.EXPIRED, None, ERR),
    (ls.VerdictStored(LinkState.PIN_MISMATCH, PIN), LinkState.PIN_MISMATCH, None, PIN),
    (ls.VerdictStored(LinkState.REPLACED, FOUND), LinkState.REPLACED, NEWER, FOUND),
    (ls.VerdictStored(LinkState.REPLACED, None), LinkState.REPLACED, None, None),
])
def test_one_function_decides_every_verdict(event: ls.VerdictEvent, state: LinkState, replaced_by: str | None,
                                            error: LinkError | None) -> None:
    decided = ls.verdict(URL, event, NOW)
    assert decided == ls.Verdict(state, error, replaced_by)
    m = machine()
    m.handle(event, NOW)  # and the machine shows exactly what it decided
    assert (m.state, m.last_error, m.replaced_by) == (decided.state, decided.error, decided.replaced_by)


def test_events_that_are_no_verdict_get_none() -> None:
    assert [k for k in ls.TABLE if ls.verdict(URL, sample(k), NOW) is not None] == [
        ls.VerdictStored, ls.Rejected, ls.PinChanged]
    assert {k for k, (_, target) in ls.TABLE.items() if target is None} <= {ls.VerdictStored, ls.Rejected}


def test_a_replaced_verdict_names_the_newer_pairing_and_the_way_out() -> None:
    assert ls.replaced_error(URL, NEWER).to_wire() == {
        "code": "replaced", "message": f"{URL}: replaced by a newer pairing ({NEWER})",
        "data": {"replaced_by": NEWER, "hint": f"this relay is paired as {NEWER}; remove the old pairing with "
                                               f"`hermes-relay forget {URL}`"}}


def test_only_revoked_and_expired_marks_mean_the_token_is_refused() -> None:
    assert [s.value for s in LinkState if ls.token_refused(s.value)] == [api.REVOKED, api.EXPIRED]
    assert not ls.token_refused(None) and not ls.token_refused("quarantined-by-a-future-version")


def test_errors_keep_their_wire_shape() -> None:
    from hermes_relay.core.errors import PinMismatchError, RateLimitedError

    for exc in (PinMismatchError("wss://r:8767", "sha256:aa", "sha256:bb"), RateLimitedError("blocked", retry_after=9.0)):
        assert LinkError.of(exc).to_wire() == exc.to_wire()
    assert LinkError.of(PinMismatchError("wss://r:8767", "sha256:aa", "sha256:bb")).hint
    odd = {"code": "x", "message": "\udcff lone", "data": {"hint": 3, "tried": [{"url": "ws://a"}]}}
    assert LinkError.from_wire(odd).to_wire() == odd  # a hint that is no string stays data
    assert LinkError.from_wire({"code": "x", "message": "m", "data": "not a dict"}).to_wire() == {
        "code": "x", "message": "m", "data": {}}
    m = machine()
    m.handle(ls.Dropped(LinkError.of(RateLimitedError("blocked", retry_after=9.0))), NOW)
    assert m.snapshot().to_wire()["last_error"] == RateLimitedError("blocked", retry_after=9.0).to_wire()
