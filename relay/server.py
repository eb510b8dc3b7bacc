"""The relay server's trio I/O: WebSocket at ``/``, ``/ws`` and ``/relay/ws`` plus the HTTP API (relay/api.py), on one port.

The driver, in two parts: this module listens, locks the state directory and sweeps expired sessions;
relay/conn.py reads, writes and times each connection. Both ask the core (relay/core.py, no I/O) for
every decision: admit or refuse, the HTTP reply, the auth frame's verdict, each message's answer, which
sockets a revocation or a rotated token closes.

Each connection starts with a request head parsed by httptools (relay/httpparse.py). A WebSocket upgrade is
answered from that parse (relay/upgrade.py) and served by relay/ws.py (wsproto's frames, read and written from the connection's
own task); anything else is one HTTP request and
one JSON response from the core (``api.route``). The client's address comes from ``peers.resolve`` (forwarding
headers count only from ``--trusted-proxy`` addresses). The first WebSocket frame must be ``system/auth`` within ``auth_timeout``;
credentials are tried in the order session token, refresh token, pairing code. Failures are
counted per IP in two buckets (codes, tokens); a blocked IP gets HTTP 429 before any upgrade, and
``auth.fail`` (with nothing tried or counted) on a connection it opened before the block.
Every per-connection failure is contained to that connection (a supervision point).

Resource bounds before authentication: a WebSocket message is at most ``MAX_MESSAGE`` (64 KiB; after
authentication 4 MiB, for desktop tool results, see relay/desktop.py), and at
most ``MAX_UNAUTHED_PER_IP`` upgraded-but-unauthenticated connections per address (IPv6: per /64) and
``MAX_UNAUTHED`` in all may be open at once. An upgrade over either cap gets HTTP 503 with
``Retry-After: 1`` and a text body: 503 rather than 429 because it is a capacity limit, not a verdict
on the address, so clients treat it as a transient failure and retry with backoff instead of waiting
out an authentication block.

After authentication the relay sends a WebSocket ping every ``heartbeat`` seconds; a client whose pong
has not arrived within another ``heartbeat`` is presumed gone (half-open TCP) and closed with
``CLOSE_HEARTBEAT`` (4000, "heartbeat timeout"): an application code distinct from 1001 (the relay
shutting down) and from 4001 (credentials rejected, which makes clients stop), so clients reconnect.

Channels this relay does not serve (``tui``, ``chat``, and ``terminal`` unless started with ``--terminal``,
relay/terminal.py) are answered on their own channel (relay/unserved.py) so clients fail at once instead of
waiting for a reply that never comes.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ..core import fileio, knobs
from ..core.errors import HermesError
from .config import (
    AUTH_FAIL_REASON,
    AUTH_TIMEOUT_REASON,
    BUSY_BODY,
    BUSY_PER_IP_BODY,
    CLOSE_AUTH_FAILED,
    CLOSE_HEARTBEAT,
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN_LATER,
    CODE_FAILS_PER_MINUTE,
    EXPIRY_SWEEP,
    HEARTBEAT,
    HTTP_BLOCK,
    HTTP_FAIL_LIMIT,
    MAX_MESSAGE,
    MAX_UNAUTHED_PER_IP,
    PAIRING_BLOCK,
    PAIRING_FAIL_LIMIT,
    RATE_LIMIT_BODY,
    SESSION_BLOCK,
    SESSION_FAIL_LIMIT,
    RelayConfig,
    RelayInfo,
)
from .conn import Relay

log = logging.getLogger(__name__)

# Re-exported for the callers that know these names from here (tests, relay/main.py).
__all__ = [
    "AUTH_FAIL_REASON", "AUTH_TIMEOUT_REASON", "BUSY_BODY", "BUSY_PER_IP_BODY", "CLOSE_AUTH_FAILED", "CLOSE_HEARTBEAT",
    "CLOSE_INTERNAL_ERROR", "CLOSE_POLICY", "CLOSE_TRY_AGAIN_LATER", "CODE_FAILS_PER_MINUTE", "EXPIRY_SWEEP", "HEARTBEAT",
    "HTTP_BLOCK", "HTTP_FAIL_LIMIT", "MAX_MESSAGE", "MAX_UNAUTHED_PER_IP", "PAIRING_BLOCK", "PAIRING_FAIL_LIMIT",
    "RATE_LIMIT_BODY", "SESSION_BLOCK", "SESSION_FAIL_LIMIT", "Relay", "RelayConfig", "RelayInfo", "serve_relay",
]


async def _sweep(relay: Relay) -> None:
    """Once a minute: drop expired sessions and write what ``touch`` changed in memory."""
    while True:
        await trio.sleep(EXPIRY_SWEEP)
        try:
            removed = relay.core.book.purge_expired()
            if removed:
                log.info("sessions_expired count=%d", removed)
            relay.core.book.flush()
        except (OSError, HermesError) as exc:  # a full disk must not stop the relay; retried next sweep
            log.warning("sessions_save_failed error=%s", exc)


def _final_flush(relay: Relay) -> None:
    try:
        relay.core.book.flush()
    except (OSError, HermesError) as exc:
        log.warning("sessions_save_failed error=%s", exc)


async def serve_relay(
    config: RelayConfig, *, task_status: trio.TaskStatus[RelayInfo] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the relay until cancelled. ``task_status.started`` receives a RelayInfo with the bound port."""
    lock = _lock_state_dir(config.state_dir) if config.state_dir is not None else None
    try:
        await _serve(config, task_status)
    finally:
        if lock is not None:
            lock.release()


