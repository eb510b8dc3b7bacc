"""Who is calling: the client address used for rate limits and whether the caller is the relay host itself.

A request arriving through a reverse proxy on this host comes from a loopback socket, yet its sender may be
anywhere. So:

- ``X-Forwarded-For`` / ``Forwarded`` / ``X-Real-IP`` are honoured only when the socket peer is one of the
  configured trusted proxies (``--trusted-proxy``); the client is then the right-most address that is not a
  trusted proxy itself, and every proxied client counts in its own rate-limit bucket.
- A request that carries any of those headers is never "loopback" (operator, pairing registration), whether
  or not its proxy is trusted: a same-host proxy must not lend its loopback address to remote callers.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


@dataclass(frozen=True)
class Peer:
    addr: str  # the client's address: rate-limit bucket and log field
    loopback: bool  # a direct connection from this host (no proxy headers): operator privileges
    proxied: bool = False


def parse_trusted(values: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``--trusted-proxy`` values (addresses or networks) as networks; ValueError names a bad one."""
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"--trusted-proxy {value!r} is not an IP address or network "
                             "(e.g. 127.0.0.1 or 10.0.0.0/8)") from None
    return tuple(out)


def resolve(socket_ip: str, headers: Mapping[str, str],
            trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()) -> Peer:
    forwarded = any(h in headers for h in FORWARDING_HEADERS)
    if not forwarded:
        return Peer(socket_ip, is_loopback(socket_ip))
    if not in_networks(socket_ip, trusted):
        return Peer(socket_ip, False, proxied=True)
    chain = _forwarded_chain(headers)
    for addr in reversed(chain):
        if not in_networks(addr, trusted):
            return Peer(addr, False, proxied=True)
    return Peer(chain[0] if chain else socket_ip, False, proxied=True)


def _forwarded_chain(headers: Mapping[str, str]) -> list[str]:
    """Addresses from the forwarding headers, client first; entries that are not IP addresses are skipped."""
    raw: list[str] = []
    if "forwarded" in headers:
        for element in headers["forwarded"].split(","):
            for pair in element.split(";"):
                key, _, value = pair.strip().partition("=")
                if key.strip().lower() == "for":
                    raw.append(value.strip().strip('"'))
    elif "x-forwarded-for" in headers:
        raw = [part.strip() for part in headers["x-forwarded-for"].split(",")]
    else:
        raw = [headers.get("x-real-ip", "").strip()]
    return [addr for addr in (_bare(r) for r in raw) if addr is not None]


def _bare(value: str) -> str | None:
    """``1.2.3.4``, ``1.2.3.4:5678``, ``[2001:db8::1]:443`` or ``2001:db8::1`` as a plain address."""
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


@lru_cache(maxsize=4096)  # asked for every request and upgrade: the same few addresses, parsed once
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``ip`` names (an IPv4-mapped IPv6 address as IPv4); None when it is not one."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return addr.ipv4_mapped
    return addr


def in_networks(ip: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    addr = _address(ip)
    return addr is not None and any(addr in net for net in networks)


def is_loopback(ip: str) -> bool:
    addr = _address(ip)
    return addr is not None and addr.is_loopback


LOOPBACK_NAMES = ("localhost", "localhost.")


def is_loopback_host_header(host: str) -> bool:
    """True for a Host header naming a loopback address or localhost, with or without a port."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1] or [::1]:8767
        name, sep, rest = host[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return False
    else:
        name, _, port = host.partition(":") if host.count(":") == 1 else (host, "", "")
        if port and not port.isdigit():
            return False
    return name in LOOPBACK_NAMES or is_loopback(name)


def local_request_refusal(headers: Mapping[str, str], path: str, *, loopback: bool, not_local: str, action: str,
                          purpose: str, remedy: str = "", json_body: bool = True) -> tuple[int, dict[str, Any]] | None:
    """Why a relay-host-only request (pairing registration, desktop tools) must be refused, or None.

    The relay host's own programs (urllib, requests) send ``Host: 127.0.0.1:PORT``, a JSON body and no
    Origin or Sec-Fetch-* headers. A web page in a browser on this host always adds ``Origin`` to a
    cross-site request, names its own host in ``Host`` after DNS rebinding, and may only send text/plain,
    form or multipart bodies without a preflight: each of those is refused.
    """
    tail = f"; {remedy}" if remedy else ""
    if not loopback:
        return 403, {"ok": False, "error": not_local}
    if "origin" in headers:
        return 403, {"ok": False, "error": f"{action} from a web page (Origin header present){tail}"}
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.strip().lower() not in ("none", "same-origin"):
        return 403, {"ok": False, "error": f"{action} by a cross-site request (Sec-Fetch-Site: {fetch_site[:40]}){tail}"}
    if not is_loopback_host_header(headers.get("host", "")):
        return 403, {"ok": False, "error": "the Host header must name this machine's loopback address "
                                           f"(127.0.0.1, ::1 or localhost) to {purpose}"}
    if json_body and headers.get("content-type", "").split(";", 1)[0].strip().lower() != "application/json":
        return 415, {"ok": False, "error": f"POST {path} needs Content-Type: application/json"}
    return None


def lan_address() -> str | None:
    """This host's outbound IPv4 address (a UDP connect sends nothing), or None offline."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: only selects the route
        addr = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr
