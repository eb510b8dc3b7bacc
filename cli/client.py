"""The CLI's side of the IPC connection: a blocking socket, the shared sans-IO framing, no trio.

``AgentClient.connect`` opens the socket, checks that the agent at the other end runs as this user,
and sends ``hello`` without waiting for its answer: the first call's request follows it on the wire
and both answers come back in one round trip (the agent answers in order). The API version is
checked when the hello answer arrives (a mismatch warns once on stderr). ``AgentCalls`` gives every
IPC method a typed wrapper (core/api.py), shared with the CLI tests' fake client, and ``watch()``
is an iterator of relay states.

``ensure_agent`` starts the agent when nothing answers: under an exclusive spawn lock it re-checks,
spawns the agent detached in its own session, then polls the socket with growing sleeps
(gpg-agent's autostart), so many CLIs started at once produce exactly one agent.

This module runs on every ``status``: it uses ``_socket`` (``socket`` pulls in enum and
selectors) and imports pathlib, subprocess and the file helpers only where an agent is spawned.
"""

from __future__ import annotations

import _socket
import errno
import os
import sys
import time

from hermes_relay import __version__
from hermes_relay.core import api, framing, ownership, paths, rpc
from hermes_relay.core.errors import (
    AgentNotRunningError,
    IpcError,
    RemoteProtocolError,
    error_from_wire,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterator, Mapping
    from typing import Any, TextIO

    from hermes_relay.core.apitypes import (
        DevicesExtendReply,
        DevicesListReply,
        DevicesRevokeReply,
        HelloReply,
        PairProgress,
        PairReply,
        PinAcceptReply,
        RelayState,
        RouteIndicator,
        StatusReply,
    )

    NotifyFn = Callable[[str, dict[str, Any]], None]

DEFAULT_CALL_TIMEOUT = 30.0  # seconds; pairing and probes report progress well within this
AUTOSTART_WAIT = 10.0  # seconds to wait for a freshly spawned agent's socket
_CONNECT_ERRNOS = (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK, errno.EACCES)

_PIPE_PREFIX = "\\\\.\\pipe\\"  # core.winpipe.PREFIX, spelled out: the hot paths never import it


class AgentCalls:
    """Typed wrappers over ``call`` for every IPC method (the contract is in core/api.py)."""

    def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = DEFAULT_CALL_TIMEOUT,
             on_notify: NotifyFn | None = None) -> Any:
        raise NotImplementedError

    def status(self, *, reveal_tokens: bool = False, timeout: float = DEFAULT_CALL_TIMEOUT) -> StatusReply:
        return self.call(api.STATUS, {"reveal_tokens": reveal_tokens}, timeout=timeout)  # type: ignore[no-any-return]

    def route(self) -> RouteIndicator:
        return self.call(api.ROUTE, {})  # type: ignore[no-any-return]

    def pair_start(self, params: dict[str, Any], *, on_progress: Callable[[PairProgress], None] | None = None,
                   timeout: float | None = DEFAULT_CALL_TIMEOUT) -> PairReply:
        def notify(method: str, p: dict[str, Any]) -> None:
            if method == api.PAIR_PROGRESS and on_progress is not None:
                on_progress(p)  # type: ignore[arg-type]

        return self.call(api.PAIR_START, params, timeout=timeout, on_notify=notify)  # type: ignore[no-any-return]

    def devices_list(self, url: str | None = None) -> DevicesListReply:
        return self.call(api.DEVICES_LIST, _url(url))  # type: ignore[no-any-return]

    def devices_revoke(self, prefix: str, url: str | None = None) -> DevicesRevokeReply:
        return self.call(api.DEVICES_REVOKE, {**_url(url), "prefix": prefix})  # type: ignore[no-any-return]

    def devices_extend(self, prefix: str, ttl_seconds: int, url: str | None = None) -> DevicesExtendReply:
        return self.call(api.DEVICES_EXTEND, {**_url(url), "prefix": prefix,  # type: ignore[no-any-return]
                                              "ttl_seconds": ttl_seconds})

    def pin_accept(self, url: str) -> PinAcceptReply:
        return self.call(api.PIN_ACCEPT, {"url": url})  # type: ignore[no-any-return]

    def reload(self) -> dict[str, Any]:
        return self.call(api.RELOAD, {})  # type: ignore[no-any-return]

    def stop(self) -> dict[str, Any]:
        return self.call(api.AGENT_STOP, {})  # type: ignore[no-any-return]


