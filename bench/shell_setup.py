"""What the shell rows of the bench (issue 20 item 6) set up: our relay, agents, shells on a pty, failures.

Real processes only: our relay with ``--terminal`` (tmux mode, a private ``TMUX_TMPDIR`` under the bench's
temp directory), agents paired with the ``terminal`` grant, the e2e TCP proxy as the LAN route, and the CLI
as a whole process on a pty the bench drives as the user's terminal (tests/shell_pty.py ``Terminal``; the
keys are typed by tests/shell_typist.py ``Typist``: the same rig as the e2e tests, imported, not copied).

``ShellSetup`` holds this; the steps (bench/shell_echo.py, bench/shell_failover.py, bench/ref_soak.py) take
it as ``rows`` and add their rows with ``rows.add``. bench/shell_rows.py runs them in turn.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procs import PY, AgentEnv, Proxy, RelayProc, free_port, pair_env, wait_state
from shell_pty import Terminal, shell_argv

from hermes_relay.core import api, payload

TMUX_SOCKET = "hermes-relay"


def pctl(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, -(-len(ordered) * p // 100) - 1))
    return ordered[int(k)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def route_role(s: dict[str, Any]) -> str | None:
    return (s.get("route") or {}).get("role") if s.get("state") == api.CONNECTED else None


def agent_log(env: AgentEnv, lines: int = 12) -> str:
    log_file = env.home / "logs" / "hermes-relay-agent.log"
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no agent log)"


def agent_log_between(env: AgentEnv, start: float, end: float, most: int = 200) -> str:
    """The agent's log lines (every rotated file, oldest first) stamped between ``start`` and ``end``
    (``time.time()`` values): what the agent did around one failure of a soak."""
    out: list[str] = []
    for path in sorted((env.home / "logs").glob("hermes-relay-agent.log*"), reverse=True):
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                stamp = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
            except ValueError:
                continue
            if start <= stamp <= end:
                out.append(line)
    return "\n".join(out[:most]) or "(nothing logged then)"


def file_size(path: Path) -> int:
    """Bytes in ``path`` so far (0 before the recorder made it)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


FAILURE_KINDS = ["down", "blackhole", "restart", "kill"]  # the soaks' failures, in turn


def keys_flow_again(size: Callable[[], int], mark: int, token: int, within: float = 40.0) -> bool:
    """Wait until 20 more keys (of ``token`` bytes) reached the recorder past ``mark``; False if not ``within``."""
    deadline = time.monotonic() + within
    while size() < mark + 20 * token and time.monotonic() < deadline:
        time.sleep(0.05)
    return size() >= mark + 20 * token


def restore(lan: Proxy, kind: str) -> None:
    """The LAN route back after ``kind``: a black hole's listener is still open, so it goes down first."""
    if kind == "blackhole":
        lan.command("down")
    if kind in ("down", "blackhole"):
        lan.command("up")


class ShellSetup:
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
        self.direct_env: AgentEnv | None = None  # the agent paired straight to our relay (the latency step's)
        self._lan_port = 0

    # -- tmux --------------------------------------------------------------------------------------
    def _kill_tmux(self) -> None:
        subprocess.run(["tmux", "-L", TMUX_SOCKET, "kill-server"], capture_output=True, timeout=10,
                       env={**os.environ, "TMUX_TMPDIR": str(self.tmux_dir)})

    def tmux_clients(self) -> int:
        out = subprocess.run(["tmux", "-L", TMUX_SOCKET, "list-clients"], capture_output=True, text=True, timeout=10,
                             env={**os.environ, "TMUX_TMPDIR": str(self.tmux_dir)})
        return len(out.stdout.split("\n")) - 1 if out.stdout else 0

    # -- relay, agents, shells ---------------------------------------------------------------------
    def start_relay(self) -> RelayProc:
        relay = RelayProc(self.root / "relay", port=free_port(), extra=["--terminal"])
        self.bench.on_exit(relay.stop)
        self.relay = relay.start()
        return self.relay

    def mint(self, relay: RelayProc) -> str:
        cmd = [PY, "-m", "hermes_relay.relay.pair_cmd", "--relay", relay.url, "--json", "--mode", "lan",
               "--lan-host", "127.0.0.1", "--grant", "terminal=30d"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=pair_env(relay.state_dir))
        if out.returncode != 0:
            raise RuntimeError(f"hermes-pair failed: {out.stderr.strip()}")
        return str(json.loads(out.stdout)["code"])

    def agent(self, name: str, **extra: str) -> AgentEnv:
        return self.bench.agent_env(f"shell-{name}", **extra)  # type: ignore[no-any-return]

    def agent_pid(self, env: AgentEnv) -> int:
        with env.client() as c:
            return int(c.hello["pid"])

    def terminal(self, argv: list[str], env: dict[str, str], name: str) -> Terminal:
        """``argv`` on a pty of its own, closed on the way out; its stderr in ``<name>.err``."""
        term = Terminal(argv, env, self.root / f"{name}.err")
        self.bench.on_exit(term.close)
        return term

    def open_shell(self, env: AgentEnv, name: str, program: str) -> Terminal:
        """``hermes-relay shell --raw`` on a pty, then ``program`` typed into the remote shell; waits for it."""
        term = self.terminal(shell_argv("--raw", "--session", f"bench-{name}"), env.env, name)
        marker = f"ready-{name}"
        term.type(f"echo {marker[:3]}''{marker[3:]}; {program}\r".encode())
        term.wait_screen(marker.encode(), timeout=30)
        return term

    # -- failures ----------------------------------------------------------------------------------
    def failover_agent(self, name: str) -> tuple[AgentEnv, Proxy]:
        """An agent paired by an invite with LAN = the e2e proxy and Public = our relay, on LAN."""
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
            status: list[Any] = [(r.get("state"), r.get("route")) for r in st["relays"]]
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
