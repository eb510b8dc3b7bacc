#!/usr/bin/env python3
"""hermes-relay performance bench: real relay, agent, proxy and CLI processes on loopback.

    python bench/run.py [--quick]

Measures every metric of the performance issue in one run and prints ONE table
(metric | value | target | pass/fail) on stdout; progress goes to stderr. Exit status: 0 when every
metric with a target passes, 1 when one misses (or errors), 130 on Ctrl-C. Every process the bench
starts (relays, agents, proxies) is stopped on the way out, also on Ctrl-C or SIGTERM.

The helpers of the end-to-end tests (tests/e2e/procs.py, and the shell's tests/shell_pty.py and
tests/shell_typist.py) are imported, not copied. See
bench/README.md for what each metric measures and how.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import math
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the shell's pty driver and typist (tests/shell_pty.py, shell_typist.py)
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

from procs import PY, AgentEnv, BlackHole, Proxy, RelayProc, free_port, wheel_venv  # noqa: E402
from ref_desktop import ReferenceDesktop, find_bun  # noqa: E402
from reference import ReferenceRelay, find  # noqa: E402
from shell_rows import ShellRows  # noqa: E402

from hermes_relay.cli.client import AgentClient  # noqa: E402
from hermes_relay.core import api, envelope, paths, payload  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
REFERENCE = find(dict(os.environ))  # read before _clean_environment drops HERMES_* variables
REFERENCE_BUN = find_bun(dict(os.environ))  # runs the reference's desktop daemon (bench/ref_desktop.py)
DEFAULT_PROBE_TIMEOUT = "4"  # the agent's default; set explicitly because AgentEnv defaults to 1.5


# -- results -------------------------------------------------------------------------------------
@dataclass
class Row:
    metric: str
    value: str
    target: str = "-"
    verdict: str = "info"  # PASS, FAIL, info, skip, ERROR


ROWS: list[Row] = []


def add(metric: str, value: str, target: str = "-", ok: bool | None = None) -> None:
    verdict = "info" if ok is None else ("PASS" if ok else "FAIL")
    ROWS.append(Row(metric, value, target, verdict))


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def print_table(rows: list[Row]) -> None:
    head = Row("metric", "value", "target", "pass/fail")
    cols = [[r.metric, r.value, r.target, r.verdict] for r in [head, *rows]]
    widths = [max(len(c[i]) for c in cols) for i in range(4)]
    line = "-+-".join("-" * w for w in widths)
    out = []
    for n, c in enumerate(cols):
        out.append(" | ".join(c[i].ljust(widths[i]) for i in range(4)).rstrip())
        if n == 0:
            out.append(line)
    print("\n".join(out), flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def pctl(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[k]


# -- process facts --------------------------------------------------------------------------------
def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_ticks(pid: int) -> int:
    """utime + stime of the whole process (every thread, live or exited) in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), counted after "(comm)"


def cpu_ns(pid: int) -> dict[int, int] | None:
    """On-CPU nanoseconds per live thread (/proc/PID/task/*/schedstat); finer than ticks."""
    per_thread = {}
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            per_thread[int(task.name)] = int((task / "schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return per_thread


def schedstat_delta(before: dict[int, int], after: dict[int, int]) -> tuple[int, int]:
    """(on-CPU ns between the two samples of the threads alive at the end, threads that exited meanwhile).

    A thread that exited in between (a worker thread going idle) takes its count with it, so it is
    left out and counted instead of making the sum go negative.
    """
    return sum(ns - before.get(tid, 0) for tid, ns in after.items()), len(before.keys() - after.keys())


# -- agent watch stream in a thread ----------------------------------------------------------------
class Watcher:
    """Follows one agent's ``watch`` stream; every state is kept with its arrival time."""

    def __init__(self, env: AgentEnv):
        self.client = env.client()
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="watch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        def on_notify(method: str, params: dict[str, Any]) -> None:
            if method == api.STATE:
                with self.cond:
                    self.events.append((time.monotonic(), params))
                    self.cond.notify_all()

        try:
            self.client.call(api.WATCH, {}, timeout=None, on_notify=on_notify)
        except Exception:  # the socket was shut down by close(), or the agent went away
            pass

    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], start: int = 0,
                 timeout: float = 30) -> tuple[int, float, dict[str, Any]]:
        """The first state at index >= start that satisfies pred: (index, arrival time, state)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            i = start
            while True:
                while i < len(self.events):
                    t, state = self.events[i]
                    if pred(state):
                        return i, t, state
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(s["state"], (s.get("route") or {}).get("role")) for _, s in self.events[start:]]
                    raise TimeoutError(f"no matching state within {timeout:g}s; saw {seen}")
                self.cond.wait(left)

    def close(self) -> None:
        try:
            self.client._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.client.close()
        self.thread.join(2)


def connected(role: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def pred(s: dict[str, Any]) -> bool:
        return s["state"] == api.CONNECTED and (role is None or (s.get("route") or {}).get("role") == role)
    return pred


def not_connected(s: dict[str, Any]) -> bool:
    return s["state"] != api.CONNECTED


def close_proxy(proxy: Proxy) -> None:
    """Proxy.close, safe to call twice."""
    if proxy.proc.stdout is not None and not proxy.proc.stdout.closed:
        proxy.close()


def agent_pid(env: AgentEnv) -> int:
    with env.client() as c:
        return int(c.hello["pid"])


# CLI rows: target ratio to `python -c pass` (None: printed for information).
CLI_TARGETS: dict[str, float | None] = {
    "status": 2.6, "route": 1.5, "status --json": None, "route --json": None,
    "status, agent down": None, "devices": None, "minimal client": None,
}

# The floor for a status client in this stack (issue 12): socket, struct, json and msgpack, hello,
# status, one line per relay. `status` should stay within ~10 % of it.
MINIMAL_STATUS_CLIENT = """\
import json, socket, struct, sys
import msgpack
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
def call(msgid, method, params):
    body = msgpack.packb([0, msgid, method, params])
    s.sendall(struct.pack(">I", len(body)) + body)
    head = b""
    while len(head) < 4:
        head += s.recv(4 - len(head))
    (n,) = struct.unpack(">I", head)
    body = b""
    while len(body) < n:
        body += s.recv(n - len(body))
    return msgpack.unpackb(body)[3]
call(1, "hello", {"client_version": "0", "api_version": 1})
for relay in call(2, "status", {})["relays"]:
    print(relay["url"], relay["state"], json.dumps(relay.get("route")))
"""


# Desktop rows: a tool call's round trip (HTTP to the relay, WebSocket to the agent, the tool, back)
# as a ratio to a plain loopback HTTP request to the same relay's /health in the same interleaved
# rounds; the absolute target of issue 9 (median < 15 ms on loopback) is checked beside it.
# read_file is the relay and agent hop alone, compared with GET /health; terminal adds spawning a
# shell, so its baseline is GET /health plus the bench itself running the same shell command.
DESKTOP_RATIO_TARGETS = {"desktop_read_file 1 KB": 5.0, "desktop_terminal echo": 4.0}
DESKTOP_ABS_TARGET = 0.015
DESKTOP_IN_FLIGHT = 10
REF_READ = "reference: desktop_read_file 1 KB"  # the reference daemon through the reference relay
REF_READ_TARGET = 1.0  # issue 22: ours / reference daemon, p50 of the 1 KB read and of the 3 MB read
BIG_READ = 3 << 20  # bytes of the big desktop result row (the reference relay's 4 MiB frame fits it)
BIG_FRAMES = 20  # 3 MB frames sent to the relay for its CPU per big message
IDLE_CPU_WINDOW = 5.0  # seconds of relay CPU read with the idle connections held
PING_WINDOW_SLACK = 2.0  # seconds: side by side, the window begins within PING_WINDOW - this of the first connection
PING_WINDOW = 31.0  # seconds: one heartbeat period (30 s, ours and the reference's) and a little
LOCAL_ECHO = "sh -c 'echo bench'"


def http_call(port: int, method: str, path: str, body: dict[str, Any] | None = None,
              timeout: float = 30) -> tuple[int, dict[str, Any]]:
    """One request on a fresh loopback connection, as a relay-host program makes it: (status, JSON)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


