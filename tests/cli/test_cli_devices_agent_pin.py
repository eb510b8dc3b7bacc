"""``devices``, ``agent`` and ``pin`` against a scripted agent; ``agent`` also against no agent at all."""

from __future__ import annotations

import json
import sys

import pytest

from hermes_relay.cli.commands import agent as agent_cmd
from hermes_relay.core import paths
from hermes_relay.core.errors import AmbiguousError, NotFoundError

NOW = 1_800_000_000.0
URL = "ws://192.168.1.5:8767"
SESSIONS = [
    {"token_prefix": "abcd1234", "device_name": "laptop", "device_id": "d1", "created_at": NOW - 3 * 86400,
     "first_seen": NOW - 3 * 86400, "last_seen": NOW - 120, "expires_at": NOW + 27 * 86400, "grants": {},
     "transport_hint": "ws", "client_surface": "desktop", "device_form_factor": None, "device_model": None,
     "device_platform": "linux", "is_current": True},
    {"token_prefix": "ef567890", "device_name": "Pixel 9", "device_id": "d2", "created_at": NOW - 40 * 86400,
     "first_seen": NOW - 40 * 86400, "last_seen": None, "expires_at": None, "grants": {},
     "transport_hint": "wss", "client_surface": "android", "device_form_factor": "phone",
     "device_model": "Pixel 9", "device_platform": "android", "is_current": False},
]


@pytest.fixture(autouse=True)
def paired(env) -> None:
    """devices and pin need a pairing in the store (without one they fail before contacting the agent)."""
    store = paths.sessions_file(env)
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text(json.dumps({"version": 1, "sessions": {URL: {"token": "abcd1234" + "t" * 35},
                                                            "wss://relay.example.com": {"token": "q" * 43}}}))


# -- devices ---------------------------------------------------------------------------------------
def test_devices_lists_a_table_marking_this_device(cli, make_agent) -> None:
    online = {**SESSIONS[1], "connected": True}
    agent = make_agent(results={"devices.list": {"url": URL, "sessions": [SESSIONS[0], online]}})
    result = cli("devices", agent=agent)
    assert result.code == 0, result.err
    assert agent.calls == [("devices.list", {}, 30.0)]
    assert result.out.splitlines() == [
        f"Devices paired with {URL} (2)",
        "",
        "  PREFIX    DEVICE                  PLATFORM           CREATED  LAST SEEN  EXPIRES",
        "  abcd1234  laptop ● (this device)  linux · desktop    3d ago   2m ago     in 27d",
        "  ef567890  Pixel 9                 Pixel 9 · android  40d ago  online     never",
        "",
        "revoke: hermes-relay devices revoke PREFIX",
        "extend on the relay host: hermes-relay-server sessions extend PREFIX --ttl 30d",  # a device cannot
    ]


def test_devices_list_with_remote_and_json(cli, make_agent) -> None:
    agent = make_agent(results={"devices.list": {"url": URL, "sessions": []}})
    result = cli("devices", "list", "--remote", "ws://192.168.1.5", agent=agent)
    assert result.out == f"(no paired devices on {URL})\n"
    assert agent.calls[0][1] == {"url": URL}
    result = cli("devices", "--json", agent=agent)
    assert json.loads(result.out) == {"url": URL, "sessions": []}


def test_devices_revoke_and_extend(cli, make_agent) -> None:
    agent = make_agent(results={
        "devices.list": {"url": URL, "sessions": SESSIONS},
        "devices.revoke": {"url": URL, "revoked": "abcd1234", "is_current": True},
        "devices.extend": {"url": URL, "session": {**SESSIONS[1], "expires_at": NOW + 30 * 86400 - 2}},
    })
    result = cli("devices", "revoke", "abcd1234", "--yes", agent=agent)
    assert result.out == "✓ revoked abcd1234 (this device: pair again to reconnect)\n"
    # The reference relay says revoked_self instead of is_current.
    agent.results["devices.revoke"] = {"url": URL, "revoked": "abcd1234", "revoked_self": True}
    assert cli("devices", "revoke", "abcd", "-y", agent=agent).out == (
        "✓ revoked abcd1234 (this device: pair again to reconnect)\n")
    result = cli("devices", "extend", "ef567890", "--ttl", "30d", agent=agent)
    assert result.code == 0, result.err
    assert result.out == "✓ extended ef567890: now expires in 30d\n"  # 2 s short of 30 days still reads 30d
    assert result.err == "warning: ef567890 never expires now; this shortens it to 30d\n"
    agent.results["devices.extend"] = {"url": URL, "session": {**SESSIONS[1], "expires_at": None}}
    assert cli("devices", "extend", "ef567890", "--ttl", "never", agent=agent).out == (
        "✓ extended ef567890: now never expires\n")
    assert [c for c in agent.calls if c[0] != "devices.list"] == [
        ("devices.revoke", {"prefix": "abcd1234"}, 30.0),
        ("devices.revoke", {"prefix": "abcd"}, 30.0),
        ("devices.extend", {"prefix": "ef567890", "ttl_seconds": 30 * 86400}, 30.0),
        ("devices.extend", {"prefix": "ef567890", "ttl_seconds": 0}, 30.0),
    ]


