"""``pair`` against a scripted agent: what it sends, what it prints, and the interactive code prompt."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from hermes_relay.core import payload

NOW = 1_800_000_000.0
ROUTE = {"url": "ws://192.168.1.5:8767", "role": "lan", "label": "LAN", "priority": 0}
RESULT = {"url": "ws://192.168.1.5:8767", "server_version": "0.1.0", "route": ROUTE, "expires_at": NOW + 30 * 86400,
          "grants": {"terminal": NOW + 30 * 86400, "bridge": NOW + 7 * 86400}, "port_added": False,
          "verified": None, "verify_note": "paired by code (no invite to verify)"}
PROGRESS = [("pair.progress", {"kind": "probe", "ok": True, "ms": 3.1, "route": ROUTE,
                               "line": "  ✓ LAN        ws://192.168.1.5:8767  3 ms"})]


def agent_for(make_agent, result=None, notifies=PROGRESS):
    return make_agent(results={"pair.start": result or RESULT}, notifies={"pair.start": list(notifies)})


def test_pair_by_code_sends_the_cleaned_code_and_prints_the_result(cli, make_agent) -> None:
    agent = agent_for(make_agent)
    result = cli("pair", "f3w7-ey", "--remote", "ws://192.168.1.5", "--name", " laptop ", agent=agent)
    assert result.code == 0, result.err
    assert agent.calls == [("pair.start", {"url": "ws://192.168.1.5:8767", "code": "F3W7EY", "device_name": "laptop"},
                            60.0)]
    assert agent.autostarts == [False]  # the agent was running already
    assert result.err.splitlines() == [
        "(no port given: using 8767)",
        "Pairing with ws://192.168.1.5:8767…",
        "  ✓ LAN        ws://192.168.1.5:8767  3 ms",
    ]
    assert result.out.splitlines() == [
        "✓ Paired. Token stored in ~/.hermes/remote-sessions.json",
        "  Server: 0.1.0",
        "  Relay: ws://192.168.1.5:8767",
        "  Route: LAN (ws://192.168.1.5:8767)",
        "  Session: expires in 30d",
        "  Grants: bridge (in 7d), terminal (in 30d)",
        "  Desktop access: restricted",  # the scripted agent wrote no policy: a host without a record has none
        "    This relay host cannot use this computer's desktop tools.",
        "    Change it: hermes-relay access ws://192.168.1.5:8767 standard|trusted|restricted",
    ]


def test_pair_says_what_the_new_relay_host_may_do_here_and_how_to_change_it(cli, env, make_agent) -> None:
    from hermes_relay.core import policy

    policy.init_paired(policy.policy_file(env), "ws://192.168.1.5:8767")  # what the agent does on a fresh pairing
    result = cli("pair", "F3W7EY", "--remote", "ws://192.168.1.5:8767", agent=agent_for(make_agent))
    assert result.code == 0, result.err
    assert result.out.splitlines()[-4:] == [
        "  Desktop access: ask every time",
        "    This relay host may now ask to run commands and use files here; you approve",
        "    each call (`hermes-relay approvals`).",
        "    Change it: hermes-relay access ws://192.168.1.5:8767 standard|trusted|restricted",
    ]


def test_the_store_path_is_shown_in_full_outside_home(cli, env, make_agent, tmp_path) -> None:
    environ = {**env, "HERMES_RELAY_SESSIONS_FILE": str(tmp_path / "elsewhere.json")}
    result = cli("pair", "F3W7EY", "--remote", "ws://h:8767", agent=agent_for(make_agent), environ=environ)
    assert result.out.splitlines()[0] == f"✓ Paired. Token stored in {tmp_path / 'elsewhere.json'}"


def test_code_and_url_come_from_the_environment(cli, env, make_agent) -> None:
    agent = agent_for(make_agent)
    environ = {**env, "HERMES_RELAY_URL": "wss://relay.example.com", "HERMES_RELAY_CODE": "f3w7ey"}
    assert cli("pair", agent=agent, environ=environ).code == 0
    assert agent.calls[0][1] == {"url": "wss://relay.example.com", "code": "F3W7EY"}


def test_an_invite_wins_and_its_verification_is_reported(cli, make_agent) -> None:
    invite = payload.invite_url(payload.build(code="F3W7EY", ttl_seconds=600, transport_hint="ws",
                                              endpoints=[("lan", "ws://192.168.1.5:8767"),
                                                         ("tailscale", "ws://100.64.1.2:8767")]))
    unverified = {**RESULT, "verified": None, "verify_note": "the invite carries no signature"}
    agent = agent_for(make_agent, unverified)
    result = cli("pair", "--pair-qr", invite, "--remote", "ws://other:1", "AAAAAA", agent=agent)
    assert result.code == 0, result.err
    assert agent.calls[0][1] == {"invite": invite}
    assert result.err.splitlines()[:2] == ["(--pair-qr given: ignoring --remote and the code)",
                                           "Pairing from the invite (2 routes)…"]
    assert result.out.splitlines()[-1] == "  Invite signature: none (the invite is unsigned)"
    # The normal case: signed, but the key stays on the relay host.
    checked_elsewhere = {**RESULT, "verified": None,
                         "verify_note": "the signing key stays on the relay host, so this computer cannot check it"}
    result = cli("pair", "--pair-qr", invite, agent=agent_for(make_agent, checked_elsewhere))
    assert result.out.splitlines()[-1] == "  Invite signature: not checkable here (normal)"
    tampered = {**RESULT, "verified": False, "verify_note": "the signature does not match this host's relay key"}
    result = cli("pair", "--pair-qr", invite, "--ignore-signature", agent=agent_for(make_agent, tampered))
    assert result.out.splitlines()[-1] == ("  Invite signature does NOT match: the signature does not match this "
                                           "host's relay key")

    agent = agent_for(make_agent, {**RESULT, "verified": True, "verify_note": "signature verified"})
    result = cli("pair", "--pair-qr", invite, agent=agent)
    assert result.out.splitlines()[-1] == "  Invite signature verified"
    assert "ignore_signature" not in agent.calls[0][1]


def test_the_invite_from_the_environment_loses_to_an_explicit_remote(cli, env, make_agent) -> None:
    invite = json.dumps({"hermes": 2, "relay": {"url": "ws://10.0.0.9:8767", "code": "BBBBBB"}})
    agent = agent_for(make_agent)
    environ = {**env, "HERMES_RELAY_PAIR_QR": invite}
    assert cli("pair", "F3W7EY", "--remote", "ws://h:8767", agent=agent, environ=environ).code == 0
    assert cli("pair", agent=agent, environ=environ).code == 0
    assert [c[1] for c in agent.calls] == [{"url": "ws://h:8767", "code": "F3W7EY"}, {"invite": invite}]


def test_json_prints_the_result(cli, make_agent) -> None:
    result = cli("pair", "F3W7EY", "--remote", "ws://h:8767", "--json", agent=agent_for(make_agent))
    assert json.loads(result.out) == RESULT


def test_never_expiring_sessions_say_so(cli, make_agent) -> None:
    result = cli("pair", "F3W7EY", "--remote", "ws://h:8767", agent=agent_for(make_agent, {**RESULT, "expires_at": None,
                                                                                              "grants": {}}))
    assert "  Session: never expires" in result.out.splitlines()
    assert not any(line.startswith("  Grants:") for line in result.out.splitlines())


def test_a_rejected_code_is_printed_by_main_with_its_hint(cli, make_agent) -> None:
    from hermes_relay.core.errors import PairingRejectedError

    agent = make_agent(results={"pair.start": PairingRejectedError("pairing failed: Invalid pairing code or session token"),
                                "agent.stop": {"stopping": True}}, running=False)
    result = cli("pair", "F3W7EY", "--remote", "ws://h:8767", agent=agent)
    assert result.code == 1
    # It started the agent for this pairing, which failed on a machine with no pairing: stopped again.
    assert agent.autostarts == [False, True] and agent.methods() == ["pair.start", "agent.stop"]
    running = make_agent(results={"pair.start": PairingRejectedError("pairing failed")})
    assert cli("pair", "F3W7EY", "--remote", "ws://h:8767", agent=running).code == 1
    assert running.methods() == ["pair.start"]  # an agent the user started stays
    assert result.out == ""
    assert result.err.splitlines()[-2:] == [
        "hermes-relay: pairing failed: Invalid pairing code or session token",
        "  hint: the code is wrong, already used, or older than 10 minutes: run `hermes-pair` on the relay host "
        "for a fresh one",
    ]


# -- the interactive prompt ------------------------------------------------------------------------
@pytest.fixture
def relay_port() -> Iterator[str]:
    """A real listening socket: the prompt first checks that something answers at the relay URL."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"ws://127.0.0.1:{listener.getsockname()[1]}"


