"""The reference relay's keystroke-integrity row (issue 20): numbered keys through forced failovers.

An agent paired with the reference relay (bench/reference.py) by an invite with LAN = the e2e Proxy and
Public = the reference directly; the recorder (``cat > FILE`` in raw mode) in the reference's tmux session
on the relay host; a numbered key (``000123,``) typed every 10 ms through N failures in turn: LAN ``down``,
LAN ``blackhole``, a restart of the reference (SIGTERM, then started on the same port and HOME; its tmux
server runs outside its process tree and lives on), ``kill -9`` of the agent (the CLI restarts it and
reopens). The reference has no offsets, so what was in flight at a drop is *in doubt*: reported, never
resent. The agent logs each such range in the CLI's input offsets (``terminal_input_in_doubt`` /
``terminal_input_dropped``, agent/terminal/session.py); at the end the recorder file is compared with what
was typed and with those ranges: nothing may be doubled or reordered, and every byte lost must lie inside a
reported range.

``reference_integrity(rows)`` is a step of bench/shell_rows.py; ``rows`` is its ``ShellSetup``
(bench/shell_setup.py). The keys are typed and counted by tests/shell_typist.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

from procs import AgentEnv, Proxy, free_port, wait_gone, wait_state
from reference import ReferenceRelay, find
from shell_setup import FAILURE_KINDS, ShellSetup, agent_log, agent_log_between, file_size, keys_flow_again
from shell_typist import TOKEN, Typist, key_counts

from hermes_relay.core import api, payload

REFERENCE = find(dict(os.environ))  # read at import: bench/run.py drops HERMES_* variables afterwards
SESSION = "refsoak"
RANGE_LINE = re.compile(r"terminal_input_(in_doubt|dropped) url=\S+ session=bench-" + SESSION + r" start=(\d+) end=(\d+)")
NOTICE = re.compile(rb"(\d+) bytes [^\r\n]*in doubt")
CONTEXT = 200  # bytes after a reported range that must match what was typed, to place the range in the file


def merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for s, e in sorted(r for r in ranges if r[1] > r[0]):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _subsequence(part: bytes, whole: bytes) -> bool:
    it = iter(whole)
    return all(b in it for b in part)


def losses_within(typed: bytes, got: bytes, ranges: list[tuple[int, int]]) -> tuple[bool, int]:
    """Is ``got`` ``typed`` with bytes left out only inside ``ranges`` (offsets into ``typed``)?

    Outside the ranges every byte must arrive, once, in order; inside a range any subsequence of its
    bytes may (the reference drops whole input frames). Returns (yes, the offset in ``typed`` where the
    comparison failed, or ``len(typed)``)."""
    i = j = 0
    spans = merge([(max(0, s), min(len(typed), e)) for s, e in ranges])
    for n, (s, e) in enumerate(spans + [(len(typed), len(typed))]):
        seg = typed[i:s]
        if got[j:j + len(seg)] != seg:
            k = next((k for k in range(len(seg)) if j + k >= len(got) or got[j + k] != seg[k]), len(seg))
            return False, i + k
        i, j = s, j + len(seg)
        if s == e:
            continue
        nxt = spans[n + 1][0] if n + 1 < len(spans) else len(typed)
        follow = typed[e:min(nxt, e + CONTEXT)]
        for k in range(min(e - s, len(got) - j), -1, -1):  # how many bytes of the range arrived
            if got[j + k:j + k + len(follow)] == follow and _subsequence(got[j:j + k], typed[s:e]):
                break
        else:
            return False, s
        i, j = e, j + k
    return j == len(got), i


def token_counts(got: bytes, typed: int) -> tuple[int, int, int, int]:
    """(keys lost, duplicated, reordered, garbled pieces) from the recorder's bytes."""
    seen, dup, reorder, bad = key_counts(got)
    return typed - len(seen & set(range(typed))), dup, reorder, bad


def logged_ranges(env: AgentEnv) -> list[tuple[str, int, int]]:
    out = []
    for path in sorted((env.home / "logs").glob("hermes-relay-agent.log*")):
        for m in RANGE_LINE.finditer(path.read_text(errors="replace")):
            out.append((m.group(1), int(m.group(2)), int(m.group(3))))
    return out


