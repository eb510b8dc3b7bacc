"""The agent's IPC endpoint: a per-user Unix socket (loopback TCP + nonce on Windows).

Single ownership comes from the instance lock, not from the socket file: the agent first takes an
exclusive lock on ``agent.lock`` (held for its lifetime, released by the kernel if it dies). Holding
the lock proves that any socket file already present is stale, so it is unlinked and re-bound
(ssh-agent's stale-socket dance without the connect-probe race). The directory is 0700, the socket
0600, and each accepted peer's uid is checked (SO_PEERCRED on Linux, LOCAL_PEERCRED on macOS), so
another local user cannot talk to this agent even if permissions are loosened by hand. A runtime
directory, lock file or socket directory that another user owns, or that others can write, is
refused before anything is created in it (core/ownership.py): whoever controls it could serve a fake
agent there or hold the lock.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from ..core import endpoint, fileio, ownership, winpipe
from ..core.errors import AgentAlreadyRunningError, IpcError

log = logging.getLogger(__name__)
SOCKET_MODE = 0o600
LISTEN_BACKLOG = 128  # many CLIs may connect at once during an autostart race
NONCE_TIMEOUT = 5.0  # a tcp-mode client must prove itself this fast


@contextlib.contextmanager
def instance_lock(lock_path: Path) -> Iterator[None]:
    """Hold the per-user instance lock or raise AgentAlreadyRunningError (UnsafeRuntimeError for a
    directory or lock file that is not ours alone)."""
    private_dir(lock_path.parent)
    ownership.check_private(str(lock_path), directory=False)
    lock = fileio.FileLock(lock_path, suffix="")
    if not lock.acquire(blocking=False):
        raise AgentAlreadyRunningError(
            f"another hermes-relay agent is already running for this user (lock {lock_path} is held)",
            hint="use `hermes-relay agent status`, or `hermes-relay agent stop` before starting a new one",
        )
    try:
        yield
    finally:
        lock.release()


def bind_unix_socket(path: str) -> socket.socket:
    """Create, bind and listen on ``path`` (0600 in a 0700 directory). Call only under the instance lock."""
    if sys.platform == "win32":  # pragma: no cover - Windows uses the tcp endpoint (core.paths.ipc_mode)
        raise IpcError("Unix sockets are not available on Windows", hint="unset HERMES_RELAY_IPC (tcp is the default)")
    p = Path(path)
    private_dir(p.parent)
    if len(os.fsencode(path)) > 100:
        raise IpcError(
            f"socket path is too long for AF_UNIX ({len(path)} bytes): {path}",
            hint="set HERMES_RELAY_RUNTIME_DIR to a shorter directory",
        )
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # stale: we hold the instance lock, so nobody else serves it
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, SOCKET_MODE)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise IpcError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    sock.setblocking(False)
    return sock


def private_dir(path: Path) -> None:
    """Create ``path`` 0700, or accept an existing one only if it is ours and closed to others.

    Checked again after creating it: another user may have created it in between.
    """
    ownership.check_private(str(path), directory=True)
    fileio.ensure_private_dir(path)
    ownership.check_private(str(path), directory=True)


class IpcListener:
    """A bound IPC listener plus the check each accepted connection must pass."""

    def __init__(self, listener: trio.abc.Listener[Any], path: str, nonce: bytes | None, *,
                 nonce_timeout: float = NONCE_TIMEOUT):
        self.listener = listener
        self.path = path
        self.nonce = nonce
        self.nonce_timeout = nonce_timeout
        self.pipe = winpipe.is_pipe_path(path)
        self.clients: trio.Nursery | None = None  # one task per connected client (set by serve_ipc)

    async def admit(self, stream: Any) -> bool:
        """Unix: the peer's uid is ours. TCP: the peer sends the nonce from the endpoint file first.
        Pipe: the pipe's DACL admits only this user."""
        if self.pipe:
            return True
        if self.nonce is None:
            return peer_allowed(stream)
        got = b""
        with trio.move_on_after(self.nonce_timeout):
            while len(got) < len(self.nonce):
                chunk = await stream.receive_some(len(self.nonce) - len(got))
                if not chunk:
                    break
                got += chunk
        return hmac.compare_digest(got, self.nonce)


async def open_ipc_listener(path: str, mode: str, *, nonce_timeout: float = NONCE_TIMEOUT) -> IpcListener:
    """Bind the agent's endpoint; call only under the instance lock."""
    if mode == "pipe":
        from ..core import winsec
        from ._winpipe import PipeListener

        sid = winsec.current_user_sid()
        if sid is None:
            raise IpcError("cannot read this user's security identifier for the agent pipe",
                           hint="unset HERMES_RELAY_IPC to use the loopback endpoint")
        return IpcListener(PipeListener(path, winpipe.pipe_sddl(sid)), path, None)
    if mode == "tcp":
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=LISTEN_BACKLOG)
        listener = listeners[0]
        nonce = endpoint.new_nonce()
        await trio.to_thread.run_sync(endpoint.write, Path(path), listener.socket.getsockname()[1], nonce, os.getpid())
        return IpcListener(listener, path, nonce, nonce_timeout=nonce_timeout)
    sock = bind_unix_socket(path)
    return IpcListener(trio.SocketListener(trio.socket.from_stdlib_socket(sock)), path, None)


def peer_allowed(stream: trio.SocketStream) -> bool:
    if sys.platform == "win32":  # pragma: no cover
        return True
    uid = ownership.peer_uid(stream.socket)
    return uid is None or uid == os.getuid()


def remove_socket(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
