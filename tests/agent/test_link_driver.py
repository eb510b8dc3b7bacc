"""The link driver under trio's autojump clock with a scripted network and an in-memory host: the exact
times of retries, keepalive verdicts, route upgrades, expiry and revocation checks. No sockets: every
connect, auth, ping and bearer check is answered by ``ScriptedNet``."""

from __future__ import annotations

import copy
import dataclasses
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from hermes_relay.agent import prober
from hermes_relay.agent.config import AgentConfig
from hermes_relay.agent.link import RelayLink
from hermes_relay.core import api
from hermes_relay.core.errors import AuthRejectedError, ConnectionLostError, ConnectRefusedError, RateLimitedError
from hermes_relay.core.record import Record
from hermes_relay.core.routes import Route

LAN = "ws://10.0.0.2:8767"
TAIL = "ws://100.64.0.2:8767"
WALL0 = 1_800_000_000.0
HOP = 0.01  # every scripted network call takes this long


class CeilingRng(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


def wall() -> float:
    return WALL0 + trio.current_time()


class FakeConn:
    def __init__(self, net: ScriptedNet, route: Route):
        self.net = net
        self.route = route
        self.dialed = self
        self.pin = None
        self.elapsed = HOP
        self.closed = False

    async def ping(self) -> None:
        self.net.pings.append(trio.current_time())
        await trio.sleep(HOP)
        if self.net.silent:
            await trio.sleep_forever()

    async def get_message(self) -> str:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    def deliver_to(self, deliver: Callable[[str], bool] | None) -> None:
        pass  # nothing arrives on this connection

    async def send_text(self, text: str) -> None:
        if self.closed:
            raise ConnectionLostError("closed")

    async def aclose(self) -> None:
        self.closed = True


class ScriptedNet:
    def __init__(self, up: set[str], auth: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        self.up = up
        self.auth = auth or (lambda payload: {"expires_at": None})
        self.silent = False
        self.bearer_status = 200
        self.limited: float | None = None
        self.connects: list[tuple[float, str]] = []
        self.bearer_checks: list[float] = []
        self.pings: list[float] = []

    async def connect(self, nursery: trio.Nursery, route: Route, *, expected_pin: str | None,
                      timeout: float = 4.0) -> FakeConn:
        self.connects.append((trio.current_time(), route.url))
        await trio.sleep(HOP)
        if self.limited is not None:
            raise RateLimitedError("blocked", retry_after=self.limited)
        if route.url not in self.up:
            raise ConnectRefusedError(f"{route.url}: connection refused")
        return FakeConn(self, route)

    async def authenticate(self, conn: FakeConn, payload: dict[str, Any], *, timeout: float = 15.0,
                           url: str = "") -> dict[str, Any]:
        await trio.sleep(HOP)
        return self.auth(payload)

    async def discard(self, conn: FakeConn) -> None:
        await conn.aclose()

    async def dial(self, route: Route, *, expected_pin: str | None, timeout: float = 4.0) -> FakeConn:
        await trio.sleep(HOP)
        return FakeConn(self, route)

    async def resolve(self, host: str, port: int) -> list[Any]:
        return [(2, (host, port))]

    async def http_request(self, dialed: FakeConn, method: str, path: str, *, token: str | None = None,
                           body: dict[str, Any] | None = None, timeout: float = 10.0) -> tuple[int, Any]:
        self.bearer_checks.append(trio.current_time())
        return self.bearer_status, {}


class NullDesktop:
    async def serve_link(self, port: Any, inbound: Any) -> None:
        async for _ in inbound:
            pass


class FakeHost:
    def __init__(self, config: AgentConfig, record: dict[str, Any], url: str = LAN):
        self.config = config
        self.cache = prober.ReachabilityCache(60.0)
        self.desktop = NullDesktop()
        self.sessions = {url: record}
        self.marks: dict[tuple[str, str | None], dict[str, Any]] = {}
        self.states: list[tuple[float, dict[str, Any]]] = []

    async def read_sessions(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self.sessions)

    async def save_auth(self, owner: str, route_url: str, ok: dict[str, Any], pin: str | None, *,
                        used_token: str | None) -> None:
        if "expires_at" in ok:
            self.sessions[owner]["ttl_expires_at"] = ok["expires_at"]

    async def verdict(self, url: str, token: str | None) -> dict[str, Any] | None:
        return self.marks.get((url, token))

    async def set_verdict(self, url: str, token: str | None, state: str, error: dict[str, Any], at: float) -> None:
        self.marks[(url, token)] = {"state": state, "error": error}

    async def refresh_token(self, url: str, token: str | None) -> str | None:
        return None

    async def keep_refresh_token(self, url: str, token: str, refresh: str, at: float) -> None:
        pass

    def repairing(self, url: str) -> bool:
        return False

    def publish(self, link: RelayLink) -> None:
        self.states.append((trio.current_time(), link.snapshot()))

    def auth_payload(self, record: Record | None = None, **credentials: Any) -> dict[str, Any]:
        return dict(credentials)

    def times(self, state: str) -> list[float]:
        return [t for t, s in self.states if s["state"] == state]


def config(tmp_path: Path, **overrides: Any) -> AgentConfig:
    env = {"HERMES_HOME": str(tmp_path / "home"), "HERMES_RELAY_RUNTIME_DIR": tempfile.mkdtemp(prefix="hr-")}
    return AgentConfig.from_env(env, wall_clock=wall, rng=CeilingRng(), netwatch=False, **overrides)


async def run_until(host: FakeHost, net: ScriptedNet, seconds: float, *, url: str = LAN,
                    script: Callable[[RelayLink], Any] | None = None) -> RelayLink:
    link = RelayLink(host, url, net=net)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        if script is not None:
            await script(link)
        await trio.sleep_until(seconds)
        nursery.cancel_scope.cancel()
    return link


def approx(values: list[float]) -> Any:
    return pytest.approx(values, abs=1e-6)


async def test_retries_follow_the_backoff_ceiling(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    host, net = FakeHost(config(tmp_path, backoff_base=1.0, backoff_cap=4.0), {"token": "T1"}), ScriptedNet(set())
    await run_until(host, net, 15.0)
    # Each attempt fails after one hop, then waits 1, 2, 4, 4 s (full jitter at its ceiling).
    assert [t for t, _ in net.connects] == approx([0.0, 1.01, 3.02, 7.03, 11.04])
    t, backoff = next((t, s) for t, s in host.states if s["state"] == api.BACKOFF)
    assert t == pytest.approx(0.01) and backoff["next_retry_at"] == pytest.approx(WALL0 + 1.01)
    assert backoff["last_error"]["code"] == "connect_refused"


async def test_a_network_change_cuts_the_backoff_short(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    host, net = FakeHost(config(tmp_path, backoff_base=10.0), {"token": "T1"}), ScriptedNet(set())

    async def change(link: RelayLink) -> None:
        await trio.sleep_until(2.0)
        link.network_changed()

    await run_until(host, net, 5.0, script=change)
    assert [t for t, _ in net.connects] == approx([0.0, 2.0])


async def test_a_rate_limit_is_waited_out_whatever_the_network_does(autojump_clock: trio.abc.Clock,
                                                                     tmp_path: Path) -> None:
    host, net = FakeHost(config(tmp_path), {"token": "T1"}), ScriptedNet({LAN})
    net.limited = 60.0

    async def change(link: RelayLink) -> None:
        await trio.sleep_until(5.0)
        link.network_changed()
        await trio.sleep_until(30.0)
        net.limited = None

    link = await run_until(host, net, 61.0, script=change)
    assert [t for t, _ in net.connects] == approx([0.0, 60.01])
    assert host.times(api.RATE_LIMITED) == approx([0.01])
    assert link.state == api.CONNECTED


async def test_a_silent_link_is_dead_within_two_ping_intervals(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    host, net = FakeHost(config(tmp_path, ping_interval=20.0, backoff_base=100.0), {"token": "T1"}), ScriptedNet({LAN})
    net.silent = True
    await run_until(host, net, 50.0)
    assert host.times(api.CONNECTED) == approx([0.02])  # connect hop + auth hop
    (dead,) = host.times(api.BACKOFF)
    assert dead == pytest.approx(40.02)  # ping at 20.02, no answer for one more interval
    assert "no keepalive answer within 20s" in host.states[-1][1]["last_error"]["message"]


async def test_a_network_change_checks_a_connected_link_at_once(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    host = FakeHost(config(tmp_path, ping_interval=20.0, probe_timeout=4.0, backoff_base=100.0), {"token": "T1"})
    net = ScriptedNet({LAN})

    async def change(link: RelayLink) -> None:
        await trio.sleep_until(7.0)
        net.silent = True
        link.network_changed()

    await run_until(host, net, 30.0, script=change)
    assert host.times(api.BACKOFF) == approx([11.0])  # the probe timeout, not two ping intervals


async def test_moves_up_after_two_answers_a_hysteresis_apart(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    record = {"token": "T1", "route_candidates": [{"url": LAN, "role": "lan", "priority": 0},
                                                  {"url": TAIL, "role": "tailscale", "priority": 1}]}
    host = FakeHost(config(tmp_path, upgrade_interval=30.0, upgrade_hysteresis=5.0), record)
    net = ScriptedNet({TAIL})

    async def lan_returns(link: RelayLink) -> None:
        await trio.sleep_until(10.0)
        net.up.add(LAN)

    link = await run_until(host, net, 40.0, script=lan_returns)
    connected = [(t, s["route"]["url"]) for t, s in host.states if s["state"] == api.CONNECTED]
    # On TAIL after one hop; probes of LAN at 30.02 (answered) and 35.03 (answered again: move).
    assert connected == [(pytest.approx(0.02), TAIL), (pytest.approx(35.06), LAN)]
    lan_connects = [t for t, url in net.connects if url == LAN]
    assert lan_connects == approx([0.0, 30.02, 35.03, 35.04])
    assert link.state == api.CONNECTED


async def test_expiry_passing_while_connected_asks_the_relay_again(autojump_clock: trio.abc.Clock,
                                                                   tmp_path: Path) -> None:
    def auth(payload: dict[str, Any]) -> dict[str, Any]:
        if trio.current_time() > 100:
            raise AuthRejectedError("session expired")
        return {"expires_at": WALL0 + 100}

    host = FakeHost(config(tmp_path, clock_check_interval=5.0), {"token": "T1", "ttl_expires_at": WALL0 + 100})
    net = ScriptedNet({LAN}, auth)
    await run_until(host, net, 200.0)
    assert host.times(api.CONNECTED) == approx([0.02])
    assert host.times(api.CONNECTING)[-1] == pytest.approx(100.0)
    assert host.times(api.EXPIRED) == approx([100.02])
    assert host.marks[(LAN, "T1")]["state"] == api.EXPIRED


async def test_a_failed_bearer_check_asks_the_relay_again(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    host = FakeHost(config(tmp_path, revocation_check_interval=300.0, ping_interval=1000.0), {"token": "T1"})
    net = ScriptedNet({LAN})
    refused = trio.Event()

    def auth(payload: dict[str, Any]) -> dict[str, Any]:
        if refused.is_set():
            raise AuthRejectedError("invalid token")
        return {"expires_at": None}

    net.auth = auth

    async def revoke(link: RelayLink) -> None:
        await trio.sleep_until(500.0)
        net.bearer_status = 401
        refused.set()

    await run_until(host, net, 1000.0, script=revoke)
    assert net.bearer_checks == approx([300.03, 600.04])  # connected at 0.02, each check dials one hop
    assert host.times(api.REVOKED) == approx([600.06])  # connect and auth hops after the refused check


async def test_no_bearer_check_before_its_interval(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    # Revoked at 1 s on a relay that keeps the socket open: nothing tells the link until its check.
    host = FakeHost(config(tmp_path, revocation_check_interval=60.0, ping_interval=1000.0), {"token": "T1"})
    net = ScriptedNet({LAN})

    def auth(payload: dict[str, Any]) -> dict[str, Any]:
        if net.bearer_status == 401:
            raise AuthRejectedError("invalid token")
        return {"expires_at": None}

    net.auth = auth

    async def revoke(link: RelayLink) -> None:
        await trio.sleep_until(1.0)
        net.bearer_status = 401

    await run_until(host, net, 100.0, script=revoke)
    assert net.bearer_checks == approx([60.03])  # what the interval exists for: the relay is asked rarely
    assert [(t, s["state"]) for t, s in host.states if t < 60.03] == [
        (0.0, api.CONNECTING), (pytest.approx(0.02), api.CONNECTED)]
    assert host.times(api.REVOKED) == approx([60.05])  # the check, then connect and auth hops


async def test_a_stored_verdict_is_shown_without_asking_the_relay(autojump_clock: trio.abc.Clock,
                                                                  tmp_path: Path) -> None:
    host, net = FakeHost(config(tmp_path), {"token": "T1"}), ScriptedNet({LAN})
    error = {"code": "replaced", "message": "replaced", "data": {"replaced_by": TAIL}}
    host.marks[(LAN, "T1")] = {"state": api.REPLACED, "error": error}
    link = await run_until(host, net, 10.0)
    assert net.connects == []
    assert (link.snapshot()["state"], link.snapshot()["replaced_by"]) == (api.REPLACED, TAIL)


async def test_a_verdict_this_version_does_not_know_is_ignored(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    host, net = FakeHost(config(tmp_path), {"token": "T1"}), ScriptedNet({LAN})
    host.marks[(LAN, "T1")] = {"state": "quarantined-by-a-future-version", "error": None}
    link = await run_until(host, net, 10.0)
    assert link.state == api.CONNECTED


async def test_a_wake_up_fired_before_the_wait_begins_is_not_lost(autojump_clock) -> None:
    from hermes_relay.agent.link import Signal

    signal = Signal()
    seen = signal.generation
    signal.fire()  # while the waiter was still busy (e.g. recording its verdict in a thread)
    with trio.fail_after(1):
        await signal.wait(since=seen)  # returns at once
    with trio.move_on_after(5) as scope:
        await signal.wait(since=signal.generation)  # nothing fired since: waits
    assert scope.cancelled_caught


@pytest.mark.parametrize(("expires_in", "verdict"), [(0.02, api.EXPIRED), (0.03, api.REVOKED)])
async def test_a_refusal_at_the_expiry_instant_is_expired_and_recorded_as_shown(
        autojump_clock: trio.abc.Clock, tmp_path: Path, expires_in: float, verdict: str) -> None:
    def auth(payload: dict[str, Any]) -> dict[str, Any]:
        raise AuthRejectedError("invalid token")

    host = FakeHost(config(tmp_path), {"token": "T1", "ttl_expires_at": WALL0 + expires_in})
    link = await run_until(host, ScriptedNet({LAN}, auth), 10.0)
    assert host.times(verdict) == approx([0.02])  # connect hop + auth hop: refused at WALL0 + 0.02
    assert host.marks[(LAN, "T1")] == {"state": verdict, "error": link.snapshot()["last_error"]}
    assert link.snapshot()["last_error"]["code"] == "auth_rejected"


async def test_a_stored_revoked_verdict_reads_as_replaced_once_the_newer_pairing_is_stored(
        autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    newer = "ws://relay.example:8767"
    host, net = FakeHost(config(tmp_path), {"token": "T1", "paired_at": WALL0 - 100}), ScriptedNet({LAN})
    host.sessions[newer] = {"token": "T2", "paired_at": WALL0 - 10, "route_candidates": [
        {"url": newer, "role": "public", "priority": 1}, {"url": LAN, "role": "lan", "priority": 0}]}
    host.marks[(LAN, "T1")] = {"state": api.REVOKED, "error": {"code": "auth_rejected", "message": "no", "data": {}}}
    link = await run_until(host, net, 10.0)
    assert net.connects == []  # a verdict is never asked again
    shown = link.snapshot()
    assert (shown["state"], shown["replaced_by"], shown["last_error"]["code"]) == (api.REPLACED, newer, "replaced")
    assert host.times(api.REPLACED) == approx([0.0])
    assert host.marks[(LAN, "T1")] == {"state": api.REPLACED, "error": shown["last_error"]}  # recorded as shown


class FakeShells:
    """The terminal service as the link sees it (agent/terminal/ports.TerminalSeam): no shell until ``open``."""

    def __init__(self) -> None:
        self.open, self.asked = False, 0
        self.wakes: dict[str, Callable[[], None]] = {}

    def on_open(self, url: str, wake: Callable[[], None]) -> None:
        self.wakes[url] = wake

    def attached(self, url: str) -> bool:
        self.asked += 1
        return self.open

    async def serve_link(self, port: Any, inbound: Any) -> None:
        async for _ in inbound:
            pass

    async def leave(self, url: str, *, drain: bool) -> None:
        pass

    def refused(self, url: str, verdict: str) -> None:
        pass


class _Steps(trio.abc.Instrument):
    """Task steps of every task but the test's own."""

    def __init__(self) -> None:
        self.count, self.test = 0, trio.lowlevel.current_task()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is not self.test:
            self.count += 1


async def test_an_idle_connected_link_wakes_for_its_pings_only(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    """The keepalive woke every SHELL_PING to ask whether a shell had attached, and the expiry watch every
    clock_check_interval: 24 wake-ups a minute of an idle agent's link, on top of its 3 pings."""
    host = FakeHost(config(tmp_path, ping_interval=20.0), {"token": "T1", "ttl_expires_at": WALL0 + 86400})
    host.terminal = shells = FakeShells()  # type: ignore[attr-defined]
    net = ScriptedNet({LAN}, lambda payload: {"expires_at": WALL0 + 86400})
    steps = _Steps()

    async def idle(link: RelayLink) -> None:
        await trio.sleep_until(1.0)
        trio.lowlevel.add_instrument(steps)
        await trio.sleep_until(601.0)
        trio.lowlevel.remove_instrument(steps)

    link = await run_until(host, net, 602.0, script=idle)
    assert link.state == api.CONNECTED
    assert len(net.pings) == 30  # every 20 s
    assert steps.count <= 80, steps.count  # two steps a ping, two bearer checks; it was 274
    assert shells.asked <= 2 * 31


async def test_a_shell_opening_tightens_the_keepalive_at_once(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    host = FakeHost(config(tmp_path, ping_interval=20.0), {"token": "T1"})
    host.terminal = shells = FakeShells()  # type: ignore[attr-defined]
    net = ScriptedNet({LAN})

    async def open_shell(link: RelayLink) -> None:
        await trio.sleep_until(27.0)
        shells.open = True
        shells.wakes[LAN]()

    await run_until(host, net, 40.0, script=open_shell)
    # Connected at 0.02; a ping at 20.02, then the shell opens past SHELL_PING after it: a ping at once,
    # and every SHELL_PING from then on.
    assert net.pings == approx([20.02, 27.0, 32.01, 37.02])


async def test_a_wall_clock_step_past_the_expiry_asks_the_relay_again(autojump_clock: trio.abc.Clock,
                                                                       tmp_path: Path) -> None:
    """The expiry watch sleeps in trio's clock; a suspend/resume steps the wall clock past the expiry while
    trio's clock stood still: the runner's clock watch calls ``clock_changed`` and the link asks again."""
    offset = [0.0]
    cfg = dataclasses.replace(config(tmp_path, ping_interval=1000.0),
                              wall_clock=lambda: WALL0 + trio.current_time() + offset[0])
    host = FakeHost(cfg, {"token": "T1", "ttl_expires_at": WALL0 + 3600})
    net = ScriptedNet({LAN}, lambda payload: {"expires_at": WALL0 + 3600 + offset[0]})

    async def resume(link: RelayLink) -> None:
        await trio.sleep_until(10.0)
        offset[0] = 7200.0
        link.clock_changed()

    await run_until(host, net, 20.0, script=resume)
    assert host.times(api.CONNECTING) == approx([0.0, 10.0])
    assert host.times(api.CONNECTED) == approx([0.02, 10.02])