def reference_integrity(rows: ShellSetup) -> None:
    label = "shell keystroke integrity, reference relay"
    if REFERENCE is None:
        rows.add(label, "reference not available", "0 dup / 0 reordered, losses in doubt", None)
        return
    n = rows.soak
    rows.log(f"shell: keystroke integrity through the reference relay over {n} forced failovers (down, black hole, "
             "reference restart, agent kill -9, in turn)")
    tmux_dir = rows.root / "ref-tmux"  # the reference's own tmux server, so its clients are counted alone
    tmux_dir.mkdir(exist_ok=True)
    tmux_env = {**os.environ, "TMUX_TMPDIR": str(tmux_dir)}

    def tmux(*args: str) -> list[str]:
        out = subprocess.run(["tmux", "-L", "hermes-relay", *args], capture_output=True, text=True, timeout=10,
                             env=tmux_env)
        return out.stdout.splitlines()

    rows.bench.on_exit(lambda: tmux("kill-server"))
    ref = ReferenceRelay(REFERENCE, rows.root / "ref-soak-home", free_port(), env={"TMUX_TMPDIR": str(tmux_dir)})
    rows.bench.on_exit(ref.stop)
    ref.start()
    env: AgentEnv = rows.agent("refsoak", HERMES_RELAY_UPGRADE_INTERVAL="0.5", HERMES_RELAY_UPGRADE_HYSTERESIS="0.3")
    lan: Proxy = rows.bench.proxy(ref.port)
    rows._lan_port = lan.port
    invite = payload.build(code=ref.mint_code(), ttl_seconds=3600, transport_hint="ws",
                           endpoints=[("lan", f"ws://127.0.0.1:{lan.port}/ws"), ("public", ref.url)])
    with env.client() as c:
        c.call(api.PAIR_START, {"invite": payload.invite_url(invite)}, timeout=30)
    wait_state(env, lambda s: (s.get("route") or {}).get("role") == "lan" and s.get("state") == api.CONNECTED,
               timeout=30)
    record = rows.root / "ref-keys.rec"
    program = f"stty raw -echo; exec cat > {record}"
    prefix = len(f"echo rea''dy-{SESSION}; {program}\r".encode())  # what open_shell types first (CLI offsets)
    term = rows.open_shell(env, SESSION, program)

    def size() -> int:
        return file_size(record)

    typist = Typist(term).start()  # 000000, 000001, ... every 10 ms
    kinds = FAILURE_KINDS
    done = {k: 0 for k in kinds}
    stale = {k: 0 for k in kinds}  # tmux clients left on the reference, by the failure that left them
    doubt_by = {k: 0 for k in kinds}  # bytes reported in doubt, by the failure that caused them
    reported_before = 0
    stuck = 0
    marks: list[tuple[int, str, float]] = []  # (keys typed when a failure began, its kind, its wall time)
    clients = len(tmux("list-clients"))
    try:
        for i in range(n):
            kind = kinds[i % len(kinds)]
            time.sleep(0.2)
            mark = size()
            marks.append((typist.count, kind, time.time()))
            if kind == "restart":
                ref.stop()
                ref.start()
            elif kind == "kill":
                with env.client() as c:
                    os.kill(int(c.hello["pid"]), signal.SIGKILL)
            else:
                lan.command(kind)
            if not keys_flow_again(size, mark, TOKEN):  # the keys reach the recorder again
                stuck += 1
                rows.log(f"reference soak: keys did not reach the recorder within 40 s after a {kind}")
            if kind in ("down", "blackhole"):
                if kind == "blackhole":
                    lan.command("down")
                lan.command("up")
            rows.back_on_lan(env, kind)
            now = len(tmux("list-clients"))
            stale[kind] += now - clients
            clients = now
            reported_now = sum(e - s for _, s, e in logged_ranges(env))
            doubt_by[kind] += reported_now - reported_before
            reported_before = reported_now
            done[kind] += 1
    finally:
        typist.typing.clear()
        time.sleep(0.05)
        stream = typist.stop()
    typed = typist.count
    deadline = time.monotonic() + 30
    while size() < typed * TOKEN and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the tail of in-doubt keys never comes: the file stays short
    sessions = [s for s in tmux("list-sessions", "-F", "#{session_name}") if SESSION in s]
    got = record.read_bytes()
    lost, dup, reorder, bad = token_counts(got, typed)
    reported = logged_ranges(env)
    doubt = sum(e - s for k, s, e in reported if k == "in_doubt")
    dropped = sum(e - s for k, s, e in reported if k == "dropped")
    inside, at = losses_within(stream, got, [(s - prefix, e - prefix) for _, s, e in reported])
    lost_bytes = len(stream) - len(got)
    if not inside or dup or reorder:
        rows.log(f"reference soak: comparison failed at typed offset {at} (key {at // TOKEN}); recorded there: "
                 f"{got[max(0, at - 60):at + 60]!r}; ranges (CLI offsets, prefix {prefix}): {reported[:40]}")
        key = at // TOKEN
        before = [i for i, (t, _, _) in enumerate(marks) if t <= key][-1:]
        after = [(i, marks[i][1]) for i in before]
        rows.log(f"the failure before key {key}: {after} (of {len(marks)}); the last failures: "
                 f"{[m[:2] for m in marks[-3:]]}")
        rows.log(f"the shell's screen: {bytes(term.screen[-2000:])!r}\nthe agent's log:\n{agent_log(env, 60)}")
        if before:  # from that failure to the next one: where the keys went
            i = before[0]
            end = marks[i + 1][2] if i + 1 < len(marks) else time.time()
            rows.log(f"the agent's log from failure {i} to the next:\n{agent_log_between(env, marks[i][2] - 1, end + 1)}")
    told = sum(int(x) for x in NOTICE.findall(bytes(term.screen)))
    rows.log(f"reference soak: {len(reported)} ranges reported in the agent's log; notices on screen: {told} bytes "
             f"in doubt; reported by failure kind: {doubt_by}")
    ok = dup == 0 and reorder == 0 and inside
    drop_note = f", {dropped} dropped with a notice" if dropped else ""
    rows.add(f"shell keystroke integrity, reference relay, {n} failovers "
             f"({', '.join(f'{v} {k}' for k, v in done.items())}), {typed} keys",
             f"lost {lost} ({lost_bytes} bytes, {'all' if inside else 'NOT all'} within the {doubt} bytes reported "
             f"in doubt{drop_note}), duplicated {dup}, reordered {reorder}, garbled {bad}",
             "0 dup / 0 reordered, losses in doubt", ok)
    rows.add(f"shell reference: stale tmux clients after {n} failovers (per kind)",
             f"{clients} ({', '.join(f'{k} {v:+d}' for k, v in stale.items())}); session kept over "
             f"{done['restart']} restarts: {'yes' if sessions else 'no'}" + (f"; {stuck} stuck" if stuck else ""))
    term.close()
    env.stop()
    lan.close()
    ref.stop()
    for pid in env.pids:
        wait_gone(pid, 5)