def test_the_prompt_cleans_a_bracketed_paste_and_echoes_the_code(cli, make_agent, tty, relay_port) -> None:
    agent = agent_for(make_agent, notifies=[])
    result = cli("pair", "--remote", relay_port, agent=agent, stdin=tty("\x1b[200~f3w7ey\x1b[201~\n"))
    assert result.code == 0, result.err
    assert agent.calls[0][1]["code"] == "F3W7EY"
    assert result.err.splitlines() == [
        f"Relay: {relay_port}",
        "Need a pairing code — run `hermes-pair` on the relay host.",
        "(Paste works; cleaned code shown before submit.)",
        "Pairing code (6 chars):   → using code: F3W7EY",
        f"Pairing with {relay_port}…",
    ]


def test_the_prompt_gives_three_attempts(cli, make_agent, tty, relay_port) -> None:
    agent = agent_for(make_agent, notifies=[])
    result = cli("pair", "--remote", relay_port, agent=agent, stdin=tty("abc\nF3W7\x07\n1234567\nF3W7EY\n"))
    assert result.code == 2
    assert agent.calls == []
    lines = result.err.splitlines()
    assert lines[3:6] == [
        'Pairing code (6 chars):   invalid — need 6 chars of A-Z or 0-9. Got "abc" (3 valid chars after strip). '
        "Try typing it manually.",
        'Pairing code (6 chars):   invalid — need 6 chars of A-Z or 0-9. Got "F3W7\\x07" (4 valid chars after strip). '
        "Try typing it manually.",
        'Pairing code (6 chars):   invalid — need 6 chars of A-Z or 0-9. Got "1234567" (7 valid chars after strip). '
        "Try typing it manually.",
    ]
    assert lines[6:] == [
        "hermes-relay: no valid pairing code after 3 attempts",
        "  hint: run `hermes-pair` on the relay host for a fresh code, then pair again: it asks, or paste it on "
        "stdin with `--code -`",  # not "as an argument": a code on the command line shows in `ps`
    ]


