"""InterfaceWatcher: scripted snapshots under autojump_clock, and real kernel events in a netns.

The allowed fake is the snapshot function (``ScenarioSnapshots``): tests cannot make the OS change
its interfaces. Wakeups come from ``poke()`` and the real polling source; with
``PollWakeups(math.inf)`` the OS never wakes the watcher, so every look is one the test caused.
Autojump tests never use a real socket (MockClock's warning); the netlink source is exercised with
the real clock inside an unprivileged user+network namespace (``netns_probe.py``).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from hermes_relay.agent import interfaces
from hermes_relay.agent._netwatch_poll import PollWakeups
from hermes_relay.agent.netwatch import InterfaceWatcher, WakeupSource
from hermes_relay.core.netif import InterfaceSnapshot, NetChange, diff, make_snapshot

DEBOUNCE = 1.0
GUARD = 300.0  # virtual seconds; autojump makes this instant, it only stops a hung test

HOME = make_snapshot({"wlan0": ["192.168.1.20", "2001:db8::20"]}, "wlan0")
HOME_V6_ROTATED = make_snapshot({"wlan0": ["192.168.1.20", "2001:db8::21"]}, "wlan0")
HOME_PLUS_TAILSCALE = make_snapshot(
    {"wlan0": ["192.168.1.20", "2001:db8::20"], "tailscale0": ["100.101.102.103"]}, "wlan0"
)
CABLE = make_snapshot({"wlan0": ["192.168.1.20", "2001:db8::20"], "eth0": ["10.0.0.5"]}, "eth0")
HOME_PLUS_DOCKER = make_snapshot({"wlan0": ["192.168.1.20", "2001:db8::20"], "docker0": ["172.17.0.1"]}, "wlan0")


class ScenarioSnapshots:
    """Returns the scripted snapshots in order, then repeats the last; records each call's time."""

    def __init__(self, *snapshots: InterfaceSnapshot | OSError):
        self._script = list(snapshots)
        self.calls: list[float] = []

    def __call__(self) -> InterfaceSnapshot:
        self.calls.append(trio.current_time())
        item = self._script.pop(0) if len(self._script) > 1 else self._script[0]
        if isinstance(item, OSError):
            raise item
        return item

    @property
    def looks(self) -> int:
        """Snapshots taken after the initial one."""
        return len(self.calls) - 1


def quiet_os() -> WakeupSource:
    return PollWakeups(math.inf)


def make_watcher(snapshots: ScenarioSnapshots, **kwargs: Any) -> InterfaceWatcher:
    kwargs.setdefault("wakeups", quiet_os)
    kwargs.setdefault("safety_interval", math.inf)
    return InterfaceWatcher(snapshot=snapshots, debounce=DEBOUNCE, **kwargs)


async def start(nursery: trio.Nursery, watcher: InterfaceWatcher) -> trio.MemoryReceiveChannel[NetChange]:
    send, receive = trio.open_memory_channel[NetChange](10)
    await nursery.start(watcher.run, send)
    return receive


def assert_nothing_sent(receive: trio.MemoryReceiveChannel[NetChange]) -> None:
    with pytest.raises(trio.WouldBlock):
        receive.receive_nowait()


async def test_started_value_is_initial_snapshot_and_is_not_sent(autojump_clock: trio.abc.Clock) -> None:
    snapshots = ScenarioSnapshots(HOME)
    watcher = make_watcher(snapshots)
    send, receive = trio.open_memory_channel[NetChange](10)
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            assert await nursery.start(watcher.run, send) == HOME
            assert watcher.current == HOME
            assert watcher.backend == "injected"
            await trio.sleep(10 * DEBOUNCE)
            assert_nothing_sent(receive)
            assert snapshots.looks == 0
            nursery.cancel_scope.cancel()
    with pytest.raises(trio.EndOfChannel):
        await receive.receive()


@pytest.mark.parametrize(
    ("new", "major"),
    [
        pytest.param(CABLE, True, id="new_default_interface"),
        pytest.param(HOME_PLUS_TAILSCALE, True, id="interface_gains_first_address"),
        pytest.param(HOME_V6_ROTATED, False, id="ipv6_privacy_rotation"),
    ],
)
async def test_poke_sends_the_change_core_diff_classifies(
    autojump_clock: trio.abc.Clock, new: InterfaceSnapshot, major: bool
) -> None:
    watcher = make_watcher(ScenarioSnapshots(HOME, new))
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            receive = await start(nursery, watcher)
            watcher.poke()
            change = await receive.receive()
            assert change == diff(HOME, new)
            assert change.major is major
            assert (change.old, change.new) == (HOME, new)
            assert watcher.current == new
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("new", [HOME, HOME_PLUS_DOCKER], ids=["identical", "only_ignored_interface"])
async def test_poke_without_relevant_change_sends_nothing(
    autojump_clock: trio.abc.Clock, new: InterfaceSnapshot
) -> None:
    snapshots = ScenarioSnapshots(HOME, new)
    watcher = make_watcher(snapshots)
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            receive = await start(nursery, watcher)
            watcher.poke()
            await trio.sleep(10 * DEBOUNCE)
            assert snapshots.looks == 1
            assert_nothing_sent(receive)
            nursery.cancel_scope.cancel()


async def test_five_pokes_in_one_burst_are_one_look(autojump_clock: trio.abc.Clock) -> None:
    snapshots = ScenarioSnapshots(HOME, CABLE)
    watcher = make_watcher(snapshots)
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            receive = await start(nursery, watcher)
            for _ in range(5):
                watcher.poke()
            assert (await receive.receive()).new == CABLE
            await trio.sleep(10 * DEBOUNCE)
            assert snapshots.looks == 1
            assert_nothing_sent(receive)
            nursery.cancel_scope.cancel()


async def test_pokes_during_debounce_merge_into_one_look_after_it(autojump_clock: trio.abc.Clock) -> None:
    snapshots = ScenarioSnapshots(HOME, HOME_PLUS_TAILSCALE, CABLE)
    watcher = make_watcher(snapshots)
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            receive = await start(nursery, watcher)
            t0 = trio.current_time()
            watcher.poke()
            first = await receive.receive()
            for _ in range(4):
                await trio.sleep(DEBOUNCE / 5)
                watcher.poke()
            second = await receive.receive()
            await trio.sleep(10 * DEBOUNCE)
            assert snapshots.calls[1:] == [t0, t0 + DEBOUNCE]
            assert (first.new, second.old, second.new) == (HOME_PLUS_TAILSCALE, HOME_PLUS_TAILSCALE, CABLE)
            assert (first.major, second.major) == (True, True)
            assert_nothing_sent(receive)
            nursery.cancel_scope.cancel()


async def test_poke_before_run_is_kept_for_the_first_look(autojump_clock: trio.abc.Clock) -> None:
    watcher = make_watcher(ScenarioSnapshots(HOME, CABLE))
    watcher.poke("woke_from_sleep")
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            receive = await start(nursery, watcher)
            assert (await receive.receive()).new == CABLE
            nursery.cancel_scope.cancel()


async def test_poll_backend_looks_again_after_each_interval(autojump_clock: trio.abc.Clock) -> None:
    snapshots = ScenarioSnapshots(HOME, HOME, CABLE)
    watcher = make_watcher(snapshots, wakeups=lambda: PollWakeups(10.0))
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            receive = await start(nursery, watcher)
            t0 = trio.current_time()
            change = await receive.receive()
            assert snapshots.calls[1:] == [t0 + 10.0, t0 + 20.0]
            assert change == diff(HOME, CABLE)
            nursery.cancel_scope.cancel()


async def test_safety_interval_looks_without_any_wakeup(autojump_clock: trio.abc.Clock) -> None:
    snapshots = ScenarioSnapshots(HOME, CABLE)
    watcher = make_watcher(snapshots, safety_interval=60.0)
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            receive = await start(nursery, watcher)
            t0 = trio.current_time()
            assert (await receive.receive()).new == CABLE
            assert snapshots.calls[1:] == [t0 + 60.0]
            nursery.cancel_scope.cancel()


async def test_failed_snapshot_skips_the_look_and_keeps_current(autojump_clock: trio.abc.Clock) -> None:
    snapshots = ScenarioSnapshots(HOME, OSError("getifaddrs failed"), CABLE)
    watcher = make_watcher(snapshots)
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            receive = await start(nursery, watcher)
            watcher.poke()
            await trio.sleep(10 * DEBOUNCE)
            assert snapshots.looks == 1
            assert watcher.current == HOME
            assert_nothing_sent(receive)
            watcher.poke()
            assert await receive.receive() == diff(HOME, CABLE)
            nursery.cancel_scope.cancel()


async def test_failed_initial_snapshot_starts_with_none_and_first_look_is_initial(
    autojump_clock: trio.abc.Clock,
) -> None:
    watcher = make_watcher(ScenarioSnapshots(OSError("getifaddrs failed"), HOME))
    send, receive = trio.open_memory_channel[NetChange](10)
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            assert await nursery.start(watcher.run, send) is None
            watcher.poke()
            change = await receive.receive()
            assert (change.major, change.old, change.new) == (True, None, HOME)
            nursery.cancel_scope.cancel()


class UnopenableWakeups:
    """Stands in for an OS that refuses the notification socket (seccomp, no AF_NETLINK)."""

    def __call__(self) -> WakeupSource:
        raise PermissionError(1, "Operation not permitted")


class FailingWakeups:
    """Stands in for a notification socket that breaks after opening; counts close() calls."""

    def __init__(self) -> None:
        self.closed = 0

    async def wait(self) -> str:
        raise OSError(9, "Bad file descriptor")

    def close(self) -> None:
        self.closed += 1