def test_a_one_day_extend_reads_1d_and_notes_this_devices_stored_expiry(cli, make_agent) -> None:
    soon = {**SESSIONS[0], "expires_at": NOW + 7200}
    agent = make_agent(results={
        "devices.list": {"url": URL, "sessions": [soon]},
        "devices.extend": {"url": URL, "session": {"token_prefix": "abcd1234", "expires_at": NOW + 86400 - 1,
                                                   "grants": {}}, "store_updated": True},
    })
    result = cli("devices", "extend", "abcd1234", agent=agent)
    assert (result.code, result.err) == (0, "")
    assert result.out.splitlines() == ["✓ extended abcd1234: now expires in 1d",
                                       "  (this device: the stored expiry was updated)"]


def test_extend_refuses_to_shorten_a_never_expiring_session_by_default(cli, make_agent) -> None:
    agent = make_agent(results={"devices.list": {"url": URL, "sessions": SESSIONS}})
    result = cli("devices", "extend", "ef567890", agent=agent)
    assert result.code == 2
    assert result.err.splitlines() == [
        "hermes-relay: ef567890 never expires now: the default 1 day would shorten it",
        "  hint: to shorten it, pass the lifetime: hermes-relay devices extend ef567890 --ttl 1d; "
        "it cannot last longer",
    ]
    assert agent.methods() == ["devices.list"]


def test_the_would_shorten_refusal_sends_extending_to_the_relay_host(cli, make_agent) -> None:
    # It used to hint `--ttl never (or --ttl 30d)`, which the relay then refuses: a device may only shorten.
    agent = make_agent(results={"devices.list": {"url": URL, "sessions": SESSIONS}})
    result = cli("devices", "extend", "abcd", agent=agent)
    assert result.code == 2
    assert result.err.splitlines() == [
        "hermes-relay: abcd1234 expires in 27d now: the default 1 day would shorten it",
        "  hint: to shorten it, pass the lifetime: hermes-relay devices extend abcd1234 --ttl 1d; "
        "to extend it, run on the relay host: hermes-relay-server sessions extend abcd1234 --ttl 30d",
    ]
    assert "--ttl never" not in result.err
    assert agent.methods() == ["devices.list"]


def test_extend_forbidden_explains_what_the_relay_allows(cli, make_agent) -> None:
    from hermes_relay.core.errors import ForbiddenError

    agent = make_agent(results={
        "devices.list": {"url": URL, "sessions": SESSIONS},
        "devices.extend": ForbiddenError(
            "the relay refused to change ef567890: cannot modify another session",
            hint="the relay only lets a device shorten its own session; extend from the relay host: "
                 "hermes-relay-server sessions extend ef567890 --ttl …"),
    })
    result = cli("devices", "extend", "ef56", "--ttl", "never", agent=agent)
    assert result.code == 1
    assert result.err.splitlines() == [  # the relay host's command, with the whole prefix and the lifetime asked
        "hermes-relay: the relay refused to change ef567890: cannot modify another session",
        "  hint: a device can only shorten its own session; to extend it, run on the relay host: "
        "hermes-relay-server sessions extend ef567890 --ttl never",
    ]
    result = cli("--json", "devices", "extend", "ef567890", "--ttl", "36h", agent=agent)
    assert result.code == 1
    assert json.loads(result.out)["error"]["hint"].endswith("hermes-relay-server sessions extend ef567890 --ttl 36h")


