"""The shell's failover rows (issue 20 item 6): pauses while typing, and keystroke integrity, on our relay.

An agent paired by an invite with LAN = the e2e ``Proxy`` and Public = our relay (``failover_agent``); a
``Typist`` (tests/shell_typist.py) types on the CLI's pty every 10 ms while the bench breaks the route:

- ``pauses``: ``#`` keys echoed by a raw ``cat``; the longest time without an echo from a LAN ``down`` or
  ``blackhole`` until the echo flows on Public, and the time from our relay's ``listening`` after a restart
  to the first echo; then the agent's fds and threads and the tmux clients after all the cycles;
- ``integrity``: numbered keys (``000123,``) into a recorder (``cat > FILE`` in raw mode) through LAN
  ``down``, LAN ``blackhole``, a relay restart and an agent ``kill -9`` in turn; the file is counted with
  ``key_counts``: keys lost, duplicated, reordered, garbled.

Steps of bench/shell_rows.py; ``rows`` is its ``ShellSetup``.
"""

from __future__ import annotations

import os
import signal
import statistics
import time

from procs import wait_gone, wait_state
from shell_pty import RAW_ECHO
from shell_setup import FAILURE_KINDS, ShellSetup, agent_log, file_size, keys_flow_again, ms, pctl, restore, route_role
from shell_typist import TOKEN, Typist, key_counts

PAUSE_TARGETS = {"down": 1.5, "blackhole": 2.5}
RESTART_TARGET = 1.0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def pauses(rows: ShellSetup) -> None:
    n = rows.cycles
    rows.log(f"shell: pauses while typing (a key every 10 ms): {n} x LAN down, {n} x LAN black hole, "
             f"{n} x relay restart")
    env, lan = rows.failover_agent("pause")
    pid = rows.agent_pid(env)
    term = rows.open_shell(env, "pause", RAW_ECHO)
    fd0, th0 = fds(pid), threads(pid)
    clients0 = rows.tmux_clients()
    typist = Typist(term, lambda: b"#", echo=b"#").start()  # '#': never in the CLI's status line
    results: dict[str, list[float]] = {"down": [], "blackhole": [], "restart": []}
    try:
        for kind in ("down", "blackhole", "restart"):
            for _ in range(n):
                time.sleep(0.3)  # typing on a live link before each failure (the typist keeps typing)
                if kind == "restart":
                    t = rows.restart_relay()
                else:
                    t = time.monotonic()
                    lan.command(kind)
                wait_state(env, lambda s: route_role(s) is not None, timeout=40)
                deadline = time.monotonic() + 30
                while (typist.first_after(max(t, time.monotonic() - 0.5)) is None
                       or typist.last_arrival() < t + 0.2) and time.monotonic() < deadline:
                    time.sleep(0.05)  # the echo must flow again for a while before the gap is read
                end = typist.last_arrival()
                if kind == "restart":
                    first = typist.first_after(t)
                    results[kind].append((first - t) if first is not None else 30.0)
                else:
                    results[kind].append(typist.longest_gap(t, end))
                if results[kind][-1] > (RESTART_TARGET if kind == "restart" else PAUSE_TARGETS[kind]):
                    since = time.time() - time.monotonic() + t
                    rows.log(f"slow {kind} cycle ({results[kind][-1]:.2f} s) from {since:.3f} (epoch); "
                             f"the agent's log:\n{agent_log(env)}")
                restore(lan, kind)
                rows.back_on_lan(env, kind)
    finally:
        typist.stop()
    clients1 = rows.tmux_clients()
    for kind, label, target in (("down", "LAN refused -> public", PAUSE_TARGETS["down"]),
                                ("blackhole", "LAN black-holed", PAUSE_TARGETS["blackhole"])):
        v = results[kind]
        p95 = pctl(v, 95)
        rows.add(f"shell pause while typing, {label} ({len(v)} cycles) p95",
                 f"{ms(p95)} (median {ms(statistics.median(v))})", f"<= {target:g} s", p95 <= target)
    v = results["restart"]
    worst = pctl(v, 95)
    rows.add(f"shell screen back after our relay listens ({len(v)} restarts) p95",
             f"{ms(worst)} (median {ms(statistics.median(v))})", f"<= {RESTART_TARGET:g} s", worst <= RESTART_TARGET)
    rows.add(f"shell agent fds / threads over {3 * n} failovers", f"{fd0} -> {fds(pid)} / {th0} -> {threads(pid)}",
             "flat", fds(pid) <= fd0 and threads(pid) <= th0)
    rows.add("shell tmux clients = live attachments (1) after the failovers",
             f"{clients1} (before {clients0})", "= 1", clients1 == 1)
    term.close()
    env.stop()
    lan.close()


