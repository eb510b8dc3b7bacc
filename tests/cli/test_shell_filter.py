"""The shell's output filter (clipboard writes and terminal report requests) and its escape-key reader."""

from __future__ import annotations

import pytest

from hermes_relay.cli import escapekey
from hermes_relay.cli.outfilter import MAX_HELD, OutputFilter
from hermes_relay.core.errors import UsageError

ST = b"\x1b\\"
REMOVED = [
    b"\x1b]52;c;aGVsbG8=\x07",  # OSC 52 clipboard write, BEL
    b"\x1b]52;c;aGVsbG8=" + ST,  # ... ST
    b"\x1b]52;c;?\x07",  # clipboard read
    b"\x1b[c", b"\x1b[0c", b"\x1b[>c", b"\x1b[>0c", b"\x1b[=c",  # DA1, DA2, DA3
    b"\x1bZ",  # DECID
    b"\x1b[5n", b"\x1b[6n", b"\x1b[?6n",  # DSR, CPR
    b"\x1b[?2004$p", b"\x1b[20$p",  # DECRQM
    b"\x1b[>q", b"\x1b[>0q",  # XTVERSION
    b"\x1b[21t", b"\x1b[20t", b"\x1b[14t", b"\x1b[18t",  # title and window reports
    b"\x1bP$qm" + ST, b"\x1bP$q\"p" + ST,  # DECRQSS
    b"\x1bP+q544e" + ST,  # XTGETTCAP
    b"\x1b]11;?\x07", b"\x1b]10;?" + ST, b"\x1b]4;1;?\x07",  # colour queries
]
KEPT = [
    b"plain text \xe2\x82\xac\r\n",
    b"\x1b[1;31mred\x1b[0m", b"\x1b[?1049h", b"\x1b[?25l", b"\x1b[2J\x1b[H", b"\x1b[8;24;80t",  # resize: not a report
    b"\x1b[22;0t", b"\x1b[?1u", b"\x1b[>4;1m",  # title push, kitty keys, modifyOtherKeys
    b"\x1b]0;my title\x07", b"\x1b]2;title" + ST, b"\x1b]8;;https://example.com\x07link\x1b]8;;\x07",
    b"\x1b]11;rgb:0000/0000/0000\x07",  # a colour set, not a query
    b"\x1bPtmux;\x1b\x1b]0;x\x07" + ST,  # a passthrough DCS
    b"\x1b7\x1b8\x1b(B\x1b=\x1b>", b"\x1b\x1b[A",
]
SAMPLE = b"".join(x for pair in zip(KEPT, REMOVED + [b""] * len(KEPT), strict=False) for x in pair)
EXPECTED = b"".join(KEPT)


def run(data: bytes, cuts: list[int] | None = None, **kw: bool) -> bytes:
    f = OutputFilter(**kw)
    if cuts is None:
        return f.feed(data)
    out, last = b"", 0
    for cut in [*cuts, len(data)]:
        out += f.feed(data[last:cut])
        last = cut
    return out


@pytest.mark.parametrize("seq", REMOVED)
def test_each_report_request_and_clipboard_write_is_removed(seq: bytes) -> None:
    assert run(b"a" + seq + b"b") == b"ab"


@pytest.mark.parametrize("seq", KEPT)
def test_everything_else_passes_byte_for_byte(seq: bytes) -> None:
    assert run(seq) == seq


def test_a_sequence_split_at_any_byte_is_filtered_the_same() -> None:
    whole = run(SAMPLE)
    assert whole == EXPECTED
    for cut in range(1, len(SAMPLE)):
        assert run(SAMPLE, [cut]) == EXPECTED, cut
    assert run(SAMPLE, list(range(1, len(SAMPLE)))) == EXPECTED  # one byte at a time


def test_opt_ins_let_them_through() -> None:
    osc52 = b"\x1b]52;c;aGk=\x07"
    assert run(osc52, allow_clipboard=True) == osc52
    assert run(b"\x1b[6n\x1b[c\x1bP$qm" + ST, allow_reports=True) == b"\x1b[6n\x1b[c\x1bP$qm" + ST
    assert run(osc52 + b"\x1b[6n", allow_reports=True) == b"\x1b[6n"


def test_nothing_is_buffered_without_bound() -> None:
    f = OutputFilter()
    assert f.feed(b"\x1b]52;c;") == b""
    for _ in range(1000):  # a 1 MB clipboard write, never terminated
        assert f.feed(b"A" * 1024) == b""
        assert f.held <= MAX_HELD
    assert f.feed(b"\x07after") == b"after"
    title = b"\x1b]2;" + b"t" * 100_000
    out = f.feed(title)
    assert out == title and f.held <= MAX_HELD  # a long title streams through
    assert f.feed(b"\x07") == b"\x07"
    out = f.feed(b"\x1b]11;" + b"x" * 10_000 + b"?\x07z")  # an oversized colour string is dropped whole
    assert out == b"z" and f.held <= MAX_HELD
    out = f.feed(b"\x1b[" + b"1;" * 1000 + b"m")  # an absurd CSI passes unread
    assert out.endswith(b"m") and len(out) == 2003


def test_escape_keys_parse() -> None:
    assert escapekey.parse("^A") == 1 and escapekey.parse("^b") == 2 and escapekey.parse("C-z") == 26
    assert escapekey.parse("ctrl-]") == 0x1D and escapekey.parse("none") is None
    for bad in ("^[", "A", "^AA", "", "meta-a"):
        with pytest.raises(UsageError):
            escapekey.parse(bad)


def test_the_escape_reader_keeps_the_prefix_between_reads() -> None:
    r = escapekey.EscapeReader(1)
    assert r.feed(b"ab\x01") == [("data", b"ab")]
    assert r.feed(b".cd") == [("cmd", "detach"), ("data", b"cd")]
    assert r.feed(b"\x01\x01\x01k\x01z\x01h\x01?\x01q") == [
        ("data", b"\x01"), ("cmd", "kill"), ("cmd", "suspend"), ("cmd", "help"), ("cmd", "help"), ("data", b"\x01q")]
    assert escapekey.EscapeReader(None).feed(b"\x01.") == [("data", b"\x01.")]