def test_a_default_extend_the_relay_refuses_names_the_relay_hosts_command(cli, make_agent) -> None:
    from hermes_relay.core.errors import ForbiddenError

    soon = {**SESSIONS[0], "expires_at": NOW + 7200}  # 1 day would lengthen this device's session
    agent = make_agent(results={
        "devices.list": {"url": URL, "sessions": [soon]},
        "devices.extend": ForbiddenError("the relay refused to change abcd1234: operator approval required to "
                                         "extend session"),
    })
    result = cli("devices", "extend", "abcd1234", agent=agent)
    assert result.code == 1
    assert result.err.splitlines()[1] == (
        "  hint: a device can only shorten its own session; to extend it, run on the relay host: "
        "hermes-relay-server sessions extend abcd1234 --ttl 1d")


def test_extend_help_says_a_device_only_shortens_and_who_extends(cli) -> None:
    out = " ".join(cli("devices", "extend", "--help").out.split())
    assert "The relay lets a device only shorten its own session" in out
    assert "run on the relay host: hermes-relay-server sessions extend PREFIX --ttl 30d" in out
    assert "--ttl never" not in out  # the refused spelling is no longer taught
    assert "only shorter: the relay host extends" in " ".join(cli("devices", "--help").out.split())


def test_revoke_needs_four_characters_and_asks_on_a_terminal(cli, make_agent, tty) -> None:
    agent = make_agent(results={"devices.list": {"url": URL, "sessions": SESSIONS},
                                "devices.revoke": {"url": URL, "revoked": "ef567890", "is_current": False}})
    short = cli("devices", "revoke", "e", "--yes", agent=agent)
    assert short.code == 2
    assert short.err.splitlines() == ['hermes-relay: token prefix "e" is too short: give at least 4 characters',
                                      "  hint: copy the whole PREFIX column of `hermes-relay devices`"]
    script = cli("devices", "revoke", "ef567890", agent=agent)  # no terminal, no --yes
    assert script.code == 2
    assert script.err == "hermes-relay: devices revoke needs confirmation: run it on a terminal or pass --yes\n"
    assert agent.calls == []
    declined = cli("devices", "revoke", "ef56", agent=agent, stdin=tty("\n"))
    assert declined.code == 1
    assert declined.err == "Revoke ef567890 (Pixel 9, never seen)? [y/N] not revoked: nothing changed\n"
    assert agent.methods() == ["devices.list"]
    mine = cli("devices", "revoke", "abcd", agent=agent, stdin=tty("y\n"))
    assert mine.code == 0
    assert mine.err == "Revoke abcd1234 (laptop, this device, last seen 2m ago)? [y/N] "
    assert agent.calls[-1] == ("devices.revoke", {"prefix": "abcd1234"}, 30.0)


@pytest.mark.parametrize(
    ("error", "lines"),
    [
        (NotFoundError('no session matches prefix "zzzz"'), ['hermes-relay: no session matches prefix "zzzz"']),
        (AmbiguousError("2 relays are paired; choose one with --remote URL", hint="paired: ws://a, ws://b"),
         ["hermes-relay: 2 relays are paired; choose one with --remote URL", "  hint: paired: ws://a, ws://b"]),
    ],
)
def test_devices_errors_from_the_agent_exit_1(cli, make_agent, error, lines) -> None:
    result = cli("devices", "revoke", "zzzz", "--yes", agent=make_agent(results={"devices.revoke": error}))
    assert (result.code, result.out, result.err.splitlines()) == (1, "", lines)


# -- agent -----------------------------------------------------------------------------------------
def test_agent_status_without_an_agent_exits_3(cli, env) -> None:
    result = cli("agent", "status", real_client=True)
    assert result.code == 3
    assert result.err == (f"hermes-relay: the hermes-relay agent is not running (no answer on {paths.socket_path(env)})\n"
                          "  hint: start it with `hermes-relay agent start`\n")
    result = cli("agent", "status", "--json", real_client=True)
    assert result.code == 3
    assert json.loads(result.out)["running"] is False


def test_agent_stop_without_an_agent_is_fine(cli) -> None:
    result = cli("agent", "stop", real_client=True)
    assert (result.code, result.out, result.err) == (0, "agent: not running\n", "")


