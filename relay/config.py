"""The relay's configuration and the constants its decisions use (limits, reasons, close codes). No I/O.

``RelayConfig`` is built once (relay/main.py from the command line and the environment knobs, tests
directly); the core (relay/core.py) and the trio driver (relay/server.py) read it. Seams such as
``save_fault`` are built from the knobs here, so nothing below reads the environment.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..core import knobs, wire
from . import capacity
from .term_config import TerminalSettings

SERVER_VERSION = __version__
AUTH_TIMEOUT = 30.0  # seconds without an auth frame before the relay gives up (reference: 30 s)
HEAD_TIMEOUT = 10.0  # seconds to send a request head; slow-loris clients are dropped
# 64 KiB per WebSocket message. This relay serves only system messages (auth, ping, errors), each a
# few hundred bytes, and until authentication every connection may hold a partial message in memory:
# a 1 MiB limit let a few hundred idle sockets pin hundreds of MiB for the whole auth window.
MAX_MESSAGE = wire.MAX_PREAUTH_MESSAGE
MAX_UNAUTHED_PER_IP = 32  # upgraded, not yet authenticated connections per address (IPv6: per /64)
MAX_UNAUTHED = 1024  # the same, over all addresses
HEARTBEAT = 30.0  # seconds between pings to an authenticated client, and to wait for its pong
RATE_LIMIT_BODY = "Too many failed authentication attempts. Try again later."
AUTH_FAIL_REASON = "Invalid pairing code or session token"
AUTH_TIMEOUT_REASON = "Authentication timeout"
BUSY_PER_IP_BODY = "Too many unauthenticated connections from this address. Authenticate or close some, then retry."
BUSY_BODY = "The relay has too many unauthenticated connections right now. Retry shortly."
CLOSE_AUTH_FAILED = wire.CLOSE_AUTH_FAILED
CLOSE_POLICY = 1008
CLOSE_GOING_AWAY = wire.CLOSE_GOING_AWAY
CLOSE_TRY_AGAIN_LATER = wire.CLOSE_TRY_AGAIN_LATER
CLOSE_INTERNAL_ERROR = 1011  # the relay could not save the new session: retry later, nothing was lost
CLOSE_HEARTBEAT = 4000  # no pong within the heartbeat: the client is presumed gone; it may reconnect
CLOSE_GRACE = 2.0  # seconds to wait for a client's close reply
SHUTDOWN_CLOSE_GRACE = 0.05  # on shutdown: send the close frame, do not wait for the reply
SHUTDOWN_ANSWER_GRACE = 1.0  # on shutdown: seconds to answer a desktop call still in flight
# Reference relay: 5 bad tokens in 60 s block for 5 min; 10 bad codes in 60 s block for 2 min.
SESSION_FAIL_LIMIT, SESSION_FAIL_WINDOW, SESSION_BLOCK = 5, 60.0, 300.0
PAIRING_FAIL_LIMIT, PAIRING_FAIL_WINDOW, PAIRING_BLOCK = 10, 60.0, 120.0
# Failed bearer checks on the HTTP API: a gentler bucket of its own, never the WebSocket limiter's.
HTTP_FAIL_LIMIT, HTTP_FAIL_WINDOW, HTTP_BLOCK = 20, 60.0, 60.0
# Failed pairing codes over ALL addresses: 60 a minute makes guessing a 6-character code take centuries.
CODE_FAILS_PER_MINUTE = 60
EXPIRY_SWEEP = 60.0  # seconds between expired-session sweeps
# /relay/ws: where the reference desktop CLI connects on a pinned-TLS (plugin_proxy) route. It also sends
# X-Hermes-Relay-Session (its session token) on that upgrade and on /relay/health: the reference's TLS
# proxy drops that header, and so does this relay (only the first frame authenticates; never logged).
WS_PATHS = ("/", "/ws", "/relay/ws")
DESKTOP_SURFACE = "desktop"  # the client_surface a session must be paired with to serve desktop tools


@dataclass(frozen=True)
class RelayConfig:
    host: str = "127.0.0.1"
    port: int = 8767
    state_dir: Path | None = None  # None: sessions live in memory only
    ssl_context: ssl.SSLContext | None = None
    cert_pin: str | None = None
    cert_der: str | None = None  # the leaf certificate, base64 DER: invites carry it for pinned-TLS clients
    auth_timeout: float = AUTH_TIMEOUT
    head_timeout: float = HEAD_TIMEOUT
    max_message: int = MAX_MESSAGE
    max_unauthed_per_ip: int = MAX_UNAUTHED_PER_IP
    max_unauthed: int = MAX_UNAUTHED
    max_pending: int = capacity.MAX_PENDING  # connections whose request head has not arrived yet
    max_pending_per_ip: int = capacity.MAX_PENDING_PER_IP
    heartbeat: float = HEARTBEAT  # 0 disables the relay's pings
    max_message_authed: int = wire.MAX_WS_MESSAGE  # after auth: desktop tool results are up to 4 MiB
    desktop_timeout: float | None = None  # None: each desktop tool's class timeout (30/180/300 s)
    wall_clock: Callable[[], float] = field(default=time.time)
    close_on_revoke: bool = True  # False keeps revoked sockets open, as the reference relay does (tests)
    trusted_proxies: tuple[Any, ...] = ()  # peers.parse_trusted(--trusted-proxy ...)
    save_fault: Callable[[], bool] | None = None  # a checkpoint seam: True makes sessions.json writes fail
    knobs: knobs.Knobs = field(default_factory=knobs.Knobs)  # the environment knobs read at start (logged)
    terminal: TerminalSettings | None = None  # --terminal: serve shells (relay/terminal.py); None: unserved

    @property
    def scheme(self) -> str:
        return "wss" if self.ssl_context else "ws"


@dataclass(frozen=True)
class RelayInfo:
    """What ``nursery.start(serve_relay, cfg)`` returns."""

    host: str
    port: int
    scheme: str
    cert_pin: str | None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def save_fault(found: knobs.Knobs) -> Callable[[], bool] | None:
    """The sessions-save checkpoint for ``HERMES_RELAY_FAULT_SAVE``: writes fail while its file exists."""
    flag = found.get(knobs.FAULT_SAVE)
    return Path(flag).exists if flag else None
