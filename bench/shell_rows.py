"""The shell rows of the bench (issue 20 item 6): ``hermes-relay shell --raw`` on a pty, end to end.

Real processes only: our relay with ``--terminal`` (tmux mode, a private ``TMUX_TMPDIR`` under the bench's
temp directory), agents paired with the ``terminal`` grant, the e2e TCP proxy as the LAN route, the CLI as
a whole process on a pty the bench drives (bench/shellrig.py), and, when this machine has it, the reference
relay. Each figure is printed beside a baseline of the same run: the same echo program on a pty of its
own (a direct PTY echo, no relay), and the relay's ``GET /health`` on a fresh loopback connection.

``ShellRows(bench, add, log).run()`` is called by bench/run.py (``--only shell`` or the full run).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procs import PY, AgentEnv, Proxy, RelayProc, free_port, pair_env, wait_gone, wait_state
from ref_soak import reference_integrity
from reference import ReferenceRelay, find
from shellrig import RAW_ECHO, TOKEN, Keyboard, Typist, key_counts, shell_argv

from hermes_relay.core import api, payload

REFERENCE = find(os.environ)  # read at import: bench/run.py drops HERMES_* variables afterwards
KEYS = b"abcdefghijklmnopqrstuvwxyz0123456789"
LATENCY_TARGETS = {"ours": (0.003, 0.010), "reference": (0.020, None)}
PAUSE_TARGETS = {"down": 1.5, "blackhole": 2.5}
RESTART_TARGET = 1.0
FLOOD_TARGET = 1.0
FLOOD_RSS_MB = 10.0
TMUX_SOCKET = "hermes-relay"


def pctl(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, -(-len(ordered) * p // 100) - 1))
    return ordered[int(k)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


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


def route_role(s: dict[str, Any]) -> str | None:
    return (s.get("route") or {}).get("role") if s.get("state") == api.CONNECTED else None


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def agent_log(env: AgentEnv, lines: int = 12) -> str:
    log_file = env.home / "logs" / "hermes-relay-agent.log"
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no agent log)"


def restore(lan: Proxy, kind: str) -> None:
    """The LAN route back after ``kind``: a black hole's listener is still open, so it goes down first."""
    if kind == "blackhole":
        lan.command("down")
    if kind in ("down", "blackhole"):
        lan.command("up")


