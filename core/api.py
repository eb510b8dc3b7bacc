"""The agent's IPC method names and link states: the constants every caller uses.

The contract itself (each method's params and result, the streamed notifies, with comments) is
written once, as types, in core/apitypes.py. This module stays import-free for the CLI's start-up.
"""

from __future__ import annotations

from . import rpc

API_VERSION = rpc.API_VERSION  # one version number, defined with the message shapes

HELLO = "hello"
STATUS = "status"
PAIR_START = "pair.start"
PAIR_PROGRESS = "pair.progress"
PAIR_CHECK = "pair.check"  # which stored pairing a pair.start would replace (nothing is sent to the relay)
DEVICES_LIST = "devices.list"
DEVICES_REVOKE = "devices.revoke"
DEVICES_EXTEND = "devices.extend"
ROUTE = "route"
WATCH = "watch"
STATE = "state"
PIN_ACCEPT = "pin.accept"
RELOAD = "reload"
AGENT_STOP = "agent.stop"
DOCTOR = "doctor"
APPROVALS_LIST = "approvals.list"
APPROVALS_DECIDE = "approvals.decide"
APPROVAL = "approval"
FORGET = "forget"
ACCESS_CHANGING = "access.changing"  # the CLI is about to change a host's policy or roots (for the audit)
RESTORE = "restore"
DOWN_SET = "down"
UP_SET = "up"

# The shell (docs/shell-protocol.md): one streaming call per shell, notifies both ways.
SHELL_OPEN = "shell.open"
TERMINAL_LIST = "terminal.list"  # `hermes-relay sessions list`, over the agent's link
TERMINAL_KILL = "terminal.kill"  # `hermes-relay sessions kill`, over the agent's link
SHELL_ATTACHED = "shell.attached"  # agent -> CLI notifies during shell.open
SHELL_OUTPUT = "shell.output"
SHELL_ACK = "shell.ack"
SHELL_LINK = "shell.link"
SHELL_NOTICE = "shell.notice"
SHELL_INPUT = "shell.input"  # CLI -> agent notifies during shell.open
SHELL_RESIZE = "shell.resize"
SHELL_DETACH = "shell.detach"
SHELL_KILL = "shell.kill"
SHELL_REDRAW = "shell.redraw"

# Relay link states.
CONNECTING = "connecting"
CONNECTED = "connected"
BACKOFF = "backoff"  # waiting before the next attempt after a network failure
REVOKED = "revoked"  # the relay rejected the stored credentials; needs a new pairing
EXPIRED = "expired"  # the session's TTL ran out; needs a new pairing
REPLACED = "replaced"  # a newer pairing of the same relay (under another URL) replaced this session
PIN_MISMATCH = "pin_mismatch"  # the certificate changed; needs `hermes-relay pin accept URL`
RATE_LIMITED = "rate_limited"  # HTTP 429: waiting out the relay's block
NOT_PAIRED = "not_paired"  # the record was removed from the store while the link ran
DOWN = "down"  # `hermes-relay down`: the user took this computer off the relay (core/offline.py); `up` lifts it
PAUSED = "paused"  # another client removed the record; the agent keeps it aside (`restore` / `forget`)
STOPPED = "stopped"  # the agent stopped cleanly (route indicator only)

# Route indicator labels (the shell prompt shows these).
OFFLINE = "offline"
