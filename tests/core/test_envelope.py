"""The relay's JSON envelope: strict about shape, lenient about extra fields."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hermes_relay.core import envelope
from hermes_relay.core.envelope import Envelope, decode
from hermes_relay.core.errors import HermesError, RemoteProtocolError


def test_encode_decode_round_trip_keeps_extras() -> None:
    env = Envelope("system", "auth.ok", {"session_token": "t", "expires_at": 1.5}, id="abc", extra={"v": 2, "trace": [1]})
    wire = env.encode()
    assert json.loads(wire) == {"v": 2, "trace": [1], "channel": "system", "type": "auth.ok", "id": "abc", "payload": {"session_token": "t", "expires_at": 1.5}}
    assert decode(wire) == env
    assert decode(wire.encode()) == env


def test_extra_fields_cannot_override_the_core_fields() -> None:
    env = Envelope("chat", "message", {}, id="1", extra={"channel": "evil", "type": "evil"})
    assert json.loads(env.encode())["channel"] == "chat"
    assert json.loads(env.encode())["type"] == "message"


def test_default_ids_are_unique() -> None:
    assert Envelope("a", "b").id != Envelope("a", "b").id


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"channel":"c","type":"t"}', Envelope("c", "t", {}, "", {})),
        ('{"channel":"c","type":"t","payload":null}', Envelope("c", "t", {}, "", {})),
        ('{"channel":"c","type":"t","id":7}', Envelope("c", "t", {}, "7", {})),
        ('{"channel":"c","type":"t","id":null,"x":{"y":1}}', Envelope("c", "t", {}, "", {"x": {"y": 1}})),
    ],
)
def test_lenient_decoding(raw: str, expected: Envelope) -> None:
    assert decode(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message", "close_code"),
    [
        pytest.param(b"\xff\xfe{}", "binary frame is not UTF-8 JSON", 1003, id="not-utf8"),
        pytest.param("{", "invalid JSON: ", 1003, id="truncated"),
        pytest.param("", "invalid JSON: ", 1003, id="empty"),
        pytest.param("[1,2]", "envelope must be a JSON object", 1003, id="array"),
        pytest.param('"x"', "envelope must be a JSON object", 1003, id="string"),
        pytest.param("null", "envelope must be a JSON object", 1003, id="null"),
        pytest.param('{"type":"t"}', "envelope needs string 'channel' and 'type' fields", 1003, id="no-channel"),
        pytest.param('{"channel":"c"}', "envelope needs string 'channel' and 'type' fields", 1003, id="no-type"),
        pytest.param('{"channel":1,"type":"t"}', "envelope needs string 'channel' and 'type' fields", 1003, id="int-channel"),
        pytest.param('{"channel":"c","type":["t"]}', "envelope needs string 'channel' and 'type' fields", 1003, id="list-type"),
        pytest.param('{"channel":"c","type":"t","payload":[]}', "envelope 'payload' must be an object", 1003, id="list-payload"),
        pytest.param('{"channel":"c","type":"t","payload":"x"}', "envelope 'payload' must be an object", 1003, id="str-payload"),
        pytest.param("[" * 100_000 + "]" * 100_000, "invalid JSON: nested too deeply", 1003, id="nested-too-deep"),
        pytest.param('{"payload":' * 50_000 + "1" + "}" * 50_000, "invalid JSON: nested too deeply", 1003, id="objects-nested-too-deep"),
    ],
)
def test_strict_decode_errors(raw: str | bytes, message: str, close_code: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(raw)
    assert info.value.message.startswith(message)
    assert info.value.close_code_hint == close_code


def test_oversize_message_is_refused_before_parsing() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode("{" * 101, max_size=100)
    assert info.value.message == "message of 101 bytes exceeds 100"
    assert info.value.close_code_hint == 1009
    assert envelope.MAX_ENVELOPE == 1 << 20


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
_reserved = {"channel", "type", "id", "payload"}


@settings(max_examples=100, deadline=None, database=None)
@given(
    channel=st.text(max_size=10),
    typ=st.text(max_size=10),
    payload=st.dictionaries(st.text(max_size=6), _json, max_size=4),
    msg_id=st.text(max_size=12),
    extra=st.dictionaries(st.text(max_size=6).filter(lambda k: k not in _reserved), _json, max_size=3),
)
def test_property_encode_then_decode_is_identity(channel: str, typ: str, payload: dict[str, Any], msg_id: str, extra: dict[str, Any]) -> None:
    env = Envelope(channel, typ, payload, msg_id, extra)
    assert decode(env.encode()) == env


@settings(max_examples=200, deadline=None, database=None)
@given(st.one_of(st.binary(max_size=100), st.text(max_size=100), _json.map(json.dumps)))
def test_property_garbage_raises_only_remote_protocol_errors(raw: str | bytes) -> None:
    try:
        decode(raw)
    except HermesError as exc:
        assert isinstance(exc, RemoteProtocolError)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=80,
)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_encoded_is_the_utf8_json_text_whichever_encoder_wrote_it(value) -> None:  # type: ignore[no-untyped-def]
    """An all-ASCII value is written by the ASCII encoder (faster): the text must be the same, but for DEL,
    which that encoder escapes (the same JSON string)."""
    from hermes_relay.core.envelope import encoded

    text, size = encoded(value)
    try:
        expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        expected_size = len(expected.encode("utf-8"))
    except UnicodeEncodeError:
        expected = json.dumps(value, separators=(",", ":"), ensure_ascii=True)
        expected_size = len(expected)
    if "\x7f" in expected and "\x7f" not in text:  # DEL in an all-ASCII value: the ASCII encoder writes \u007f
        expected = json.dumps(value, separators=(",", ":"), ensure_ascii=True)
        expected_size = len(expected)
    assert (text, size) == (expected, expected_size)


def test_a_big_ascii_result_is_encoded_once_with_its_size() -> None:
    from hermes_relay.core.envelope import encoded

    big = {"channel": "desktop", "type": "desktop.response", "id": "x",
           "payload": {"request_id": "r", "ok": True, "result": "line \"quoted\"\t\x01\n" * 1000}}
    assert encoded(big) == (json.dumps(big, separators=(",", ":"), ensure_ascii=False),
                            len(json.dumps(big, separators=(",", ":")).encode()))
    big["payload"]["result"] += "é"
    assert encoded(big)[1] == len(json.dumps(big, separators=(",", ":"), ensure_ascii=False).encode())


def test_a_number_of_5000_digits_is_a_protocol_error_not_a_crash() -> None:
    # Python refuses int() of more than 4300 digits with a plain ValueError (not a JSONDecodeError): from a
    # hostile relay it crashed the agent's link reader (a reconnect and a traceback, as often as it liked).
    raw = '{"channel": "desktop", "type": "desktop.command", "payload": {"args": {"max_bytes": ' + "9" * 5000 + "}}}"
    with pytest.raises(RemoteProtocolError, match="invalid JSON"):
        decode(raw)


_TEXT = st.text(alphabet=st.characters() | st.sampled_from(["\ud800", "\udcff", "\udfff", "\x00", "\u2028", "\x7f"]))
_ANY = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | _TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_TEXT, inner, max_size=5),
    max_leaves=80,
)


@settings(max_examples=500, deadline=None)
@given(_ANY)
def test_utf8_is_the_encoded_text_in_utf8_whichever_encoder_wrote_it(value: Any) -> None:
    """orjson writes the plain values (lone surrogates and ints past 64 bits fall back to json), json the rest:
    the bytes are the ones json's text gives in any case, but for DEL, which json's ASCII encoder (``encoded``
    on an all-ASCII value) writes as ``\\u007f`` and the UTF-8 ones as itself: the same JSON string."""
    for obj in (value, {"payload": value}):
        assert _del_escaped(envelope.utf8(obj)) == _del_escaped(envelope.encoded(obj)[0].encode("utf-8"))


def _del_escaped(data: bytes) -> bytes:
    return data.replace(b"\x7f", b"\\u007f")  # (in UTF-8 a 0x7f byte is DEL itself, never part of a character)


def test_orjson_writes_a_read_answer_and_json_what_it_would_write_differently(monkeypatch: pytest.MonkeyPatch) -> None:
    import enum

    written: list[Any] = []

    def fast(obj: Any) -> bytes:
        written.append(obj)
        import orjson

        return orjson.dumps(obj)

    monkeypatch.setattr(envelope, "_ORJSON", [fast])
    answer = {"channel": "desktop", "type": "desktop.response", "id": "i",
              "payload": {"request_id": "r", "ok": True, "result": {"content": "é\n" * 1000, "bytes": 3000,
                                                                     "truncated": False, "lines": [1, 2], "error": None}}}
    assert envelope.utf8(answer) == json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode()
    assert written == [answer]

    class Color(enum.Enum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 2

    for value, text in ((1e-05, "1e-05"), (float("nan"), "NaN"), (Level.HIGH, "2"), ({1: "a"}, '{"1":"a"}'),
                        ((1, 2), "[1,2]")):
        assert envelope.utf8({"v": value}) == ('{"v":' + text + "}").encode()  # orjson writes 1e-5, null, ...
    with pytest.raises(TypeError):  # as json refuses it (orjson would write "red")
        envelope.utf8({"v": Color.RED})
    deep: Any = "x"
    for _ in range(300):  # deeper than orjson's limit: json writes it
        deep = [deep]
    assert envelope.utf8(deep) == json.dumps(deep).encode()
    assert written == [answer]  # none of these went to orjson
    with pytest.raises(ValueError):  # past 64 bits orjson refuses it, and json's limit of 4300 digits holds, as before
        envelope.utf8({"v": 10**5000})


def test_the_envelope_module_loads_orjson_only_when_an_answer_is_encoded(tmp_path: Any) -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom hermes_relay.core import desktop, envelope\n"
            "envelope.Envelope('system', 'auth', {'t': 1}).encode(); desktop.encoded_size({'a': 'b'})\n"
            "assert 'orjson' not in sys.modules\n"
            "assert envelope.utf8({'a': 'é'}) == '{\"a\":\"é\"}'.encode() and 'orjson' in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
