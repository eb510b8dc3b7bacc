"""Read the machine's interfaces into a ``core.netif.InterfaceSnapshot``.

This is the only module that imports ``netifaces`` (the ``netifaces-plus`` distribution). netifaces
itself had its last release in 2021 and has no change notification; keeping it behind
``snapshot_interfaces()`` lets ``ifaddr`` or a native reader replace it without touching the watcher.
Filtering (loopback, link-local, our own tunnels) is ``core.netif.make_snapshot``'s job.

Odd data never raises: an interface that vanishes mid-read, an address entry without ``addr``, an
unexpected ``gateways()`` shape are skipped. Only a failure to enumerate at all (``OSError``) is
raised, because an empty snapshot would falsely report "network gone".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import netifaces

from ..core.netif import InterfaceSnapshot, make_snapshot

log = logging.getLogger(__name__)

FAMILIES = (netifaces.AF_INET, netifaces.AF_INET6)  # v4 first: its default route wins below


def snapshot_interfaces() -> InterfaceSnapshot:
    """Snapshot the usable addresses and the default-route interface.

    Returns:
        The current snapshot (fast: a few kernel queries, no network I/O).

    Raises:
        OSError: the OS refused to enumerate interfaces or routes at all.
    """
    return make_snapshot(_read_addresses(), default_interface(netifaces.gateways()))


def _read_addresses() -> dict[str, list[str]]:
    read_all = getattr(netifaces, "allifaddresses", None)  # netifaces-plus only; one call, one view
    if read_all is not None:
        return addresses_by_interface(read_all())
    per_interface: dict[str, Any] = {}
    for name in netifaces.interfaces():
        try:
            per_interface[name] = netifaces.ifaddresses(name)
        except ValueError:  # the interface went away between interfaces() and ifaddresses()
            log.debug("interface_vanished name=%s", name)
    return addresses_by_interface(per_interface)


def addresses_by_interface(raw: Mapping[Any, Any]) -> dict[str, list[str]]:
    """Extract ``{interface: [address, ...]}`` for IPv4/IPv6 from netifaces' nested dicts.

    Args:
        raw: ``{name: {family: [{"addr": str, ...}, ...]}}`` as returned by ``allifaddresses()``.

    Returns:
        The addresses per interface, unfiltered; malformed entries are skipped.
    """
    result: dict[str, list[str]] = {}
    for name, families in raw.items():
        if not isinstance(name, str) or not isinstance(families, Mapping):
            continue
        addrs = [
            entry["addr"]
            for family in FAMILIES
            for entry in _as_list(families.get(family))
            if isinstance(entry, Mapping) and isinstance(entry.get("addr"), str)
        ]
        result[name] = addrs
    return result


def default_interface(gateways: Any) -> str | None:
    """Name the interface holding the default route, preferring IPv4 over IPv6.

    Accepts the classic netifaces shape, which netifaces-plus 0.12.5 still returns::

        {"default": {AF_INET: (gateway, iface), ...}, AF_INET: [(gateway, iface, is_default), ...]}

    and falls back to the per-family lists' ``is_default`` flag when ``"default"`` is missing or
    empty (as some forks return).

    Args:
        gateways: the value of ``netifaces.gateways()``.

    Returns:
        The interface name, or None when there is no default route or the shape is unrecognised.
    """
    if not isinstance(gateways, Mapping):
        return None
    defaults = gateways.get("default")
    if isinstance(defaults, Mapping):
        for family in FAMILIES:
            name = _interface_of(defaults.get(family))
            if name is not None:
                return name
    for family in FAMILIES:
        for entry in _as_list(gateways.get(family)):
            if isinstance(entry, (tuple, list)) and len(entry) >= 3 and entry[2] is True:
                name = _interface_of(entry)
                if name is not None:
                    return name
    return None


def _interface_of(entry: Any) -> str | None:
    if isinstance(entry, (tuple, list)) and len(entry) >= 2 and isinstance(entry[1], str) and entry[1]:
        return entry[1]
    return None


def _as_list(value: Any) -> Iterable[Any]:
    return value if isinstance(value, (list, tuple)) else ()