def test_the_prompt_ends_cleanly_at_end_of_input(cli, make_agent, tty, relay_port) -> None:
    result = cli("pair", "--remote", relay_port, agent=agent_for(make_agent), stdin=tty(""))
    assert result.code == 2
    assert result.err.splitlines()[-1] == "hermes-relay: no pairing code entered (end of input)"


def test_paste_markers_that_lost_their_escape_are_removed_too(cli, make_agent, tty, relay_port) -> None:
    agent = agent_for(make_agent, notifies=[])
    result = cli("pair", "--remote", relay_port, agent=agent, stdin=tty("[200~F3W7EY[201~\n"))
    assert result.code == 0, result.err
    assert "  → using code: F3W7EY" in result.err
    assert cli("pair", "[200~AAAAAA[201~", "--remote", "ws://h:8767", agent=agent).code == 0
    assert [c[1]["code"] for c in agent.calls] == ["F3W7EY", "AAAAAA"]


def test_bracketed_paste_is_switched_off_on_a_terminal(tty) -> None:
    from hermes_relay.cli.commands.pair import prompt_for_code

    err = tty()
    assert prompt_for_code("ws://h:8767", stdin=tty("F3W7EY\n"), stderr=err) == "F3W7EY"
    assert err.getvalue().startswith("\x1b[?2004lRelay: ws://h:8767\n")
    assert "\x1b[?2004h" not in err.getvalue()  # the shell's line editor turns it back on itself


