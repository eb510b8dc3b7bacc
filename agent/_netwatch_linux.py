"""Linux wakeups from NETLINK_ROUTE multicast groups; needs no privileges.

The socket joins the link, IPv4/IPv6 address and IPv4/IPv6 route groups. Each readable burst is one
wakeup: the socket is drained and the messages are discarded unparsed, because the watcher re-reads
the whole interface state anyway (parsing them to filter noise would duplicate what the debounce
plus ``core.netif.diff`` already do, for far more code). ENOBUFS means the kernel
dropped messages because we read too slowly; that is reported as a wakeup too, since whatever was
lost can only be recovered by looking again.

Constants are from ``linux/rtnetlink.h`` (the legacy ``RTMGRP_*`` bitmask accepted by ``bind``).
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import Final

from ._netwatch_socket import SocketWakeups

RTMGRP_LINK: Final = 0x1
RTMGRP_IPV4_IFADDR: Final = 0x10
RTMGRP_IPV4_ROUTE: Final = 0x40
RTMGRP_IPV6_IFADDR: Final = 0x100
RTMGRP_IPV6_ROUTE: Final = 0x400
GROUPS: Final = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE

NETLINK_ROUTE: Final = 0  # linux/netlink.h; also socket.NETLINK_ROUTE where Python defines it


def open_netlink_wakeups(*, rcvbuf: int | None = None) -> SocketWakeups:
    """Open the NETLINK_ROUTE wakeup source.

    Args:
        rcvbuf: ``SO_RCVBUF`` in bytes, or None for the kernel default. Unprivileged processes are
            capped at ``net.core.rmem_max``.

    Returns:
        The open source; the caller must ``close()`` it.

    Raises:
        OSError: netlink is unavailable (not Linux, or blocked by a sandbox/seccomp policy).
    """
    if sys.platform != "linux":
        raise OSError(errno.EAFNOSUPPORT, "AF_NETLINK is not available on this platform")
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, GROUPS))  # port id 0: the kernel assigns one
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return SocketWakeups(sock, "netlink")
