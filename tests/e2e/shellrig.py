"""`hermes-relay shell` end to end: a relay with ``--terminal``, an agent with two routes, the CLI on a pty.

``ShellRig`` holds the real processes of one test:

- the relay (``--terminal``, bare or tmux; tmux on a private ``TMUX_TMPDIR`` under the test's tmp dir, its
  server killed at teardown), with its own ``HOME`` (tmux's config file) and ``SHELL=/bin/sh``;
- an agent paired with the terminal grant through a two-route invite: LAN through a ``Proxy`` (``down``,
  ``blackhole``), Public straight to the relay;
- ``ShellScreen``: the real CLI ``shell --raw`` on a pty (tests/shell_pty.py's ``Terminal``), its screen
  drained by a thread (so a CLI writing output never blocks while the test waits on something else);
- a **recorder** on the relay host: ``python3 rec.py FILE`` puts the PTY in raw mode, appends every byte it
  reads to FILE and echoes it; ``!`` ends it with ``REC-DONE <count>``. FILE holds exactly the bytes that
  reached the PTY, to compare with what was typed (tests/shell_typist.py types the numbered keys and
  counts them back).

Every wait has a deadline and waits on an observable event (the screen, the agent's watch stream, a file).
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from procs import PY, AgentEnv, Proxy, RelayProc, free_port, pair_env, wait_state
from shell_pty import Terminal, shell_argv

from hermes_relay.core import api, payload

FAST = {"HERMES_RELAY_BACKOFF_CAP": "1", "HERMES_RELAY_BACKOFF_BASE": "0.2"}

RECORDER = r'''
import os, sys, termios, tty
out = open(sys.argv[1], "ab", buffering=0)
saved = termios.tcgetattr(0)
tty.setraw(0)
os.write(1, b"REC" + b"-READY\r\n")
count = 0
try:
    while True:
        data = os.read(0, 4096)
        if not data:
            break
        end = data.find(b"!")
        if end >= 0:
            data = data[:end]
        out.write(data)
        count += len(data)
        os.write(1, data)
        if end >= 0:
            break
finally:
    termios.tcsetattr(0, termios.TCSADRAIN, saved)
os.write(1, b"\r\nREC" + b"-DONE %d\r\n" % count)
'''


class ShellScreen(Terminal):
    """A ``Terminal`` whose screen a thread drains; reads wait on a condition, never poll-sleep."""

    def __init__(self, argv: list[str], env: dict[str, str], err: Path):
        super().__init__(argv, env, err)
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.master], [], [], 0.5)
                if not ready:
                    continue
                chunk = os.read(self.master, 65536)
            except (OSError, ValueError):
                chunk = b""
            with self._cond:
                if not chunk:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self.screen += chunk
                self._cond.notify_all()

    def read(self, timeout: float) -> bytes:
        """What the reader adds to the screen within ``timeout`` (b"" when nothing)."""
        with self._cond:
            before = len(self.screen)
            self._cond.wait_for(lambda: len(self.screen) > before or self._eof, max(timeout, 0))
            return bytes(self.screen[before:])

    def wait_exit(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout)

    def mark(self) -> int:
        with self._cond:
            return len(self.screen)

    def close(self) -> None:
        self.kill()
        if not self._closed:
            self._closed = True
            os.close(self.slave)  # the reader sees EIO/EOF on the master once the slave is gone
            self._reader.join(5)
            os.close(self.master)

    def assert_restored(self) -> None:
        """The user's terminal is as it was: identical termios, and the mode-reset bytes were written."""
        from hermes_relay.cli.termmode import MODE_RESET

        assert self.termios_now() == self.before
        assert MODE_RESET in self.screen, bytes(self.screen)[-500:]