def _lock_state_dir(state_dir: Path) -> fileio.FileLock:
    """An exclusive lock on the state directory: a second relay on it would overwrite the first's sessions."""
    lock = fileio.FileLock(state_dir / "relay", suffix=".lock")
    try:
        held = lock.acquire(blocking=False)
    except OSError as exc:
        raise HermesError(f"cannot lock the state directory {state_dir}: {exc.strerror or exc}",
                          hint="check its owner and permissions, or pass another --state-dir") from exc
    if not held:
        raise HermesError(f"another relay is already using the state directory {state_dir} (it holds {lock.path})",
                          hint="stop that relay first, or give this one its own --state-dir")
    return lock


async def _serve(config: RelayConfig, task_status: trio.TaskStatus[RelayInfo]) -> None:
    knobs.log_set(config.knobs, log)
    relay = Relay(config)
    try:
        listeners: list[Any] = await trio.open_tcp_listeners(config.port, host=config.host)
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            raise HermesError(f"cannot listen on {config.host}:{config.port}: {config.host} is not an address of this machine",
                              hint="use --host 0.0.0.0 (every address) or one of this machine's own addresses") from exc
        raise HermesError(
            f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
            hint="another relay may already be running there; pick another --port",
        ) from exc
    if config.ssl_context is not None:
        listeners = [trio.SSLListener(lst, config.ssl_context, https_compatible=True) for lst in listeners]
    port = relay.core.port = _bound_port(listeners[0])
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_sweep, relay)
            nursery.start_soon(relay.heartbeat.run)
            if relay.idle is not None:
                nursery.start_soon(relay.idle.run)
            if relay.terminal is not None:
                await nursery.start(relay.terminal.run)
            for listener in listeners:
                nursery.start_soon(_accept, listener, nursery, relay.handle_stream)
            task_status.started(RelayInfo(config.host, port, config.scheme, config.cert_pin))
    finally:
        _final_flush(relay)  # last_seen and device details touched since the last sweep


_ACCEPT_CAPACITY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}  # out of descriptors or memory
# What trio's SocketListener.accept retries at once: a connection gone before it was taken, a firewall's EPERM.
_ACCEPT_IGNORED = {getattr(errno, name) for name in ("EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT",
                                                      "EHOSTDOWN", "ENONET", "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH")
                   if hasattr(errno, name)}
ACCEPT_RETRY = 0.1  # seconds before accepting again after running out
ACCEPT_BURST = 64  # connections taken in a row before the accepting task lets the others run


async def _accept(listener: trio.abc.Listener[Any], nursery: trio.Nursery,
                  handle: Callable[[trio.abc.Stream], Awaitable[None]]) -> None:
    """``trio.serve_listeners`` without its per-connection wrapper (a task frame and a cancelled close
    scope around every connection: ``handle`` closes its stream itself). A plain TCP listener is read
    directly: trio's accept goes through the scheduler after every connection, even when more wait."""
    raw = listener.socket._sock if type(listener) is trio.SocketListener else None  # type: ignore[attr-defined]
    async with listener:
        burst = 0
        while True:
            try:
                if raw is None:
                    stream: trio.abc.Stream = await listener.accept()
                else:
                    try:
                        sock, _ = raw.accept()
                    except BlockingIOError:
                        burst = 0
                        await trio.lowlevel.wait_readable(raw)
                        continue
                    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            except OSError as exc:
                if exc.errno in _ACCEPT_IGNORED and raw is not None:
                    continue
                if exc.errno not in _ACCEPT_CAPACITY:
                    raise
                log.error("accept_failed error=%s retry_in=%s", errno.errorcode.get(exc.errno or 0, exc.errno),
                          ACCEPT_RETRY)
                await trio.sleep(ACCEPT_RETRY)
            else:
                nursery.start_soon(handle, stream)
                burst += 1
                if burst >= ACCEPT_BURST:
                    burst = 0
                    await trio.lowlevel.checkpoint()


def _bound_port(listener: Any) -> int:
    inner: Any = listener.transport_listener if isinstance(listener, trio.SSLListener) else listener
    return int(inner.socket.getsockname()[1])
