"""Answers for channels this relay does not serve (``tui``, ``terminal``, ``chat``), so clients fail fast.

This relay has no Hermes agent gateway and no chat backend, and serves shells only when started with
``--terminal`` (relay/terminal.py; the core then never asks this module about ``terminal``). Reference clients ignore a
``system/error`` and wait 30-60 s for an answer on the channel they used, so each request is answered on
its own channel, echoing its id:

- ``terminal``: ``terminal.error {"message"}``; ``chat``: ``chat.error {"message"}``.
- ``tui``: reference clients send ``tui.attach`` on every connect and drop the whole socket on any
  ``tui.error``, so the attach is acknowledged (``tui.attached``), readiness is announced
  (``tui.rpc.event`` ``gateway.ready``) and every ``tui.rpc.request`` gets a JSON-RPC error in a
  ``tui.rpc.response``. Other ``tui`` messages (resize, detach) need no answer.

Pure: ``replies`` maps one envelope to the envelopes to send back (empty for channels not listed here).
"""

from __future__ import annotations

import os

from ..core.envelope import Envelope

TUI, TERMINAL, CHAT = "tui", "terminal", "chat"
CHANNELS = (TUI, TERMINAL, CHAT)
NO_GATEWAY = "this relay has no Hermes agent gateway: tui requests cannot be served here"
NO_TERMINAL = ("this relay does not serve terminal sessions (it only pairs and connects devices); "
               "its operator may start it with --terminal")
NO_CHAT = "this relay does not serve chat (it only pairs and connects devices)"
JSONRPC_NO_GATEWAY = -32601  # JSON-RPC "method not found": nothing here can run any method


def replies(env: Envelope, server_version: str) -> list[Envelope]:
    if env.channel == TERMINAL:
        return [Envelope(TERMINAL, "terminal.error", {"message": NO_TERMINAL}, env.id)]
    if env.channel == CHAT:
        return [Envelope(CHAT, "chat.error", {"message": NO_CHAT}, env.id)]
    if env.channel != TUI:
        return []
    if env.type == "tui.attach":
        ready = {"jsonrpc": "2.0", "method": "event", "params": {"type": "gateway.ready", "payload": {}}}
        return [Envelope(TUI, "tui.attached", {"pid": os.getpid(), "server_version": server_version}, env.id),
                Envelope(TUI, "tui.rpc.event", ready)]
    if env.type == "tui.rpc.request":
        rpc_id = env.payload.get("id")
        error = {"code": JSONRPC_NO_GATEWAY, "message": NO_GATEWAY}
        return [Envelope(TUI, "tui.rpc.response", {"jsonrpc": "2.0", "id": rpc_id, "error": error}, env.id)]
    return []
