"""A real agent with the real netlink watcher, in a private network namespace, sees an address appear
and re-probes at once instead of waiting out its backoff."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("netns_agent.py")


def _unavailable() -> str | None:
    if not sys.platform.startswith("linux"):
        return "user and network namespaces are Linux-only"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare (util-linux) or ip (iproute2) is not installed"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unprivileged user+net namespaces are disabled here: {probe.stderr.strip()}"
    return None


@pytest.mark.netns
@pytest.mark.integration
def test_address_change_in_a_namespace_triggers_a_reprobe(tmp_path) -> None:
    reason = _unavailable()
    if reason is not None:
        pytest.skip(reason)
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--net", sys.executable, str(PROBE), shutil.which("ip"), str(tmp_path)],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["netwatch"] == "netlink"
    assert report["retry_in"] > 8
    assert report["reconnected_before_retry"] is True
    assert report["route"] is True
    assert report["log_says_network_changed"] is True
