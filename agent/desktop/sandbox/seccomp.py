"""The seccomp filter of a confined command: the sockets Landlock does not govern.

Landlock does not govern ``connect()`` to a pathname Unix socket, so a confined command could reach
the agent's IPC socket, systemd, tmux or an ssh-agent. The filter refuses (EPERM) every ``socket()``
except ``AF_NETLINK``/``NETLINK_ROUTE`` (interface information) and, when the network is allowed,
``AF_INET``/``AF_INET6``; ``socketpair()`` only for connected ``AF_UNIX`` stream or seqpacket pairs
(a datagram pair could ``sendto()`` any socket path); ``io_uring_setup`` (io_uring can open sockets
without the ``socket()`` syscall); and on x86-64 the x32 syscall range. A syscall made for another
architecture (32-bit compat) kills the process: its numbers mean other calls.

The BPF program is assembled by hand (``struct``), installed with ``prctl(PR_SET_SECCOMP)``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from typing import Final

_LD_W_ABS: Final = 0x20
_JEQ_K: Final = 0x15
_JGE_K: Final = 0x35
_AND_K: Final = 0x54
_RET_K: Final = 0x06

RET_KILL_PROCESS: Final = 0x80000000
RET_ERRNO: Final = 0x00050000
RET_ALLOW: Final = 0x7FFF0000

_NR: Final = 0
_ARCH: Final = 4


def _arg(n: int) -> int:
    return 16 + 8 * n  # low 32 bits on little-endian; every argument checked here is an int


AF_UNIX: Final = 1
AF_INET: Final = 2
AF_INET6: Final = 10
AF_NETLINK: Final = 16
NETLINK_ROUTE: Final = 0
SOCK_STREAM: Final = 1
SOCK_SEQPACKET: Final = 5
_SOCK_TYPE_MASK: Final = 0xF  # without SOCK_NONBLOCK / SOCK_CLOEXEC


# machine -> (AUDIT_ARCH, socket, socketpair, io_uring_setup, first x32 number or None)
ARCHES: Final = {
    "x86_64": (0xC000003E, 41, 53, 425, 0x40000000),
    "aarch64": (0xC00000B7, 198, 199, 425, None),
}


class _Asm:
    """A few BPF instructions with symbolic jump targets."""

    def __init__(self) -> None:
        self.code: list[tuple[int, object, object, int]] = []
        self.labels: dict[str, int] = {}

    def op(self, code: int, k: int, jt: object = 0, jf: object = 0) -> None:
        self.code.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def jeq(self, k: int, target: str) -> None:
        self.op(_JEQ_K, k, target, 0)

    def ret(self, value: int) -> None:
        self.op(_RET_K, value)

    def assemble(self) -> bytes:
        out = bytearray()
        for index, (code, jt, jf, k) in enumerate(self.code):
            offsets = []
            for target in (jt, jf):
                if isinstance(target, str):
                    jump = self.labels[target] - index - 1
                    if not 0 <= jump < 256:
                        raise ValueError(f"seccomp jump to {target} out of range")
                    offsets.append(jump)
                else:
                    offsets.append(int(target))  # type: ignore[call-overload]
            out += struct.pack("=HBBI", code, offsets[0], offsets[1], k)
        return bytes(out)


def program(network: bool, machine: str | None = None) -> bytes:
    """The filter for ``machine`` (default: this one); ValueError for an architecture not listed."""
    name = machine or platform.machine()
    if name not in ARCHES:
        raise ValueError(f"no seccomp filter for the {name} architecture")
    audit_arch, nr_socket, nr_socketpair, nr_io_uring_setup, x32 = ARCHES[name]
    eperm = RET_ERRNO | errno.EPERM
    a = _Asm()
    a.op(_LD_W_ABS, _ARCH)
    a.op(_JEQ_K, audit_arch, 1, 0)
    a.ret(RET_KILL_PROCESS)
    a.op(_LD_W_ABS, _NR)
    if x32 is not None:
        a.op(_JGE_K, x32, "deny", 0)
    a.jeq(nr_socket, "socket")
    a.jeq(nr_socketpair, "socketpair")
    a.jeq(nr_io_uring_setup, "deny")
    a.ret(RET_ALLOW)
    a.label("socket")
    a.op(_LD_W_ABS, _arg(0))
    a.jeq(AF_NETLINK, "netlink")
    if network:
        a.jeq(AF_INET, "allow")
        a.jeq(AF_INET6, "allow")
    a.ret(eperm)
    a.label("netlink")
    a.op(_LD_W_ABS, _arg(2))
    a.jeq(NETLINK_ROUTE, "allow")
    a.ret(eperm)
    a.label("socketpair")
    a.op(_LD_W_ABS, _arg(0))
    a.op(_JEQ_K, AF_UNIX, 1, 0)
    a.ret(eperm)
    a.op(_LD_W_ABS, _arg(1))
    a.op(_AND_K, _SOCK_TYPE_MASK)
    a.jeq(SOCK_STREAM, "allow")
    a.jeq(SOCK_SEQPACKET, "allow")
    a.label("deny")
    a.ret(eperm)
    a.label("allow")
    a.ret(RET_ALLOW)
    return a.assemble()


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PR_SET_SECCOMP: Final = 22
_SECCOMP_MODE_FILTER: Final = 2


def install(code: bytes) -> None:
    """Install the filter on the calling process (no_new_privs must already be set)."""
    buf = ctypes.create_string_buffer(code, len(code))
    prog = _Fprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_SECCOMP, ctypes.c_ulong(_SECCOMP_MODE_FILTER), ctypes.byref(prog),
                  ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp: {os.strerror(err)}")
