"""agent/memtrim.py: the memory a big message used goes back to the system once the agent is quiet."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from hermes_relay.agent import memtrim
from hermes_relay.agent.memtrim import BIG, QUIET, Trim


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return 1


def test_a_big_message_is_trimmed_once_after_a_quiet_second() -> None:
    trim = Counter()
    t = Trim(trim)
    t.note(BIG, now=10.0)
    assert not t.due(10.0 + QUIET / 2) and trim.calls == 0  # still busy: the pages may be used again
    assert t.due(10.0 + QUIET) and trim.calls == 1
    assert not t.due(20.0) and trim.calls == 1  # once: nothing big went through since
    assert t.trims == 1


def test_small_messages_never_trim_and_a_new_big_one_postpones_it() -> None:
    trim = Counter()
    t = Trim(trim)
    for i in range(100):
        t.note(BIG - 1, now=float(i))
    assert not t.due(1000.0) and trim.calls == 0
    t.note(BIG, now=0.0)
    t.note(3 * BIG, now=0.5)  # back-to-back big reads keep their pages
    assert not t.due(0.0 + QUIET) and trim.calls == 0
    assert t.due(0.5 + QUIET) and trim.calls == 1


def test_no_malloc_trim_means_nothing_is_done() -> None:
    t = Trim(None)
    t.note(BIG, now=0.0)
    assert not t.due(5.0) and t.trims == 0


def test_a_failing_trim_is_not_fatal_and_not_tried_again() -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        raise OSError("no")

    t = Trim(broken)
    t.note(BIG, now=0.0)
    assert not t.due(5.0)
    t.note(BIG, now=6.0)
    assert not t.due(10.0) and calls == [1]


def test_a_malloc_arena_max_from_the_environment_is_left_to_glibc() -> None:
    assert memtrim.one_arena({"MALLOC_ARENA_MAX": "4"}) is False


@pytest.mark.skipif(not sys.platform.startswith("linux") or memtrim._libc("malloc_trim") is None,
                    reason="glibc only (malloc_trim, M_ARENA_MAX)")
def test_memory_a_worker_thread_used_for_big_blocks_goes_back_to_the_system() -> None:
    # A process of its own: the arenas must be set before its first thread. What a 3 MB read does in a
    # tool thread (read, decode), 21 times; before one_arena the thread's heap kept ~6 MB after the trim.
    script = textwrap.dedent("""
        import sys, threading
        from hermes_relay.agent import memtrim

        def rss_kb():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])

        assert memtrim.one_arena({})
        start = rss_kb()
        block = b"x" * (3 << 20)
        del block  # a 3 MB block freed: glibc's mmap threshold rises to 3 MB
        def work():
            for _ in range(7):
                data = b"0123456789abcde\\n" * ((3 << 20) // 16)
                text = data.decode()
                del data, text
        for _ in range(3):
            t = threading.Thread(target=work)
            t.start()
            t.join()
        trim = memtrim.Trim()
        trim.note(3 << 20, now=0.0)
        assert trim.due(memtrim.QUIET) and trim.trims == 1
        print(rss_kb() - start)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert int(out.stdout) < 2048, f"{out.stdout.strip()} kB kept after the trim"
