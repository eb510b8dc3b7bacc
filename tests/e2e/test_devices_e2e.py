"""`devices extend` / `devices revoke` through the CLI against a real relay and agent."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
from procs import PY, pair_env, wait_state

from hermes_relay.core import api

pytestmark = pytest.mark.integration


def test_shortening_this_devices_session_updates_the_stored_expiry(relay_proc, agent_env) -> None:
    agent_env.pair(relay_proc)
    wait_state(agent_env, lambda s: s["state"] == api.CONNECTED)
    token = agent_env.store()["sessions"][relay_proc.url]["token"]
    prefix = token[:8]

    default = agent_env.cli("devices", "extend", prefix)  # 30 days left: a 1-day default would shorten it
    assert default.returncode == 2
    assert f"hermes-relay: {prefix} expires in 30d now: the default 1 day would shorten it" in default.stderr
    assert f"run on the relay host: hermes-relay-server sessions extend {prefix} --ttl 30d" in default.stderr

    before = time.time()
    result = agent_env.cli("devices", "extend", prefix, "--ttl", "1h")
    assert result.returncode == 0, result.stderr
    assert result.stderr.endswith(f"warning: {prefix} expires in 30d now; this shortens it to 1h\n")
    assert result.stdout.splitlines() == [f"✓ extended {prefix}: now expires in 1h",
                                          "  (this device: the stored expiry was updated)"]
    stored = agent_env.store()["sessions"][relay_proc.url]["ttl_expires_at"]
    assert before + 3600 - 5 <= stored <= time.time() + 3600 + 5

    # Longer again: the relay refuses a device that, and the hint is the relay host's command, which works.
    longer = agent_env.cli("devices", "extend", prefix, "--ttl", "2h")
    assert longer.returncode == 1
    operator = f"hermes-relay-server sessions extend {prefix} --ttl 2h"
    assert longer.stderr.splitlines()[-1] == ("  hint: a device can only shorten its own session; to extend it, "
                                              f"run on the relay host: {operator}")
    on_host = subprocess.run([PY, "-m", "hermes_relay.relay", *operator.split()[1:], "--relay", relay_proc.url],
                             capture_output=True, text=True, timeout=30, env=pair_env(relay_proc.state_dir))
    assert on_host.returncode == 0, on_host.stderr
    assert on_host.stdout.startswith(f"extended {prefix}: now expires in 2h")

    short = agent_env.cli("devices", "revoke", prefix[:3], "--yes")
    assert short.returncode == 2 and "too short: give at least 4 characters" in short.stderr


def test_a_rate_limited_pairing_says_when_to_try_again_from_the_relays_retry_after(relay_proc, agent_env) -> None:
    relay_proc.mint_code()  # a code is pending, so wrong guesses count as failures
    for _ in range(16):  # the relay blocks after 10 failures a minute
        result = agent_env.cli("pair", "ZZZZZZ", "--remote", relay_proc.url)
        assert result.returncode != 0
        if "rate limiting" in result.stderr:
            break
    else:
        pytest.fail("the relay never rate limited the wrong codes")
    hint = result.stderr.splitlines()[-1]
    assert re.fullmatch(r"  hint: try again in [1-9]\d* min \(or mint a new code with `hermes-pair`, which lifts "
                        r"the block\)", hint), result.stderr
    assert "extend the block" not in result.stderr


def test_wss_pairing_prints_the_pin_and_accepting_the_same_pin_changes_nothing(make_relay, agent_env) -> None:
    relay = make_relay(tls=True)
    paired = agent_env.cli("pair", "--code", "-", "--remote", relay.url, input=relay.mint_code() + "\n")
    assert paired.returncode == 0, paired.stderr
    assert (f"  Certificate pin: {relay.pin} (trusted from now on; check it matches the relay's)"
            in paired.stdout.splitlines())
    before = agent_env.store_path.read_bytes()
    same = agent_env.cli("pin", "accept", relay.url)  # no terminal and no --yes: fine, nothing to confirm
    assert same.returncode == 0, same.stderr
    assert same.stdout.splitlines() == [f"✓ {relay.url}: this certificate is already trusted; nothing changed",
                                        f"  pin: {relay.pin}"]
    assert agent_env.store_path.read_bytes() == before


def test_an_unpaired_machine_is_left_without_an_agent(relay_proc, agent_env) -> None:
    from hermes_relay.cli.client import AgentClient
    from hermes_relay.core import paths
    from hermes_relay.core.errors import AgentNotRunningError

    devices = agent_env.cli("devices")
    assert devices.returncode == 1 and "not paired with any relay" in devices.stderr
    assert not os.path.exists(paths.socket_path(agent_env.env))  # never started

    relay_proc.mint_code()
    failed = agent_env.cli("pair", "ZZZZZZ", "--remote", relay_proc.url)
    assert failed.returncode == 1 and "Invalid pairing code" in failed.stderr
    deadline = time.monotonic() + 10
    while True:  # the agent it started for the pairing stops again
        try:
            AgentClient.connect(paths.socket_path(agent_env.env), timeout=1).close()
        except AgentNotRunningError:
            break
        assert time.monotonic() < deadline, "the agent started for a failed first pairing is still running"