@pytest.mark.parametrize("broken", ["unopenable", "failing"])
async def test_broken_wakeup_source_falls_back_to_polling(autojump_clock: trio.abc.Clock, broken: str) -> None:
    failing = FailingWakeups()
    factory: Callable[[], WakeupSource] = UnopenableWakeups() if broken == "unopenable" else (lambda: failing)
    snapshots = ScenarioSnapshots(HOME, CABLE)
    watcher = make_watcher(snapshots, wakeups=factory, poll_interval=10.0)
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            receive = await start(nursery, watcher)
            t0 = trio.current_time()
            assert (await receive.receive()).new == CABLE
            assert watcher.backend == "poll"
            assert snapshots.calls[1:] == [t0 + 10.0]
            nursery.cancel_scope.cancel()
    assert failing.closed == (1 if broken == "failing" else 0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="netlink is Linux-only")
async def test_default_backend_on_linux_is_netlink_with_real_snapshot() -> None:
    watcher = InterfaceWatcher()
    send, receive = trio.open_memory_channel[NetChange](10)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            initial = await nursery.start(watcher.run, send)
            assert watcher.backend == "netlink"
            assert isinstance(initial, InterfaceSnapshot)
            assert not {name for name in initial.interfaces if name == "lo"}
            nursery.cancel_scope.cancel()


# --- interfaces.py: parsing netifaces' shapes (pure data, no OS involved) ---

AF_INET, AF_INET6 = interfaces.FAMILIES


@pytest.mark.parametrize(
    ("gateways", "expected"),
    [
        pytest.param(
            {"default": {AF_INET: ("192.0.2.1", "eth0"), AF_INET6: ("fd00::1", "wlan0")},
             AF_INET: [("192.0.2.1", "eth0", True)]},
            "eth0", id="classic_v4_preferred",
        ),
        pytest.param({"default": {AF_INET6: ("fd00::1", "wlan0")}}, "wlan0", id="classic_v6_only"),
        pytest.param({"default": {}, AF_INET: [("192.0.2.1", "eth0", False), ("192.0.2.9", "eth1", True)]},
                     "eth1", id="flag_in_family_list"),
        pytest.param({AF_INET: [("192.0.2.1", "eth0")]}, None, id="two_tuples_without_flag"),
        pytest.param({"default": {}}, None, id="no_default_route"),
        pytest.param({"default": {AF_INET: ("192.0.2.1",)}, AF_INET: "garbage"}, None, id="malformed"),
        pytest.param([], None, id="not_a_dict"),
    ],
)
def test_default_interface_handles_each_gateways_shape(gateways: Any, expected: str | None) -> None:
    assert interfaces.default_interface(gateways) == expected


def test_addresses_by_interface_skips_odd_entries() -> None:
    raw = {
        "eth0": {AF_INET: [{"addr": "192.0.2.2", "netmask": "255.255.255.0"}],
                 AF_INET6: [{"addr": "fe80::1%eth0"}, {"netmask": "ffff::"}, {"addr": None}]},
        "ifb0": {17: [{"addr": "ca:d1:95:ca:f1:d0"}]},
        "odd": {AF_INET: "not-a-list"},
        "worse": None,
        42: {AF_INET: [{"addr": "192.0.2.3"}]},
    }
    assert interfaces.addresses_by_interface(raw) == {"eth0": ["192.0.2.2", "fe80::1%eth0"], "ifb0": [], "odd": []}


def test_snapshot_interfaces_reads_this_host_without_loopback() -> None:
    snapshot = interfaces.snapshot_interfaces()
    assert isinstance(snapshot, InterfaceSnapshot)
    assert "lo" not in snapshot.interfaces
    assert not any(addr.startswith(("127.", "fe80:")) or addr == "::1" for _, addr in snapshot.addresses)


# --- real kernel events: Linux, unprivileged user + network namespace ---

PROBE = Path(__file__).with_name("netns_probe.py")
NETNS_TIMEOUT = 20.0


def netns_unavailable() -> str | None:
    """Why the netns test cannot run here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "user and network namespaces are Linux-only"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    if shutil.which("ip") is None:
        return "ip (iproute2) is not installed"
    try:
        result = subprocess.run(
            ["unshare", "--user", "--map-root-user", "--net", "true"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare --user --map-root-user --net failed: {exc!r}"
    if result.returncode != 0:
        return f"unprivileged user+net namespaces are unavailable: {result.stderr.strip() or result.returncode}"
    return None


@pytest.mark.netns
async def test_real_netlink_events_in_a_network_namespace_reach_the_watcher() -> None:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    command: Sequence[str] = [
        "unshare", "--user", "--map-root-user", "--net", sys.executable, str(PROBE), str(shutil.which("ip")),
    ]
    with trio.fail_after(NETNS_TIMEOUT):
        result = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    report = json.loads(result.stdout)
    assert report["backend"] == "netlink"
    assert report["initial_interfaces"] == []
    assert report["added"] == {"reason": "interface up: hrprobe0", "interfaces": ["hrprobe0"]}
    assert report["removed"] == {"reason": "interface down: hrprobe0", "interfaces": []}
    assert report["overrun_reason"] == "netlink-overrun"