def test_agent_status_with_an_agent(cli, env, make_agent) -> None:
    agent = make_agent()
    agent.hello["pid"] = 4242
    result = cli("agent", "status", agent=agent)
    assert result.code == 0
    assert result.out.splitlines() == [
        "agent: running",
        "  pid:      4242",
        "  version:  0.1.0 (IPC API 1)",
        "  uptime:   3h",
        f"  socket:   {paths.socket_path(env)}",
        "  logs:     ~/.hermes/logs/hermes-relay-agent.log",
    ]
    assert agent.autostarts == [False]


def test_agent_start_reports_whether_it_started_one(cli, make_agent) -> None:
    agent = make_agent(running=False)
    assert cli("agent", "start", agent=agent).out.splitlines()[0] == "✓ agent: started (pid None)"
    assert agent.autostarts == [False, True]
    assert cli("agent", "start", agent=agent).out.splitlines()[0] == "agent: already running (pid None)"


def test_agent_stop_asks_the_agent_and_waits_for_it_to_go(cli, make_agent) -> None:
    agent = make_agent(results={"agent.stop": {"stopping": True}})
    result = cli("agent", "stop", agent=agent)
    assert (result.code, result.out) == (0, "✓ agent: stopped (pid ?)\n")
    assert agent.methods() == ["agent.stop"]


def test_agent_restart_stops_then_starts(cli, make_agent) -> None:
    agent = make_agent(results={"agent.stop": {"stopping": True}})
    result = cli("agent", "restart", agent=agent)
    assert result.code == 0
    assert result.out.splitlines()[0] == "✓ agent: restarted (pid None)"
    assert agent.methods() == ["agent.stop"] and agent.autostarts == [False, True]


def test_wait_until_stopped_sees_a_vanished_socket_and_process(tmp_path) -> None:
    assert agent_cmd.wait_until_stopped(str(tmp_path / "none.sock"), None, 0.1) is True
    # A live process that never exits: the deadline ends the wait.
    import os

    assert agent_cmd.wait_until_stopped(str(tmp_path / "none.sock"), os.getppid(), 0.05) is False


def test_wait_until_stopped_ends_when_the_pid_is_gone_though_a_new_agent_listens(tmp_path) -> None:
    # A `hermes-relay shell` restarts the agent as soon as the old one is gone: `agent restart`/`stop` must not
    # wait for the socket to fall silent (it never does), only for the pid it stopped.
    import socket
    import subprocess
    import sys

    path = str(tmp_path / "agent.sock")
    new_agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    new_agent.bind(path)
    new_agent.listen()
    old = subprocess.Popen([sys.executable, "-c", "pass"])
    old.wait()
    try:
        assert agent_cmd.wait_until_stopped(path, old.pid, 0.5) is True
        assert agent_cmd.wait_until_stopped(path, None, 0.05) is False  # pid unknown: the socket decides
    finally:
        new_agent.close()


def test_agent_logs_prints_the_last_lines(cli, env) -> None:
    log = paths.agent_log_file(env)
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(5000)))
    result = cli("agent", "logs", "-n", "3", agent=None)
    assert (result.code, result.out) == (0, "line 4997\nline 4998\nline 4999\n")
    assert cli("agent", "logs", "-n", "0").out == ""
    assert cli("agent", "logs").out.splitlines()[0] == "line 4950"


def test_agent_logs_follow_prints_appended_lines_and_survives_truncation(env, tmp_path) -> None:
    import io

    from hermes_relay.cli.context import Context

    log = tmp_path / "agent.log"
    log.write_text("old\n")
    out = io.StringIO()
    ctx = Context(out, io.StringIO(), env)
    lines, offset = agent_cmd.tail(log, 10)
    assert (lines, offset) == (["old"], 4)
    steps = iter([lambda: log.write_text("old\nnew 1\npart"), lambda: log.write_text("x\n"), lambda: None])

    def keep_going() -> bool:
        step = next(steps, None)
        if step is None:
            return False
        step()
        return True

    agent_cmd.follow(log, offset, ctx, poll=0, keep_going=keep_going)
    assert out.getvalue() == "new 1\nx\n"


