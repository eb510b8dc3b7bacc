"""Wire constants shared by the client, the agent and the relay: each number is defined here once.

Plain module constants (no ``typing.Final``): the CLI's hot paths import this module and must not
pay for ``typing``.
"""

from __future__ import annotations

DEFAULT_PORT = 8767  # the reference relay's port
CLOSE_AUTH_FAILED = 4001  # application close code: credentials rejected, revoked or replaced
CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455 "try again later": our relay's rate-limit close
CLOSE_GOING_AWAY = 1001  # relay shutting down
CLOSE_MESSAGE_TOO_BIG = 1009
TOKEN_PREFIX_LEN = 8  # GET /sessions shows tokens by their first 8 characters
MIN_PREFIX_LEN = 4  # a revoke/extend prefix shorter than this is refused (too easy to hit another device)
MAX_DEVICE_NAME = 64  # the reference client's limit for display names; longer names are cut
MAX_WS_MESSAGE = 4 << 20  # post-auth WebSocket message cap (the reference relay's aiohttp default)
MAX_PREAUTH_MESSAGE = 64 << 10  # before auth a client sends one small frame
# Bytes asked of the socket per read once a WebSocket carries tool traffic. trio-websocket's default
# is 4 KiB: ~780 reads (and as many wsproto passes) for a 3 MB result. Idle sockets hold no buffer.
WS_RECEIVE_BYTES = 64 << 10
