"""``hermes-relay demo``: the whole product on this machine, against an embedded local relay.

Starts ``hermes-relay-server`` on a free loopback port, mints a code with ``hermes-pair``, pairs
through the agent, shows ``status``, ``devices`` and ``route``, then restarts the relay and shows the
agent reconnecting by itself. Everything runs as real processes in a throw-away home directory (the
user's own ``~/.hermes`` is never touched unless ``--home`` points there), and everything it started
is stopped at the end. Each step prints the command it runs, so the demo doubles as a tutorial.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hermes_relay.cli.context import Context

if TYPE_CHECKING:
    import subprocess

# subprocess, tempfile and friends are imported inside the functions: this module is imported on
# every CLI start (to register the subcommand), and `route`/`prompt` must stay lean.

RELAY_START_TIMEOUT = 20.0
RECONNECT_TIMEOUT = 30.0


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run everything locally: relay, pairing, agent, reconnect",
                       description="Start an embedded local relay, pair with it, and show the agent keeping "
                                   "the connection through a relay restart. Uses a temporary home directory.")
    p.add_argument("--home", type=Path, help="use this directory as HERMES_HOME (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="leave the relay and agent running and the files in place")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    import os
    import shlex
    import subprocess
    import tempfile

    from hermes_relay.core.errors import HermesError

    base = Path(tempfile.mkdtemp(prefix="hermes-relay-demo-"))
    home = args.home or base / "home"
    # Unix socket paths are limited to ~104 bytes: keep the runtime dir short even when TMPDIR is long.
    run_dir = Path(tempfile.mkdtemp(prefix="hr-", dir="/tmp" if os.path.isdir("/tmp") else None))
    env = {**ctx.env, "HERMES_HOME": str(home), "HERMES_RELAY_RUNTIME_DIR": str(run_dir),
           "HERMES_RELAY_BACKOFF_CAP": "2"}
    env.pop("HERMES_RELAY_SOCKET", None)
    relay_env = {**ctx.env, "HERMES_HOME": str(base / "relay-host")}
    demo = _Demo(ctx, env, relay_env, base, run_dir)
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

    def step(self, title: str) -> None:
        self.ctx.out(f"\n{self.ctx.style.bold('==> ' + title)}")
        self.ctx.flush()

    def show(self, *args: str, env: dict[str, str] | None = None) -> str:
        import shlex
        import subprocess
        import sys

        self.ctx.out("$ " + " ".join(shlex.quote(a) for a in args))
        self.ctx.flush()
        prog = {"hermes-relay": "hermes_relay.cli", "hermes-pair": "hermes_relay.relay.pair_cmd"}[args[0]]
        out = subprocess.run([sys.executable, "-m", prog, *args[1:]], env=env or self.env, stdout=subprocess.PIPE,
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
        self.step("The relay restarts: the agent notices and reconnects with the stored token")
        self.stop_relay()
        self.wait_for("backoff")
        self.show("hermes-relay", "route")
        self.start_relay(self.port)
        started = time.monotonic()
        self.wait_for("connected")
        self.ctx.out(f"reconnected {time.monotonic() - started:.1f}s after the relay came back")
        self.show("hermes-relay", "route")
        self.step("Done")
        self.ctx.out("Pair your own relay with: hermes-relay pair CODE --remote ws://HOST:8767")

    def wait_for(self, state: str) -> None:
        """Follow the agent's watch stream until the relay reaches ``state``."""
        from hermes_relay.cli.client import ensure_agent
        from hermes_relay.core import api

        class Reached(Exception):
            pass

        def on_notify(method: str, params: dict[str, Any]) -> None:
            if method == api.STATE and params.get("state") == state:
                raise Reached

        with ensure_agent(self.env, stderr=self.ctx.stderr) as client:
            try:
                client.call(api.WATCH, {}, timeout=RECONNECT_TIMEOUT, on_notify=on_notify)
            except Reached:
                return

    def cleanup(self) -> None:
        from hermes_relay.cli.client import AgentClient
        from hermes_relay.core import paths

        try:
            with AgentClient.connect(paths.socket_path(self.env), timeout=2) as client:
                client.call("agent.stop", {}, timeout=5)
        except Exception:  # best effort: the agent may never have started
            pass
        self.stop_relay()
        import shutil

        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    from hermes_relay.cli.lines import LineReader

    assert proc.stdout is not None
    try:
        return LineReader(proc.stdout).read(timeout)
    except TimeoutError:
        raise TimeoutError(f"the relay did not start within {timeout:g}s") from None
    except EOFError:
        raise OSError(f"the relay exited with status {proc.wait()} while starting") from None
