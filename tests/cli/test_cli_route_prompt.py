"""``route`` and ``prompt``: read the agent's indicator files, never the agent; shells use builtins only."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from hermes_relay.cli.commands.prompt import snippet
from hermes_relay.core import paths

NOW = 1_800_000_000.0


def write_route_json(env: dict[str, str], *, label: str, state: str, url: str | None, since: float | None,
                     valid_until: float, pid: int | None = None, **_: object) -> Path:
    """The agent's plain route file (agent/indicator.py's format) holding these fields."""
    path = paths.route_file(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{int(valid_until)} {label}\n{pid or 0} {state} {since if since is not None else '-'} {url or '-'}\n")
    return path


def write_route_line(env: dict[str, str], line: str) -> Path:
    path = paths.route_file(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(line)
    return path


# -- route -----------------------------------------------------------------------------------------
def test_route_without_a_file_says_the_agent_is_not_running(cli) -> None:
    result = cli("route")
    assert (result.code, result.out, result.err) == (0, "offline (agent not running)\n", "")


def test_route_fresh(cli, env) -> None:
    write_route_json(env, label="LAN", state="connected", url="ws://192.168.1.5:8767", role="lan",
                     since=NOW - 180, updated_at=NOW - 5, valid_until=NOW + 60)
    assert cli("route").out == "LAN (ws://192.168.1.5:8767, since 3m ago)\n"


def test_route_offline_states(cli, env) -> None:
    write_route_json(env, label="offline", state="backoff", url=None, role=None, since=None, updated_at=NOW,
                     valid_until=NOW + 60)
    assert cli("route").out == "offline (backoff)\n"
    write_route_json(env, label="offline", state="stopped", url=None, role=None, since=None, updated_at=NOW,
                     valid_until=NOW + 10 * 365 * 86400)
    assert cli("route").out == "offline (agent stopped)\n"


def test_route_stale(cli, env) -> None:
    write_route_json(env, label="Tailscale", state="connected", url="ws://100.64.1.2:8767", role="tailscale",
                     since=NOW - 4000, updated_at=NOW - 600, valid_until=NOW - 1)
    result = cli("route")
    assert (result.code, result.out) == (0, "Tailscale (stale: agent not updating)\n")


def test_route_json(cli, env) -> None:
    path = write_route_json(env, label="Public", state="connected", url="wss://r.example.com", role="public",
                            since=NOW - 10, updated_at=NOW, valid_until=NOW - 1)
    doc = json.loads(cli("route", "--json").out)
    assert doc["label"] == "Public" and doc["stale"] is True and doc["running"] is True
    assert doc["text"] == "Public (stale: agent not updating)" and doc["file"] == str(path)
    path.unlink()
    doc = json.loads(cli("--json", "route").out)
    assert doc == {"label": "offline", "running": False, "stale": False, "text": "offline (agent not running)",
                   "file": str(path)}


def test_route_with_a_damaged_file_still_exits_0(cli, env) -> None:
    path = paths.route_file(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{nope")
    result = cli("route")
    assert result.code == 0
    assert result.out == f"unknown ({path} is not a route indicator (expected `<valid-until> <label>`))\n"


# -- prompt show -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (None, "[offline]"),
        ("", "[offline]"),
        (f"{int(NOW) + 60} LAN\n", "[LAN]"),
        (f"{int(NOW)} LAN\n", "[LAN]"),
        (f"{int(NOW) - 1} LAN\n", "[LAN?]"),
        (f"{int(NOW) + 60} Custom VPN (wireguard)\n", "[Custom VPN (wireguard)]"),
        (f"{int(NOW) + 60} offline\n", "[offline]"),
        (f"{int(NOW) - 600} offline\n", "[offline]"),
        ("soon LAN\n", "[LAN?]"),
        (f"{int(NOW) + 60}", "[offline]"),
    ],
)
def test_prompt_show(cli, env, line, shown) -> None:
    if line is not None:
        write_route_line(env, line)
    result = cli("prompt", "show")
    assert (result.code, result.out) == (0, shown + "\n")
    as_json = json.loads(cli("prompt", "show", "--json").out)
    assert as_json["text"] == shown and as_json["stale"] == shown.endswith("?]")


# -- prompt init -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_prompt_init_embeds_the_route_file_and_runs_no_command_substitution(cli, env, shell) -> None:
    result = cli("prompt", "init", shell)
    assert result.code == 0
    text = result.out
    assert f"'{paths.route_file(env)}'" in text
    assert "`" not in text
    if shell == "bash":
        assert "$(" not in text
    if shell == "zsh":
        assert "$(" not in text  # even zsh's builtin $(<file) is not needed: `read` does it
    if shell == "fish":
        # fish command substitutions here run builtins only (string, path, math, builtin), in-process.
        for word in ("date", "cat", "hermes-relay prompt show"):
            assert f"({word}" not in text


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_prompt_init_quotes_awkward_paths(shell) -> None:
    text = snippet(shell, "/tmp/it's a \\ path/route")
    if shell == "fish":
        assert "'/tmp/it\\'s a \\\\ path/route'" in text
    else:
        assert "'/tmp/it'\\''s a \\ path/route'" in text


def _shell_cases(route: Path, now: int) -> list[tuple[str | None, str]]:
    return [
        (None, "[offline]"),
        (f"{now + 3600} LAN\n", "[LAN]"),
        (f"{now - 3600} LAN\n", "[LAN?]"),
        (f"{now + 3600} Custom VPN (wireguard)\n", "[Custom VPN (wireguard)]"),
        (f"{now + 3600} LAN | office: Tailscale !2\n", "[LAN | office: Tailscale !2]"),
        (f"{now + 3600} offline\n", "[offline]"),
        (f"{now + 3600} Tailscale", "[Tailscale]"),  # no trailing newline
        ("garbage LAN\n", "[LAN?]"),
    ]


def _run_shell(argv: list[str], script: str, tmp_path: Path) -> str:
    # An empty PATH proves the prompt code starts no external program: any would fail to be found.
    env = {"HOME": str(tmp_path), "PATH": "/nonexistent", "TERM": "dumb"}
    done = subprocess.run([*argv, script], capture_output=True, text=True, env=env, timeout=30,
                          executable=shutil.which(argv[0]))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def _check_shell(shell: str, argv: list[str], setup: str, render: str, tmp_path: Path) -> None:
    """Source the snippet twice (idempotent), draw the prompt once per route-file state, compare."""
    import time

    route = tmp_path / "run dir" / "route"  # a space in the path: the snippet must quote it
    route.parent.mkdir()
    init = tmp_path / "init"
    init.write_text(snippet(shell, str(route)))
    now = int(time.time())
    for line, expected in _shell_cases(route, now):
        if line is None:
            route.unlink(missing_ok=True)
        else:
            route.write_text(line)
        out = _run_shell(argv, f"{setup}; source {init}; source {init}; {render}", tmp_path)
        assert out == expected + "\n", (line, out)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_snippet_renders_the_indicator_with_builtins_only(tmp_path) -> None:
    # ${PS1@P} expands the prompt as bash would draw it (bash 4.4+).
    _check_shell("bash", ["bash", "--norc", "--noprofile", "-c"], "PS1='$ '",
                 "__hermes_relay_prompt; [[ $PROMPT_COMMAND == __hermes_relay_prompt ]] || exit 9; "
                 "p=${PS1@P}; printf '%s\\n' \"${p% \\$ }\"", tmp_path)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_snippet_falls_back_to_printf_time_and_keeps_the_exit_status(tmp_path) -> None:
    route = tmp_path / "route"
    route.write_text("1 LAN\n")  # long past
    init = tmp_path / "init"
    init.write_text(snippet("bash", str(route)))
    out = _run_shell(["bash", "--norc", "--noprofile", "-c"],
                     f"source {init}; unset EPOCHSECONDS; (exit 7); __hermes_relay_prompt; echo $? $HERMES_RELAY_INDICATOR",
                     tmp_path)
    assert out == "7 [LAN?]\n"


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_snippet_renders_the_indicator_with_builtins_only(tmp_path) -> None:
    # (e) applies prompt_subst's parameter expansion, (%) the prompt escapes, as zsh draws PROMPT.
    _check_shell("zsh", ["zsh", "-f", "-c"], "PROMPT=''",
                 "__hermes_relay_precmd; p=${(%)${(e)PROMPT}}; print -r -- ${p% }", tmp_path)


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_snippet_renders_the_indicator_with_builtins_only(tmp_path) -> None:
    _check_shell("fish", ["fish", "--no-config", "-c"], "true", "__hermes_relay_indicator", tmp_path)


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_snippet_wraps_the_existing_prompt(tmp_path) -> None:
    route = tmp_path / "route"
    route.write_text(f"{2**40} LAN\n")
    init = tmp_path / "init"
    init.write_text(snippet("fish", str(route)))
    script = (f"function fish_prompt; echo -n \"status=$status> \"; end; source {init}; source {init}; "
              "false; fish_prompt")
    assert _run_shell(["fish", "--no-config", "-c"], script, tmp_path) == "[LAN] status=1> "


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="fish sees a dead agent through /proc only")
def test_fish_snippet_marks_a_dead_agents_label_stale(tmp_path) -> None:
    import os
    import sys
    import time

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead = int(gone.stdout)
    route = tmp_path / "route"
    init = tmp_path / "init"
    init.write_text(snippet("fish", str(route)))
    until = int(time.time()) + 60
    for second_line, shown in ((f"{dead} connected - ws://10.0.0.2:8767", "[LAN?]"),
                               (f"{os.getpid()} connected - ws://10.0.0.2:8767", "[LAN]"),
                               ("0 connected - -", "[LAN]"),  # no pid recorded: judged by time alone
                               ("x1 junk", "[LAN]")):
        route.write_text(f"{until} LAN\n{second_line}\n")
        out = _run_shell(["fish", "--no-config", "-c"], f"source {init}; __hermes_relay_indicator", tmp_path)
        assert out == shown + "\n", second_line
    route.write_text(f"{int(time.time()) - 5} LAN\n{os.getpid()} connected - -\n")
    assert _run_shell(["fish", "--no-config", "-c"], f"source {init}; __hermes_relay_indicator", tmp_path) == "[LAN?]\n"


def test_snippets_have_no_tabs_or_trailing_spaces() -> None:
    for shell in ("bash", "zsh", "fish"):
        for line in snippet(shell, "/r").splitlines():
            assert line == line.rstrip() and "\t" not in line, (shell, line)


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_snippet_keeps_the_approval_count_under_prompt_bang(tmp_path) -> None:
    route = tmp_path / "route"
    route.write_text(f"{2**40} LAN !1\n")
    init = tmp_path / "init"
    init.write_text(snippet("zsh", str(route)))
    for option, shown in (("setopt prompt_bang", "[LAN !1]"), ("unsetopt prompt_bang", "[LAN !1]")):
        # print -P expands the prompt as zsh draws it, ! included (the (%) flag does not apply prompt_bang)
        out = _run_shell(["zsh", "-f", "-c"], f"{option}; source {init}; __hermes_relay_precmd; "
                                              "print -P -- $HERMES_RELAY_INDICATOR", tmp_path)
        assert out == shown + "\n", option
