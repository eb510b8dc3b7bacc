"""The shell's echo rows (issue 20 item 6): keystroke to echo through our relay and the reference's, and a flood.

Each figure is printed beside a baseline of the same run: the same echo program on a pty of its own (a
direct PTY echo, no relay: ``RAW_ECHO``), and the relay's ``GET /health`` on a fresh loopback connection.
Every key is typed alone and waited for (``echo_times``), the two sides interleaved in chunks of 50 so a
loaded moment slows both. Steps of bench/shell_rows.py; ``rows`` is its ``ShellSetup``.
"""

from __future__ import annotations

import http.client
import os
import statistics
import time
from pathlib import Path

from procs import free_port
from reference import ReferenceRelay, find
from shell_pty import RAW_ECHO, Terminal
from shell_setup import ShellSetup, ms, pctl

from hermes_relay.core import api

REFERENCE = find(dict(os.environ))  # read at import: bench/run.py drops HERMES_* variables afterwards
KEYS = b"abcdefghijklmnopqrstuvwxyz0123456789"
LATENCY_TARGETS = {"ours": (0.003, 0.010), "reference": (0.020, None)}
FLOOD_TARGET = 1.0
FLOOD_RSS_MB = 10.0


def echo_times(term: Terminal, keys: bytes) -> list[float]:
    """Type each key alone and wait for it to come back: the seconds each round trip took."""
    times = []
    for k in (bytes([b]) for b in keys):
        start = len(term.screen)
        t0 = time.perf_counter()
        term.type(k)
        while term.screen.find(k, start) < 0:
            if not term.read(5.0):
                raise TimeoutError(f"no echo of {k!r} within 5 s; stderr: {term.stderr()[-600:]!r}")
        times.append(time.perf_counter() - t0)
    return times


def health_time(port: int, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/health")
        conn.getresponse().read()
        conn.close()
        out.append(time.perf_counter() - t0)
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _echo_rows(rows: ShellSetup, label: str, term: Terminal, target: tuple[float, float | None],
               health_port: int | None) -> None:
    n = rows.n_keys
    direct = rows.terminal(["/bin/sh", "-c", RAW_ECHO], dict(os.environ), f"direct-{label}")
    echo_times(direct, KEYS)  # warm-up: the first keys start the program
    echo_times(term, KEYS * 2)
    keys = (KEYS * (n // len(KEYS) + 1))[:n]
    ours: list[float] = []
    base: list[float] = []
    for chunk in range(0, n, 50):  # interleaved, so a loaded moment slows both
        ours += echo_times(term, keys[chunk:chunk + 50])
        base += echo_times(direct, keys[chunk:chunk + 50])
    direct.close()
    p50, p99 = statistics.median(ours), pctl(ours, 99)
    b50, b99 = statistics.median(base), pctl(base, 99)
    t50, t99 = target
    rows.add(f"shell keystroke->echo, {label} relay ({n} keys) p50", f"{ms(p50)} (direct PTY {ms(b50)})",
             f"<= {t50 * 1000:g} ms", p50 <= t50)
    rows.add(f"shell keystroke->echo, {label} relay p99", f"{ms(p99)} (direct PTY {ms(b99)})",
             f"<= {t99 * 1000:g} ms" if t99 else "-", None if t99 is None else p99 <= t99)
    if health_port is not None:
        h = health_time(health_port, 100)
        rows.add(f"shell baseline: {label} relay GET /health (fresh connection) p50",
                 f"{ms(statistics.median(h))}, p99 {ms(pctl(h, 99))}")


def latency(rows: ShellSetup) -> None:
    assert rows.relay is not None
    rows.log(f"shell: keystroke->echo through our relay (tmux), {rows.n_keys} keys, beside a direct PTY")
    env = rows.agent("direct")
    with env.client() as c:
        c.call(api.PAIR_START, {"url": rows.relay.url, "code": rows.mint(rows.relay)}, timeout=30)
    term = rows.open_shell(env, "latency", RAW_ECHO)
    _echo_rows(rows, "our", term, LATENCY_TARGETS["ours"], rows.relay.port)
    term.close()
    rows.direct_env = env


def reference_latency(rows: ShellSetup) -> None:
    label = "shell keystroke->echo, reference relay"
    if REFERENCE is None:
        rows.add(f"{label} p50", "reference not available", "<= 20 ms", None)
        return
    rows.log(f"shell: keystroke->echo through the reference relay ({REFERENCE.checkout})")
    ref = ReferenceRelay(REFERENCE, rows.root / "reference-home", free_port())
    rows.bench.on_exit(ref.stop)
    ref.start()
    env = rows.agent("reference")
    with env.client() as c:
        c.call(api.PAIR_START, {"url": ref.url, "code": ref.mint_code()}, timeout=30)
    term = rows.open_shell(env, "reference", RAW_ECHO)
    _echo_rows(rows, "reference", term, LATENCY_TARGETS["reference"], ref.port)
    term.close()
    env.stop()
    ref.stop()


def flood(rows: ShellSetup) -> None:
    rows.log("shell: `yes` flood, then Ctrl+C until the prompt is back")
    env = rows.direct_env
    assert env is not None, "the flood row runs in the latency row's shell agent"
    pid = rows.agent_pid(env)
    term = rows.open_shell(env, "flood", "PS1='@@''RDY@@ '")
    term.wait_screen(b"@@RDY@@ ", timeout=10)
    rss0 = rss_mb(pid)
    term.type(b"yes\r")
    flood_until = time.monotonic() + 2.0
    total = 0
    while time.monotonic() < flood_until:
        total += len(term.read(0.5))
        if len(term.screen) > 1 << 20:
            del term.screen[:-4096]
    rss_peak = rss_mb(pid)
    start = len(term.screen)
    t0 = time.perf_counter()
    term.type(b"\x03")
    back = None
    while time.perf_counter() - t0 < 15:
        chunk = term.read(1.0)
        if term.screen.find(b"@@RDY@@", max(start, len(term.screen) - len(chunk) - 8)) >= 0:
            back = time.perf_counter() - t0
            break
        if len(term.screen) > 1 << 20:
            keep = term.screen[-4096:]
            del term.screen[:]
            term.screen += keep
            start = 0
    rss1 = rss_mb(pid)
    grow = max(rss_peak, rss1) - rss0
    rows.add(f"shell `yes` flood ({total / 2 / 1e6:.1f} MB/s shown), Ctrl+C -> prompt",
             "never" if back is None else ms(back), f"<= {FLOOD_TARGET:g} s",
             back is not None and back <= FLOOD_TARGET)
    rows.add("shell flood: agent RSS growth", f"{grow:+.1f} MB ({rss0:.1f} -> peak {max(rss_peak, rss1):.1f} MB)",
             f"<= {FLOOD_RSS_MB:g} MB", grow <= FLOOD_RSS_MB)
    term.close()
