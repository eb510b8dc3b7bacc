"""Real processes for end-to-end tests: relay servers, agents and a controllable TCP proxy.

Everything here is blocking (subprocess + sockets) so e2e tests can be plain sync tests; waiting is
always on an event from the process (a line on stdout, a watch notification, an exit), with a
deadline, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hermes_relay.cli.client import AgentClient, ensure_agent
from hermes_relay.cli.lines import LineReader
from hermes_relay.core import api, paths

PY = sys.executable
TOOLS = Path(__file__).parent


_READERS: dict[int, LineReader] = {}


def terminate(proc: subprocess.Popen[Any], *, group: bool = False, grace: float = 10) -> None:
    """SIGTERM (to its whole process group with ``group``), then SIGKILL if it is still there after ``grace``
    seconds; returns once it has exited."""
    if proc.poll() is not None:
        return

    def send(sig: int) -> None:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)

    send(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait()


def read_line(proc: subprocess.Popen[Any], timeout: float) -> str:
    """The next line the process prints, waiting at most ``timeout``."""
    assert proc.stdout is not None
    reader = _READERS.setdefault(proc.stdout.fileno(), LineReader(proc.stdout))
    try:
        return reader.read(timeout)
    except TimeoutError:
        raise TimeoutError(f"no output from pid {proc.pid} within {timeout}s") from None
    except EOFError:
        raise RuntimeError(f"pid {proc.pid} exited with {proc.wait()} before printing") from None


class RelayProc:
    """``hermes-relay-server`` in its own process, on a fixed or free port."""

    def __init__(self, state_dir: Path, *, port: int = 0, tls: bool = False, extra: list[str] | None = None,
                 env: dict[str, str] | None = None, log: Path | None = None):
        self.state_dir = state_dir
        self.env = env  # None: this process's environment
        self.log = log  # the relay's stderr (appended), else discarded
        self.tls = tls
        self.port = port
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.pin: str | None = None

    def start(self) -> RelayProc:
        cmd = [PY, "-m", "hermes_relay.relay", "--port", str(self.port), "--state-dir", str(self.state_dir),
               "--log-level", "WARNING", *self.extra]
        if self.tls:
            cmd.append("--tls")
        if self.log is None:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env)
        else:
            with open(self.log, "ab") as err:
                self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=self.env)
        try:
            line = read_line(self.proc, 20)
            self.url = line.rsplit(" ", 1)[-1]
            self.port = int(self.url.rsplit(":", 1)[-1])
            if self.tls:
                self.pin = read_line(self.proc, 5).rsplit(" ", 1)[-1]
        except BaseException:  # never leave a half-started relay behind a failed test
            self.stop()
            raise
        return self

    @property
    def http(self) -> str:
        return self.url.replace("wss://", "https://").replace("ws://", "http://")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
        if self.proc is not None and self.proc.stdout is not None:
            _READERS.pop(self.proc.stdout.fileno(), None)
            self.proc.stdout.close()
        self.proc = None

    def mint_code(self, ttl: str | None = None) -> str:
        cmd = [PY, "-m", "hermes_relay.relay.pair_cmd", "--relay", self.url, "--json", "--mode", "lan",
               "--lan-host", "127.0.0.1"]
        if ttl is not None:
            cmd += ["--ttl", ttl]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=pair_env(self.state_dir))
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["code"]


def pair_env(state_dir: Path) -> dict[str, str]:
    """hermes-pair runs on the relay host: its own HERMES_HOME (the QR secret lives there)."""
    return {**os.environ, "HERMES_HOME": str(state_dir / "relay-home")}


class AgentEnv:
    """One user's world: a home, a runtime dir (short path: Unix socket names are limited) and env."""

    def __init__(self, root: Path, **extra_env: str):
        self.home = root / "home"
        self.user_home = root / "user-home"  # the user's ~: files tests make "at home" never touch the real one
        self.user_home.mkdir(parents=True, exist_ok=True)
        self.run = Path(tempfile.mkdtemp(prefix="hr-"))
        self.env = {
            **os.environ,
            "HOME": str(self.user_home),
            "HERMES_HOME": str(self.home),
            "HERMES_RELAY_RUNTIME_DIR": str(self.run),
            "HERMES_RELAY_NETWATCH": "0",
            "HERMES_RELAY_PROBE_TIMEOUT": "1.5",
            "HERMES_RELAY_NOTIFY": "0",  # no desktop notifications from test agents
            **extra_env,
        }
        self.pids: list[int] = []

    @property
    def store_path(self) -> Path:
        return paths.sessions_file(self.env)

    def store(self) -> dict[str, Any]:
        return json.loads(self.store_path.read_text())

    def client(self, *, autostart: bool = True) -> AgentClient:
        client = ensure_agent(self.env, autostart=autostart, stderr=sys.stderr)
        pid = client.hello.get("pid")
        if isinstance(pid, int) and pid not in self.pids:
            self.pids.append(pid)
        return client

    def cli(self, *args: str, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PY, "-m", "hermes_relay.cli", *args], capture_output=True, text=True,
                              timeout=timeout, env=self.env, input=input)

    def stop(self) -> None:
        try:
            with AgentClient.connect(paths.socket_path(self.env), timeout=2) as c:
                c.call("agent.stop", {}, timeout=5)
        except Exception:
            pass
        for pid in self.pids:
            if not wait_gone(pid, 10):
                os.kill(pid, signal.SIGKILL)

    def pair(self, relay: RelayProc) -> dict[str, Any]:
        with self.client() as c:
            return c.call(api.PAIR_START, {"url": relay.url, "code": relay.mint_code()}, timeout=30)


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait for process ``pid`` to end (reaping it if it is our child); False when it is still alive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return True
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def wait_state(env: AgentEnv, pred: Callable[[dict[str, Any]], bool], timeout: float = 20) -> dict[str, Any]:
    """Follow the agent's ``watch`` stream until a relay state satisfies ``pred``; return it."""
    seen: list[dict[str, Any]] = []

    class Found(Exception):
        pass

    def on_notify(method: str, params: dict[str, Any]) -> None:
        if method == api.STATE:
            seen.append(params)
            if pred(params):
                raise Found()

    with env.client() as c:
        try:
            c.call(api.WATCH, {}, timeout=timeout, on_notify=on_notify)
        except Found:
            return seen[-1]
    raise AssertionError(f"no matching state within {timeout}s; saw {[(s['state'], (s.get('route') or {}).get('url')) for s in seen]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BlackHole:
    """A port whose SYNs are never answered: a listener with a full accept queue that never accepts."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers = []
        for _ in range(4):  # fill the accept queue; later SYNs are dropped by the kernel
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self.fillers.append(s)

    def close(self) -> None:
        for s in self.fillers:
            s.close()
        self.listener.close()


class Proxy:
    """tests/e2e/tcp_proxy.py in a process: forwards a port to the relay; `down`, `up`, `blackhole`."""

    def __init__(self, target_port: int, port: int = 0):
        self.proc = subprocess.Popen([PY, str(TOOLS / "tcp_proxy.py"), str(target_port), str(port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.port = int(read_line(self.proc, 10))

    def command(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((cmd + "\n").encode())
        self.proc.stdin.flush()
        assert read_line(self.proc, 10) == f"ok {cmd}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            _READERS.pop(self.proc.stdout.fileno(), None)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


def wheel_venv(where: Path) -> Path:
    """A venv holding this project as a built wheel (no editable finder), its dependencies borrowed.

    The dependencies are this interpreter's, reached through a ``.pth`` line (a plain path: no
    import hook runs at start-up). Building needs the ``wheel`` package (the test extra).
    """
    import sysconfig

    where.mkdir(parents=True, exist_ok=True)
    wheels = where / "dist"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([PY, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(root), "-w", str(wheels)],
                   check=True, capture_output=True, timeout=300)
    venv = where / "venv"
    subprocess.run([PY, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True, timeout=120)
    vpy = venv / "bin" / "python"
    subprocess.run([PY, "-m", "pip", "--python", str(vpy), "install", "-q", "--no-deps", "--no-index",
                    *map(str, wheels.glob("*.whl"))], check=True, capture_output=True, timeout=300)
    site = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, timeout=30).stdout.strip()
    Path(site, "_borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv
