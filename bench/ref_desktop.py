"""The reference's desktop daemon (TypeScript, run with bun) paired with the reference relay, for the desktop rows.

Never needed: ``find_bun()`` answers None without bun, and the desktop rows then say "reference not
available". The reference's desktop CLI lives in ``<checkout>/desktop/src/cli.ts``; bun is looked up as
``HERMES_RELAY_REFERENCE_BUN``, then ``bun`` on the PATH, then ``/tmp/bun/node_modules/@oven/bun-linux-x64/bin/bun``.

How it is brought up (facts read from the reference's desktop README and source):
- ``cli.ts pair CODE --remote URL --auto-grant-tools --non-interactive`` stores a session token and the
  tool consent under ``$HOME/.hermes``; ``cli.ts hosts access full-access --remote URL --yes`` sets the
  host's policy to its most permissive one (no per-call prompt, as our ``trusted``);
- ``cli.ts daemon`` runs the tool-serving daemon in the foreground until SIGTERM;
- the daemon attaches the relay's ``tui`` channel on connect and gives up when the relay cannot spawn its
  Hermes gateway (``python -m tui_gateway.entry`` under ``HERMES_PYTHON_SRC_ROOT``): the relay is given a
  stand-in gateway that reads its stdin until the relay closes it, and nothing else.
Each gets a private ``HOME``; the relay's loopback ``GET /desktop/health`` says when the daemon is connected.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from procs import terminate
from reference import Reference, ReferenceRelay

BUN_ENV = "HERMES_RELAY_REFERENCE_BUN"
DEFAULT_BUN = Path("/tmp/bun/node_modules/@oven/bun-linux-x64/bin/bun")


def find_bun(environ: dict[str, str]) -> str | None:
    """The bun executable, or None. Read before the bench drops HERMES_* variables."""
    given = environ.get(BUN_ENV)
    if given:
        return given if Path(given).exists() else None
    return shutil.which("bun") or (str(DEFAULT_BUN) if DEFAULT_BUN.exists() else None)


def stand_in_gateway(folder: Path) -> dict[str, str]:
    """A ``tui_gateway`` package that waits for EOF on stdin; the relay's environment to spawn it."""
    package = folder / "tui_gateway"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "entry.py").write_text("import sys\n\nsys.stdin.buffer.read()\n")
    return {"HERMES_PYTHON_SRC_ROOT": str(folder)}


class ReferenceDesktop:
    """The reference relay and its desktop daemon, both in their own processes with private homes."""

    def __init__(self, ref: Reference, bun: str, root: Path, port: int):
        self.ref, self.bun, self.root = ref, bun, root
        self.relay = ReferenceRelay(ref, root / "relay-home", port, env=stand_in_gateway(root / "gateway"))
        self.port = port
        self.remote = f"ws://127.0.0.1:{port}"
        self.home = root / "daemon-home"
        self.daemon: subprocess.Popen[bytes] | None = None

    def _cli(self, *args: str) -> list[str]:
        return [self.bun, str(self.ref.checkout / "desktop" / "src" / "cli.ts"), *args]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HERMES_", "PYTHON", "NODE_"))}
        env["HOME"] = str(self.home)
        return env

    def start(self, timeout: float = 60) -> ReferenceDesktop:
        self.home.mkdir(parents=True, exist_ok=True)
        self.relay.start(timeout)
        code = self.relay.mint_code()
        for args in (("pair", code, "--remote", self.remote, "--auto-grant-tools", "--non-interactive"),
                     ("hosts", "access", "full-access", "--remote", self.remote, "--yes")):
            out = subprocess.run(self._cli(*args), env=self._env(), cwd=self.root, capture_output=True, timeout=60)
            if out.returncode != 0:
                raise RuntimeError(f"reference desktop `{args[0]} {args[1]}` exited {out.returncode}: "
                                   f"{out.stderr.decode(errors='replace')[-300:]}")
        log = (self.root / "daemon.log").open("wb")
        self.daemon = subprocess.Popen(self._cli("daemon"), env=self._env(), cwd=self.root, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # processes we do not control: poll the relay's view of the daemon
            if self.daemon.poll() is not None:
                raise RuntimeError(f"the reference desktop daemon exited {self.daemon.returncode}: "
                                   f"{self.log_tail()}")
            health = self._health()
            if health.get("connected") and "desktop_read_file" in (health.get("advertised_tools") or []):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"the reference desktop daemon did not connect within {timeout:g} s: {self.log_tail()}")

    def _health(self) -> dict[str, object]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/desktop/health")
            return json.loads(conn.getresponse().read() or b"{}")
        except (OSError, ValueError):
            return {}
        finally:
            conn.close()

    def log_tail(self) -> str:
        try:
            return (self.root / "daemon.log").read_text(errors="replace")[-400:]
        except OSError:
            return ""

    @property
    def daemon_pid(self) -> int:
        assert self.daemon is not None
        return self.daemon.pid

    def stop(self) -> None:
        if self.daemon is not None:
            terminate(self.daemon, group=True)
        self.daemon = None
        self.relay.stop()
