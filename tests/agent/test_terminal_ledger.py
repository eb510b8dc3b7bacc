"""The input marks (agent/terminal/ledger.py): chunks cut on UTF-8 boundaries, the in-flight window, exact
resume, and in-doubt input that is counted done and never sent again."""

from __future__ import annotations

import pytest

from hermes_relay.agent.terminal.ledger import MAX_CHUNK, MAX_HELD, MAX_IN_FLIGHT, InputLedger, InputOverflow, utf8_cut


def drain(ledger: InputLedger) -> list[tuple[int, bytes]]:
    out = []
    while (chunk := ledger.take()) is not None:
        out.append(chunk)
    return out


def test_chunks_are_cut_on_utf8_boundaries_and_in_order() -> None:
    text = ("é€😀a" * 2000).encode()
    ledger = InputLedger()
    ledger.type(0, text)
    chunks = drain(ledger)
    assert all(len(data) <= MAX_CHUNK for _, data in chunks)
    assert sum(len(d) for _, d in chunks) == ledger.in_flight > MAX_IN_FLIGHT - 4  # the window, less a split character
    for seq, data in chunks:
        data.decode("utf-8")  # every chunk is whole characters
        assert text[seq:seq + len(data)] == data
    assert [seq for seq, _ in chunks] == [0] + [sum(len(d) for _, d in chunks[:i]) for i in range(1, len(chunks))]
    assert ledger.in_flight <= MAX_IN_FLIGHT


def test_utf8_cut_backs_off_a_split_character_only() -> None:
    assert utf8_cut("ab€".encode(), 3) == 2  # € is 3 bytes: cut before it
    assert utf8_cut("ab€".encode(), 5) == 5
    assert utf8_cut(b"\xff\xfe\xfd\xfc", 2) == 2  # not UTF-8: cut anywhere
    assert utf8_cut("😀".encode(), 2) == 0


def test_the_window_reopens_as_acks_come() -> None:
    ledger = InputLedger()
    ledger.type(0, b"x" * (MAX_IN_FLIGHT * 2))
    assert sum(len(d) for _, d in drain(ledger)) == MAX_IN_FLIGHT
    assert ledger.take() is None
    assert ledger.ack(1000) == 1000
    assert sum(len(d) for _, d in drain(ledger)) == 1000
    assert (ledger.acked, ledger.sent, ledger.typed) == (1000, MAX_IN_FLIGHT + 1000, MAX_IN_FLIGHT * 2)


def test_duplicates_from_a_reopened_cli_are_skipped_and_a_gap_is_refused() -> None:
    ledger = InputLedger(acked=10, sent=12, held=b"abcd")
    assert ledger.type(12, b"cdef") == 2  # "cd" was held already
    assert ledger.typed == 16
    with pytest.raises(ValueError):
        ledger.type(20, b"z")
    with pytest.raises(InputOverflow):
        ledger.type(16, b"z" * MAX_HELD)


def test_exact_resume_resends_only_what_the_relay_lacks() -> None:
    ledger = InputLedger()
    ledger.type(0, b"0123456789")
    assert drain(ledger) == [(0, b"0123456789")]
    assert ledger.resume(4) == 6
    assert (ledger.acked, ledger.sent) == (4, 4)
    assert drain(ledger) == [(4, b"456789")]


def test_in_doubt_input_is_counted_done_never_resent_and_recent_acks_are_reported() -> None:
    ledger = InputLedger()
    ledger.type(0, b"abc")
    drain(ledger)
    ledger.ack(3, now=10.0)
    ledger.type(3, b"def")
    drain(ledger)
    ledger.type(6, b"ghi")  # typed, not sent
    unacked, recent = ledger.drop_in_doubt(now=10.1, rtt=0.2)
    assert (unacked, recent) == (3, 3)  # "def" in flight; "abc" acked within one round trip
    assert (ledger.acked, ledger.sent, ledger.typed) == (6, 6, 9)
    assert drain(ledger) == [(6, b"ghi")]  # "def" is never sent again
    ledger.ack(9, now=20.0)
    assert ledger.drop_in_doubt(now=21.0, rtt=0.2) == (0, 0)  # an old ack is not in doubt


def test_queued_keys_dropped_count_as_acknowledged() -> None:
    ledger = InputLedger()
    ledger.type(0, b"abc")
    drain(ledger)
    ledger.type(3, b"queued")
    with pytest.raises(ValueError):
        ledger.drop_unsent()  # in flight: settle first
    ledger.drop_in_doubt()
    assert ledger.drop_unsent() == 6
    assert (ledger.acked, ledger.sent, ledger.typed) == (9, 9, 9)
    ledger.type(9, b"next")
    assert drain(ledger) == [(9, b"next")]
