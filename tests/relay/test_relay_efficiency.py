"""Big messages at full speed: an authenticated socket is read in large pieces, an unauthenticated one
in small ones (its memory stays bounded by the pre-auth message cap plus one small read)."""

from __future__ import annotations

import json

import trio
from helpers import accepted_pair, pair, receive_json, register_code, ws_connect

from hermes_relay.core.wire import WS_RECEIVE_BYTES
from hermes_relay.relay.ws import BIG_READ

PREAUTH_RECEIVE = 4 << 10  # kept until authentication


async def test_authenticated_socket_reads_big_frames_in_large_pieces(relay, monkeypatch):
    from hermes_relay.relay.ws import ServerSocket

    asked: list[int | None] = []
    real = ServerSocket._receive

    async def recording(self: ServerSocket) -> None:
        asked.append(self._size_next)  # the bytes its next read asks the socket for
        await real(self)

    monkeypatch.setattr(ServerSocket, "_receive", recording)

    # Before authentication: small reads only, even while a big first message streams in.
    await register_code(relay.http)
    idle = await ws_connect(relay.url)
    await idle.ping()
    await idle.send_message("x" * 60_000)  # under the pre-auth cap: read, then refused as malformed auth
    assert (await receive_json(idle))["type"] == "auth.fail"
    assert asked and max(n or 0 for n in asked) <= PREAUTH_RECEIVE

    ws, _ = await pair(relay.url, relay.http)
    asked.clear()
    padding = "x" * (3 << 20)  # a 3 MB frame, as a big desktop result is
    await ws.send_message(json.dumps({"channel": "system", "type": "ping", "id": "big", "payload": {"pad": padding}}))
    reply = await receive_json(ws)
    assert (reply["type"], reply["id"]) == ("pong", "big")
    assert WS_RECEIVE_BYTES < max(n or 0 for n in asked) <= BIG_READ  # reads grow while a big message streams in
    asked.clear()
    await ws.send_message(json.dumps({"channel": "system", "type": "ping", "id": "small", "payload": {}}))
    assert (await receive_json(ws))["id"] == "small"
    assert set(asked) == {WS_RECEIVE_BYTES}  # ... and shrink back once it is in


