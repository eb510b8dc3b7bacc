"""The terminal channel's bookkeeping without sockets: the output ring, the input ledger, output frames,
input decoding, the grant rule and default grants with --terminal."""

from __future__ import annotations

import base64

import pytest

from hermes_relay.core.errors import UsageError
from hermes_relay.relay import term_config
from hermes_relay.relay.pairing import GRANT_OFF, compute_grants, validate_grants
from hermes_relay.relay.term_ring import InputLedger, OutputRing, decode_input, output_frame, utf8_complete

NOW = 1_800_000_000.0


def test_the_ring_addresses_bytes_by_absolute_offset_and_forgets_the_oldest():
    ring = OutputRing(8)
    ring.append(b"abcdef")
    assert (ring.start, ring.end, ring.read(2, 3)) == (0, 6, b"cde")
    ring.append(b"ghijk")
    assert (ring.start, ring.end) == (3, 11)
    assert ring.read(3, 100) == b"defghijk"
    assert ring.holds(11) and ring.holds(3) and not ring.holds(2) and not ring.holds(12)
    with pytest.raises(ValueError):
        ring.read(2, 1)
    assert ring.read(11, 5) == b""


def test_input_below_the_accepted_offset_is_trimmed_and_above_it_refused():
    ledger = InputLedger()
    assert ledger.offer(0, b"hello").data == b"hello"
    v = ledger.offer(3, b"lo world")
    assert (v.data, v.duplicate, v.gap) == (b" world", 2, False)
    assert ledger.offer(0, b"hel").data == b""  # all duplicate
    assert ledger.offer(12, b"x").gap and ledger.accepted == 11
    ledger.wrote(4)
    assert (ledger.written, ledger.accepted) == (4, 11)


@pytest.mark.parametrize(("data", "cut"), [
    (b"abc", 3), ("é".encode(), 2), ("é".encode()[:1], 0), (b"a" + "€".encode()[:2], 1), ("€".encode(), 3),
    (b"x" + "𝄞".encode()[:3], 1), ("𝄞".encode(), 4), (b"\x80\x80", 2),
])
def test_a_frame_never_ends_inside_a_utf8_character(data: bytes, cut: int):
    assert utf8_complete(data) == cut


def test_output_frames_are_text_when_they_can_be_and_base64_otherwise():
    assert output_frame(b"hi \xc3\xa9", more_may_follow=True) == (b"hi \xc3\xa9", {"data": "hi é"})
    assert output_frame(b"hi \xc3", more_may_follow=True) == (b"hi ", {"data": "hi "})
    assert output_frame(b"\xc3", more_may_follow=True) is None
    assert output_frame(b"\xc3", more_may_follow=False) == (b"\xc3", {"data_b64": "ww=="})
    chunk, body = output_frame(b"a\xffb", more_may_follow=True) or (b"", {})
    assert chunk == b"a\xffb" and base64.b64decode(body["data_b64"]) == b"a\xffb"


def test_input_is_text_or_base64_and_a_lone_surrogate_is_refused_with_a_reason():
    assert decode_input({"data": "é"}) == "é".encode()
    assert decode_input({"data_b64": base64.b64encode(b"\xff\x00").decode()}) == b"\xff\x00"
    assert "lone surrogate" in str(decode_input({"data": "\udc80"}))
    assert "base64" in str(decode_input({"data_b64": "!!"}))
    assert "data" in str(decode_input({"data": 5}))


def test_a_terminal_message_needs_an_unexpired_terminal_grant():
    assert term_config.refusal({"terminal": NOW + 1}, NOW, "m1") is None
    assert term_config.refusal({"terminal": None}, NOW, "m1") is None
    expired = term_config.refusal({"terminal": NOW}, NOW, "m1")
    assert expired is not None and (expired.channel, expired.type, expired.id) == ("system", "error", "m1")
    assert expired.payload["message"] == "Terminal grant expired for this device"
    missing = term_config.refusal({"chat": None}, NOW, None)
    assert missing is not None and missing.payload["reason"] == "terminal_not_granted"


def test_with_terminal_the_grant_is_withheld_by_default_and_off_removes_it():
    assert "terminal" in compute_grants(None, NOW, NOW + 86400 * 90)
    withheld = compute_grants(None, NOW, NOW + 86400 * 90, withheld=("terminal",))
    assert "terminal" not in withheld and "chat" in withheld
    asked = compute_grants({"terminal": 3600}, NOW, None, withheld=("terminal",))
    assert asked["terminal"] == NOW + 3600
    assert "terminal" not in compute_grants({"terminal": GRANT_OFF}, NOW, None)
    assert validate_grants({"terminal": "off", "chat": 60}) == {"terminal": GRANT_OFF, "chat": 60}
    with pytest.raises(UsageError):
        validate_grants({"terminal": "on"})


def test_tmux_session_names_follow_the_reference():
    assert term_config.tmux_name("my.work:1 x") == "hermes-my_work_1_x"


def test_the_core_routes_granted_terminal_messages_and_refuses_the_others_per_message() -> None:
    from test_relay_core_auth import frame, make, pair

    from hermes_relay.relay.core import Send, ToTerminal
    from hermes_relay.relay.term_config import TerminalSettings

    core, wall = make(terminal=TerminalSettings())
    plain = pair(core, "a").session
    assert "terminal" not in plain.grants  # --terminal: not granted unless asked for
    [refused] = core.message(plain, frame("terminal", "terminal.list", {}, "q7"))
    assert isinstance(refused, Send) and (refused.env.type, refused.env.id) == ("error", "q7")
    granted = pair(core, "b", grants={"terminal": 60}).session
    [routed] = core.message(granted, frame("terminal", "terminal.list", {}))
    assert isinstance(routed, ToTerminal)
    wall.advance(60)
    [expired] = core.message(granted, frame("terminal", "terminal.list", {}))
    assert isinstance(expired, Send) and expired.env.payload["message"] == "Terminal grant expired for this device"
    assert core.session_live(granted) and core.session_live(plain)
    core.book.revoke(plain)
    assert not core.session_live(plain)
