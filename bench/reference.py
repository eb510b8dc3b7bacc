"""The reference relay (Codename-11/hermes-relay, Python + aiohttp) beside ours, when this machine has it.

Never needed (CI has no reference checkout): ``find()`` answers None and the bench prints "reference
not available" rows. It looks for ``HERMES_RELAY_REFERENCE`` (the python of a virtualenv that runs the
reference; the checkout is the working directory, or ``HERMES_RELAY_REFERENCE_DIR``), else for a
checkout at ``/tmp/hermes-ref`` with its own ``.venv``. The relay runs as
``python -m plugin.relay --no-ssl --host 127.0.0.1 --port P`` with a private ``HOME``; a pairing
code is registered through its loopback ``POST /pairing/register``, as our ``hermes-pair`` does.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from procs import terminate

DEFAULT_CHECKOUT = Path("/tmp/hermes-ref")
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


@dataclass(frozen=True)
class Reference:
    python: str
    checkout: Path


def find(environ: dict[str, str]) -> Reference | None:
    """Where the reference relay can be run from, or None. Read before the bench drops HERMES_* variables."""
    given = environ.get("HERMES_RELAY_REFERENCE")
    if given:
        checkout = Path(environ.get("HERMES_RELAY_REFERENCE_DIR") or Path(given).resolve().parent.parent.parent)
        if Path(given).exists() and (checkout / "plugin" / "relay").is_dir():
            return Reference(given, checkout)
        return None
    python = DEFAULT_CHECKOUT / ".venv" / "bin" / "python"
    if python.exists() and (DEFAULT_CHECKOUT / "plugin" / "relay").is_dir():
        return Reference(str(python), DEFAULT_CHECKOUT)
    return None


class ReferenceRelay:
    """The reference relay in its own process, on a free port."""

    def __init__(self, ref: Reference, home: Path, port: int, env: dict[str, str] | None = None):
        self.ref = ref
        self.extra_env = env or {}  # e.g. its own TMUX_TMPDIR
        self.home = home
        self.port = port
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> ReferenceRelay:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HERMES_", "PYTHON"))}
        env["HOME"] = str(self.home)
        env.update(self.extra_env)
        self.proc = subprocess.Popen(
            [self.ref.python, "-m", "plugin.relay", "--no-ssl", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "WARNING"],
            cwd=self.ref.checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # a process we do not control: poll its /health
            if self.proc.poll() is not None:
                raise RuntimeError(f"the reference relay exited {self.proc.returncode} at start")
            try:
                if self._request("GET", "/health")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the reference relay did not answer /health within {timeout:g} s")

    def mint_code(self) -> str:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(6))
        status, body = self._request("POST", "/pairing/register", {"code": code})
        if status != 200 or not body.get("ok"):
            raise RuntimeError(f"the reference relay refused a pairing code: {status} {body}")
        return code

    def _request(self, method: str, path: str, body: dict[str, object] | None = None) -> tuple[int, dict[str, object]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
        self.proc = None