class ShellRows:
    def __init__(self, bench: Any, add: Callable[..., None], log: Callable[[str], None]):
        self.bench = bench
        self.add = add
        self.log = log
        self.quick: bool = bench.quick
        self.root: Path = bench.root / "shell"
        self.root.mkdir(exist_ok=True)
        self.tmux_dir = self.root / "tmux"
        self.tmux_dir.mkdir(exist_ok=True)
        os.environ["TMUX_TMPDIR"] = str(self.tmux_dir)  # relays, agents and shells inherit the private server
        self.bench.on_exit(self._kill_tmux)
        self.n_keys = 300 if self.quick else 1000
        self.cycles = 5 if self.quick else 10
        self.soak = int(os.environ.get("BENCH_SHELL_SOAK", 20 if self.quick else 100))
        self.relay: RelayProc | None = None

    # -- setup -------------------------------------------------------------------------------------
    def _kill_tmux(self) -> None:
        subprocess.run(["tmux", "-L", TMUX_SOCKET, "kill-server"], capture_output=True, timeout=10,
                       env={**os.environ, "TMUX_TMPDIR": str(self.tmux_dir)})

    def tmux_clients(self) -> int:
        out = subprocess.run(["tmux", "-L", TMUX_SOCKET, "list-clients"], capture_output=True, text=True, timeout=10,
                             env={**os.environ, "TMUX_TMPDIR": str(self.tmux_dir)})
        return len(out.stdout.split("\n")) - 1 if out.stdout else 0

    def mint(self, relay: RelayProc) -> str:
        cmd = [PY, "-m", "hermes_relay.relay.pair_cmd", "--relay", relay.url, "--json", "--mode", "lan",
               "--lan-host", "127.0.0.1", "--grant", "terminal=30d"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=pair_env(relay.state_dir))
        if out.returncode != 0:
            raise RuntimeError(f"hermes-pair failed: {out.stderr.strip()}")
        return str(json.loads(out.stdout)["code"])

    def agent(self, name: str, **extra: str) -> AgentEnv:
        return self.bench.agent_env(f"shell-{name}", **extra)  # type: ignore[no-any-return]

    def keyboard(self, argv: list[str], env: dict[str, str], name: str) -> Keyboard:
        kb = Keyboard(argv, env, self.root / f"{name}.err")
        self.bench.on_exit(kb.close)
        return kb

    def open_shell(self, env: AgentEnv, name: str, program: str) -> Keyboard:
        """``hermes-relay shell --raw`` on a pty, then ``program`` typed into the remote shell; waits for it."""
        kb = self.keyboard(shell_argv(f"bench-{name}"), env.env, name)
        marker = f"ready-{name}"
        kb.type(f"echo {marker[:3]}''{marker[3:]}; {program}\r".encode())
        kb.wait_for(marker.encode(), timeout=30)
        return kb

    def start_relay(self) -> RelayProc:
        relay = RelayProc(self.root / "relay", port=free_port(), extra=["--terminal"])
        self.bench.on_exit(relay.stop)
        return relay.start()

    # -- the rows ----------------------------------------------------------------------------------
    def run(self) -> None:
        self.relay = self.start_relay()
        steps = [self.latency, self.reference_latency, self.flood, self.pauses, self.integrity,
                 self.reference_integrity]
        if os.environ.get("BENCH_SHELL_STEPS"):  # development: a subset
            steps = [s for s in steps if s.__name__ in os.environ["BENCH_SHELL_STEPS"].split(",")]
        errors = []
        for step in steps:
            try:
                step()
            except Exception as exc:  # one broken measurement must not hide the others
                self.log(f"shell {step.__name__} failed: {exc!r}\n{''.join(traceback.format_exception(exc))}")
                self.add(f"shell {step.__name__}", f"error: {type(exc).__name__}: {exc}"[:160], "-", False)
                errors.append(exc)

    def _echo_rows(self, label: str, kb: Keyboard, target: tuple[float, float | None],
                   health_port: int | None) -> None:
        n = self.n_keys
        direct = self.keyboard(["/bin/sh", "-c", RAW_ECHO], dict(os.environ), f"direct-{label}")
        direct.echo_times(KEYS)  # warm-up: the first keys start the program
        kb.echo_times(KEYS * 2)
        keys = (KEYS * (n // len(KEYS) + 1))[:n]
        ours: list[float] = []
        base: list[float] = []
        for chunk in range(0, n, 50):  # interleaved, so a loaded moment slows both
            ours += kb.echo_times(keys[chunk:chunk + 50])
            base += direct.echo_times(keys[chunk:chunk + 50])
        direct.close()
        p50, p99 = statistics.median(ours), pctl(ours, 99)
        b50, b99 = statistics.median(base), pctl(base, 99)
        t50, t99 = target
        self.add(f"shell keystroke->echo, {label} relay ({n} keys) p50", f"{ms(p50)} (direct PTY {ms(b50)})",
                 f"<= {t50 * 1000:g} ms", p50 <= t50)
        self.add(f"shell keystroke->echo, {label} relay p99", f"{ms(p99)} (direct PTY {ms(b99)})",
                 f"<= {t99 * 1000:g} ms" if t99 else "-", None if t99 is None else p99 <= t99)
        if health_port is not None:
            h = health_time(health_port, 100)
            self.add(f"shell baseline: {label} relay GET /health (fresh connection) p50",
                     f"{ms(statistics.median(h))}, p99 {ms(pctl(h, 99))}")

    def latency(self) -> None:
        assert self.relay is not None
        self.log(f"shell: keystroke->echo through our relay (tmux), {self.n_keys} keys, beside a direct PTY")
        env = self.agent("direct")
        with env.client() as c:
            c.call(api.PAIR_START, {"url": self.relay.url, "code": self.mint(self.relay)}, timeout=30)
        kb = self.open_shell(env, "latency", RAW_ECHO)
        self._echo_rows("our", kb, LATENCY_TARGETS["ours"], self.relay.port)
        kb.close()
        self.direct_env = env

    def reference_latency(self) -> None:
        label = "shell keystroke->echo, reference relay"
        if REFERENCE is None:
            self.add(f"{label} p50", "reference not available", "<= 20 ms", None)
            return
        self.log(f"shell: keystroke->echo through the reference relay ({REFERENCE.checkout})")
        ref = ReferenceRelay(REFERENCE, self.root / "reference-home", free_port())
        self.bench.on_exit(ref.stop)
        ref.start()
        env = self.agent("reference")
        with env.client() as c:
            c.call(api.PAIR_START, {"url": ref.url, "code": ref.mint_code()}, timeout=30)
        kb = self.open_shell(env, "reference", RAW_ECHO)
        self._echo_rows("reference", kb, LATENCY_TARGETS["reference"], ref.port)
        kb.close()
        env.stop()
        ref.stop()

    def flood(self) -> None:
        self.log("shell: `yes` flood, then Ctrl+C until the prompt is back")
        env = self.direct_env
        pid = self._agent_pid(env)
        kb = self.open_shell(env, "flood", "PS1='@@''RDY@@ '")
        kb.wait_for(b"@@RDY@@ ", timeout=10)
        rss0 = rss_mb(pid)
        kb.type(b"yes\r")
        flood_until = time.monotonic() + 2.0
        total = 0
        while time.monotonic() < flood_until:
            total += len(kb.read(0.5))
            if len(kb.screen) > 1 << 20:
                del kb.screen[:-4096]
        rss_peak = rss_mb(pid)
        start = len(kb.screen)
        t0 = time.perf_counter()
        kb.type(b"\x03")
        back = None
        while time.perf_counter() - t0 < 15:
            chunk = kb.read(1.0)
            if kb.screen.find(b"@@RDY@@", max(start, len(kb.screen) - len(chunk) - 8)) >= 0:
                back = time.perf_counter() - t0
                break
            if len(kb.screen) > 1 << 20:
                keep = kb.screen[-4096:]
                del kb.screen[:]
                kb.screen += keep
                start = 0
        rss1 = rss_mb(pid)
        grow = max(rss_peak, rss1) - rss0
        self.add(f"shell `yes` flood ({total / 2 / 1e6:.1f} MB/s shown), Ctrl+C -> prompt",
                 "never" if back is None else ms(back), f"<= {FLOOD_TARGET:g} s",
                 back is not None and back <= FLOOD_TARGET)
        self.add("shell flood: agent RSS growth", f"{grow:+.1f} MB ({rss0:.1f} -> peak {max(rss_peak, rss1):.1f} MB)",
                 f"<= {FLOOD_RSS_MB:g} MB", grow <= FLOOD_RSS_MB)
        kb.close()

    def _agent_pid(self, env: AgentEnv) -> int:
        with env.client() as c:
            return int(c.hello["pid"])

    def failover_agent(self, name: str) -> tuple[AgentEnv, Proxy]:
        assert self.relay is not None
        env = self.agent(name, HERMES_RELAY_UPGRADE_INTERVAL="0.5", HERMES_RELAY_UPGRADE_HYSTERESIS="0.3")
        lan = self.bench.proxy(self.relay.port)
        self._lan_port = lan.port
        invite = payload.build(code=self.mint(self.relay), ttl_seconds=3600, transport_hint="ws",
                               endpoints=[("lan", f"ws://127.0.0.1:{lan.port}"), ("public", self.relay.url)])
        with env.client() as c:
            c.call(api.PAIR_START, {"invite": payload.invite_url(invite)}, timeout=30)
        wait_state(env, lambda s: route_role(s) == "lan", timeout=30)
        return env, lan

    def back_on_lan(self, env: AgentEnv, kind: str) -> None:
        try:
            wait_state(env, lambda s: route_role(s) == "lan", timeout=40)
        except Exception as exc:
            st = json.loads(env.cli("status", "--json", timeout=20).stdout)
            status = [(r.get("state"), r.get("route")) for r in st["relays"]]
            try:
                socket.create_connection(("127.0.0.1", self._lan_port), timeout=2).close()
                status.append("lan port accepts")
            except OSError as e:
                status.append(f"lan port: {e}")
            raise RuntimeError(f"not back on LAN after a {kind} cycle: {exc}; agent log:\n{agent_log(env, 30)}\n"
                               f"status: {status}") from None

    def restart_relay(self) -> float:
        """Stop our relay (SIGTERM) and start it on the same port and state: the time it printed `listening`."""
        assert self.relay is not None
        self.relay.stop()
        try:
            self.relay.start()
        except RuntimeError:  # say why: RelayProc drops the relay's stderr
            cmd = [PY, "-m", "hermes_relay.relay", "--port", str(self.relay.port), "--state-dir",
                   str(self.relay.state_dir), "--terminal"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            raise RuntimeError(f"our relay did not restart: {out.stderr.strip()[-300:]}") from None
        return time.monotonic()

    def pauses(self) -> None:
        n = self.cycles
        self.log(f"shell: pauses while typing (a key every 10 ms): {n} x LAN down, {n} x LAN black hole, "
                 f"{n} x relay restart")
        env, lan = self.failover_agent("pause")
        pid = self._agent_pid(env)
        kb = self.open_shell(env, "pause", RAW_ECHO)
        fd0, th0 = fds(pid), threads(pid)
        clients0 = self.tmux_clients()
        typist = Typist(kb, lambda: b"#", echo=b"#")  # '#': never in the CLI's status line
        results: dict[str, list[float]] = {"down": [], "blackhole": [], "restart": []}
        try:
            for kind in ("down", "blackhole", "restart"):
                for _ in range(n):
                    time.sleep(0.3)  # typing on a live link before each failure (the typist keeps typing)
                    if kind == "restart":
                        t = self.restart_relay()
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
                        self.log(f"slow {kind} cycle ({results[kind][-1]:.2f} s) from {since:.3f} (epoch); "
                                 f"the agent's log:\n{agent_log(env)}")
                    restore(lan, kind)
                    self.back_on_lan(env, kind)
        finally:
            typist.stop()
        self.tmp_fds = (fd0, th0, fds(pid), threads(pid))
        clients1 = self.tmux_clients()
        for kind, label, target in (("down", "LAN refused -> public", PAUSE_TARGETS["down"]),
                                    ("blackhole", "LAN black-holed", PAUSE_TARGETS["blackhole"])):
            v = results[kind]
            p95 = pctl(v, 95)
            self.add(f"shell pause while typing, {label} ({len(v)} cycles) p95",
                     f"{ms(p95)} (median {ms(statistics.median(v))})", f"<= {target:g} s", p95 <= target)
        v = results["restart"]
        worst = pctl(v, 95)
        self.add(f"shell screen back after our relay listens ({len(v)} restarts) p95",
                 f"{ms(worst)} (median {ms(statistics.median(v))})", f"<= {RESTART_TARGET:g} s", worst <= RESTART_TARGET)
        self.add(f"shell agent fds / threads over {3 * n} failovers", f"{fd0} -> {fds(pid)} / {th0} -> {threads(pid)}",
                 "flat", fds(pid) <= fd0 and threads(pid) <= th0)
        self.add("shell tmux clients = live attachments (1) after the failovers",
                 f"{clients1} (before {clients0})", "= 1", clients1 == 1)
        kb.close()
        env.stop()
        lan.close()

    def integrity(self) -> None:
        n = self.soak
        self.log(f"shell: keystroke integrity over {n} forced failovers (down, black hole, relay restart, "
                 "agent kill -9, in turn) with a numbered key stream")
        env, lan = self.failover_agent("soak")
        record = self.root / "keys.rec"
        kb = self.open_shell(env, "soak", f"stty raw -echo; exec cat > {record}")
        counter = iter(range(10**6))

        def size() -> int:
            try:
                return record.stat().st_size
            except OSError:
                return 0

        typist = Typist(kb, lambda: f"{next(counter):06d},".encode(), interval=0.01)
        kinds = ["down", "blackhole", "restart", "kill"]
        done = {k: 0 for k in kinds}
        marks: list[tuple[int, str]] = []  # (keys typed when a failure began, its kind)
        stuck = 0
        try:
            for i in range(n):
                kind = kinds[i % len(kinds)]
                time.sleep(0.2)
                marks.append((typist.typed, kind))
                mark = size()
                if kind == "restart":
                    self.restart_relay()
                elif kind == "kill":
                    os.kill(self._agent_pid(env), signal.SIGKILL)
                else:
                    lan.command(kind)
                deadline = time.monotonic() + 40
                while size() < mark + 20 * TOKEN and time.monotonic() < deadline:
                    time.sleep(0.05)  # the keys reach the recorder again
                if size() < mark + 20 * TOKEN:
                    stuck += 1
                restore(lan, kind)
                self.back_on_lan(env, kind)
                done[kind] += 1
        finally:
            typist.typing.clear()
            typed = typist.typed
            time.sleep(0.05)
            typist.stop()
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
            missing = sorted(set(range(typed)) - seen)
            runs = []
            for x in missing:
                if runs and runs[-1][1] == x - 1:
                    runs[-1][1] = x
                else:
                    runs.append([x, x])
            self.log(f"keys lost, by the failure they were typed after: {by_kind}; runs {runs[:8]}; marks {marks[:8]}")
            self.log(f"the shell's screen: {bytes(kb.screen[-3000:])!r}\nagent log:\n{agent_log(env, 40)}")
        ok = lost == 0 and dup == 0 and reorder == 0 and bad == 0
        self.add(f"shell keystroke integrity, {n} failovers ({', '.join(f'{v} {k}' for k, v in done.items())}), "
                 f"{typed} keys", f"lost {lost}, duplicated {dup}, reordered {reorder}, garbled {bad}",
                 "0 / 0 / 0", ok)
        clients = self.tmux_clients()
        self.add(f"shell tmux clients = live attachments (1) after {n} failovers", str(clients), "= 1", clients == 1)
        kb.close()
        env.stop()
        lan.close()
        for pid in env.pids:
            wait_gone(pid, 5)

    def reference_integrity(self) -> None:
        reference_integrity(self)  # bench/ref_soak.py
