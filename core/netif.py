"""Network interface snapshots and the decision whether a change matters (pure).

A snapshot is the set of (interface, address) pairs that are up and usable, plus the default-route
interface. ``diff(old, new)`` says whether routes must be re-probed:

- major: the default interface changed, an address we could have been using disappeared, or an
  interface gained its first usable address (Wi-Fi joined, Tailscale came up, cable plugged);
- minor: only addresses changed on interfaces that already had others (IPv6 privacy rotation);
- nothing: identical, or only ignorable interfaces changed (loopback, link-local churn).

Rejected alternative: acting on every netlink message, which on a busy host (docker, IPv6 RA)
re-probes many times a minute.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

_IGNORED_PREFIXES = ("lo", "docker", "veth", "br-", "virbr", "vmnet", "utun-ignored")


@dataclass(frozen=True)
class InterfaceSnapshot:
    """Usable addresses per interface and the interface holding the default route."""

    addresses: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    default_interface: str | None = None

    @property
    def interfaces(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.addresses)

    def summary(self) -> str:
        by_if: dict[str, list[str]] = {}
        for name, addr in sorted(self.addresses):
            by_if.setdefault(name, []).append(addr)
        parts = [f"{n}={','.join(a)}" for n, a in by_if.items()]
        return f"default={self.default_interface or '-'} " + " ".join(parts)


@dataclass(frozen=True)
class NetChange:
    major: bool
    reason: str
    old: InterfaceSnapshot | None
    new: InterfaceSnapshot


def usable_address(addr: str) -> bool:
    """False for loopback, link-local and unspecified addresses, which never carry a relay route."""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


def ignorable_interface(name: str) -> bool:
    return name.startswith(_IGNORED_PREFIXES)


def make_snapshot(addresses: dict[str, list[str]], default_interface: str | None) -> InterfaceSnapshot:
    """Build a snapshot from raw ``{interface: [addr, ...]}``, dropping unusable entries."""
    pairs = frozenset(
        (name, addr.split("%", 1)[0])
        for name, addrs in addresses.items()
        if not ignorable_interface(name)
        for addr in addrs
        if usable_address(addr)
    )
    return InterfaceSnapshot(pairs, default_interface)


def diff(old: InterfaceSnapshot | None, new: InterfaceSnapshot) -> NetChange | None:
    """Classify the change from ``old`` to ``new``; None when nothing relevant changed."""
    if old is None:
        return NetChange(True, "initial snapshot", None, new)
    if old == new:
        return None
    if old.default_interface != new.default_interface:
        return NetChange(True, f"default interface {old.default_interface} -> {new.default_interface}", old, new)
    lost = old.addresses - new.addresses
    gained = new.addresses - old.addresses
    new_ifaces = new.interfaces - old.interfaces
    gone_ifaces = old.interfaces - new.interfaces
    if new_ifaces:
        return NetChange(True, f"interface up: {', '.join(sorted(new_ifaces))}", old, new)
    if gone_ifaces:
        return NetChange(True, f"interface down: {', '.join(sorted(gone_ifaces))}", old, new)
    lost_v4 = [a for _, a in lost if ":" not in a]
    if lost_v4:
        return NetChange(True, f"address lost: {', '.join(sorted(lost_v4))}", old, new)
    lost_families = {":" in a for _, a in old.addresses} - {":" in a for _, a in new.addresses}
    if lost_families:
        return NetChange(True, "IPv6 connectivity lost" if True in lost_families else "IPv4 lost", old, new)
    if lost or gained:
        return NetChange(False, f"addresses changed ({len(gained)} added, {len(lost)} removed)", old, new)
    return None
