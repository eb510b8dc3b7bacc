"""The CLI's side of the IPC connection: a blocking socket, the shared sans-IO framing, no trio.

``AgentClient.connect`` says hello and checks the API version (a mismatch warns once on stderr).
``ensure_agent`` starts the agent when nothing answers: under an exclusive spawn lock it re-checks,
spawns ``python -m hermes_relay.agent run`` detached in its own session, then polls the socket with
growing sleeps (gpg-agent's autostart), so many CLIs started at once produce exactly one agent.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from hermes_relay import __version__
from hermes_relay.core import fileio, framing, paths, rpc

if TYPE_CHECKING:
    import subprocess  # imported where an agent is spawned: commands that only talk to it skip ~1.3 ms
from hermes_relay.core.errors import (
    AgentNotRunningError,
    IpcError,
    RemoteProtocolError,
    error_from_wire,
)

DEFAULT_CALL_TIMEOUT = 30.0  # seconds; pairing and probes report progress well within this
AUTOSTART_WAIT = 10.0  # seconds to wait for a freshly spawned agent's socket
_CONNECT_ERRNOS = (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK, errno.EACCES)

NotifyFn = Callable[[str, dict[str, Any]], None]


class AgentClient:
    """One IPC connection to the agent."""

    def __init__(self, sock: socket.socket, path: str):
        self._sock = sock
        self.path = path
        self._decoder = framing.FrameDecoder()
        self._ids = itertools.count(1)
        self.hello: dict[str, Any] = {}

    @classmethod
    def connect(cls, path: str, *, timeout: float = 2.0, stderr: TextIO | None = None, quiet: bool = False) -> AgentClient:
        """Connect and say hello. Raises AgentNotRunningError when nothing listens at ``path``."""
        sock = _open_socket(path, timeout)
        client = cls(sock, path)
        try:
            client.hello = client.call("hello", {"client_version": __version__, "api_version": rpc.API_VERSION}, timeout=timeout)
        except Exception:
            client.close()
            raise
        theirs = client.hello.get("api_version")
        if theirs != rpc.API_VERSION and not quiet and stderr is not None:
            stderr.write(
                f"hermes-relay: warning: agent speaks IPC API {theirs}, this CLI speaks {rpc.API_VERSION} "
                f"(agent {client.hello.get('agent_version')}, CLI {__version__}); "
                "run `hermes-relay agent restart`\n"
            )
        return client

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = DEFAULT_CALL_TIMEOUT,
        on_notify: NotifyFn | None = None,
    ) -> Any:
        """Send one request and return its result, passing streamed notifies to ``on_notify``."""
        msgid = next(self._ids)
        self._send(rpc.Request(msgid, method, params or {}).to_wire())
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            msg = self._receive(deadline, method)
            if isinstance(msg, rpc.Notify):
                if on_notify is not None:
                    on_notify(msg.method, msg.params)
                continue
            if isinstance(msg, rpc.Response) and msg.msgid == msgid:
                if msg.error is not None:
                    raise error_from_wire(msg.error)
                return msg.result
            raise RemoteProtocolError(f"agent sent an unexpected message: {msg!r}")

    def _send(self, obj: Any) -> None:
        try:
            self._sock.sendall(framing.encode_frame(obj))
        except OSError as exc:
            raise IpcError(f"lost the connection to the agent: {exc.strerror or exc}") from exc

    def _receive(self, deadline: float | None, method: str) -> rpc.Message:
        while True:
            for obj in self._decoder:
                return rpc.parse_message(obj)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise IpcError(f"the agent did not answer {method} in time", hint="see `hermes-relay agent logs`")
                self._sock.settimeout(left)
            else:
                self._sock.settimeout(None)
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                raise IpcError(f"the agent did not answer {method} in time", hint="see `hermes-relay agent logs`") from None
            except OSError as exc:
                raise IpcError(f"lost the connection to the agent: {exc.strerror or exc}") from exc
            if not data:
                raise IpcError("the agent closed the connection", hint="see `hermes-relay agent logs`")
            self._decoder.feed(data)


def _open_socket(path: str, timeout: float) -> socket.socket:
    """Connect to the agent's endpoint: a Unix socket, or (tcp mode) loopback port + nonce from a file."""
    if path.endswith(".endpoint"):
        from hermes_relay.core import endpoint

        port, nonce = endpoint.read(path)
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            sock.sendall(nonce)
        except OSError as exc:
            raise AgentNotRunningError(path, exc.strerror or str(exc)) from None
        return sock
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        if exc.errno in _CONNECT_ERRNOS or isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
            raise AgentNotRunningError(path) from None
        raise AgentNotRunningError(path, exc.strerror or str(exc)) from None
    return sock


def agent_command() -> list[str]:
    return [sys.executable, "-m", "hermes_relay.agent", "run"]


def spawn_agent(env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start the agent detached from this terminal; its own log file receives its output."""
    import subprocess

    log_dir = paths.log_dir(env)
    fileio.ensure_private_dir(log_dir)
    out = open(log_dir / "agent-start.err", "ab")
    try:
        kwargs: dict[str, Any] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True
        else:  # pragma: no cover
            kwargs["creationflags"] = getattr(subprocess, "DETACHED_PROCESS", 0) | getattr(
                subprocess, "CREATE_NEW_PROCESS_GROUP", 0
            )
        return subprocess.Popen(
            agent_command() + ["--detached"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=out,
            env=dict(env),
            close_fds=True,
            **kwargs,
        )
    finally:
        out.close()


def ensure_agent(
    env: Mapping[str, str],
    *,
    autostart: bool = True,
    stderr: TextIO | None = None,
    quiet: bool = False,
    wait: float = AUTOSTART_WAIT,
) -> AgentClient:
    """Connect to the agent, starting it first if needed and allowed."""
    path = paths.socket_path(env)
    try:
        return AgentClient.connect(path, stderr=stderr, quiet=quiet)
    except AgentNotRunningError:
        if not autostart:
            raise
    lock_path = paths.spawn_lock_file(env)
    with fileio.FileLock(lock_path, timeout=wait + 5, suffix=""):
        try:
            return AgentClient.connect(path, stderr=stderr, quiet=quiet)
        except AgentNotRunningError:
            pass
        proc = spawn_agent(env)
        deadline = time.monotonic() + wait
        delay = 0.01
        while True:
            try:
                client = AgentClient.connect(path, stderr=stderr, quiet=quiet)
            except AgentNotRunningError:
                pass
            else:
                _reap_later(proc)
                return client
            code = proc.poll()
            if code is not None:
                detail = _tail(paths.log_dir(env) / "agent-start.err")
                raise AgentNotRunningError(path, f"the agent exited with status {code} while starting{detail}",
                                           hint="see `hermes-relay agent logs`, or run `hermes-relay agent run` to watch it start")
            if time.monotonic() >= deadline:
                raise AgentNotRunningError(path, f"started the agent (pid {proc.pid}) but it did not answer within {wait:g}s",
                                           hint="see `hermes-relay agent logs`")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _reap_later(proc: subprocess.Popen[bytes]) -> None:
    """Collect the agent's exit status if it ends while this process lives (no zombie, no warning).

    A short-lived CLI exits long before the agent, which the init process then adopts.
    """
    import threading

    threading.Thread(target=proc.wait, name="reap-agent", daemon=True).start()


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return (": " + " | ".join(text)) if text else ""
