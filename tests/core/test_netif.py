"""Interface snapshots and diff(): which changes are major (re-probe), minor (log) or nothing."""

from __future__ import annotations

import pytest

from hermes_relay.core import netif
from hermes_relay.core.netif import InterfaceSnapshot, diff, make_snapshot

HOME = make_snapshot({"wlan0": ["192.168.1.20", "2001:db8::20", "2001:db8::aaaa"], "eth0": ["10.0.0.5"]}, "wlan0")


@pytest.mark.parametrize(
    ("new", "major", "reason"),
    [
        pytest.param(
            make_snapshot({"wlan0": ["192.168.1.20", "2001:db8::20", "2001:db8::aaaa"], "eth0": ["10.0.0.5"]}, "eth0"),
            True, "default interface wlan0 -> eth0", id="default-interface-changed",
        ),
        pytest.param(
            make_snapshot({"wlan0": ["192.168.1.20", "2001:db8::20", "2001:db8::aaaa"], "eth0": ["10.0.0.5"], "tailscale0": ["100.101.102.103"]}, "wlan0"),
            True, "interface up: tailscale0", id="vpn-came-up",
        ),
        pytest.param(
            make_snapshot({"wlan0": ["192.168.1.20", "2001:db8::20", "2001:db8::aaaa"]}, "wlan0"),
            True, "interface down: eth0", id="cable-unplugged",
        ),
        pytest.param(
            make_snapshot({"wlan0": ["192.168.1.99", "2001:db8::20", "2001:db8::aaaa"], "eth0": ["10.0.0.5"]}, "wlan0"),
            True, "address lost: 192.168.1.20", id="ipv4-renumbered",
        ),
        pytest.param(
            make_snapshot({"wlan0": ["192.168.1.20"], "eth0": ["10.0.0.5"]}, "wlan0"),
            True, "IPv6 connectivity lost", id="ipv6-lost",
        ),
        pytest.param(
            make_snapshot({"wlan0": ["192.168.1.20", "2001:db8::20", "2001:db8::bbbb"], "eth0": ["10.0.0.5"]}, "wlan0"),
            False, "addresses changed (1 added, 1 removed)", id="ipv6-privacy-rotation",
        ),
        pytest.param(
            make_snapshot({"wlan0": ["192.168.1.20", "2001:db8::20", "2001:db8::aaaa"], "eth0": ["10.0.0.5", "10.0.0.6"]}, "wlan0"),
            False, "addresses changed (1 added, 0 removed)", id="address-added-on-non-default",
        ),
        pytest.param(
            make_snapshot({"wlan0": ["192.168.1.20", "2001:db8::aaaa"], "eth0": ["10.0.0.5"]}, "wlan0"),
            False, "addresses changed (0 added, 1 removed)", id="one-of-two-ipv6-gone",
        ),
    ],
)
def test_diff_classifies_changes(new: InterfaceSnapshot, major: bool, reason: str) -> None:
    change = diff(HOME, new)
    assert change is not None
    assert (change.major, change.reason) == (major, reason)
    assert (change.old, change.new) == (HOME, new)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"wlan0": ["192.168.1.20", "2001:db8::20", "2001:db8::aaaa"], "eth0": ["10.0.0.5"]}, id="identical"),
        pytest.param({"wlan0": ["192.168.1.20", "2001:db8::20", "2001:db8::aaaa", "fe80::1%wlan0"], "eth0": ["10.0.0.5"]}, id="link-local-churn"),
        pytest.param({"wlan0": ["192.168.1.20", "2001:db8::20", "2001:db8::aaaa"], "eth0": ["10.0.0.5"], "docker0": ["172.17.0.1"], "veth12ab": ["172.17.0.2"]}, id="container-interfaces"),
        pytest.param({"wlan0": ["192.168.1.20", "2001:db8::20", "2001:db8::aaaa"], "eth0": ["10.0.0.5"], "lo": ["127.0.0.1", "::1"]}, id="loopback"),
        pytest.param({"wlan0": ["192.168.1.20", "2001:db8::20", "2001:db8::aaaa", "169.254.3.4", "ff02::1", "0.0.0.0", "garbage"], "eth0": ["10.0.0.5"]}, id="unusable-addresses"),
    ],
)
def test_ignorable_changes_are_no_change(raw: dict[str, list[str]]) -> None:
    assert diff(HOME, make_snapshot(raw, "wlan0")) is None


def test_initial_snapshot_is_major() -> None:
    change = diff(None, HOME)
    assert change is not None
    assert (change.major, change.reason, change.old, change.new) == (True, "initial snapshot", None, HOME)


def test_default_route_appearing_is_major() -> None:
    offline = make_snapshot({"wlan0": ["192.168.1.20"]}, None)
    change = diff(offline, make_snapshot({"wlan0": ["192.168.1.20"]}, "wlan0"))
    assert change is not None and change.major
    assert change.reason == "default interface None -> wlan0"


def test_make_snapshot_strips_scope_and_drops_unusable() -> None:
    snap = make_snapshot(
        {"eth0": ["10.0.0.5", "2001:db8::5%eth0", "fe80::1%eth0", "127.0.0.1"], "lo": ["127.0.0.1"], "br-1234": ["172.18.0.1"]},
        "eth0",
    )
    assert snap.addresses == frozenset({("eth0", "10.0.0.5"), ("eth0", "2001:db8::5")})
    assert snap.interfaces == frozenset({"eth0"})
    assert snap.summary() == "default=eth0 eth0=10.0.0.5,2001:db8::5"


def test_snapshots_are_hashable_and_compare_by_value() -> None:
    a = make_snapshot({"eth0": ["10.0.0.5"]}, "eth0")
    b = make_snapshot({"eth0": ["10.0.0.5"]}, "eth0")
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert InterfaceSnapshot().summary() == "default=- "


@pytest.mark.parametrize(
    ("addr", "usable"),
    [("192.168.1.20", True), ("2001:db8::1", True), ("100.64.0.1", True), ("127.0.0.1", False), ("::1", False),
     ("169.254.1.1", False), ("fe80::1%eth0", False), ("0.0.0.0", False), ("224.0.0.1", False), ("nonsense", False)],
)
def test_usable_address(addr: str, usable: bool) -> None:
    assert netif.usable_address(addr) is usable