def _url(url: str | None) -> dict[str, Any]:
    return {"url": url} if url else {}


class AgentClient(AgentCalls):
    """One IPC connection to the agent."""

    def __init__(self, sock: Any, path: str, *, stderr: TextIO | None = None, quiet: bool = False):
        self._sock = sock
        self.path = path
        self._decoder = framing.FrameDecoder()
        self._next_id = 1
        self._hello: dict[str, Any] | None = None
        self._hello_id: int | None = None
        self._stderr = stderr
        self._quiet = quiet
        self._hello_timeout = DEFAULT_CALL_TIMEOUT  # connect() sets its own: a hung agent fails as fast as a dead one

    @classmethod
    def connect(cls, path: str, *, timeout: float = 2.0, stderr: TextIO | None = None, quiet: bool = False) -> AgentClient:
        """Connect and send hello. Raises AgentNotRunningError when nothing listens at ``path``."""
        sock = _open_socket(path, timeout)
        client = cls(sock, path, stderr=stderr, quiet=quiet)
        client._hello_timeout = timeout
        try:
            if not path.endswith(".endpoint") and not path.startswith(_PIPE_PREFIX):  # those prove themselves
                ownership.check_peer(sock, path)
            client._hello_id = client._send_request(
                api.HELLO, {"client_version": __version__, "api_version": rpc.API_VERSION})
        except Exception:
            client.close()
            raise
        return client

    @property
    def hello(self) -> HelloReply:
        """The agent's hello answer (read from the socket on first use if no call has read it yet)."""
        if self._hello is None:
            self._finish_hello(time.monotonic() + self._hello_timeout)
        assert self._hello is not None
        return self._hello  # type: ignore[return-value]

    def _finish_hello(self, deadline: float | None) -> None:
        msgid, self._hello_id = self._hello_id, None
        if msgid is None:
            self._hello = self._hello or {}
            return
        self._hello = self._result(msgid, deadline, api.HELLO, None)
        theirs = self._hello.get("api_version") if isinstance(self._hello, dict) else None
        if theirs != rpc.API_VERSION and not self._quiet and self._stderr is not None:
            self._stderr.write(
                f"hermes-relay: warning: agent speaks IPC API {theirs}, this CLI speaks {rpc.API_VERSION} "
                f"(agent {self._hello.get('agent_version')}, CLI {__version__}); "
                "run `hermes-relay agent restart`\n"
            )

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
        msgid = self._send_request(method, params or {})
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._hello_id is not None:
            self._finish_hello(deadline)
        return self._result(msgid, deadline, method, on_notify)

    def watch(self) -> Iterator[RelayState]:
        """Every relay's state now, then each change, until the caller stops iterating (or the agent goes)."""
        msgid = self._send_request(api.WATCH, {})
        if self._hello_id is not None:
            self._finish_hello(time.monotonic() + self._hello_timeout)
        while True:
            msg = self._receive(None, api.WATCH)
            if isinstance(msg, rpc.Notify):
                if msg.method == api.STATE:
                    yield msg.params  # type: ignore[misc]
                continue
            if isinstance(msg, rpc.Response) and msg.msgid == msgid:
                if msg.error is not None:
                    raise error_from_wire(msg.error)
                return
            raise RemoteProtocolError(f"agent sent an unexpected message: {msg!r}")

    def _send_request(self, method: str, params: dict[str, Any]) -> int:
        msgid = self._next_id
        self._next_id += 1
        self._send(rpc.Request(msgid, method, params).to_wire())
        return msgid

    def _result(self, msgid: int, deadline: float | None, method: str, on_notify: NotifyFn | None) -> Any:
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
            except TimeoutError:
                raise IpcError(f"the agent did not answer {method} in time", hint="see `hermes-relay agent logs`") from None
            except OSError as exc:
                raise IpcError(f"lost the connection to the agent: {exc.strerror or exc}") from exc
            if not data:
                raise IpcError("the agent closed the connection", hint="see `hermes-relay agent logs`")
            self._decoder.feed(data)


