"""The demo's shell step: a shell on the relay host that keeps running while the route changes.

A second embedded relay serves shells (``hermes-relay-server --terminal --no-tmux``: a bare shell, so
the run is the same with or without tmux). The computer pairs with it over two routes: LAN through a
loopback forwarder the demo can cut (cli/tcpforward.py, the Wi-Fi that goes away) and Public direct.
The demo is the user's terminal: it runs ``hermes-relay shell --raw`` on a pty, types a counter loop
that runs remotely, cuts the LAN route in the middle, types more keys during the gap, and checks the
counter arrives complete and in order via Public and the keys typed in the gap ran exactly once.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

    from .tcpforward import Forwarder

TICKS = 20
TICK_SECONDS = 0.2
CUT_AFTER = 4  # the tick after which the LAN route is cut
SCREEN_TIMEOUT = 30.0
UPGRADE_WAIT = 30.0  # the agent's default upgrade_interval: how long a lower route is kept before a higher one is tried
_TICK = re.compile(rb"tick-(\d+)\r\n")  # the output lines (the echoed loop shows tick-$i)
_PROMPT = re.compile(rb"[$#%>] \Z")
_STATUS = re.compile(r"\x1b7(.*?)\x1b8", re.S)
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_0-9=>]|[\x00-\x08\x0b-\x1f\x7f]")


def run(demo: Any) -> None:  # demo: cli/commands/demo.py's _Demo (that module imports this one)
    import shutil
    import subprocess

    from ..core import api, payload
    from .lines import LineReader
    from .tcpforward import Forwarder

    demo.step("A shell on the relay host that keeps running while the route changes (hermes-relay shell)")
    if sys.platform == "win32":
        demo.ctx.out("skipped: hermes-relay shell needs a POSIX terminal (use WSL)")
        return
    argv = demo.command(("hermes-relay-server", "--port", "0", "--terminal", "--no-tmux", "--state-dir",
                         str(demo.base / "shell-relay-state"), "--log-level", "WARNING"),
                        "   # a second relay, serving shells")
    host_home = demo.base / "relay-host"  # the shell's HOME: no rc files, no history written to the user's own
    host_home.mkdir(parents=True, exist_ok=True)
    # A POSIX shell whatever the user's login shell is (the counter loop is sh syntax; fish would refuse it).
    posix = shutil.which("bash") or "/bin/sh"
    relay = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             env={**demo.relay_env, "HOME": str(host_home), "SHELL": posix})
    lan: Forwarder | None = None
    shell: _Pty | None = None
    try:
        assert relay.stdout is not None
        line = LineReader(relay.stdout).read(20.0)
        demo.ctx.out(line)
        url = line.rsplit(" ", 1)[-1]
        lan = Forwarder(int(url.rsplit(":", 1)[-1]))
        demo.ctx.out(f"routes: LAN {lan.url} (through a forwarder the demo cuts, as a Wi-Fi that goes away), "
                     f"Public {url} (direct)")
        minted = demo.show("hermes-pair", "--relay", url, "--grant", "terminal=30d", "--mode", "lan", "--lan-host",
                           "127.0.0.1", "--no-qr", env=demo.relay_env)
        code = next(x.split(":", 1)[1].strip() for x in minted.splitlines() if x.startswith("Code :"))
        invite = payload.invite_url(payload.build(code=code, ttl_seconds=7 * 86400,
                                                  transport_hint="ws", endpoints=[("lan", lan.url), ("public", url)]))
        demo.command(("hermes-relay", "pair", "--pair-qr", invite[:40] + "…"), "   # an invite with both routes")
        paired = subprocess.run([sys.executable, "-m", "hermes_relay.cli", "pair", "--pair-qr", invite], env=demo.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
        demo.ctx.out(paired.stdout.rstrip())
        if paired.returncode != 0:
            raise subprocess.SubprocessError(f"pairing over two routes exited with {paired.returncode}")
        state = demo.follow(lambda m, p: m == api.STATE and p.get("state") == api.CONNECTED
                            and (p.get("route") or {}).get("url") in (lan.url, url), 30.0, "a connection")
        if (state.get("route") or {}).get("url") != lan.url:  # a busy machine: the LAN probe answered late
            demo.ctx.out(f"● connected via Public first; the agent moves up to LAN at its next probe of it "
                         f"(every {UPGRADE_WAIT:g}s at most)")
            state = demo.follow(lambda m, p: m == api.STATE and p.get("state") == api.CONNECTED
                                and (p.get("route") or {}).get("url") == lan.url, UPGRADE_WAIT + 15, "the LAN route")
        owner = str(state["url"])
        demo.ctx.out(f"● connected via LAN ({lan.url})")

        shell = _Pty(demo.command(("hermes-relay", "shell", "--raw", "--remote", owner),
                                  "   # on a terminal the demo drives"), demo.env, demo.ctx)
        _drive(demo, shell, lan, url)
    finally:
        if shell is not None:
            shell.close()
        if lan is not None:
            lan.cut()
        if not demo.keep or relay.poll() is not None:
            relay.terminate()
            relay.wait(10)
        if relay.stdout is not None:
            relay.stdout.close()


def _drive(demo: Any, shell: _Pty, lan: Forwarder, url: str) -> None:
    import subprocess
    import time

    from ..core import api

    shell.wait_prompt()
    shell.type(f"for i in $(seq 1 {TICKS}); do echo tick-$i; sleep {TICK_SECONDS}; done\r".encode(),
               "a counter that runs on the relay host")
    shell.wait(f"tick-{CUT_AFTER}\r\n".encode())
    cut_at = time.monotonic()
    lan.cut()
    demo.ctx.out("✂ the LAN route is cut")
    shell.type(b"echo $((6*7))-typed-in-the-gap\r", "typed during the gap: it runs once the counter is done")
    demo.follow(lambda m, p: m == api.STATE and p.get("state") == api.CONNECTED
                and (p.get("route") or {}).get("role") == "public", 30.0, "the Public route")
    demo.ctx.out(f"● connected via Public ({url}), {time.monotonic() - cut_at:.1f}s after the cut")
    shell.wait(f"tick-{TICKS}\r\n".encode())
    shell.wait(b"42-typed-in-the-gap\r\n")
    shell.type(b"exit\r", "")
    status = shell.finish()
    ticks = [int(n) for n in _TICK.findall(bytes(shell.screen))]
    once = bytes(shell.screen).count(b"42-typed-in-the-gap")
    if ticks != list(range(1, TICKS + 1)) or once != 1 or status != 0:
        raise subprocess.SubprocessError(f"the shell lost its way: ticks {ticks}, the keys typed in the gap ran "
                                         f"{once} times, exit status {status}")
    demo.ctx.out(f"✓ the counter arrived 1..{TICKS} in order across the route change, none lost or doubled; "
                 f"the keys typed during the gap ran once; the shell exited with status {status}")


class _Pty:
    """The user's terminal: ``argv`` on a pty; prints what it types and each line that comes back."""

    ctx: Any
    master: int
    proc: subprocess.Popen[bytes]
    screen: bytearray
    _shown: int

    def __init__(self, argv: list[str], env: dict[str, str], ctx: Any):
        if sys.platform == "win32":  # run() skips the step there
            raise OSError("no pty on Windows")
        import fcntl
        import os
        import struct
        import subprocess
        import termios

        self.ctx = ctx
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        try:
            self.proc = subprocess.Popen(
                argv, stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "xterm-256color"},
                start_new_session=True, close_fds=True)
        finally:
            os.close(slave)
        self.screen = bytearray()
        self._shown = 0

    def type(self, data: bytes, why: str) -> None:
        import os

        note = f"   # {why}" if why else ""
        self.ctx.out(f"  ⌨ {data.decode().replace(chr(13), '⏎')}{note}")
        self.ctx.flush()
        os.write(self.master, data)

    def wait(self, data: bytes, timeout: float = SCREEN_TIMEOUT) -> None:
        import time

        deadline = time.monotonic() + timeout
        while data not in self.screen:
            if not self._read(deadline - time.monotonic()):
                if time.monotonic() >= deadline or self.proc.poll() is not None:
                    self._print_lines(final=True)
                    raise TimeoutError(f"{data.decode().strip()!r} never showed in the shell")
        self._print_lines()

    def wait_prompt(self, timeout: float = 10.0) -> None:
        """Until the remote shell shows a prompt (keys typed before it would show twice: the pty echoes them
        while the CLI starts, and again when the shell reads them); on a prompt it does not know, on."""
        import time

        deadline = time.monotonic() + timeout
        while not _PROMPT.search(self.screen) and self._read(deadline - time.monotonic()):
            pass

    def finish(self, timeout: float = SCREEN_TIMEOUT) -> int:
        import time

        deadline = time.monotonic() + timeout
        while self._read(deadline - time.monotonic()):
            pass
        self._print_lines(final=True)
        return self.proc.wait(max(deadline - time.monotonic(), 1.0))

    def close(self) -> None:
        import os

        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        try:
            os.close(self.master)
        except OSError:
            pass

    def _read(self, timeout: float) -> bool:
        import os
        import select

        if timeout <= 0:
            return False
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the shell exited and the pty closed
            return False
        self.screen += chunk
        return bool(chunk)

    def _print_lines(self, final: bool = False) -> None:
        end = len(self.screen) if final else self.screen.rfind(b"\n") + 1
        if end <= self._shown:
            return
        text = bytes(self.screen[self._shown:end]).decode(errors="replace")
        self._shown = end
        for status in _STATUS.findall(text):  # the CLI's status line (bottom row, saved cursor): on its own line
            if shown := _ESCAPES.sub("", status).strip():
                self.ctx.out(f"  ┄ status line: {shown}")
        for raw in _STATUS.sub("", text).split("\n"):
            shown = _ESCAPES.sub("", raw.rstrip("\r").rsplit("\r", 1)[-1]).strip()
            if shown:
                self.ctx.out(f"  │ {shown}")
        self.ctx.flush()
