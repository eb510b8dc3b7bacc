"""The README's first command: `hermes-relay demo` runs everything locally and cleans up after itself."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_pairs_reconnects_and_cleans_up(tmp_path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "hermes_relay.cli", "demo"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "✓ Paired. Token stored in" in text
    assert "● connected via LAN" in text and "(this device)" in text
    assert "offline (backoff)" in text and "reconnected" in text
    assert not (tmp_path / ".hermes").exists()  # the user's own home is never touched
    assert [p for p in tmp_path.iterdir() if p.name.startswith("hermes-relay-demo-")] == []