def _open_socket(path: str, timeout: float) -> Any:
    """Connect to the agent's endpoint: a Unix socket, or (tcp mode) loopback port + nonce from a file."""
    if path.startswith(_PIPE_PREFIX):
        from hermes_relay.cli import _winpipe

        return _winpipe.connect(path, timeout)
    if path.endswith(".endpoint"):
        import socket

        from hermes_relay.core import endpoint

        port, nonce = endpoint.read(path)
        try:
            tcp = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            tcp.sendall(nonce)
        except OSError as exc:
            raise AgentNotRunningError(path, exc.strerror or str(exc)) from None
        return tcp
    if sys.platform == "win32":  # pragma: no cover - the agent serves the tcp endpoint there
        raise AgentNotRunningError(path, "Unix sockets are not available on Windows")
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
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
    """How the agent is started: ``-I`` keeps the current directory, PYTHONPATH and the user site off
    ``sys.path``, so a folder named ``hermes_relay`` where the user stands cannot shadow the install."""
    return [sys.executable, "-I", "-m", "hermes_relay.agent", "run"]


# Path settings the agent reads; made absolute before it starts in ``/``.
_PATH_VARS = ("HOME", "HERMES_HOME", "HERMES_RELAY_RUNTIME_DIR", "HERMES_RELAY_SOCKET",
              "HERMES_RELAY_SESSIONS_FILE", "HERMES_RELAY_LOG_DIR", "XDG_RUNTIME_DIR")


def daemon_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with every path setting absolute, as seen from the caller's directory."""
    out = dict(env)
    for key in _PATH_VARS:
        if out.get(key) and not os.path.isabs(out[key]):
            out[key] = os.path.abspath(out[key])
    return out


def spawn_agent(env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start the agent detached from this terminal, in ``/``; its own log file receives its output."""
    import subprocess

    from hermes_relay.core import fileio

    log_dir = paths.log_dir(env)
    fileio.ensure_private_dir(log_dir)
    fd = os.open(log_dir / "agent-start.err", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    out = os.fdopen(fd, "ab")
    def popen(**kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            agent_command() + ["--detached"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=out,
            env=daemon_env(env),
            cwd=os.path.abspath(os.sep),
            close_fds=True,
            **kwargs,
        )

    try:
        if sys.platform == "win32":  # pragma: no cover - no console, its own process group, and out of the
            # terminal's Job Object where it allows that (an ssh session's job ends its processes at logout)
            flags = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP
            try:
                return popen(creationflags=flags | subprocess.CREATE_BREAKAWAY_FROM_JOB)
            except PermissionError:  # the job forbids breaking away: the agent stays in it
                return popen(creationflags=flags)
        return popen(start_new_session=True)
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
    except AgentNotRunningError as exc:
        if not autostart:
            raise _elsewhere(env, path) or exc from None
    from hermes_relay.core import fileio

    ownership.check_private(paths.runtime_dir_str(env), directory=True)  # before creating anything in it
    lock_path = paths.spawn_lock_file(env)
    ownership.check_private(str(lock_path), directory=False)
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
                other = _elsewhere(env, path)
                if other is not None:
                    raise other
                detail = _tail(str(paths.log_dir(env) / "agent-start.err"))
                raise AgentNotRunningError(path, f"the agent exited with status {code} while starting{detail}",
                                           hint="see `hermes-relay agent logs`, "
                                                "or run `hermes-relay agent run` to watch it start")
            if time.monotonic() >= deadline:
                raise AgentNotRunningError(path, f"started the agent (pid {proc.pid}) but it did not answer within {wait:g}s",
                                           hint="see `hermes-relay agent logs`")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _elsewhere(env: Mapping[str, str], path: str) -> AgentNotRunningError | None:
    """An agent runs for this HOME (it holds ~/.hermes/agent-<host>.lock) but on another socket: say where."""
    from hermes_relay.core import instance

    owner = instance.running_owner(paths.home_lock_file(env))
    if not owner or owner.get("socket") == path:
        return None
    return AgentNotRunningError(
        path, f"an agent for this home runs with another runtime directory ({instance.describe(owner)})",
        hint=instance.reach_hint(owner))


def _reap_later(proc: subprocess.Popen[bytes]) -> None:
    """Collect the agent's exit status if it ends while this process lives (no zombie, no warning).

    A short-lived CLI exits long before the agent, which the init process then adopts.
    """
    import threading

    threading.Thread(target=proc.wait, name="reap-agent", daemon=True).start()


def _tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read().strip().splitlines()[-lines:]
    except OSError:
        return ""
    return (": " + " | ".join(text)) if text else ""
