"""Wire constants shared by the client, the agent and the relay: each number is defined here once."""

from __future__ import annotations

from typing import Final

DEFAULT_PORT: Final = 8767  # the reference relay's port
CLOSE_AUTH_FAILED: Final = 4001  # application close code: credentials rejected, revoked or replaced
CLOSE_TRY_AGAIN_LATER: Final = 1013  # RFC 6455 "try again later": our relay's rate-limit close
CLOSE_GOING_AWAY: Final = 1001  # relay shutting down
CLOSE_MESSAGE_TOO_BIG: Final = 1009
TOKEN_PREFIX_LEN: Final = 8  # GET /sessions shows tokens by their first 8 characters
MIN_PREFIX_LEN: Final = 4  # a revoke/extend prefix shorter than this is refused (too easy to hit another device)
MAX_DEVICE_NAME: Final = 64  # the reference client's limit for display names; longer names are cut
MAX_WS_MESSAGE: Final = 4 << 20  # post-auth WebSocket message cap (the reference relay's aiohttp default)
MAX_PREAUTH_MESSAGE: Final = 64 << 10  # before auth a client sends one small frame
