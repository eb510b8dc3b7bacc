"""A desktop result the relay only forwards goes from the WebSocket frame to the HTTP answer without being
encoded again (relay/rawenv.py); its validation is envelope.decode's, error for error."""

from __future__ import annotations

import json
import sys

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from relay_desktop_clients import READ_FILE, Call, desktop_client, next_command, sync

from hermes_relay.core import envelope
from hermes_relay.core.errors import RemoteProtocolError
from hermes_relay.relay import rawenv

BIG = 3 << 20
PAD = "p" * rawenv.SPAN_MIN  # makes a frame big enough for the span path


async def test_a_big_result_reaches_the_caller_intact_and_is_not_encoded_again(relay, monkeypatch):
    encoded_by_relay: list[int] = []
    real_dumps = json.dumps

    def spying(obj, *args, **kwargs):  # type: ignore[no-untyped-def]
        text = real_dumps(obj, *args, **kwargs)
        if sys._getframe(1).f_globals.get("__name__", "").startswith("hermes_relay.relay"):
            encoded_by_relay.append(len(text))
        return text

    ws, _, device_id = await desktop_client(relay)
    # Non-ASCII text, an escaped lone surrogate (a non-UTF-8 file name) and JSON whitespace, as a client may send.
    result = "é\udce9€\n" + "x" * BIG
    call = Call()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call.run, relay, READ_FILE, {"path": "big.txt"})
        command = await next_command(ws)
        request_id = command["payload"]["request_id"]
        payload = {"request_id": request_id, "ok": True, "result": result}
        frame = ('{ "channel" : "desktop", "type": "desktop.response", "id": "r1", "payload" : '
                 + json.dumps(payload, indent=1) + " }")
        monkeypatch.setattr(json, "dumps", spying)
        await ws.send_message(frame)
        status, body = await call.wait()
    monkeypatch.undo()
    assert status == 200
    assert body == {**payload, "target": {"device_id": device_id, "device_name": "WORKPC"}}
    assert max(encoded_by_relay, default=0) < 64 << 10  # the ring's summary and small answers only
    await sync(ws)


@pytest.mark.parametrize("frame", [
    '{"channel":"desktop","type":"desktop.response","id":"a","payload":{"ok":true,"r":"PAD"}}',
    ' {"payload":{"r":"PAD"},"channel":"desktop","type":"t","extra":[1,2],"id":7}\n',
    '{"channel":"desktop","type":"t","payload":{"r":"PAD"},"payload":{"second":"PAD"}}',
    '{"channel":"desktop","type":"t","payload":null,"pad":"PAD"}',
    '{"channel":"desktop","type":"t","pad":"PAD"}',
    '{"channel":"desktop","type":"t","payload":[1],"pad":"PAD"}',
    '{"channel":"desktop","type":"t","payload":"PAD"}',
    '{"channel":1,"type":"t","payload":{"r":"PAD"}}',
    '{"type":"t","payload":{"r":"PAD"}}',
    '{"channel":"desktop","type":"t","payload":{"r":"PAD"}} x',
    '{"channel":"desktop","type":"t","payload":{"r":"PAD"}',
    '{"channel":"desktop","type":"t","payload":{"r":"PAD"},}',
    '{"channel":"desktop" "type":"t","payload":{"r":"PAD"}}',
    '{channel:"desktop","payload":{"r":"PAD"}}',
    '["channel","PAD"]',
    '"PAD"',
    '{"channel":"desktop","type":"t","payload":{"r":"PAD","n":1e999,"s":"\\udce9"}}',
    '{"channel":"desktop","type":"t","payload":{"r":"PAD\\u0000"},"id":null}',
    '{"channel":"desktop","type":"t","payload":{"r":"PAD"}}' + " " * 10,
    '{"channel":"desktop","type":"t","payload":' + "[" * 5000 + "]" * 5000 + ',"pad":"PAD"}',
    '{"channel":"desktop","type":"t","payload":{"r":"PAD", "bad": "\\x"}}',
], ids=range(21))
def test_the_span_decoder_accepts_and_refuses_exactly_what_envelope_decode_does(frame):
    text = frame.replace("PAD", PAD)
    assert len(text) >= rawenv.SPAN_MIN
    try:
        expected: envelope.Envelope | str = envelope.decode(text, max_size=4 << 20)
    except RemoteProtocolError as exc:
        expected = str(exc)
    try:
        got: envelope.Envelope | str = rawenv.decode(text, max_size=4 << 20)
    except RemoteProtocolError as exc:
        got = str(exc)
    if isinstance(expected, str):
        assert got == expected
        return
    assert isinstance(got, envelope.Envelope)
    assert (got.channel, got.type, got.id, got.extra) == (expected.channel, expected.type, expected.id, expected.extra)
    assert json.dumps(got.payload) == json.dumps(expected.payload)  # 1e999 is inf both ways
    if isinstance(got, rawenv.RawEnvelope) and got.span is not None:
        assert json.dumps(json.loads(got.raw_payload)) == json.dumps(got.payload)


