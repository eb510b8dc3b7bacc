"""A ``hermes-pair`` invite from a ``--tls`` relay carries the certificate pin (where the reference client
reads it), and the agent dials with it as the expected pin: a matching pin pairs, a wrong one is refused."""

from __future__ import annotations

import json
import subprocess

import pytest
from procs import PY, pair_env

from hermes_relay.core import api, payload
from hermes_relay.core.errors import HermesError

pytestmark = pytest.mark.integration


def mint_invite(relay) -> dict:
    cmd = [PY, "-m", "hermes_relay.relay.pair_cmd", "--relay", relay.url, "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=pair_env(relay.state_dir))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_invite_pin_is_the_expected_pin_when_pairing(make_relay, agent_env) -> None:
    relay = make_relay(tls=True)
    minted = mint_invite(relay)
    assert payload.parse(minted["invite_url"]).pin_for(relay.url) == relay.pin
    with agent_env.client() as c:
        result = c.call(api.PAIR_START, {"invite": minted["invite_url"]}, timeout=30)
    assert result["url"] == relay.url
    assert agent_env.store()["sessions"][relay.url]["cert_pin_sha256"] == relay.pin


def test_an_invite_with_another_pin_is_refused(make_relay, agent_env) -> None:
    relay = make_relay(tls=True)
    invite = mint_invite(relay)["payload"]
    wrong = "sha256/" + "B" * 43 + "="
    invite.pop("sig", None)
    invite["relay"]["cert_pin_sha256"] = wrong
    for endpoint in invite["endpoints"]:
        endpoint["proxy"]["pinSha256" if "pinSha256" in endpoint["proxy"] else "pin_sha256"] = wrong
    with agent_env.client() as c, pytest.raises(HermesError) as info:
        c.call(api.PAIR_START, {"invite": json.dumps(invite)}, timeout=30)
    assert "pin" in info.value.message.lower()
    if agent_env.store_path.exists():
        assert relay.url not in agent_env.store().get("sessions", {})


def test_an_invite_whose_only_route_is_the_pinned_proxy_pairs_through_relay_ws(make_relay, agent_env) -> None:
    # What the reference desktop CLI uses on a --tls relay: plugin_proxy (no relay object), at /relay/ws.
    relay = make_relay(tls=True)
    invite = mint_invite(relay)["payload"]
    invite.pop("sig", None)
    invite["relay"].pop("cert_pin_sha256", None)
    invite["endpoints"] = [e for e in invite["endpoints"] if e["role"] == "plugin_proxy"]
    assert len(invite["endpoints"]) == 1
    with agent_env.client() as c:
        result = c.call(api.PAIR_START, {"invite": json.dumps(invite)}, timeout=30)
    proxied = relay.url.replace("127.0.0.1", "localhost") + "/relay/ws"  # offered as localhost: the reference refuses an IP
    assert result["url"] == proxied
    record = agent_env.store()["sessions"][proxied]
    assert record["cert_pin_sha256"] == relay.pin
