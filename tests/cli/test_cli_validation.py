"""Bad input fails fast with exit 2 and a message, before the agent is contacted or started.

The ``cli`` fixture's default connection fails the test if a command reaches for the agent.
"""

from __future__ import annotations

import base64
import json

import pytest

from hermes_relay import __version__

GOOD_INVITE = json.dumps({"hermes": 2, "relay": {"url": "ws://192.168.1.5:8767", "code": "F3W7EY"}})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pair", "ABC12", "--remote", "ws://h:8767"], 'invalid code format: need 6 characters of A-Z or 0-9, got "ABC12"'),
        (["pair", "--code", "ABCDEFG", "--remote", "ws://h:8767"], "(7 valid characters)"),
        (["pair", "ABC12"], "invalid code format"),  # a mistyped code is reported before the missing URL
        (["pair", "F3W7EY", "--code", "AAAAAA", "--remote", "ws://h"], "two different pairing codes given (F3W7EY and AAAAAA)"),
        (["pair", "F3W7EY", "--remote", "ftp://h"], 'invalid relay URL "ftp://h": the scheme must be ws:// or wss://, not ftp://'),
        (["pair", "F3W7EY", "--remote", "h:8767"], "add a scheme, e.g. ws://h:8767"),
        (["pair", "F3W7EY", "--remote", "ws://h:99999"], "the port is not a number from 1 to 65535"),
        (["pair", "F3W7EY"], "no relay URL: pass --remote ws://HOST:8767 or set HERMES_RELAY_URL"),
        (["pair", "--pair-qr", "not an invite!"], "invalid --pair-qr payload: neither valid JSON nor base64"),
        (["pair", "--pair-qr", "[1, 2]"], "invalid --pair-qr payload: not a JSON object"),
        (["pair", "--pair-qr", '{"hermes": 2, "relay": {"url": "ws://h:1"}}'], "pairing invite has no relay.code"),
        (["pair", "--pair-qr", "hermes-relay://pair?x=1"], "has no payload= (or p=) parameter"),
        (["pair", "F3W7EY", "--remote", "ws://h", "--name", ""], "--name must be 1 to 64 printable characters"),
        (["devices", "extend", "abcd1234", "--ttl", "5x"], '--ttl must be a non-negative number of seconds or a duration'),
        (["devices", "extend", "abcd1234", "--ttl", "-5"], '(got "-5")'),
        (["devices", "--remote", "http//nope"], 'invalid relay URL "http//nope"'),
        (["devices", "revoke", " "], "invalid token prefix"),
        (["devices", "revoke"], "the following arguments are required: PREFIX"),
        (["pin", "accept", "ws://h:8767"], "is not a wss:// URL: only TLS relays have a certificate pin"),
        (["pin", "accept", "gopher://h"], "invalid relay URL"),
        (["agent", "logs", "-n", "-3"], "expected a whole number of lines"),
        (["prompt", "init", "tcsh"], "invalid choice: 'tcsh'"),
        (["stauts"], "unknown command 'stauts'"),
        (["status", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_never_contacts_the_agent(cli, argv, message) -> None:
    result = cli(*argv)
    assert result.code == 2, result
    assert message in result.err
    assert result.err.count("hermes-relay: ") == 1
    assert result.out == ""


def test_a_usage_error_names_the_subcommand_help(cli) -> None:
    result = cli("status", "--bogus")
    assert result.err.splitlines()[-1] == "  hint: see `hermes-relay status --help`"
    result = cli("devices", "revoke")
    assert "usage: hermes-relay devices revoke" in result.err
    assert "  hint: see `hermes-relay devices revoke --help`" in result.err


def test_pair_without_a_terminal_or_code_explains_every_way_to_give_one(cli) -> None:
    result = cli("pair", "--remote", "ws://192.168.1.5:8767")
    assert result.code == 2
    assert result.err.splitlines()[-1] == (
        "hermes-relay: No TTY for interactive pairing. Pass the code on stdin (`--code -`), set HERMES_RELAY_CODE, "
        "or pair from an invite with --pair-qr INVITE (a code on the command line shows in `ps`)."
    )


def test_environment_values_are_validated_too(cli, env) -> None:
    result = cli("pair", environ={**env, "HERMES_RELAY_URL": "ws://h:8767", "HERMES_RELAY_CODE": "nope"})
    assert result.code == 2 and "invalid code format" in result.err
    result = cli("pair", environ={**env, "HERMES_RELAY_PAIR_QR": base64.b64encode(b"[]").decode()})
    assert result.code == 2 and "not a JSON object" in result.err
    result = cli("devices", environ={**env, "HERMES_RELAY_URL": "tcp://h"})
    assert result.code == 2 and "the scheme must be ws:// or wss://" in result.err


def test_version_and_help(cli, make_agent) -> None:
    stopped = make_agent(running=False)
    result = cli("--version", agent=stopped)
    assert (result.code, result.out) == (0, f"hermes-relay {__version__}\nagent not running\n")
    assert stopped.autostarts == [False]  # asking for the version never starts the agent
    running = make_agent(hello={"api_version": 1, "agent_version": __version__, "pid": 4242, "started_at": 0})
    assert cli("--version", agent=running).out == f"hermes-relay {__version__}\nagent {__version__} (pid 4242)\n"
    older = make_agent(hello={"api_version": 1, "agent_version": "0.0.9", "pid": 7, "started_at": 0})
    assert cli("--version", agent=older).out.splitlines()[1] == (
        "agent 0.0.9 (pid 7): not this CLI's version; `hermes-relay agent restart` runs this one")
    result = cli("--help")
    assert result.code == 0
    for line in ("  0    success", "  2    usage: a bad argument, flag, code, URL, invite or TTL",
                 "  3    the agent is not running (with --no-autostart, or `agent status`)",
                 "  130  interrupted (Ctrl-C)"):
        assert line in result.out
    assert cli("pair", "--help").out.startswith("usage: hermes-relay pair")


def test_no_command_prints_help_and_exits_2(cli) -> None:
    result = cli()
    assert result.code == 2
    assert "usage: hermes-relay" in result.err and result.out == ""


def test_no_autostart_makes_a_down_agent_exit_3(cli, env, make_agent) -> None:
    from hermes_relay.core import paths

    store = paths.sessions_file(env)  # paired: otherwise devices fails before looking for the agent
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text('{"version": 1, "sessions": {"ws://h:8767": {"token": "t"}}}')
    agent = make_agent(running=False)
    result = cli("--no-autostart", "devices", agent=agent)
    assert result.code == 3
    assert agent.autostarts == [False]
    assert result.err.startswith("hermes-relay: the hermes-relay agent is not running")
    assert "  hint: start it with `hermes-relay agent start`" in result.err
    # The flag may follow the subcommand too.
    result = cli("devices", "--no-autostart", agent=make_agent(running=False))
    assert result.code == 3


def test_every_help_wraps_its_prose_to_the_terminal(cli, env) -> None:
    # `forget`, `pair` and `prompt` printed one-line paragraphs of 140-230 characters.
    from hermes_relay.cli.main import COMMANDS

    for name in ["", *COMMANDS]:
        result = cli(*([name] if name else []), "--help", environ={**env, "COLUMNS": "80"})
        assert result.code == 0, (name, result.err)
        long = [line for line in result.out.splitlines() if len(line) > 80 and not line.startswith(" ")]
        assert not long, (name, long)
