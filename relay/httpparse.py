"""One HTTP/1.1 request parsed as it arrives, by httptools (llhttp, in C), without I/O.

h11 cost the relay ~35 us per request head (a tenth of a WebSocket handshake's CPU); llhttp parses
one in ~2 us. What h11 checked and llhttp does not is checked here, so the relay accepts and refuses
what it did: a ``Host`` header is required once, and only once, in an HTTP/1.1 request (400); header
values lose their surrounding blanks; bare ``\\n`` line ends are accepted. A head (request line and
headers, up to the blank line) over ``MAX_HEAD`` bytes is refused with 431. Every other malformed head
or body is a 400 naming what llhttp found.

The relay answers one request per connection, so bytes after the request are not parsed as another
one: behind a WebSocket upgrade they are the client's first frames (``trailing``), kept for the socket;
behind anything else they are dropped with the connection.
"""

from __future__ import annotations

import httptools

from .httpmsg import MAX_HEAD, BadRequest

_WS = " \t"


class RequestParse:
    """Feed it the connection's bytes (``feed``) until ``head_done``, then, for a body, until ``complete``."""

    __slots__ = ("_parser", "_url", "_head_fed", "method", "_version", "headers", "_hosts", "head_done", "_checked",
                 "complete", "trailing", "_body", "body_size", "_upgrade_body")

    def __init__(self) -> None:
        # The parser calls back into this object, which holds it: a reference cycle, broken as soon as the
        # request is in or refused (``_parser`` None), so reference counting frees both at once (the relay
        # freezes its objects out of the collector: relay/gcpolicy.py).
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        # h11 took bare \n line ends (llhttp needs both to take them everywhere). One request per connection:
        # no second message whose bounds a proxy in front could read differently.
        self._parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True, lenient_optional_lf_after_cr=True)
        self._url = b""
        self._head_fed = 0  # bytes fed while the head was incomplete
        self.method = ""
        self._version = ""
        self.headers: dict[str, str] = {}  # lower-cased names; a repeated header: its last value
        self._hosts = 0
        self.head_done = False
        self._checked = False  # what llhttp leaves to its caller was checked (once the head is in)
        self.complete = False  # the whole request (head and body) is in
        self.trailing: bytes | None = None  # after an upgrade: what came behind the head
        self._body: list[bytes] = []
        self.body_size = 0
        self._upgrade_body = 0  # body bytes still due behind a (non-WebSocket) upgrade request's head

    # -- what was parsed ---------------------------------------------------------------------------------
    @property
    def target(self) -> str:
        return self._url.decode("latin-1")

    @property
    def upgraded(self) -> bool:
        """llhttp saw ``Connection: upgrade`` with an ``Upgrade`` header: what follows the head is not HTTP."""
        return self.trailing is not None

    def has_body(self) -> bool:
        """The head announces a body (``Transfer-Encoding``, or a ``Content-Length`` above 0)."""
        length = self.headers.get("content-length", "0")
        return "transfer-encoding" in self.headers or (length.isdigit() and int(length) > 0)

    def take_body(self) -> bytes:
        body = b"".join(self._body)
        self._body = []
        return body

    # -- feeding -----------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Parse ``data``, the next bytes of the connection. BadRequest for a malformed or oversized head."""
        try:
            self._take(data)
        except BadRequest:
            self._parser = None
            raise
        if self.complete:
            self._parser = None

    def _take(self, data: bytes) -> None:
        if not self.head_done:
            room = MAX_HEAD - self._head_fed
            if len(data) > room:  # no head may run past MAX_HEAD: feed what fits, then see if it ended
                self._feed(data[:room])
                if not self.head_done:
                    raise BadRequest(431, "request head too large")
                data = data[room:]
            else:
                self._head_fed += len(data)
        self._feed(data)
        if self.head_done and not self._checked:
            self._checked = True
            if self._version == "1.1" and self._hosts != 1:  # h11's rule and words
                raise BadRequest(400, "malformed HTTP request: " + ("Missing mandatory Host: header" if not self._hosts
                                                                    else "Found multiple Host: headers"))

    def _feed(self, data: bytes) -> None:
        if self.trailing is not None:
            self._behind_upgrade(data)
            return
        if self.complete or not data or self._parser is None:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.trailing = b""
            self._upgrade_body = self._declared_length() if not self._is_websocket() else 0
            self._behind_upgrade(data[exc.args[0]:])
        except httptools.HttpParserError as exc:
            if not self.complete:  # past the request: another request or junk, never read
                raise BadRequest(400, f"malformed HTTP request: {exc}") from None

    def _behind_upgrade(self, data: bytes) -> None:
        """llhttp stops at an upgrade request's head. The WebSocket upgrade has no body (relay/upgrade.py
        refuses one); another protocol's upgrade is refused by answering the request as HTTP, so its
        ``Content-Length`` body is read as h11 read it."""
        if self._upgrade_body:
            piece = data[:self._upgrade_body]
            self._upgrade_body -= len(piece)
            self._body.append(piece)
            self.body_size += len(piece)
            data = data[len(piece):]
        self.complete = not self._upgrade_body
        assert self.trailing is not None
        self.trailing += data

    def _is_websocket(self) -> bool:
        """As HttpRequest.is_websocket_upgrade: relay/upgrade.py answers it (and refuses a body)."""
        return self.method == "GET" and "websocket" in self.headers.get("upgrade", "").lower()

    def _declared_length(self) -> int:
        if "transfer-encoding" in self.headers:  # llhttp does not parse an upgrade's chunked body: neither do we
            raise BadRequest(400, "malformed HTTP request: an Upgrade request with a chunked body")
        length = self.headers.get("content-length", "0")
        return int(length) if length.isdigit() else 0

    # -- httptools' callbacks ----------------------------------------------------------------------------
    def on_url(self, url: bytes) -> None:
        if not self.head_done:
            self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            return
        key = name.decode("latin-1").lower()
        if key == "host":
            self._hosts += 1
        self.headers[key] = value.decode("latin-1").strip(_WS)

    def on_headers_complete(self) -> None:
        if self.head_done or self._parser is None:
            return
        self.head_done = True
        self.method = self._parser.get_method().decode("ascii")
        self._version = self._parser.get_http_version()

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self._body.append(body)
            self.body_size += len(body)

    def on_message_complete(self) -> None:
        self.complete = True
