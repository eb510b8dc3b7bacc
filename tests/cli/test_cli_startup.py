"""The CLI never imports trio, and the per-prompt commands do not even load the IPC client.

Checked in a fresh interpreter with ``-X importtime``, which lists every module actually imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


def imported_modules(argv: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    run = Path(tempfile.mkdtemp(prefix="hr-start-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERMES_", "PYTHON"))}
    env.update({"HOME": str(tmp_path), "HERMES_HOME": str(tmp_path / ".hermes"), "HERMES_RELAY_RUNTIME_DIR": str(run)})
    try:
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "hermes_relay.cli", *argv],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    finally:
        run.rmdir()
    modules = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                modules.add(name)
    return done, modules


def test_status_json_does_not_import_trio(tmp_path) -> None:
    done, modules = imported_modules(["status", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["relays"] == []
    assert "hermes_relay.cli.main" in modules  # the listing is real
    assert not {m for m in modules if m.split(".")[0] in ("trio", "trio_websocket", "netifaces", "cryptography")}


@pytest.mark.parametrize("argv", [["route"], ["prompt", "show"], ["prompt", "init", "bash"]])
def test_prompt_commands_do_not_load_the_ipc_client(tmp_path, argv) -> None:
    done, modules = imported_modules(argv, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    heavy = {"hermes_relay.cli.client", "socket", "subprocess", "msgpack", "trio", "hermes_relay.core.store"}
    assert not heavy & modules