class ShellRig:
    def __init__(self, tmp: Path, *, tmux: bool = False, agent_env: dict[str, str] | None = None,
                 lan: bool = True):
        self.tmp = tmp
        self.tmux = tmux
        # A unix socket path is short: the tmux server's dir is not under tmp_path, which can be long.
        self.tmux_dir = Path(tempfile.mkdtemp(prefix="hrt-"))
        relay_home = tmp / "relay-user"
        relay_home.mkdir(exist_ok=True)
        self.relay_env = {**os.environ, "HOME": str(relay_home), "SHELL": "/bin/sh", "TMUX_TMPDIR": str(self.tmux_dir),
                          "HERMES_RELAY_TMUX_SOCKET": "hermes-test", "ENV": "", "PS1": "$ "}
        extra = ["--terminal", *([] if tmux else ["--no-tmux"]), "--log-level", os.environ.get("HR_RELAY_LOG", "INFO")]
        self.relay_log = tmp / "relay.log"
        self.relay = RelayProc(tmp / "relay", port=free_port(), extra=extra, env=self.relay_env, log=self.relay_log)
        self.proxy: Proxy | None = None
        self.env: AgentEnv | None = None
        self.screens: list[ShellScreen] = []
        self.agent_extra = {**FAST, "HERMES_RELAY_LOG_DIR": str(tmp / "agent-logs"), **(agent_env or {})}
        self.use_lan = lan
        self.recorder = tmp / "rec.py"
        self.recorder.write_text(RECORDER)
        self.lan_url = ""

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> ShellRig:
        try:
            self.relay.start()
            self.env = AgentEnv(self.tmp / "user", **self.agent_extra)
            if self.use_lan:
                self.proxy = Proxy(self.relay.port)
                self.lan_url = f"ws://127.0.0.1:{self.proxy.port}"
                invite = payload.build(code=self.mint_code(), ttl_seconds=3600, transport_hint="ws",
                                       endpoints=[("lan", self.lan_url), ("public", self.relay.url)])
                with self.env.client() as c:
                    c.call(api.PAIR_START, {"invite": json.dumps(invite)}, timeout=30)
                wait_state(self.env, lambda s: s["state"] == api.CONNECTED and s["route"]["url"] == self.lan_url)
            else:
                with self.env.client() as c:
                    c.call(api.PAIR_START, {"url": self.relay.url, "code": self.mint_code()}, timeout=30)
                wait_state(self.env, lambda s: s["state"] == api.CONNECTED)
        except BaseException:
            self.close()
            raise
        return self

    def mint_code(self) -> str:
        out = subprocess.run([PY, "-m", "hermes_relay.relay.pair_cmd", "--relay", self.relay.url, "--json",
                              "--mode", "lan", "--lan-host", "127.0.0.1", "--grant", "terminal=30d"],
                             capture_output=True, text=True, timeout=30, env=pair_env(self.relay.state_dir))
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["code"]

    def close(self) -> None:
        for s in self.screens:
            try:
                s.close()
            except OSError:
                pass
        if self.env is not None:
            self.env.stop()
            shutil.rmtree(self.env.run, ignore_errors=True)
        self.relay.stop()
        if self.proxy is not None:
            self.proxy.close()
        self.kill_tmux()
        shutil.rmtree(self.tmux_dir, ignore_errors=True)

    def kill_tmux(self) -> None:
        exe = shutil.which("tmux")
        if exe:
            subprocess.run([exe, "-L", "hermes-test", "kill-server"], env=self.relay_env, capture_output=True,
                           timeout=10)

    def restart_relay(self) -> None:
        """SIGTERM the relay and start it again on the same port and state dir."""
        self.relay.stop()
        self.relay.start()

    def crash_relay(self) -> None:
        """SIGKILL the relay (no final ack) and start it again on the same port and state dir."""
        assert self.relay.proc is not None
        self.relay.proc.kill()
        self.relay.proc.wait(10)
        self.relay.stop()  # closes what is left of it
        self.relay.start()

    # -- the user's side ---------------------------------------------------------------------------
    @property
    def agent(self) -> AgentEnv:
        assert self.env is not None
        return self.env

    def shell(self, *args: str, cli_env: dict[str, str] | None = None, name: str = "shell",
              raw: bool = True, pre: tuple[str, ...] = ()) -> ShellScreen:
        """``hermes-relay [pre] shell [--raw] args`` on a pty (``pre``: global flags such as --no-autostart)."""
        d = self.tmp / name
        d.mkdir(exist_ok=True)
        argv = shell_argv(*(["--raw", *args] if raw else args), pre=pre)
        screen = ShellScreen(argv, {**self.agent.env, **(cli_env or {})}, d / "shell.err")
        self.screens.append(screen)
        return screen

    def wait_prompt_works(self, screen: ShellScreen, tag: str = "ok", timeout: float = 15.0) -> None:
        """Run ``echo`` in the remote shell and wait for its computed output (not the echoed command)."""
        start = screen.mark()
        screen.type(f"echo {tag}-$((6*7))\r".encode())
        screen.wait_screen(f"{tag}-42".encode(), start=start, timeout=timeout)

    def start_recorder(self, screen: ShellScreen, name: str = "rec.bin", timeout: float = 15.0) -> Path:
        out = self.tmp / name
        start = screen.mark()
        screen.type(f"{PY} {self.recorder} {out}\r".encode())
        screen.wait_screen(b"REC-READY", start=start, timeout=timeout)
        return out

    def stop_recorder(self, screen: ShellScreen, timeout: float = 20.0) -> int:
        """End the recorder with ``!``; the byte count it reports."""
        start = screen.mark()
        screen.type(b"!")
        end = screen.wait_screen(b"REC-DONE ", start=start, timeout=timeout)
        tail = screen.wait_screen(b"\r\n", start=end, timeout=timeout)
        digits = re.match(rb"\d+", bytes(screen.screen[end:tail]))  # tmux may add an erase-line after them
        assert digits is not None, bytes(screen.screen[end:tail])
        return int(digits.group())

    def route(self) -> dict[str, Any]:
        with self.agent.client() as c:
            return c.call(api.ROUTE, {}, timeout=10)

    def agent_pid(self) -> int:
        with self.agent.client() as c:
            return int(c.hello["pid"])

    def dump(self, screen: Terminal) -> str:
        """The evidence for a failed assertion: the screen's tail, the CLI's stderr, the agent's log tail."""
        logs = sorted((self.tmp / "agent-logs").glob("*.log"))
        agent = "".join(p.read_text(errors="replace") for p in logs)[-3000:]
        return (f"\nscreen tail: {bytes(screen.screen)[-1500:]!r}\nCLI stderr: {screen.stderr()[-1500:]!r}"
                f"\nagent log tail:\n{agent}\nrelay log tail:\n{self.relay_log.read_text(errors='replace')[-3000:]}")