def test_agent_run_replaces_the_process_with_the_agent(cli, env, monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(agent_cmd, "_execve", lambda path, argv, environ: seen.append((path, argv, environ)))
    assert cli("agent", "run", "--log-level", "debug").code == 0
    assert cli("agent", "run", "--", "--detached").code == 0
    assert [s[1] for s in seen] == [
        [sys.executable, "-I", "-m", "hermes_relay.agent", "run", "--log-level", "debug"],
        [sys.executable, "-I", "-m", "hermes_relay.agent", "run", "--detached"],
    ]
    assert seen[0][0] == sys.executable and seen[0][2] == env


def test_agent_without_a_subcommand_is_a_usage_error(cli) -> None:
    result = cli("agent")
    assert result.code == 2
    assert "agent needs a subcommand" in result.err


# -- pin -------------------------------------------------------------------------------------------
def test_pin_accept_shows_both_pins_asks_and_stores_exactly_what_was_shown(cli, make_agent, tty) -> None:
    old, new = "sha256/" + "A" * 43 + "=", "sha256/" + "B" * 43 + "="

    def answer(params: dict) -> dict:
        applied = params.get("apply", True) is not False
        return {"url": "wss://relay.example.com", "old_pin": old, "new_pin": new, "changed": True, "applied": applied}

    agent = make_agent(results={"pin.accept": answer})
    declined = cli("pin", "accept", "https://relay.example.com/", agent=agent, stdin=tty("n\n"))
    assert declined.code == 1
    assert declined.out.splitlines()[:3] == ["wss://relay.example.com presents a different certificate:",
                                             f"  old pin: {old}", f"  new pin: {new}"]
    assert declined.out.splitlines()[3].startswith("This deliberately trusts the certificate the relay presents now.")
    assert declined.err == "Trust the new certificate? [y/N] not accepted: nothing changed\n"
    assert agent.calls == [("pin.accept", {"url": "wss://relay.example.com", "apply": False}, 30.0)]

    script = cli("pin", "accept", "wss://relay.example.com", agent=agent)  # no terminal, no --yes
    assert script.code == 2
    assert script.err == "hermes-relay: pin accept needs confirmation: run it on a terminal or pass --yes\n"

    accepted = cli("pin", "accept", "wss://relay.example.com", "--yes", agent=agent)
    assert accepted.code == 0
    assert accepted.out.splitlines()[-1] == "✓ accepted the new certificate for wss://relay.example.com"
    assert agent.calls[-1] == ("pin.accept", {"url": "wss://relay.example.com", "pin": new}, 30.0)


def test_pin_accept_with_an_unchanged_certificate_changes_nothing(cli, make_agent) -> None:
    pin = "sha256/" + "A" * 43 + "="
    agent = make_agent(results={"pin.accept": {"url": "wss://relay.example.com", "old_pin": pin, "new_pin": pin,
                                               "changed": False, "applied": False}})
    result = cli("pin", "accept", "wss://relay.example.com", agent=agent)
    assert result.code == 0
    assert result.out.splitlines() == [
        "✓ wss://relay.example.com: this certificate is already trusted; nothing changed",
        f"  pin: {pin}",
    ]
    assert agent.methods() == ["pin.accept"]


def test_devices_and_pin_on_an_unpaired_machine_fail_without_starting_an_agent(cli, env) -> None:
    paths.sessions_file(env).unlink()
    for argv in (("devices",), ("devices", "extend", "abcd1234", "--ttl", "1d"), ("pin", "accept", "wss://r.example")):
        result = cli(*argv)  # the default test connection fails the test if the agent is contacted
        assert result.code == 1
        assert result.err.splitlines()[0] in ("hermes-relay: this computer is not paired with any relay",
                                              "hermes-relay: no pairing stored for wss://r.example")


def test_devices_and_status_fit_60_columns(cli, env, make_agent) -> None:
    environ = {**env, "COLUMNS": "60"}
    agent = make_agent(results={"devices.list": {"url": URL, "sessions": SESSIONS}})
    result = cli("devices", agent=agent, environ=environ)
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        f"Devices paired with {URL} (2)",
        "",
        "  abcd1234  laptop ● (this device)",
        "      platform:  linux · desktop",
        "      created:   3d ago, last seen 2m ago",
        "      expires:   in 27d",
        "",
        "  ef567890  Pixel 9",
        "      platform:  Pixel 9 · android",
        "      created:   40d ago, last seen —",
        "      expires:   never",
        "",
        "revoke: hermes-relay devices revoke PREFIX",
        "extend: hermes-relay-server sessions extend PREFIX --ttl 30d",
    ]
    revoked = {"url": "wss://relay.example.com", "state": "revoked", "route": None, "attempts": 1, "last_error": None}
    status_agent = make_agent(results={"status": {"agent": {"pid": 7, "version": "0.1.0", "started_at": NOW - 30},
                                                  "relays": [revoked]}})
    status = cli("status", agent=status_agent, environ=environ)
    lines = status.out.splitlines()
    assert all(len(line) <= 60 for line in lines), "\n".join(lines)
    assert lines[-11:] == [
        "  wss://relay.example.com",
        "    server:   (unknown)",
        "    paired:   —",
        "    token:    qqqqqqqq… (redacted)",
        "    tools:    restricted: no desktop tools",
        "    live:     ✗ revoked: the relay no longer accepts this",
        "              computer's session",
        "    attempts: 1",
        "    fix:      run hermes-pair on the relay host, then",
        "              hermes-relay pair --remote",
        "              wss://relay.example.com (it asks for the code)",
    ]
    # Without a width (a pipe) nothing is wrapped.
    assert cli("status", agent=status_agent).out.splitlines()[-1].endswith(
        "--remote wss://relay.example.com (it asks for the code)")