def test_the_relay_freezes_its_start_up_objects_and_uses_server_thresholds():
    """Full collections stop every connection: start-up objects are kept out of them (gc.freeze)."""
    import subprocess
    import sys

    from hermes_relay.relay.gcpolicy import GC_THRESHOLDS

    code = ("import gc; from hermes_relay.relay.main import settle_gc; settle_gc(); "
            "print(gc.get_freeze_count(), *gc.get_threshold())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    frozen, *thresholds = map(int, out.stdout.split())
    assert frozen > 1000 and tuple(thresholds) == GC_THRESHOLDS


async def test_a_client_address_is_parsed_once_not_at_every_check(relay, monkeypatch):
    """Caps, the rate limiter and the core each ask for the address's bucket: it was parsed ~11 times
    per handshake."""
    import ipaddress

    from helpers import ws_auth

    ws, reply = await pair(relay.url, relay.http)
    parsed: list[str] = []
    real = ipaddress.ip_address

    def counting(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        parsed.append(value)
        return real(value)

    monkeypatch.setattr(ipaddress, "ip_address", counting)
    for _ in range(5):
        again, answer = await ws_auth(relay.url, {"session_token": reply["session_token"]})
        assert answer["type"] == "auth.ok"
        await again.aclose()
    assert len(parsed) <= 2  # the first sight of 127.0.0.1 in this process, at most


async def test_an_authenticated_connection_keeps_nothing_of_its_handshake(relay):
    """The upgrade request (its raw head and our parser) lived as long as the socket."""
    import gc

    from hermes_relay.relay.httpmsg import HttpRequest
    from hermes_relay.relay.httpparse import RequestParse

    ws, reply = await pair(relay.url, relay.http)
    await ws.send_message(json.dumps({"channel": "system", "type": "ping", "id": "p", "payload": {}}))
    assert (await receive_json(ws))["type"] == "pong"
    gc.collect()
    assert [o for o in gc.get_objects() if isinstance(o, HttpRequest)] == []
    assert [o for o in gc.get_objects() if isinstance(o, RequestParse)] == []


def _tasks() -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(child) for nursery in task.child_nurseries for child in nursery.child_tasks)

    return count(trio.lowlevel.current_root_task())


async def test_an_idle_authenticated_connection_has_no_heartbeat_task_of_its_own(relay):
    """One relay-wide heartbeat and no reader task: each connection costs its handler task, no more
    (a ping task per connection made 3000 idle sockets cost 6 % of a core; trio-websocket's reader
    task and nursery were a third of an idle socket's memory)."""
    held = [(await pair(relay.url, relay.http))[0]]
    before = _tasks()
    for _ in range(5):
        held.append((await pair(relay.url, relay.http))[0])
    client_side = 2  # the test's own per connection: helpers._hold_client and its trio-websocket reader
    assert (_tasks() - before) / 5 == client_side + 1


def test_the_collector_policy_freezes_new_connections_and_thaws_only_after_churn():
    """A full collection runs only once as many frozen connections have ended as are open (and at
    least THAW_MIN), at most once per THAW_SPACING; otherwise a tick freezes what arrived, and an idle
    tick does nothing."""
    import subprocess
    import sys

    code = """if True:
        import gc
        from hermes_relay.relay.gcpolicy import GcPolicy, THAW_MIN, THAW_SPACING
        now = [0.0]
        p = GcPolicy(clock=lambda: now[0])
        gc.callbacks.append(p.on_gc)
        out = [p.tick()]                                    # nothing arrived: nothing to do
        first = [p.opened() for _ in range(3 * THAW_MIN)]   # connections authenticate (frozen in batches)
        out.append(p.tick())                                # idle
        for epoch in first[:THAW_MIN]:
            p.ended(epoch)                                  # churn below the open count
        late = p.opened()
        out.append(p.tick())                                # the new one is frozen, no thaw
        for epoch in first[THAW_MIN:] + [late]:
            p.ended(epoch)
        out.append(p.tick())                                # everything frozen has ended: not yet
        now[0] = THAW_SPACING
        out.append(p.tick())                                # ... now
        out.append(p.tick())
        print(*out, p.stats()["thaws"], p.stats()["collections"][2] > 0)
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.split() == ["None", "None", "freeze", "None", "thaw", "None", "1", "True"]


async def test_the_upgrade_request_is_parsed_once(relay, monkeypatch):
    """Our parse of the head is the only one (trio-websocket's wsproto parsed the head again, ~7 % of a
    handshake), and it is not h11's (~35 us a head, where httptools takes ~2 us)."""
    import h11
    from helpers import ws_auth

    from hermes_relay.relay.httpparse import RequestParse

    ws, reply = await pair(relay.url, relay.http)
    heads: list[bytes] = []  # the starts of what our parser was fed
    real = RequestParse.feed
    h11_heads: list[bytes] = []
    real_h11 = h11.Connection.receive_data

    def counting(self: RequestParse, data: bytes) -> None:
        heads.append(data[:4])
        real(self, data)

    def h11_counting(self: h11.Connection, data: bytes) -> None:
        if self.our_role is h11.SERVER and data:
            h11_heads.append(data)
        real_h11(self, data)

    monkeypatch.setattr(RequestParse, "feed", counting)
    monkeypatch.setattr(h11.Connection, "receive_data", h11_counting)
    held = []
    for _ in range(5):
        again, answer = await ws_auth(relay.url, {"session_token": reply["session_token"]})
        assert answer["type"] == "auth.ok"
        held.append(again)
    assert heads == [b"GET "] * 5 and h11_heads == []


async def test_an_idle_connection_has_no_expiry_timer_yet_closes_when_its_session_expires(relay_factory):
    """The relay's heartbeat re-reads each session's expiry as it beats (an idle connection woke every
    60 s on a timer of its own to re-read it): a session that expires without a message is still closed."""
    from helpers import FakeWallClock, expect_closed

    from hermes_relay.relay.config import CLOSE_AUTH_FAILED

    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock, heartbeat=0.2)
    ws, _ = await pair(relay.url, relay.http, ttl_seconds=600)
    clock.advance(601)  # the connection waits on no timer that would notice: the next beat does
    with trio.fail_after(5):
        closed = await expect_closed(ws)
    assert (closed.code, closed.reason) == (CLOSE_AUTH_FAILED, "session expired")


