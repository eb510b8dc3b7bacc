"""Only programs on the relay host reach /desktop: other peers and anything a browser can send are refused.

Each refusal is checked to send nothing to the desktop client: the client's next message after the
refused request is the pong to its own ping.
"""

from __future__ import annotations

import socket

import pytest
from helpers import http_request, parse_response, raw_http
from relay_desktop_clients import TERMINAL, desktop_client, sync

from hermes_relay.relay import desktop_http
from hermes_relay.relay.desktop import DesktopRouter
from hermes_relay.relay.http import HttpRequest
from hermes_relay.relay.peers import is_loopback as _is_loopback

JSON = ("Content-Type", "application/json")


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (the source of a route to a documentation net)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # UDP connect sends nothing; it only picks a route
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if _is_loopback(address) or address == "0.0.0.0" else address


@pytest.mark.parametrize("headers, status, error", [
    ([JSON, ("Origin", "http://evil.example")], 403, "web page"),
    ([JSON, ("Sec-Fetch-Site", "cross-site")], 403, "cross-site"),
    ([("Content-Type", "text/plain")], 415, "application/json"),
    ([], 415, "application/json"),
    # Through a reverse proxy on this host the socket is loopback, but the caller is not the relay host.
    ([JSON, ("X-Forwarded-For", "203.0.113.9")], 403, "relay host"),
    ([JSON, ("Forwarded", "for=203.0.113.9")], 403, "relay host"),
])
async def test_requests_a_browser_could_send_are_refused(relay, headers, status, error):
    ws, _, _ = await desktop_client(relay)
    got, _, body = await http_request("POST", f"{relay.http}/desktop/{TERMINAL}", b'{"command": "id"}', headers)
    assert got == status and error.encode() in body
    await sync(ws)


async def test_a_host_header_that_is_not_loopback_is_refused(relay):
    # DNS rebinding: a page on evil.example resolved to 127.0.0.1 still sends its own name as Host.
    ws, _, _ = await desktop_client(relay)
    data = (f"GET /desktop/health HTTP/1.1\r\nHost: evil.example:{relay.info.port}\r\nConnection: close\r\n\r\n").encode()
    status, _, body = parse_response(await raw_http(relay.http, data))
    assert status == 403 and b"Host header" in body
    await sync(ws)


async def test_a_caller_that_is_not_loopback_is_refused_before_anything_is_sent():
    router = DesktopRouter()
    req = HttpRequest("POST", f"/desktop/{TERMINAL}", {"host": "127.0.0.1:8767", "content-type": "application/json"},
                      None)  # type: ignore[arg-type]
    status, body = await desktop_http.handle(router, req, b'{"command": "id"}', loopback=_is_loopback("192.0.2.7"))
    assert (status, body["ok"]) == (403, False) and "loopback" in body["error"]
    assert router.health()["recent_commands"] == []


async def test_a_remote_peer_over_a_real_interface_is_refused(relay_factory):
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    relay = await relay_factory(host="0.0.0.0")
    data = f"GET /desktop/health HTTP/1.1\r\nHost: 127.0.0.1:{relay.info.port}\r\nConnection: close\r\n\r\n"
    status, _, body = parse_response(await raw_http(f"http://{address}:{relay.info.port}", data.encode()))
    assert status == 403 and b"loopback" in body



async def test_a_caller_that_is_not_the_relay_host_cannot_make_the_relay_buffer_a_large_body(relay):
    # 2 MiB of tool arguments are read for the relay host only (tests/relay/test_relay_desktop.py); a caller
    # through a proxy announcing 512 KiB is refused from its head, before the relay buffers any of it.
    ws, _, _ = await desktop_client(relay)
    head = (f"POST /desktop/{TERMINAL} HTTP/1.1\r\nHost: 127.0.0.1:{relay.info.port}\r\n"
            "Content-Type: application/json\r\nX-Forwarded-For: 203.0.113.9\r\n"
            f"Content-Length: {512 << 10}\r\nConnection: close\r\n\r\n").encode()
    status, _, _ = parse_response(await raw_http(relay.http, head))
    assert status == 413
    await sync(ws)