# -- the bench -----------------------------------------------------------------------------------
class Bench:
    def __init__(self, quick: bool, stack: ExitStack):
        self.quick = quick
        self.stack = stack
        self.root = Path(tempfile.mkdtemp(prefix="hr-bench-"))
        stack.callback(shutil.rmtree, self.root, True)
        _bytecode_cache(self.root)
        self.n_cli = 10 if quick else 30
        self.idle_seconds = 10.0 if quick else 60.0
        self.failover_cycles = 3 if quick else 5
        self.restart_agents = 3 if quick else 5
        self.n_handshakes = 300 if quick else 1000
        self.n_desktop = 100 if quick else 300
        self.desktop_tools = 0  # tools the agent advertises to the relay (the idle rows say so)
        self.idle_levels = [3000, 10000] if quick else [1000, 3000, 10000]  # idle connections held by the relay rows
        self.n_probe = 1000  # sequential handshakes (and GET /health) per relay latency probe, --quick too: a
        # p99 of 300 is the third-slowest round, and two like relays probed in turn differed by 1.3-1.8 x
        self.relay: RelayProc | None = None
        self.user: AgentEnv | None = None  # paired by code, idle-connected to self.relay

    # -- lifecycle helpers -------------------------------------------------------------------------
    def on_exit(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the way out; a failing cleanup (already closed) never hides the others."""

        def safe() -> None:
            try:
                fn()
            except Exception as exc:
                log(f"cleanup {getattr(fn, '__qualname__', fn)}: {exc!r}")

        self.stack.callback(safe)

    def start_relay(self, name: str, *, port: int = 0) -> RelayProc:
        relay = RelayProc(self.root / name, port=port)
        self.on_exit(relay.stop)  # registered first: RelayProc.stop is safe before/after start
        return relay.start()

    def agent_env(self, name: str, **extra: str) -> AgentEnv:
        env = AgentEnv(self.root / name, HERMES_RELAY_PROBE_TIMEOUT=DEFAULT_PROBE_TIMEOUT,
                       HERMES_RELAY_NETWATCH="1", **extra)

        def stop() -> None:
            env.stop()
            shutil.rmtree(env.run, ignore_errors=True)

        self.on_exit(stop)
        return env

    def proxy(self, target_port: int) -> Proxy:
        proxy = Proxy(target_port)
        self.on_exit(lambda: close_proxy(proxy))
        return proxy

    def cli_cmd(self) -> list[str]:
        script = Path(PY).parent / "hermes-relay"
        return [str(script)] if script.exists() else [PY, "-m", "hermes_relay.cli"]

    # -- 1. pair by code ---------------------------------------------------------------------------
    def pair_by_code(self) -> None:
        log("pair by code (agent up, relay up)")
        self.relay = self.start_relay("relay-a", port=free_port())
        self.user = self.agent_env("user")
        with self.user.client():  # autostart the agent first: pairing time excludes agent start-up
            pass
        times = []
        for _ in range(1 if self.quick else 3):
            code = self.relay.mint_code()  # hermes-pair on the relay host, not part of the measurement
            with self.user.client() as c:
                t0 = time.perf_counter()
                result = c.call(api.PAIR_START, {"url": self.relay.url, "code": code}, timeout=30)
                times.append(time.perf_counter() - t0)
            assert result["url"] == self.relay.url, result
            watcher = Watcher(self.user)
            try:
                watcher.wait_for(connected(), timeout=20)
            finally:
                watcher.close()
        value = ms(statistics.median(times))
        if len(times) > 1:
            value += f" (median of {len(times)}; min {ms(min(times))}, max {ms(max(times))})"
        add("pair.start by code (IPC call wall time)", value)

    # -- 2. CLI latency ----------------------------------------------------------------------------
    def _interleaved(self, commands: dict[str, tuple[list[str], dict[str, str], int]],
                     n: int) -> dict[str, list[float]]:
        """Whole-process wall times, N rounds of one run of each command in turn.

        ``commands`` maps a row name to (argv, env, expected exit status). Interleaving puts every
        command under the same background load, so ratios to the interpreter's own start-up
        (``python -c pass``, measured in the same rounds) hold on a busy machine.
        """
        for _ in range(2):  # warm the page cache and the bytecode cache
            for argv, env, _code in commands.values():
                subprocess.run(argv, env=env, capture_output=True, timeout=30)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(n):
            for name, (argv, env, code) in commands.items():
                t0 = time.perf_counter()
                out = subprocess.run(argv, env=env, capture_output=True, timeout=30)
                times[name].append(time.perf_counter() - t0)
                if out.returncode != code:
                    raise RuntimeError(f"{' '.join(argv)} exited {out.returncode}: {out.stderr.decode()[-300:]}")
        return times

    def cli_latency(self) -> None:
        assert self.user is not None and self.relay is not None
        n = self.n_cli
        venv = wheel_venv(self.root / "wheel")
        py, cli = str(venv / "bin" / "python"), str(venv / "bin" / "hermes-relay")
        up = self.user.env
        down = {**up, "HERMES_RELAY_RUNTIME_DIR": str(self.root / "no-agent-run")}
        log(f"CLI latency (wheel install in {venv}): {n} interleaved rounds")
        load0 = os.getloadavg()[0]
        floor = self.root / "minimal_status_client.py"
        floor.write_text(MINIMAL_STATUS_CLIENT)
        times = self._interleaved({
            "python -c pass": ([py, "-c", "pass"], up, 0),
            "minimal client": ([py, str(floor), paths.socket_path(up)], up, 0),
            "status": ([cli, "status"], up, 0),
            "route": ([cli, "route"], up, 0),
            "status --json": ([cli, "status", "--json"], up, 0),
            "route --json": ([cli, "route", "--json"], up, 0),
            "status, agent down": ([cli, "status"], down, 0),
            "devices": ([cli, "devices", "--no-autostart"], up, 0),
        }, n)
        base = statistics.median(times["python -c pass"])
        add(f"CLI baseline `python -c pass` (N={n}) median", ms(base))
        for name, target in CLI_TARGETS.items():
            med = statistics.median(times[name])
            ratio = med / base
            value = f"{ratio:.2f} x ({ms(med)}, p95 {ms(pctl(times[name], 95))})"
            if target is None:
                add(f"CLI `{name}` / `python -c pass`", value)
            else:
                add(f"CLI `{name}` / `python -c pass`", value, f"<= {target} x", ratio <= target)
        ipc = []
        sock = paths.socket_path(up)
        for _ in range(n):
            t0 = time.perf_counter()
            with AgentClient.connect(sock, timeout=5) as c:
                c.call(api.STATUS, {}, timeout=5)
            ipc.append(time.perf_counter() - t0)
        add("  breakdown: IPC connect+status (in-process)", ms(statistics.median(ipc)))
        load1 = os.getloadavg()[0]
        add("  host: CPUs, 1-min load average before/after these runs",
            f"{os.cpu_count()} CPUs, load {load0:.2f} / {load1:.2f}")

    # -- 3. prompt snippet -------------------------------------------------------------------------
    def prompt_cost(self) -> None:
        assert self.user is not None
        iterations = 1000
        log(f"prompt snippet: {iterations} prompt evaluations inside one bash")
        env = {**self.user.env, "LC_ALL": "C"}
        snippet = subprocess.run(self.cli_cmd() + ["prompt", "init", "bash"], env=env, capture_output=True,
                                 text=True, timeout=30, check=True).stdout
        snippet_file = self.root / "prompt.bash"
        snippet_file.write_text(snippet)
        # Each iteration is what bash does per prompt: run PROMPT_COMMAND, then expand PS1 (${PS1@P}).
        # The same loop without the snippet (plain PS1, empty PROMPT_COMMAND) is the loop's own cost.
        script = r'''
PS1='\u@\h:\w\$ '
PROMPT_COMMAND=
n=$1
t0=$EPOCHREALTIME
for ((i = 0; i < n; i++)); do eval "$PROMPT_COMMAND"; __p=${PS1@P}; done
t1=$EPOCHREALTIME
source "$2"
t2=$EPOCHREALTIME
for ((i = 0; i < n; i++)); do eval "$PROMPT_COMMAND"; __p=${PS1@P}; done
t3=$EPOCHREALTIME
printf '%s %s %s %s\n' "$t0" "$t1" "$t2" "$t3"
printf '%s\n' "$__p"
'''
        out = subprocess.run(["bash", "--norc", "--noprofile", "-c", script, "bench", str(iterations),
                              str(snippet_file)], env=env, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"bash exited {out.returncode}: {out.stderr[-300:]}")
        stamps, prompt = out.stdout.splitlines()[:2]
        t0, t1, t2, t3 = (float(x) for x in stamps.split())
        gross = (t3 - t2) / iterations
        base = (t1 - t0) / iterations
        shown = prompt.split(" ", 1)[0]
        add("prompt snippet cost per prompt (bash, PROMPT_COMMAND + PS1)",
            f"{gross * 1e6:.1f} us (bare loop {base * 1e6:.1f} us; prompt shows {shown})", "< 2 ms", gross < 0.002)

    # -- 4. pair by a three-tier invite with a black-holed top tier ------------------------------------
    def pair_three_tiers(self) -> None:
        assert self.relay is not None
        log("pair by 3-tier invite: LAN black-holed, Tailscale via proxy, Public direct (probe timeout 4 s)")
        env = self.agent_env("tiers")
        hole = BlackHole()
        self.on_exit(hole.close)
        middle = self.proxy(self.relay.port)
        invite = payload.build(code=self.relay.mint_code(), ttl_seconds=3600, transport_hint="ws", endpoints=[
            ("lan", f"ws://127.0.0.1:{hole.port}"),
            ("tailscale", f"ws://127.0.0.1:{middle.port}"),
            ("public", self.relay.url),
        ])
        with env.client() as c:
            t0 = time.perf_counter()
            result = c.call(api.PAIR_START, {"invite": payload.invite_url(invite)}, timeout=30)
            elapsed = time.perf_counter() - t0
        picked = result["route"]["label"]
        add("pair.start by 3-tier invite, top tier black-holed", f"{ms(elapsed)} (picked {picked})", "< 4.5 s",
            elapsed < 4.5 and result["route"]["role"] == "tailscale")
        env.stop()
        close_proxy(middle)
        hole.close()

    # -- 5. failover -----------------------------------------------------------------------------
    def failover(self) -> None:
        assert self.relay is not None
        cycles = self.failover_cycles
        log(f"failover LAN (proxy) -> Public (direct): {cycles} cycles")
        # Backoff stays at its defaults (they decide the failover time). The upgrade settings only
        # bring the link back to LAN between cycles; they play no part while failing over.
        env = self.agent_env("failover", HERMES_RELAY_UPGRADE_INTERVAL="0.5", HERMES_RELAY_UPGRADE_HYSTERESIS="0.3")
        lan = self.proxy(self.relay.port)
        invite = payload.build(code=self.relay.mint_code(), ttl_seconds=3600, transport_hint="ws",
                               endpoints=[("lan", f"ws://127.0.0.1:{lan.port}"), ("public", self.relay.url)])
        with env.client() as c:
            c.call(api.PAIR_START, {"invite": payload.invite_url(invite)}, timeout=30)
        watcher = Watcher(env)
        times = []
        try:
            watcher.wait_for(connected("lan"), timeout=20)
            for _ in range(cycles):
                mark = watcher.mark()
                lan.command("down")
                acked = time.monotonic()
                _, t, _ = watcher.wait_for(connected("public"), start=mark, timeout=40)
                times.append(max(0.0, t - acked))
                mark = watcher.mark()
                lan.command("up")
                watcher.wait_for(connected("lan"), start=mark, timeout=40)
        finally:
            watcher.close()
        med, worst = statistics.median(times), max(times)
        add(f"failover LAN->Public after proxy down ({cycles} cycles) median", ms(med))
        add(f"failover LAN->Public after proxy down ({cycles} cycles) max", ms(worst), "< 1.5 s", worst < 1.5)
        env.stop()
        close_proxy(lan)

    # -- 4b. the shell (issue 20) --------------------------------------------------------------------
    def shell(self) -> None:
        ShellRows(self, add, log).run()

    # -- 5b. desktop tool calls --------------------------------------------------------------------
    def desktop_calls(self) -> None:
        assert self.relay is not None and self.user is not None
        relay, n = self.relay, self.n_desktop
        log(f"desktop tool calls through the relay's HTTP face: {n} interleaved rounds, then "
            f"{n} calls with {DESKTOP_IN_FLIGHT} in flight")
        # The file lives in the bench's folder, outside the default root (the home directory): make it a root.
        subprocess.run(self.cli_cmd() + ["access", relay.url, "trusted", "--root", str(self.root)], env=self.user.env,
                       capture_output=True, timeout=30, check=True)
        ref = self._reference_desktop()
        one_kb = self.root / "one-kb.txt"
        one_kb.write_text("0123456789abcde\n" * 64)
        read_1kb = ("POST", "/desktop/desktop_read_file", {"path": str(one_kb)},
                    lambda b: b.get("ok") is True and len(b["result"]) == 1024)
        calls: dict[str, tuple[int, str, str, dict[str, Any] | None, Callable[[dict[str, Any]], bool]]] = {
            "GET /health": (relay.port, "GET", "/health", None, lambda b: True),
            "desktop_read_file 1 KB": (relay.port, *read_1kb),
            "desktop_terminal echo": (relay.port, "POST", "/desktop/desktop_terminal", {"command": "echo bench"},
                                      lambda b: b.get("ok") is True and b["result"]["stdout"] == "bench\n"),
        }
        if ref is not None:
            calls[REF_READ] = (ref.port, *read_1kb)

        def once(name: str) -> float:
            if name == LOCAL_ECHO:
                t0 = time.perf_counter()
                subprocess.run(["/bin/sh", "-c", "echo bench"], capture_output=True, timeout=30, check=True)
                return time.perf_counter() - t0
            port, method, path, body, good = calls[name]
            t0 = time.perf_counter()
            status, answer = http_call(port, method, path, body)
            elapsed = time.perf_counter() - t0
            if status != 200 or not good(answer):
                raise RuntimeError(f"{name}: HTTP {status} {str(answer)[:200]}")
            return elapsed

        deadline = time.monotonic() + 20  # the agent re-reads the policy file within 2 s
        while True:
            try:
                once("desktop_terminal echo")
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        names = [*calls, LOCAL_ECHO]
        for _ in range(10):  # warm up both sides
            for name in names:
                once(name)
        times: dict[str, list[float]] = {name: [] for name in names}
        order = random.Random(22)  # a shuffled order each round: no call always follows the same one (a process
        for _ in range(n):  # spawn just before one side's call, a call to the same relay before the other's)
            order.shuffle(names)
            for name in names:
                times[name].append(once(name))
        health, spawn = statistics.median(times["GET /health"]), statistics.median(times[LOCAL_ECHO])
        add(f"desktop baseline: loopback HTTP GET /health on the relay (N={n}) median",
            f"{ms(health)} (p99 {ms(pctl(times['GET /health'], 99))})")
        add(f"desktop baseline: the bench runs `{LOCAL_ECHO}` itself, median", ms(spawn))
        baselines = {"desktop_read_file 1 KB": ("GET /health", health),
                     "desktop_terminal echo": ("(GET /health + local sh)", health + spawn)}
        for name, target in DESKTOP_RATIO_TARGETS.items():
            med, p99 = statistics.median(times[name]), pctl(times[name], 99)
            label, base = baselines[name]
            add(f"desktop round trip {name} / {label}",
                f"{med / base:.1f} x (median {ms(med)}, p99 {ms(p99)})", f"<= {target:g} x", med / base <= target)
            add(f"desktop round trip {name} median (absolute, loopback)", ms(med),
                f"< {DESKTOP_ABS_TARGET * 1000:g} ms", med < DESKTOP_ABS_TARGET)
        self._reference_read_rows(times)
        if REF_READ in times and ref is not None:  # the two reads alone, back to back: each process warm
            pair = ["desktop_read_file 1 KB", REF_READ]
            alone: dict[str, list[float]] = {name: [] for name in pair}
            pids = (relay.proc.pid, agent_pid(self.user), ref.relay.proc.pid, ref.daemon_pid)
            before = [cpu_ns(pid) for pid in pids]
            for _ in range(n):
                order.shuffle(pair)
                for name in pair:
                    alone[name].append(once(name))
            after = [cpu_ns(pid) for pid in pids]
            ours, theirs = statistics.median(alone["desktop_read_file 1 KB"]), statistics.median(alone[REF_READ])
            add(f"ours / reference daemon: desktop_read_file 1 KB p50, the two reads alone back to back (N={n})",
                f"{ours / theirs:.2f} x ({ms(ours)} / {ms(theirs)})", f"<= {REF_READ_TARGET:g} x",
                ours / theirs <= REF_READ_TARGET)
            per_call = [schedstat_delta(b, a)[0] / n / 1000 for b, a in zip(before, after, strict=True)
                        if b is not None and a is not None]
            if len(per_call) == len(pids):  # each process serves one side only: its CPU over the rounds, per call
                relay_us, agent_us, ref_relay_us, daemon_us = per_call
                add("  CPU per 1 KB read in those rounds: our relay / reference relay, our agent / reference daemon",
                    f"{relay_us / ref_relay_us:.2f} x ({relay_us:.0f} / {ref_relay_us:.0f} us), "
                    f"{agent_us / daemon_us:.2f} x ({agent_us:.0f} / {daemon_us:.0f} us)")
        try:
            self._big_read(relay, ref)
        finally:
            if ref is not None:
                ref.stop()  # before the calls in flight and the idle agent's rows
        rates = {}
        for name in ("GET /health", "desktop_read_file 1 KB"):
            rate, wall, relay_cpu, agent_cpu, client_cpu = self._in_flight(name, once, n)
            rates[name] = rate
            label = "desktop_read_file 1 KB calls/s" if name != "GET /health" else "desktop baseline: GET /health/s"
            share = f"{rate / rates['GET /health']:.2f} x GET /health/s; " if name != "GET /health" else ""
            add(f"{label} ({n}, {DESKTOP_IN_FLIGHT} in flight)",
                f"{rate:.0f}/s ({share}{wall:.2f} s; relay CPU {relay_cpu:.0f} %, agent CPU {agent_cpu:.0f} %, "
                f"bench client CPU {client_cpu:.0f} %)")
        status, health = http_call(relay.port, "GET", "/desktop/health")
        self.desktop_tools = len(health.get("advertised_tools") or [])
        subprocess.run(self.cli_cmd() + ["access", relay.url, "ask_every_time"], env=self.user.env,
                       capture_output=True, timeout=30, check=True)

    def _reference_desktop(self) -> ReferenceDesktop | None:
        """The reference relay with the reference's desktop daemon paired to it, or None (and why)."""
        if REFERENCE is None or REFERENCE_BUN is None:
            missing = "the reference relay" if REFERENCE is None else "bun (for the reference's desktop daemon)"
            log(f"reference desktop daemon: not available (no {missing})")
            return None
        log(f"reference desktop daemon ({REFERENCE.checkout / 'desktop'}, {REFERENCE_BUN}) paired with the "
            "reference relay: interleaved with our rows")
        ref = ReferenceDesktop(REFERENCE, REFERENCE_BUN, self.root / "reference-desktop", free_port())
        self.on_exit(ref.stop)
        try:
            return ref.start()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:  # our rows still run
            log(f"reference desktop daemon: not available ({exc})")
            ref.stop()
            return None

    def _reference_read_rows(self, times: dict[str, list[float]]) -> None:
        metric = "ours / reference daemon: desktop_read_file 1 KB p50 (each through its own relay)"
        if REF_READ not in times:
            ROWS.append(Row(metric, "reference not available", "-", "skip"))
            return
        ours, theirs = statistics.median(times["desktop_read_file 1 KB"]), statistics.median(times[REF_READ])
        add(f"reference daemon: desktop_read_file 1 KB through the reference relay (N={len(times[REF_READ])}) median",
            f"{ms(theirs)} (p99 {ms(pctl(times[REF_READ], 99))})")
        add(metric, f"{ours / theirs:.2f} x ({ms(ours)} / {ms(theirs)})", f"<= {REF_READ_TARGET:g} x",
            ours / theirs <= REF_READ_TARGET)

    def _big_read(self, relay: RelayProc, ref: ReferenceDesktop | None) -> None:
        """A 3 MB desktop_read_file, one call at a time (ours and the reference's in turn): latency, CPU per call."""
        assert self.user is not None
        big = self.root / "three-mb.txt"
        big.write_bytes(b"0123456789abcde\n" * (BIG_READ // 16))
        n = 5 if self.quick else 20
        sides = {"ours": (relay.port, relay.proc.pid, agent_pid(self.user))}
        if ref is not None:
            assert ref.relay.proc is not None
            sides["reference"] = (ref.port, ref.relay.proc.pid, ref.daemon_pid)
        times: dict[str, list[float]] = {side: [] for side in sides}
        cpu: dict[str, list[int]] = {side: [0, 0] for side in sides}
        for _ in range(n + 2):
            for side, (port, relay_pid, agent) in sides.items():
                relay0, agent0 = cpu_ticks(relay_pid), cpu_ticks(agent)
                t0 = time.perf_counter()
                status, answer = http_call(port, "POST", "/desktop/desktop_read_file",
                                           {"path": str(big), "max_bytes": BIG_READ + 1})
                times[side].append(time.perf_counter() - t0)
                cpu[side][0] += cpu_ticks(relay_pid) - relay0
                cpu[side][1] += cpu_ticks(agent) - agent0
                if status != 200 or answer.get("ok") is not True or len(answer["result"]) != BIG_READ:
                    raise RuntimeError(f"3 MB read ({side}): HTTP {status} {str(answer)[:200]}")
        for side, label in (("ours", "desktop_read_file 3 MB round trip"),
                            ("reference", "reference daemon: desktop_read_file 3 MB through the reference relay")):
            if side in times:
                relay_ms, agent_ms = (t / CLK_TCK / (n + 2) * 1000 for t in cpu[side])
                add(f"{label} (N={n + 2}) median",
                    f"{ms(statistics.median(times[side]))} (p99 {ms(pctl(times[side], 99))}; relay CPU "
                    f"{relay_ms:.0f} ms, {'agent' if side == 'ours' else 'daemon'} CPU {agent_ms:.0f} ms per call)")
        metric = "ours / reference daemon: desktop_read_file 3 MB latency p50 (each through its own relay)"
        if "reference" not in times:
            ROWS.append(Row(metric, "reference not available", "-", "skip"))
            return
        ours, theirs = statistics.median(times["ours"]), statistics.median(times["reference"])
        add(metric, f"{ours / theirs:.2f} x ({ms(ours)} / {ms(theirs)})", f"<= {REF_READ_TARGET:g} x",
            ours / theirs <= REF_READ_TARGET)

    def _in_flight(self, name: str, once: Callable[[str], float], n: int) -> tuple[float, float, float, float, float]:
        """``n`` calls, ``DESKTOP_IN_FLIGHT`` at a time: (calls/s, wall, relay, agent and bench CPU %)."""
        assert self.relay is not None and self.user is not None
        agent = agent_pid(self.user)
        left = list(range(n))
        lock = threading.Lock()
        errors: list[BaseException] = []

        def worker() -> None:
            while True:
                with lock:
                    if not left or errors:
                        return
                    left.pop()
                try:
                    once(name)
                except BaseException as exc:
                    with lock:
                        errors.append(exc)
                    return

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(DESKTOP_IN_FLIGHT)]
        relay0, agent0, self0 = cpu_ticks(self.relay.proc.pid), cpu_ticks(agent), time.process_time()
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        wall = time.perf_counter() - t0
        if errors:
            raise errors[0]
        return (n / wall, wall, (cpu_ticks(self.relay.proc.pid) - relay0) / CLK_TCK / wall * 100,
                (cpu_ticks(agent) - agent0) / CLK_TCK / wall * 100, (time.process_time() - self0) / wall * 100)

    # -- 5c. the workspace command sandbox --------------------------------------------------------
    def sandbox_cost(self) -> None:
        """desktop_terminal `true` through the tool function in this process, trusted and workspace
        (Landlock, seccomp, no capabilities) interleaved: the sandbox's extra cost per call."""
        import trio

        from hermes_relay.core.confine import landlock_abi

        n = self.n_desktop
        abi = landlock_abi()
        if abi < 1:
            add("desktop_terminal workspace / trusted", "skip: this kernel has no Landlock", "report", None)
            return
        log(f"desktop_terminal `true`, trusted and workspace (Landlock ABI {abi}): {n} interleaved rounds")
        times = trio.run(_sandbox_rounds, self.root / "workspace", n)
        trusted, workspace = statistics.median(times["trusted"]), statistics.median(times["workspace"])
        add(f"desktop_terminal `true` in-process, trusted (N={n}) median",
            f"{ms(trusted)} (p99 {ms(pctl(times['trusted'], 99))})")
        add(f"desktop_terminal workspace / trusted (Landlock ABI {abi}, same rounds)",
            f"{workspace / trusted:.2f} x (median {ms(workspace)}, +{ms(workspace - trusted)} per call, "
            f"p99 {ms(pctl(times['workspace'], 99))})", "report")

    # -- 6. idle agent -----------------------------------------------------------------------------
    def idle_agent(self) -> None:
        assert self.user is not None
        seconds = self.idle_seconds
        pid = agent_pid(self.user)
        log(f"agent RSS and idle CPU over {seconds:g} s (pid {pid}, one relay, netwatch on)")
        time.sleep(1.0)  # let the last IPC connection wind down
        rss0, ticks0, ns0, t0 = rss_kb(pid), cpu_ticks(pid), cpu_ns(pid), time.monotonic()
        time.sleep(seconds)
        rss1, ticks1, ns1, t1 = rss_kb(pid), cpu_ticks(pid), cpu_ns(pid), time.monotonic()
        wall = t1 - t0
        rss = max(rss0, rss1) / 1024
        desktop = f", desktop channel on: {self.desktop_tools} tools advertised" if self.desktop_tools else ""
        add(f"agent RSS (VmRSS, idle, one relay{desktop})", f"{rss:.1f} MB", "< 40 MB", rss < 40)
        pct = (ticks1 - ticks0) / CLK_TCK / wall * 100
        resolution = 1 / CLK_TCK / wall * 100
        value = f"{pct:.3f} % ({ticks1 - ticks0} ticks in {wall:.0f} s; 1 tick = {resolution:.3f} %"
        if ns0 is not None and ns1 is not None:
            spent, gone = schedstat_delta(ns0, ns1)
            value += f"; schedstat {spent / 1e9 / wall * 100:.4f} %"
            if gone:
                value += f" without {gone} exited thread{'s' if gone > 1 else ''}"
        add("agent idle CPU (utime+stime)", value + ")", "< 0.1 %", pct < 0.1)

    # -- 7. reconnect after a relay restart ---------------------------------------------------------
    def reconnect(self) -> None:
        assert self.relay is not None and self.user is not None
        k = self.restart_agents
        log(f"reconnect after a relay restart (same port and state dir): {k} agents, default backoff")
        envs = [self.user]
        for i in range(1, k):
            env = self.agent_env(f"restart{i}")
            env.pair(self.relay)
            envs.append(env)
        watchers = []
        try:
            for env in envs:
                watchers.append(Watcher(env))
            for w in watchers:
                w.wait_for(connected(), timeout=20)
            marks = [w.mark() for w in watchers]
            stopping = time.monotonic()
            self.relay.stop()
            stopped = time.monotonic()
            downs = [w.wait_for(not_connected, start=m, timeout=20)[0] for w, m in zip(watchers, marks, strict=True)]
            starting = time.monotonic()
            self.relay.start()
            listening = time.monotonic()
            times = []
            for w, d in zip(watchers, downs, strict=True):
                _, t, _ = w.wait_for(connected(), start=d, timeout=60)
                times.append(max(0.0, t - listening))
        finally:
            for w in watchers:
                w.close()
        add(f"reconnect after relay restart ({k} agents) median",
            f"{ms(statistics.median(times))} (relay stop took {ms(stopped - stopping)}, start {ms(listening - starting)})")
        add(f"reconnect after relay restart ({k} agents) max", ms(max(times)))
        for env in envs[1:]:
            env.stop()

    # -- 8. relay handshakes and idle connections ------------------------------------------------------
    def relay_capacity(self) -> None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        levels = [n for n in self.idle_levels if n <= soft - 200]
        ping_level = 3000 if 3000 in levels else (levels[-1] if levels else 0)
        plan = RelayPlan(self.n_handshakes, levels, self.n_probe, ping_level, PING_WINDOW)
        relay = self.start_relay("relay-b")  # inherits this process's (raised) RLIMIT_NOFILE
        log(f"relay: {self.n_handshakes} authenticated WebSocket handshakes, then latency probes with "
            f"0 / {' / '.join(map(str, levels)) or '-'} idle connections held (and a {PING_WINDOW:g} s window "
            f"of heartbeats at {ping_level})")
        import trio

        # A second relay of ours holds nothing: each probe's handshakes alternate between the two, so the
        # p99 with idle connections is compared with one measured at the same moments (the machine's own
        # drift over the run moves a p99 of a few hundred handshakes by up to ~1.5 x: the "baseline again" row).
        quiet = self.start_relay("relay-quiet")
        ours = trio.run(_relay_capacity, relay.url, relay.port, relay.mint_code(), relay.proc.pid, plan, True,
                        (quiet.url, quiet.mint_code()))
        relay.stop()
        quiet.stop()
        theirs: dict[str, Any] | None = None
        ref_levels = [n for n in levels if n <= 3000]
        if REFERENCE is None:
            log("reference relay: not available (no /tmp/hermes-ref/.venv, no HERMES_RELAY_REFERENCE)")
        elif ref_levels:
            log(f"reference relay ({REFERENCE.checkout}): the same rows at 0 / {' / '.join(map(str, ref_levels))}")
            ref = ReferenceRelay(REFERENCE, self.root / "reference-home", free_port())
            self.on_exit(ref.stop)
            ref.start()
            assert ref.proc is not None
            theirs = trio.run(_relay_capacity, ref.url, ref.port, ref.mint_code(), ref.proc.pid,
                              RelayPlan(self.n_handshakes, ref_levels, self.n_probe, ping_level, PING_WINDOW), False)
            ref.stop()
        interleaved = self._handshakes_interleaved() if REFERENCE is not None else None
        together = self._idle_side_by_side(ping_level) if REFERENCE is not None and ping_level else None
        self._relay_rows(ours, plan)
        self._reference_rows(ours, theirs, ref_levels, ping_level, interleaved, together)
        if not levels:
            ROWS.append(Row("relay idle connection rows", f"skipped: RLIMIT_NOFILE soft limit {soft} too low", "-",
                            "skip"))

    def _both_relays(self, name: str, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(sides, *args)`` under trio with a fresh relay of ours and a fresh reference relay (``sides``:
        name -> (url, pairing code, relay pid)); None, said in the log, when it could not be measured."""
        import trio

        assert REFERENCE is not None
        ours = self.start_relay(f"relay-{name}")
        ref = ReferenceRelay(REFERENCE, self.root / f"reference-{name}-home", free_port())
        self.on_exit(ref.stop)
        try:
            ref.start()
            assert ours.proc is not None and ref.proc is not None
            sides = {"ours": (ours.url, ours.mint_code(), ours.proc.pid),
                     "reference": (ref.url, ref.mint_code(), ref.proc.pid)}
            return trio.run(fn, sides, *args)
        except (OSError, RuntimeError) as exc:
            log(f"{what}: not measured ({exc})")
            return None
        finally:
            ours.stop()
            ref.stop()

    def _handshakes_interleaved(self) -> dict[str, float] | None:
        """Our relay's and the reference's CPU over the same handshakes, in alternating blocks (fresh relays)."""
        blocks, per_block = (3, 100) if self.quick else (10, 200)
        log(f"relay CPU per handshake: ours and the reference relay in turns, {blocks} blocks of {per_block} each")
        spent = self._both_relays("hs", "relay CPU per handshake in turns", _handshake_blocks, blocks, per_block)
        if spent is None:
            return None
        return {name: cpu / (blocks * per_block) * 1000 for name, cpu in spent.items()}

    def _idle_side_by_side(self, n: int) -> dict[str, float] | None:
        """Our relay's and the reference's CPU over one heartbeat window, each holding ``n`` idle connections
        at the same time (fresh relays): the same moments for both, as the handshakes in turns."""
        log(f"relay idle CPU: ours and the reference relay side by side, {n} held by each, one {PING_WINDOW:g} s window")
        result: dict[str, float] | None = self._both_relays("idle", "relay idle CPU side by side", _idle_together, n,
                                                            PING_WINDOW)
        return result

    def _relay_rows(self, result: dict[str, Any], plan: RelayPlan) -> None:
        rate, wall, relay_cpu, client_cpu, cpu_s = result["handshakes"]
        add(f"relay auth handshakes/s ({plan.n_handshakes}, 10 concurrent)",
            f"{rate:.0f}/s ({wall:.2f} s; relay CPU {relay_cpu:.0f} %, bench client CPU {client_cpu:.0f} %)")
        add("relay CPU per 1000 auth handshakes", f"{cpu_s / plan.n_handshakes * 1000:.2f} s")
        if result["busy"]:
            add("relay handshakes turned away as busy (503) and retried", str(result["busy"]))
        add(f"relay CPU per 3 MB message received ({BIG_FRAMES} system pings, answered)",
            f"{result['big_frame_ms']:.0f} ms")
        if 0 in result["gc"]:
            gcs = result["gc"][0]
            add("relay worst GC pause before any idle connection (the handshake, 3 MB and baseline rows)",
                f"{gcs['worst_pause_ms']:.1f} ms (on CPU: {gcs['worst_pause_cpu_ms']:.1f} ms)")
        base_hs, base_health = result["probe"][0]
        add(f"relay baseline with 0 idle connections: handshake / GET /health p99 (N={plan.n_probe})",
            f"{ms(pctl(base_hs, 99))} / {ms(pctl(base_health, 99))} (worst {ms(max(base_hs))} / {ms(max(base_health))})")
        if "probe_after" in result:
            again = pctl(result["probe_after"][0], 99)
            add("relay baseline again, after the idle connections closed: handshake p99 / the first",
                f"{again / pctl(base_hs, 99):.2f} x ({ms(again)}; the machine's own noise on this figure)")
        quiet = result.get("quiet", {})
        if 0 in quiet:
            ratio = pctl(base_hs, 99) / pctl(quiet[0], 99)
            add("relay handshake p99 with 0 idle connections / a second relay with none, in turn",
                f"{ratio:.2f} x ({ms(pctl(base_hs, 99))} / {ms(pctl(quiet[0], 99))}; two like relays: the method's own spread)")
        for n in plan.levels:
            hs, health = result["probe"][n]
            before, after, idle_cpu, window, ticked = result["idle"][n]
            ratio = pctl(hs, 99) / pctl(base_hs, 99)
            if n in quiet:  # the target: against the quiet relay's p99 over the same moments
                add(f"relay handshake p99 with {n} idle connections / with 0 before them", f"{ratio:.2f} x ({ms(pctl(hs, 99))})")
                beside = pctl(quiet[n], 99)
                ratio = pctl(hs, 99) / beside
                add(f"relay handshake p99 with {n} idle connections / a relay with none, in turn",
                    f"{ratio:.2f} x ({ms(pctl(hs, 99))} / {ms(beside)})", "<= 1.2 x", ratio <= 1.2)
            else:
                add(f"relay handshake p99 with {n} idle connections / with 0", f"{ratio:.2f} x ({ms(pctl(hs, 99))})",
                    "<= 1.2 x", ratio <= 1.2)
            add(f"relay worst stall with {n} idle connections (slowest GET /health of {plan.n_probe}; GC pauses "
                "show here)", f"{ms(max(health))} (0 idle: {ms(max(base_health))})")
            opening = result["opening"][n]
            add(f"relay worst stall while {n} connections open (slowest of {len(opening)} GET /health; GC pauses)",
                f"{ms(max(opening))} (p50 {ms(statistics.median(opening))})")
            gcs = result["gc"].get(n)
            if gcs:
                add(f"relay worst GC pause up to {n} connections (gc.callbacks inside the relay)",
                    f"{gcs['worst_pause_ms']:.1f} ms (on CPU: {gcs['worst_pause_cpu_ms']:.1f} ms; full: "
                    f"{gcs['worst_full_pause_ms']:.1f} ms; collections "
                    f"{'/'.join(map(str, gcs['collections']))}; {gcs['freezes']} freezes, {gcs['thaws']} thaws, "
                    f"{gcs['frozen']} objects frozen)")
            add(f"relay memory per idle authenticated connection ({n})",
                f"{(after - before) / n:.1f} KB (RSS {before / 1024:.1f} -> {after / 1024:.1f} MB)")
            add(f"relay idle CPU with {n} connections held ({window:g} s)",
                f"{idle_cpu:.2f} % of a core (from ticks: {ticked:.2f} %)")
            if n in result["ping_ms"]:
                pongs = result["idle_pongs"].get(n)
                add(f"relay CPU per server ping ({n} connections, one {window:g} s heartbeat window)",
                    f"{result['ping_ms'][n]:.3f} ms" + (f" ({pongs} pongs read by the idle reader, no task woken)"
                                                        if pongs is not None else ""))
        leak = result.get("leak")
        if leak:
            n, frozen_before, frozen_after, rss_before, rss_after = leak
            per = (frozen_after - frozen_before) / n
            add(f"relay leak: {n} connections opened and closed, frozen objects and RSS after / before",
                f"{per:+.1f} frozen objects per closed connection ({frozen_before} -> {frozen_after}); RSS "
                f"{rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MB", "< 15 objects", per < 15)

    def _reference_rows(self, ours: dict[str, Any], theirs: dict[str, Any] | None, levels: list[int],
                        ping_level: int, interleaved: dict[str, float] | None = None,
                        together: dict[str, float] | None = None) -> None:
        metric = "ours / reference relay: relay CPU per 1000 handshakes (the two relays in turns, one run)"
        if interleaved is None:
            ROWS.append(Row(metric, "reference not available", "-", "skip"))
        else:
            a, b = interleaved["ours"], interleaved["reference"]
            add(metric, f"{a / b:.2f} x ({a:.3g} / {b:.3g} s)", "<= 1.0 x", a / b <= 1.0)
        metric = f"ours / reference relay: idle CPU with {ping_level} held (incl. heartbeats; side by side, one window)"
        if together is None:
            ROWS.append(Row(metric, "reference not available", "-", "skip"))
        else:
            a, b = together["ours"], together["reference"]
            per = f"CPU per ping {a / ping_level * 1000:.3f} / {b / ping_level * 1000:.3f} ms"
            add(metric, f"{a / b:.2f} x ({a / PING_WINDOW * 100:.2f} / {b / PING_WINDOW * 100:.2f} %; {per})",
                "<= 1.0 x", a / b <= 1.0)
        figures: list[tuple[str, Callable[[dict[str, Any]], float], str, float | None]] = [
            ("relay CPU per 1000 handshakes (each relay in its own run)",
             lambda r: r["handshakes"][4] / self.n_handshakes * 1000, "s", None),
        ]
        for n in levels:
            figures.append((f"RSS per idle connection ({n} held)",
                            lambda r, n=n: (r["idle"][n][1] - r["idle"][n][0]) / n, "KB", 1.0))
        if ping_level in levels:
            figures += [
                (f"idle CPU with {ping_level} held (incl. heartbeats; each relay in its own run)",
                 lambda r: r["idle"][ping_level][2], "%", None),
                ("CPU per server ping", lambda r: r["ping_ms"][ping_level], "ms", None),
                (f"handshake p99 with {ping_level} idle", lambda r: pctl(r["probe"][ping_level][0], 99) * 1000, "ms",
                 None),
            ]
        figures.append(("CPU per 3 MB message received", lambda r: r["big_frame_ms"], "ms", None))
        for name, value, unit, target in figures:
            metric = f"ours / reference relay: {name}"
            if theirs is None:
                ROWS.append(Row(metric, "reference not available", "-", "skip"))
                continue
            a, b = value(ours), value(theirs)
            text = f"{a / b:.2f} x ({a:.3g} / {b:.3g} {unit})" if b else f"- ({a:.3g} / {b:.3g} {unit})"
            if target is None or not b:
                add(metric, text)
            else:
                add(metric, text, f"<= {target} x", a / b <= target)


async def _sandbox_rounds(root: Path, n: int) -> dict[str, list[float]]:
    from hermes_relay.agent.desktop.tools.terminal import desktop_terminal
    from hermes_relay.core.confine import (
        SYSTEM_READ_ONLY,
        UNCONFINED,
        Confinement,
        persistence_paths,
        protected_paths,
    )
    from hermes_relay.core.desktop import ToolContext

    root.mkdir(exist_ok=True)
    workspace = Confinement(roots=(root,), read_only=tuple(map(Path, SYSTEM_READ_ONLY)),
                            protected=protected_paths(), write_protected=persistence_paths(),
                            kernel_commands=True, network=False)
    contexts = {name: ToolContext(home=root, cwd=root, deadline=math.inf, env=dict(os.environ), confinement=conf)
                for name, conf in (("trusted", UNCONFINED), ("workspace", workspace))}
    times: dict[str, list[float]] = {name: [] for name in contexts}
    for i in range(10 + n):  # 10 warm-up rounds
        for name, ctx in contexts.items():
            t0 = time.perf_counter()
            result = await desktop_terminal({"command": "true"}, ctx)
            elapsed = time.perf_counter() - t0
            if result.get("exit_code") != 0:
                raise RuntimeError(f"{name} `true`: {result}")
            if i >= 10:
                times[name].append(elapsed)
    return times


async def _auth(ws: Any, credentials: dict[str, Any]) -> dict[str, Any]:
    await ws.send_message(envelope.Envelope(envelope.SYSTEM, envelope.AUTH, credentials).encode())
    while True:
        reply = envelope.decode(await ws.get_message())
        if reply.channel == envelope.SYSTEM and reply.type == envelope.AUTH_OK:
            return reply.payload
        if reply.channel == envelope.SYSTEM and reply.type == envelope.AUTH_FAIL:
            raise RuntimeError(f"auth failed: {reply.payload}")


async def _health_once(port: int) -> float:
    import trio

    t0 = time.perf_counter()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        while await stream.receive_some(65536):
            pass
    return time.perf_counter() - t0


class _Lines:
    """Lines from a trio receive stream."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.buffer = b""

    async def next(self) -> str:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some(4096)
            if not chunk:
                raise RuntimeError("idle holder: exited")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode().strip()


@dataclass(frozen=True)
class RelayPlan:
    n_handshakes: int
    levels: list[int]  # idle connections held, in turn
    n_probe: int
    ping_level: int  # the level whose idle window is a whole heartbeat period
    ping_window: float


async def _health_json(port: int, path: str = "/health") -> dict[str, Any]:
    import trio

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    data = b""
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        while chunk := await stream.receive_some(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


async def _idle_together(sides: dict[str, tuple[str, str, int]], n: int, window: float) -> dict[str, float]:
    """Each relay's on-CPU seconds over one ``window`` (a heartbeat period and a little) while ``n`` idle
    connections are held on each by a process of its own (``sides``: name -> (url, pairing code, relay pid)).
    Both are opened before the window and within one heartbeat period of each other, so every held
    connection is pinged once in it."""
    import trio
    import trio_websocket

    holders: dict[str, Any] = {}
    first = time.monotonic()
    try:
        for name, (url, code, _) in sides.items():
            async with trio_websocket.open_websocket_url(url) as ws:
                token = (await _auth(ws, {"pairing_code": code, "device_name": "bench"}))["session_token"]
            holder = holders[name] = await trio.lowlevel.open_process(
                [sys.executable, str(ROOT / "bench" / "idle_holder.py"), url, token],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert holder.stdin is not None and holder.stdout is not None
            await holder.stdin.send_all(f"{n}\n".encode())
            with trio.fail_after(120):
                reply = await _Lines(holder.stdout).next()
            if reply.split()[:2] != ["reached", str(n)]:
                raise RuntimeError(f"idle holder for the {name} relay: {reply!r}")
        await trio.sleep(1.0)
        if time.monotonic() - first > window - PING_WINDOW_SLACK:  # the first ones opened would be pinged before it
            raise RuntimeError(f"opening {n} connections on each relay took {time.monotonic() - first:.0f} s")
        before = {name: cpu_ns(pid) for name, (_, _, pid) in sides.items()}
        await trio.sleep(window)
        after = {name: cpu_ns(pid) for name, (_, _, pid) in sides.items()}
        spent: dict[str, float] = {}
        for name in sides:
            b, a = before[name], after[name]
            if b is None or a is None:
                raise RuntimeError(f"no schedstat for the {name} relay")
            spent[name] = schedstat_delta(b, a)[0] / 1e9
        return spent
    finally:
        for holder in holders.values():
            holder.kill()
            with trio.CancelScope(shield=True):
                await holder.wait()


async def _handshake_blocks(sides: dict[str, tuple[str, str, int]], blocks: int, per_block: int) -> dict[str, float]:
    """CPU seconds each relay spent on ``blocks * per_block`` authenticated handshakes, the relays taking
    turns by blocks in a shuffled order (``sides``: name -> (url, pairing code, relay pid)): one machine state
    for both, where two runs minutes apart each had its own (the reference's own figure moved 0.43-0.75 s)."""
    import trio
    import trio_websocket

    creds = {}
    for name, (url, code, _) in sides.items():
        for _ in range(50):  # the relay may turn a connection away as busy (503) for a moment
            try:
                async with trio_websocket.open_websocket_url(url) as ws:
                    token = (await _auth(ws, {"pairing_code": code, "device_name": "bench"}))["session_token"]
                creds[name] = {"session_token": token}
                break
            except trio_websocket.ConnectionRejected:
                await trio.sleep(0.05)
    spent = dict.fromkeys(sides, 0.0)
    order = random.Random(1000)
    names = list(sides)

    async def handshake(url: str, credentials: dict[str, Any], limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            for _ in range(50):
                try:
                    async with trio_websocket.open_websocket_url(url) as ws:
                        await _auth(ws, credentials)
                    return
                except trio_websocket.ConnectionRejected:
                    await trio.sleep(0.05)

    for _ in range(blocks):
        order.shuffle(names)
        for name in names:
            url, _, pid = sides[name]
            limiter = trio.CapacityLimiter(10)
            before = cpu_ns(pid)
            async with trio.open_nursery() as nursery:
                for _ in range(per_block):
                    nursery.start_soon(handshake, url, creds[name], limiter)
            after = cpu_ns(pid)
            if before is None or after is None:
                raise RuntimeError(f"no schedstat for the {name} relay (pid {pid})")
            spent[name] += schedstat_delta(before, after)[0] / 1e9
    return spent


async def _relay_capacity(url: str, port: int, code: str, relay_pid: int, plan: RelayPlan,
                          ours: bool, quiet: tuple[str, str] | None = None) -> dict[str, Any]:
    """Every relay row's measurement against one relay (ours or the reference): same client, same steps.
    ``ours``: the relay has our /health ``gc`` field and the leak row. ``quiet`` (url, pairing code): a relay
    that holds no connections, whose handshakes each probe takes in turn with this one's."""
    import trio
    import trio_websocket

    async def session(url: str, code: str) -> dict[str, str]:
        for _ in range(50):  # the relay may turn a connection away as busy (503) for a moment
            try:
                async with trio_websocket.open_websocket_url(url) as ws:  # this bench's own session
                    return {"session_token": (await _auth(ws, {"pairing_code": code, "device_name": "bench"}))["session_token"]}
            except trio_websocket.ConnectionRejected:
                await trio.sleep(0.05)
        raise RuntimeError(f"{url}: busy for 50 attempts")

    creds = await session(url, code)
    token = creds["session_token"]
    quiet_creds = await session(quiet[0], quiet[1]) if quiet is not None else None
    out: dict[str, Any] = {"probe": {}, "idle": {}, "opening": {}, "gc": {}, "ping_ms": {}, "idle_pongs": {},
                           "quiet": {}}

    # Handshakes: connect + upgrade + system/auth + auth.ok + close, at most 10 in flight.
    limiter = trio.CapacityLimiter(10)

    busy = 0

    async def handshake(url: str = url, creds: dict[str, str] = creds) -> float:
        nonlocal busy
        for attempt in range(50):  # a 503 "busy" (counted in the row) is retried after a short pause
            t0 = time.perf_counter()
            try:
                async with trio_websocket.open_websocket_url(url) as ws:
                    await _auth(ws, creds)
                return time.perf_counter() - t0
            except trio_websocket.ConnectionRejected:
                busy += 1
                if attempt == 49:
                    raise
                await trio.sleep(0.05)
        raise AssertionError("unreachable")

    async def limited() -> None:
        async with limiter:
            await handshake()

    cpu0, self0 = cpu_ticks(relay_pid), time.process_time()
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(plan.n_handshakes):
            nursery.start_soon(limited)
    wall = time.perf_counter() - t0
    cpu_s = (cpu_ticks(relay_pid) - cpu0) / CLK_TCK
    relay_cpu = cpu_s / wall * 100
    client_cpu = (time.process_time() - self0) / wall * 100
    out["handshakes"] = (plan.n_handshakes / wall, wall, relay_cpu, client_cpu, cpu_s)

    async def probe(level: int) -> tuple[list[float], list[float]]:
        """One at a time, interleaved: a whole handshake, and a GET /health on a fresh connection (and a
        handshake with the quiet relay, kept in ``out["quiet"][level]``).

        The bench client's own collector is kept out of it: a full collection in this process would show
        as the relay's latency."""
        hs, health, beside = [], [], []
        gc.collect()
        gc.freeze()
        gc.disable()
        try:
            for _ in range(plan.n_probe):
                hs.append(await handshake())
                health.append(await _health_once(port))
                if quiet is not None and quiet_creds is not None:
                    beside.append(await handshake(quiet[0], quiet_creds))
        finally:
            gc.enable()
        if beside:
            out["quiet"][level] = beside
        return hs, health

    # One 3 MB frame relayed through the relay's message path (a ping it answers): its CPU per frame.
    frame = envelope.Envelope(envelope.SYSTEM, "ping", {"pad": "x" * BIG_READ}).encode()
    for _ in range(50):
        try:
            async with trio_websocket.open_websocket_url(url, max_message_size=8 << 20) as ws:
                await _auth(ws, creds)
                cpu0 = cpu_ticks(relay_pid)
                for _ in range(BIG_FRAMES):
                    await ws.send_message(frame)
                    while envelope.decode(await ws.get_message()).type != "pong":
                        pass
                out["big_frame_ms"] = (cpu_ticks(relay_pid) - cpu0) / CLK_TCK / BIG_FRAMES * 1000
            break
        except trio_websocket.ConnectionRejected:
            busy += 1
            await trio.sleep(0.05)

    await trio.sleep(0.5)
    out["probe"][0] = await probe(0)
    if ours:
        out["gc"][0] = (await _health_json(port, "/relay/info"))["gc"]

    # Idle connections: open and authenticate up to each level, hold them, then measure. They are held by a
    # process of their own (bench/idle_holder.py): the pongs they answer must not show as the relay's latency.
    holder = await trio.lowlevel.open_process(
        [sys.executable, str(ROOT / "bench" / "idle_holder.py"), url, token],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdin is not None and holder.stdout is not None
    lines = _Lines(holder.stdout)
    opened = 0
    frozen_before = 0
    holder_busy = "0"
    try:
        await trio.sleep(1.0)
        before = rss_kb(relay_pid)
        if ours:
            await trio.sleep(1.5)  # the relay's collector policy ticks once a second
            frozen_before = (await _health_json(port, "/relay/info"))["gc"]["frozen"]
        for level in plan.levels:
            await holder.stdin.send_all(f"{level}\n".encode())
            stalls: list[float] = []
            reply: list[str] = []
            done = trio.Event()

            async def wait_reached(reply: list[str], done: trio.Event) -> None:
                reply.append(await lines.next())
                done.set()

            with trio.fail_after(600):
                async with trio.open_nursery() as waiting:
                    waiting.start_soon(wait_reached, reply, done)
                    while not reply:  # full collections run while the old generation grows
                        try:
                            stalls.append(await _health_once(port))
                        except trio.BrokenResourceError:  # turned away as busy (the per-address cap of
                            busy += 1  # request heads pending: 16, and the holder opens 16 at a time), unread
                        with trio.move_on_after(0.02):
                            await done.wait()
            word, count, holder_busy = reply[0].split()
            if word != "reached" or int(count) != level:
                raise RuntimeError(f"idle holder: {reply[0]!r} (wanted {level})")
            opened = level
            out["opening"][level] = stalls
            await trio.sleep(1.0)
            after = rss_kb(relay_pid)
            window = plan.ping_window if level == plan.ping_level else IDLE_CPU_WINDOW
            pongs0 = (await _health_json(port, "/relay/info")).get("idle_reads", {}).get("pongs", 0) if ours else 0
            cpu0, ns0, t0 = cpu_ticks(relay_pid), cpu_ns(relay_pid), time.perf_counter()
            await trio.sleep(window)
            cpu = ticked = (cpu_ticks(relay_pid) - cpu0) / CLK_TCK
            ns1 = cpu_ns(relay_pid)
            if ns0 is not None and ns1 is not None:  # on-CPU ns: a tick is 10 ms, ~3 % of a 3000-held window's CPU
                spent, gone = schedstat_delta(ns0, ns1)
                if not gone:  # (a thread that exited took its count with it: the ticks then)
                    cpu = spent / 1e9
            elapsed = time.perf_counter() - t0
            if level == plan.ping_level:  # a whole heartbeat period: each held connection pinged once
                out["ping_ms"][level] = cpu / level * 1000
            out["idle"][level] = (before, after, cpu / elapsed * 100, window, ticked / elapsed * 100)
            out["probe"][level] = await probe(level)
            if ours:
                info = await _health_json(port, "/relay/info")
                out["gc"][level] = info["gc"]
                if "idle_reads" in info:  # relay/idleread.py: the pongs read without waking their connection
                    out["idle_pongs"][level] = info["idle_reads"]["pongs"] - pongs0
        await holder.stdin.send_all(b"close\n")
        with trio.fail_after(120):
            if await lines.next() != "closed":
                raise RuntimeError("idle holder: no `closed`")
            await holder.wait()
        busy += int(holder_busy)
    finally:
        if holder.returncode is None:
            holder.kill()
            with trio.CancelScope(shield=True):
                await holder.wait()
    gc.unfreeze()
    out["busy"] = busy
    if ours and plan.levels:  # every held connection closed: what the relay froze for them must be gone
        with trio.fail_after(60):
            while (await _health_json(port))["connections"]:
                await trio.sleep(0.2)
        await trio.sleep(1.5)  # one policy tick
        frozen_after = (await _health_json(port, "/relay/info"))["gc"]["frozen"]
        out["leak"] = (opened, frozen_before, frozen_after, before, rss_kb(relay_pid))
    if plan.levels:  # the baseline again, every held connection gone: how far the machine alone moves a p99
        out["probe_after"] = await probe(-1)
    return out


# -- main ----------------------------------------------------------------------------------------
def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def _clean_environment() -> None:
    """No HERMES_* settings of the caller may leak into the bench's agents and relays."""
    for key in list(os.environ):
        if key.startswith("HERMES_"):
            del os.environ[key]


def _bytecode_cache(root: Path) -> None:
    """Let every child process cache bytecode, as an installed package does, but outside the repo.

    With PYTHONDONTWRITEBYTECODE set (some sandboxes do) and no up-to-date __pycache__ in the
    source tree, every CLI run would recompile the changed modules and the timings would be
    those of a first run. PYTHONPYCACHEPREFIX keeps the caches under the bench's temp directory;
    the warm-up runs fill it.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(root / "pycache")


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and a 10 s idle window (under a minute)")
    parser.add_argument("--only", choices=["cli", "desktop", "sandbox", "relay", "shell"],
                        help="run one section (cli: pair once, then the CLI rows; desktop: pair once, then the "
                             "desktop tool-call rows and the idle agent; sandbox: the workspace command cost only; "
                             "relay: the relay's handshake, latency, memory and idle rows; shell: the shell's "
                             "echo latency, failover pauses, keystroke integrity, flood and leak rows)")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("bench/run.py reads /proc: it runs on Linux only", file=sys.stderr)
        return 2
    _clean_environment()
    _raise_nofile()
    started = time.monotonic()
    failed = False
    with _sigterm_as_interrupt(), ExitStack() as stack:
        bench = Bench(args.quick, stack)
        steps = [bench.pair_by_code, bench.cli_latency, bench.prompt_cost, bench.pair_three_tiers,
                 bench.failover, bench.desktop_calls, bench.sandbox_cost, bench.idle_agent, bench.reconnect, bench.relay_capacity,
                 bench.shell]
        if args.only == "cli":
            steps = [bench.pair_by_code, bench.cli_latency]
        elif args.only == "desktop":
            steps = [bench.pair_by_code, bench.desktop_calls, bench.sandbox_cost, bench.idle_agent]
        elif args.only == "sandbox":
            steps = [bench.sandbox_cost]
        elif args.only == "relay":
            steps = [bench.relay_capacity]
        elif args.only == "shell":
            steps = [bench.shell]
        try:
            for step in steps:
                try:
                    step()
                except Exception as exc:  # one broken measurement must not hide the others
                    failed = True
                    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                        exc = exc.exceptions[0]  # type: ignore[assignment]  # the one failure, not trio's wrapper
                    ROWS.append(Row(step.__name__.replace("_", " "), f"error: {type(exc).__name__}: {exc}"[:160],
                                    "-", "ERROR"))
                    log(f"{step.__name__} failed: {exc!r}\n{''.join(traceback.format_exception(exc))}")
        except KeyboardInterrupt:
            log("interrupted: stopping every process the bench started")
            stack.close()
            if ROWS:
                print_table(ROWS)
            return 130
        log("stopping relays, agents and proxies")
    elapsed = time.monotonic() - started
    ROWS.append(Row("bench wall time", f"{elapsed:.0f} s ({'quick' if args.quick else 'full'} run)"))
    print_table(ROWS)
    return 1 if failed or any(r.verdict == "FAIL" for r in ROWS) else 0


if __name__ == "__main__":
    sys.exit(main())
