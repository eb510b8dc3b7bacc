"""``hermes-relay demo``: the whole product on this machine, against an embedded local relay.

Starts ``hermes-relay-server`` on a free loopback port, mints a code with ``hermes-pair``, pairs
through the agent, shows ``status``, ``devices`` and ``route``, then the desktop channel: the relay
host runs a command on this computer (policy ``trusted``) and makes a call that waits for the user
(policy ``ask_every_time``) until ``hermes-relay approvals approve ID`` lets it run. Last, it restarts
the relay and shows the agent reconnecting by itself, and opens a shell on a second relay (``--terminal``)
over two routes while the LAN one is cut (cli/demoshell.py). Everything runs as real processes in a
throw-away home directory (the user's own ``~/.hermes`` is never touched unless ``--home`` points
there), and everything it started is stopped at the end. Each step prints the command it runs, so the demo doubles as a tutorial.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..context import Context

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable

# subprocess, tempfile and friends are imported inside the functions: this module is imported on
# every CLI start (to register the subcommand), and `route`/`prompt` must stay lean.

RELAY_START_TIMEOUT = 20.0
RECONNECT_TIMEOUT = 30.0
ROUTE_TIMEOUT = 20.0  # until the relay routes desktop tools to the agent (its desktop.status arrived)
CALL_TIMEOUT = 60.0
PROGRAMS = {"hermes-relay": "hermes_relay.cli", "hermes-pair": "hermes_relay.relay.pair_cmd",
            "hermes-relay-server": "hermes_relay.relay"}


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run everything locally: relay, pairing, desktop tools, approvals, reconnect, shell",
                       description="Start an embedded local relay, pair with it, let the relay host run a "
                                   "command here and ask for your approval, show the agent keeping the "
                                   "connection through a relay restart, and a shell on a relay host that keeps "
                                   "running while the route changes. Uses a temporary home directory.",
                       epilog="examples:\n"
                              "  hermes-relay demo\n"
                              "  hermes-relay demo --keep --home /tmp/hermes-demo   # then explore it",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", type=Path, help="use this directory as HERMES_HOME (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="leave the relay and agent running and the files in place")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    import os
    import shlex
    import subprocess
    import tempfile

    from ...core.errors import HermesError

    base = Path(tempfile.mkdtemp(prefix="hermes-relay-demo-"))
    home = args.home or base / "home"
    # Unix socket paths are limited to ~104 bytes: keep the runtime dir short even when TMPDIR is long.
    run_dir = Path(tempfile.mkdtemp(prefix="hr-", dir="/tmp" if os.path.isdir("/tmp") else None))
    env = {**ctx.env, "HERMES_HOME": str(home), "HERMES_RELAY_RUNTIME_DIR": str(run_dir),
           "HERMES_RELAY_BACKOFF_CAP": "2"}
    env.pop("HERMES_RELAY_SOCKET", None)
    relay_env = {**ctx.env, "HERMES_HOME": str(base / "relay-host")}
    demo = _Demo(ctx, env, relay_env, base, run_dir)
    demo.keep = bool(args.keep)
    try:
        demo.run()
    except HermesError:
        raise
    except (OSError, subprocess.SubprocessError, TimeoutError) as exc:
        raise HermesError(f"demo failed: {exc}", hint=f"the files are in {base}") from exc
    finally:
        if not args.keep:
            demo.cleanup()
    if args.keep:
        ctx.out(f"\nLeft running. Use it with: HERMES_HOME={shlex.quote(str(home))} "
                f"HERMES_RELAY_RUNTIME_DIR={shlex.quote(str(run_dir))} hermes-relay status")
    return 0


class _Demo:
    def __init__(self, ctx: Context, env: dict[str, str], relay_env: dict[str, str], base: Path, run_dir: Path):
        self.ctx, self.env, self.relay_env, self.base, self.run_dir = ctx, env, relay_env, base, run_dir
        self.relay: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0
        self.keep = False  # --keep: the relays stay up

    def step(self, title: str) -> None:
        self.ctx.out(f"\n{self.ctx.style.bold('==> ' + title)}")
        self.ctx.flush()

    def command(self, args: tuple[str, ...], suffix: str = "") -> list[str]:
        """Print ``args`` as the user would type them; the argv that runs them here."""
        import shlex
        import sys

        self.ctx.out("$ " + " ".join(shlex.quote(a) for a in args) + suffix)
        self.ctx.flush()
        return [sys.executable, "-m", PROGRAMS[args[0]], *args[1:]]

    def show(self, *args: str, env: dict[str, str] | None = None) -> str:
        import subprocess

        out = subprocess.run(self.command(args), env=env or self.env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=120)
        text = out.stdout.rstrip()
        if text:
            self.ctx.out(text)
        if out.returncode != 0:
            raise subprocess.SubprocessError(f"`{' '.join(args)}` exited with {out.returncode}")
        return out.stdout

    def start_relay(self, port: int = 0) -> None:
        import subprocess
        import sys

        cmd = [sys.executable, "-m", "hermes_relay.relay", "--port", str(port), "--state-dir",
               str(self.base / "relay-state"), "--log-level", "WARNING"]
        self.relay = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.relay_env)
        line = _read_line(self.relay, RELAY_START_TIMEOUT)
        self.url = line.rsplit(" ", 1)[-1]
        self.port = int(self.url.rsplit(":", 1)[-1])
        self.ctx.out(line)

    def stop_relay(self) -> None:
        if self.relay is not None:
            self.relay.terminate()
            self.relay.wait(10)
            if self.relay.stdout is not None:
                self.relay.stdout.close()
            self.relay = None

    def run(self) -> None:
        import time

        self.step("Start a relay on this machine (hermes-relay-server)")
        self.start_relay()
        self.step("On the relay host: mint a one-time pairing code (hermes-pair)")
        minted = self.show("hermes-pair", "--relay", self.url, "--mode", "lan", "--lan-host", "127.0.0.1",
                           "--ttl", "7d", env=self.relay_env)
        code = next(line.split(":", 1)[1].strip() for line in minted.splitlines() if line.startswith("Code :"))
        self.step("On this computer: pair (the agent starts by itself and keeps the connection)")
        self.show("hermes-relay", "pair", code, "--remote", self.url)
        self.step("Status, devices and the route indicator")
        self.wait_for("connected")
        self.show("hermes-relay", "status")
        self.show("hermes-relay", "devices")
        self.show("hermes-relay", "route")
        self.desktop()
        self.step("The relay restarts: the agent notices and reconnects with the stored token")
        self.stop_relay()
        self.wait_for("backoff")
        self.show("hermes-relay", "route")
        self.start_relay(self.port)
        started = time.monotonic()
        self.wait_for("connected")
        self.ctx.out(f"reconnected {time.monotonic() - started:.1f}s after the relay came back")
        self.show("hermes-relay", "route")
        from .. import demoshell

        demoshell.run(self)
        self.step("Done")
        self.ctx.out("Pair your own relay with: hermes-relay pair --remote ws://HOST:8767 (it asks for the code)")
        self.ctx.out("Then choose what its host may do here with `hermes-relay access` and answer its requests "
                     "with `hermes-relay approvals --watch`.")

    def desktop(self) -> None:
        import json
        import subprocess

        from ...core import api

        self.step("The relay host runs a command on this computer (desktop channel, policy: trusted)")
        self.show("hermes-relay", "access", self.url, "trusted")
        self.wait_routed("desktop_terminal")
        self.show("hermes-relay-server", "call", "--relay", self.url, "desktop_terminal",
                  json.dumps({"command": "uname -a"}), env=self.relay_env)

        self.step("Ask every time: the relay host's call waits until you approve it (hermes-relay approvals)")
        self.show("hermes-relay", "access", self.url, "ask_every_time")
        argv = self.command(("hermes-relay-server", "call", "--relay", self.url, "desktop_terminal",
                             json.dumps({"command": "echo approved on $(uname -n)"})),
                            "   # on the relay host, in the background: it waits for you")
        call = subprocess.Popen(argv, env=self.relay_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            request = self.follow(lambda m, p: m == api.APPROVAL and p.get("event") == "approval.requested",
                                  ROUTE_TIMEOUT, "the approval request")
            self.show("hermes-relay", "approvals")
            self.show("hermes-relay", "approvals", "approve", str(request["id"]))
            text, _ = call.communicate(timeout=CALL_TIMEOUT)
        finally:
            if call.poll() is None:
                call.kill()
                call.communicate()
        self.ctx.out(f"the relay host's call returned (exit status {call.returncode}):")
        self.ctx.out(text.rstrip())
        if call.returncode != 0:
            raise subprocess.SubprocessError(f"the approved call exited with {call.returncode}")

    def wait_routed(self, tool: str) -> None:
        """Poll the relay's ``GET /desktop/_ping`` until it would forward ``tool`` to the agent."""
        import time
        import urllib.error
        import urllib.request

        url = f"http://127.0.0.1:{self.port}/desktop/_ping?tool={tool}"
        deadline = time.monotonic() + ROUTE_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the relay did not route {tool} to this computer within {ROUTE_TIMEOUT:g}s")
            time.sleep(0.1)

    def wait_for(self, state: str) -> None:
        """Follow the agent's watch stream until the relay reaches ``state``."""
        from ...core import api

        self.follow(lambda m, p: m == api.STATE and p.get("state") == state, RECONNECT_TIMEOUT, f"state {state}")

    def follow(self, match: Callable[[str, dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        """The first notification on the agent's watch stream that ``match`` accepts."""
        from ..client import ensure_agent

        class Reached(Exception):
            pass

        found: list[dict[str, Any]] = []

        def on_notify(method: str, params: dict[str, Any]) -> None:
            if match(method, params):
                found.append(params)
                raise Reached

        with ensure_agent(self.env, stderr=self.ctx.stderr) as client:
            try:
                client.watch_notifies(on_notify, timeout=timeout)
            except Reached:
                return found[0]
        raise TimeoutError(f"no {what} within {timeout:g}s")

    def cleanup(self) -> None:
        from ...core import paths
        from ..client import AgentClient

        try:
            with AgentClient.connect(paths.socket_path(self.env), timeout=2) as client:
                client.stop(timeout=5)
        except Exception:  # best effort: the agent may never have started
            pass
        self.stop_relay()
        import shutil

        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    from ..lines import LineReader

    assert proc.stdout is not None
    try:
        return LineReader(proc.stdout).read(timeout)
    except TimeoutError:
        raise TimeoutError(f"the relay did not start within {timeout:g}s") from None
    except EOFError:
        raise OSError(f"the relay exited with status {proc.wait()} while starting") from None
