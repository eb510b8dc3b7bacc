"""The relay's loopback HTTP face of the desktop channel: ``/desktop/<tool>``, ``_ping`` and ``health``.

A program on the relay host (the Hermes agent's tool shim, ``hermes-relay-server call``) calls a tool
on a paired desktop with ``POST /desktop/<tool>`` and a JSON object of arguments; an optional
``device``/``device_id`` selector is taken out of them before they are forwarded. ``GET
/desktop/_ping?tool=&device=`` answers 200 when such a call would be forwarded, 503 otherwise, and
``GET /desktop/health`` shows clients, advertised tools, pending calls and the last 20 calls.

These routes run commands on other people's computers, so they are for the relay host only: the peer
must be loopback (403), and, as for ``/pairing/register``, anything a web browser could send is
refused: an ``Origin`` header or a cross-site ``Sec-Fetch-Site`` (403), a ``Host`` that is not a
loopback name (403, DNS rebinding) and a POST body that is not ``application/json`` (415). Bodies are
capped at 2 MiB (413), the reference relay's limit.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import http, peers
from .desktop import DesktopRouter

PREFIX = "/desktop"
MAX_BODY = 2 << 20  # the reference relay's aiohttp client_max_size
TOOL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,127}")
SELECTOR_KEYS = ("device_id", "device")

Result = tuple[int, dict[str, Any]]


def is_desktop_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def body_limit(req: http.HttpRequest, *, loopback: bool) -> int:
    """How many body bytes the relay reads for this request: tool arguments up to 2 MiB, and only from
    the relay host itself (anyone else is refused, so it never gets to make the relay buffer that much)."""
    return MAX_BODY if loopback and is_desktop_path(req.path) else http.MAX_BODY


async def handle(router: DesktopRouter, req: http.HttpRequest, body: bytes, *, loopback: bool) -> Result:
    """Serve one ``/desktop`` request; ``loopback``: the caller is the relay host itself (no proxy)."""
    refused = peers.local_request_refusal(
        req.headers, req.path, loopback=loopback, not_local="desktop tools can only be called from the relay host "
        "(loopback, not through a proxy)", action="desktop tools cannot be called", purpose="call desktop tools",
        json_body=req.method == "POST")
    if refused is not None:
        return refused
    name = req.path[len(PREFIX):].strip("/")
    query = parse_qs(urlsplit(req.target).query)

    def param(key: str) -> str | None:
        values = query.get(key)
        return values[-1] if values else None

    if name in ("_ping", "health"):
        if req.method != "GET":
            return 405, {"ok": False, "error": f"use GET /desktop/{name}"}
        if name == "health":
            return 200, router.health()
        return router.ping(param("tool"), param("device_id") or param("device"))
    if not name or not TOOL_NAME.fullmatch(name):
        return 404, {"ok": False, "error": "no such desktop route; use POST /desktop/<tool>, "
                                           "GET /desktop/_ping?tool=NAME or GET /desktop/health"}
    if req.method != "POST":
        return 405, {"ok": False, "error": f"use POST /desktop/{name} with a JSON object of arguments"}
    try:
        args = http.parse_json_body(body)
    except http.BadRequest as exc:
        return exc.status, {"ok": False, "error": f"{exc.message}: send the tool's arguments as a JSON object"}
    selector = None
    for key in SELECTOR_KEYS:
        value = args.pop(key, None)
        if value is not None and not isinstance(value, str):
            return 400, {"ok": False, "error": f"{key} must be a string (a device id, name or host)"}
        selector = selector or value
    timeout = None
    raw_timeout = param("timeout")
    if raw_timeout is not None:
        try:
            timeout = float(raw_timeout)
        except ValueError:
            timeout = -1.0
        if not 0 < timeout <= 3600:
            return 400, {"ok": False, "error": "timeout must be a number of seconds between 0 and 3600"}
    return await router.call(name, args, selector, timeout, args_size=len(body))