def test_an_answer_is_spliced_only_when_that_is_the_same_answer():
    extra = {"target": {"device_id": "d"}}

    def spliced(payload: dict, text: str, frame_tail: str = "") -> object:
        frame = '{"payload":' + text + frame_tail + "}"
        parts = rawenv.forwarded(payload, (frame, len('{"payload":'), len('{"payload":') + len(text)), extra)
        return None if parts is None else json.loads(b"".join(bytes(p) for p in parts))

    assert spliced({"ok": True}, ' {"ok" : true} ') == {"ok": True, **extra}
    assert spliced({"s": "é"}, '{"s":"é"}', ', "x": 1') == {"s": "é", **extra}  # a non-ASCII frame
    assert spliced({}, "{}") is None  # nothing to put a comma after
    assert spliced({"target": 1}, '{"target":1}') is None  # the relay's own key wins
    assert rawenv.forwarded({"ok": True}, None, extra) is None  # nothing kept (a small frame)


def test_a_big_frame_read_by_the_relay_is_forwarded_from_the_utf8_it_came_as():
    """A big text frame keeps its UTF-8 (relay/wsframe.py Text): an ASCII one is sliced, not encoded again."""
    from hermes_relay.relay import wsframe

    payload = {"request_id": "r", "ok": True, "result": {"content": "x" * wsframe.KEEP_UTF8}}
    utf8 = json.dumps({"channel": "desktop", "type": "desktop.response", "payload": payload}).encode()
    client = wsframe.struct.pack("!BBQ", 0x81, 0xFF, len(utf8)) + bytes(4) + utf8  # masked with a zero key
    (frame,), _ = wsframe.take(bytearray(client), 1 << 22)
    assert isinstance(frame, wsframe.Text) and frame == utf8.decode() and bytes(frame.utf8) == utf8
    env = rawenv.decode(frame, max_size=1 << 22)
    assert isinstance(env, rawenv.RawEnvelope) and env.payload == payload
    parts = rawenv.forwarded(env.payload, env.span, {"target": None})
    assert parts is not None and isinstance(parts[0], memoryview) and parts[0].obj is frame.utf8
    assert json.loads(b"".join(bytes(p) for p in parts)) == {**payload, "target": None}
    small = json.dumps({"channel": "desktop", "type": "t", "payload": {}}).encode()
    (plain,), _ = wsframe.take(bytes((0x81, 0x80 | len(small))) + bytes(4) + small, 1 << 22)
    assert type(plain) is str  # a small message keeps nothing beside it


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=5), st.text(max_size=10),
       st.dictionaries(st.sampled_from(["id", "ts", "zz", "channel"]), _JSON, max_size=2))
def test_the_relays_own_messages_are_written_as_envelope_encode_writes_them(payload, msg_id, extra):
    """Any code point (lone surrogates, DEL, non-ASCII), any number, any extra field: the same text."""
    env = envelope.Envelope("system", "auth.ok", payload, msg_id, extra)
    assert rawenv.text(env) == env.encode()


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=5))
def test_a_small_calls_command_is_the_text_a_big_ones_way_writes(args):
    """desktop.command for small arguments takes relay/rawenv.py's encoder: the same frame, lone
    surrogates ASCII-escaped either way."""
    from hermes_relay.relay import desktop

    env = envelope.Envelope("desktop", "desktop.command", {"request_id": "r", "tool": "t", "args": args}, "r")
    assert desktop._encode(env, small=True) == desktop._encode(env)
