"""macOS (and BSD) wakeups from a PF_ROUTE raw socket; needs no privileges.

A route socket receives every routing message (RTM_IFINFO, RTM_NEWADDR, RTM_DELADDR, RTM_ADD, ...).
Each readable burst is one wakeup: the socket is drained and the messages are discarded unparsed.
Parsing them could skip ARP/neighbour noise; unparsed, that noise costs at most one cheap
snapshot per debounce period, and ``core.netif.diff`` reports nothing for it.
Untested in CI (no macOS runner); kept deliberately small.
"""

from __future__ import annotations

import errno
import socket
import sys

from ._netwatch_socket import SocketWakeups


def open_route_wakeups() -> SocketWakeups:
    """Open the PF_ROUTE wakeup source.

    Returns:
        The open source; the caller must ``close()`` it.

    Raises:
        OSError: route sockets are unavailable on this platform.

    Not for Linux, where ``AF_ROUTE`` is an alias of ``AF_NETLINK`` and joins no groups; the
    watcher uses ``_netwatch_linux`` there.
    """
    if sys.platform == "win32" or sys.platform.startswith("linux"):
        raise OSError(errno.EAFNOSUPPORT, "AF_ROUTE is not available on this platform")
    sock = socket.socket(socket.AF_ROUTE, socket.SOCK_RAW, socket.AF_UNSPEC)
    try:
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return SocketWakeups(sock, "route-socket")