def test_a_tampered_invite_is_used_only_with_ignore_signature(cli, make_agent) -> None:
    invite = json.dumps({"hermes": 2, "relay": {"url": "ws://10.0.0.9:8767", "code": "BBBBBB"}})
    agent = agent_for(make_agent)
    assert cli("pair", "--pair-qr", invite, "--ignore-signature", agent=agent).code == 0
    assert agent.calls[0][1] == {"invite": invite, "ignore_signature": True}


def test_an_unreachable_relay_is_named_before_asking_for_the_code(cli, tty) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{closed.getsockname()[1]}"  # bound, not listening: refused
        result = cli("pair", "--remote", url, stdin=tty("F3W7EY\n"))
    assert result.code == 1
    assert result.err.splitlines() == [
        f"hermes-relay: cannot reach {url}: connection refused (nothing listens on port {url.rsplit(':', 1)[1]})",
        "  hint: check the URL and that hermes-relay-server runs there; `hermes-relay doctor` checks each step",
    ]


def test_a_pasted_code_label_is_accepted(cli, make_agent, tty, relay_port) -> None:
    agent = agent_for(make_agent, notifies=[])
    result = cli("pair", "--remote", relay_port, agent=agent, stdin=tty("Code : VXP2T0\n"))
    assert result.code == 0, result.err
    assert "  → using code: VXP2T0" in result.err
    assert cli("pair", "code: vxp2t0", "--remote", relay_port, agent=agent).code == 0
    assert [c[1]["code"] for c in agent.calls] == ["VXP2T0", "VXP2T0"]


@pytest.mark.parametrize("url", ["ws://192.168.1.5:8767", "wss://relay.example.com", "http://10.0.0.2:8767"])
def test_a_url_where_the_code_goes_says_how_to_write_it(cli, url) -> None:
    result = cli("pair", url)
    assert result.code == 2
    assert result.err.splitlines() == [
        f"hermes-relay: that is a relay URL: `hermes-relay pair --remote {url}` (it asks for the code)",
        "  hint: get the code by running `hermes-pair` on the relay host",
    ]


def test_code_dash_reads_the_code_from_stdin(cli, make_agent) -> None:
    import io

    agent = agent_for(make_agent, notifies=[])
    result = cli("pair", "--code", "-", "--remote", "ws://h:8767", agent=agent, stdin=io.StringIO("f3w7ey\n"))
    assert result.code == 0, result.err
    assert agent.calls[0][1]["code"] == "F3W7EY"
    empty = cli("pair", "--code", "-", "--remote", "ws://h:8767", stdin=io.StringIO(""))
    assert empty.code == 2 and empty.err.startswith("hermes-relay: --code - read no code from stdin\n")


def test_a_wss_pairing_prints_the_pinned_fingerprint(cli, env, make_agent) -> None:
    pin = "sha256/" + "Q" * 43 + "="
    result = cli("pair", "F3W7EY", "--remote", "wss://relay.example.com",
                 agent=agent_for(make_agent, {**RESULT, "url": "wss://relay.example.com", "cert_pin_sha256": pin}))
    assert result.code == 0, result.err
    assert f"  Certificate pin: {pin} (trusted from now on; check it matches the relay's)" in result.out.splitlines()