@pytest.mark.parametrize("argv, example", [
    (("devices", "list"), "hermes-relay devices list --remote wss://"),
    (("devices", "revoke"), "hermes-relay devices revoke kd214La2"),
    (("devices", "extend"), "hermes-relay devices extend kd214La2 --ttl 2h"),
    (("pin", "accept"), "hermes-relay pin accept wss://"),
])
def test_devices_and_pin_verbs_help_has_a_description_and_an_example(cli, argv, example) -> None:
    result = cli(*argv, "--help")
    assert result.code == 0
    lines = result.out.splitlines()
    start = next(i for i, line in enumerate(lines) if line == "") + 1  # the usage may wrap
    assert lines[0].startswith(f"usage: hermes-relay {' '.join(argv)} ")
    assert lines[start] and not lines[start].startswith(("positional", "options"))
    assert f"example:\n  {example}" in result.out


def test_a_token_prefix_that_starts_with_a_dash_is_a_prefix_not_an_option(cli, make_agent) -> None:
    # 1 token in 64 starts with "-" (base64url): `devices revoke -meWxcQq` used to exit 2 as an unknown option.
    dashed = {**SESSIONS[1], "token_prefix": "-meWxcQq"}
    agent = make_agent(results={
        "devices.list": {"url": URL, "sessions": [dashed]},
        "devices.revoke": {"url": URL, "revoked": "-meWxcQq"},
        "devices.extend": {"url": URL, "session": {**dashed, "expires_at": NOW + 30 * 86400 - 2}},
    })
    result = cli("devices", "revoke", "-meWxcQq", "--yes", agent=agent)
    assert (result.code, result.err) == (0, "")
    result = cli("devices", "revoke", "-yab", "-y", agent=agent)  # not "-y" with "ab" glued on
    assert result.code == 0, result.err
    result = cli("devices", "extend", "-meW", "--ttl", "30d", agent=agent)
    assert result.code == 0, result.err
    assert [c for c in agent.calls if c[0] != "devices.list"] == [
        ("devices.revoke", {"prefix": "-meWxcQq"}, 30.0),
        ("devices.revoke", {"prefix": "-yab"}, 30.0),
        ("devices.extend", {"prefix": "-meW", "ttl_seconds": 30 * 86400}, 30.0),
    ]
    # Options still parse where they are spelled out, and an unknown --long option is still refused.
    assert cli("devices", "revoke", "-meWxcQq", "--bogus", agent=agent).code == 2


def test_pin_accept_takes_a_bare_host_as_the_wss_relay_it_must_be(cli, make_agent) -> None:
    # It used to suggest ws://HOST:PORT, which it then refused ("not a wss:// URL").
    pin = "sha256/" + "A" * 43 + "="
    agent = make_agent(results={"pin.accept": {"url": "wss://relay.example.com", "old_pin": pin, "new_pin": pin,
                                               "changed": False, "applied": False}})
    result = cli("pin", "accept", "relay.example.com", agent=agent)
    assert (result.code, result.err) == (0, "")
    assert agent.calls[0][1]["url"] == "wss://relay.example.com"
    refused = cli("pin", "accept", "ws://relay.example.com:8767", agent=agent)
    assert refused.code == 2 and "hermes-relay status" in refused.err