def integrity(rows: ShellSetup) -> None:
    n = rows.soak
    rows.log(f"shell: keystroke integrity over {n} forced failovers (down, black hole, relay restart, "
             "agent kill -9, in turn) with a numbered key stream")
    env, lan = rows.failover_agent("soak")
    record = rows.root / "keys.rec"
    term = rows.open_shell(env, "soak", f"stty raw -echo; exec cat > {record}")

    def size() -> int:
        return file_size(record)

    typist = Typist(term).start()  # 000000, 000001, ... every 10 ms
    kinds = FAILURE_KINDS
    done = {k: 0 for k in kinds}
    marks: list[tuple[int, str]] = []  # (keys typed when a failure began, its kind)
    stuck = 0
    try:
        for i in range(n):
            kind = kinds[i % len(kinds)]
            time.sleep(0.2)
            marks.append((typist.count, kind))
            mark = size()
            if kind == "restart":
                rows.restart_relay()
            elif kind == "kill":
                os.kill(rows.agent_pid(env), signal.SIGKILL)
            else:
                lan.command(kind)
            if not keys_flow_again(size, mark, TOKEN):  # the keys reach the recorder again
                stuck += 1
            restore(lan, kind)
            rows.back_on_lan(env, kind)
            done[kind] += 1
    finally:
        typist.typing.clear()
        time.sleep(0.05)
        typist.stop()
    typed = typist.count
    deadline = time.monotonic() + 30
    while size() < typed * TOKEN and time.monotonic() < deadline:
        time.sleep(0.05)
    seen, dup, reorder, bad = key_counts(record.read_bytes())
    lost = typed - len(seen & set(range(typed)))
    if lost:
        by_kind: dict[str, int] = {}
        for x in set(range(typed)) - seen:
            kind = next((k for at, k in reversed(marks) if at <= x), "start")
            by_kind[kind] = by_kind.get(kind, 0) + 1
        runs: list[list[int]] = []
        for x in sorted(set(range(typed)) - seen):
            if runs and runs[-1][1] == x - 1:
                runs[-1][1] = x
            else:
                runs.append([x, x])
        rows.log(f"keys lost, by the failure they were typed after: {by_kind}; runs {runs[:8]}; marks {marks[:8]}")
        rows.log(f"the shell's screen: {bytes(term.screen[-3000:])!r}\nagent log:\n{agent_log(env, 40)}")
    ok = lost == 0 and dup == 0 and reorder == 0 and bad == 0
    rows.add(f"shell keystroke integrity, {n} failovers ({', '.join(f'{v} {k}' for k, v in done.items())}), "
             f"{typed} keys", f"lost {lost}, duplicated {dup}, reordered {reorder}, garbled {bad}",
             "0 / 0 / 0", ok)
    clients = rows.tmux_clients()
    rows.add(f"shell tmux clients = live attachments (1) after {n} failovers", str(clients), "= 1", clients == 1)
    term.close()
    env.stop()
    lan.close()
    for pid in env.pids:
        wait_gone(pid, 5)