def test_connections_arriving_fast_are_frozen_in_small_batches():
    """The collection before a freeze walks what arrived since the last one: once a second, 3000
    connections opening made it a 75 ms pause; every FRESH_MAX connections it stays a few ms."""
    import subprocess
    import sys

    code = """if True:
        from hermes_relay.relay.gcpolicy import FRESH_MAX, GcPolicy
        p = GcPolicy()
        epochs = [p.opened() for _ in range(3 * FRESH_MAX)]
        print(p.freezes, epochs[0], epochs[FRESH_MAX - 1], epochs[FRESH_MAX], p.fresh)
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    # the connection that triggers a freeze is frozen by it: it belongs to the epoch before
    assert out.stdout.split() == ["3", "0", "0", "1", "0"]


def test_held_connections_the_heartbeat_serves_are_frozen_again_as_it_goes():
    """A ping's pong replaces some of a held connection's frozen objects with unfrozen ones without
    growing any count of the collector: left until the next connection arrived, a heartbeat round of them
    was one collection's walk (3000 held: ~20 ms). Every PINGED_MAX pings freeze at once; fewer wait (a freeze
    a second while pinging cost more CPU than it saved)."""
    import subprocess
    import sys

    code = """if True:
        from hermes_relay.relay.gcpolicy import PINGED_MAX, GcPolicy
        p = GcPolicy()
        out = [p.tick()]                          # nothing arrived, nothing served
        p.ping()
        out.append(p.tick())                      # one connection served: not worth a collection yet
        for _ in range(3 * PINGED_MAX - 1):       # a round of pings as the connections came: thousands at once
            p.ping()
        out.append(p.tick())                      # idle again
        print(*out, p.freezes, p.pinged)
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.split() == ["None", "None", "None", "3", "0"]


async def test_a_plain_connection_closes_without_setting_up_cancel_scopes(monkeypatch):
    """Each cancel scope costs ~30 us and a handshake set up a dozen: closing a plain socket needs none
    (its aclose is a close and a checkpoint), where a shield inside a timeout was set up for it."""
    import sys

    from hermes_relay.relay.conn import Relay
    from hermes_relay.relay.server import RelayConfig

    entered: list[str] = []
    real = trio.CancelScope.__enter__

    def recording(self: trio.CancelScope) -> trio.CancelScope:
        caller = sys._getframe(1)
        if caller.f_globals.get("__name__") == "hermes_relay.relay.conn":
            entered.append(caller.f_code.co_name)
        return real(self)

    monkeypatch.setattr(trio.CancelScope, "__enter__", recording)
    relay = Relay(RelayConfig())
    client, ours = await accepted_pair(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await relay.handle_stream(ours)  # answers, then closes its end
    answer = b""
    while chunk := await client.receive_some():
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert "handle_stream" not in entered
    await client.aclose()




async def test_a_websocket_handshake_sets_up_two_cancel_scopes(monkeypatch):
    """The request head's deadline, then one scope for the wait for the auth frame that goes on as the
    first wait for messages (each scope costs ~10 us; a handshake set up three)."""
    from helpers import FakeWallClock, auth_frame
    from wsproto.frame_protocol import FrameProtocol

    from hermes_relay.relay.conn import Relay
    from hermes_relay.relay.server import RelayConfig

    relay = Relay(RelayConfig(wall_clock=FakeWallClock()))
    code = relay.core.codes.register(None).code
    frames = FrameProtocol(client=True, extensions=[])
    client, ours = await accepted_pair(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        + bytes(frames.send_data(auth_frame({"pairing_code": code}))) + bytes(frames.close(1000)))
    me = trio.lowlevel.current_task()
    entered: list[trio.CancelScope] = []
    real = trio.CancelScope.__enter__

    def recording(self: trio.CancelScope) -> trio.CancelScope:
        if trio.lowlevel.current_task() is me:
            entered.append(self)
        return real(self)

    monkeypatch.setattr(trio.CancelScope, "__enter__", recording)
    await relay.handle_stream(ours)  # upgrade, auth, the client's close answered
    monkeypatch.undo()
    answer = b""
    while chunk := await client.receive_some():
        answer += chunk
    await client.aclose()
    assert answer.startswith(b"HTTP/1.1 101 ") and b'"auth.ok"' in answer
    assert len(entered) == 2
