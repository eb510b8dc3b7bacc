"""Completion of relay URLs and names, presets and approval ids, driven in bash, zsh and fish for real.

Each shell sources the generated script and runs the installed ``hermes-relay`` (this environment's)
for ``__complete``, in a HOME holding two pairings and a name. bash is given what readline gives it
(COMP_LINE, COMP_POINT and COMP_WORDS split at ':' and '=' as COMP_WORDBREAKS splits them), and the
test applies the answer the way readline does, so what is checked is the line the user ends up with.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hermes_relay.cli import completion_scripts as completion
from hermes_relay.cli.commands.access import PRESET_NAMES
from hermes_relay.cli.main import build_parser
from hermes_relay.core import paths

LAN = "ws://192.168.1.5:8767"
PUBLIC = "wss://relay.example.com"
RELAYS = [LAN, PUBLIC, "office"]
BIN = os.path.dirname(sys.executable)  # this environment's hermes-relay


@pytest.fixture
def shell_env(env: dict[str, str]) -> dict[str, str]:
    assert os.path.exists(os.path.join(BIN, "hermes-relay")), "hermes-relay is not installed next to python"
    store = paths.sessions_file(env)
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text(json.dumps({"version": 1, "sessions": {LAN: {"token": "a" * 43}, PUBLIC: {"token": "b" * 43}}}))
    (store.parent / "desktop-control.json").write_text(json.dumps({"relay_url": LAN, "host_aliases": {LAN: "office"}}))
    return {**env, "PATH": f"{BIN}:/usr/bin:/bin", "XDG_CONFIG_HOME": str(Path(env["HOME"]) / ".config")}


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("scripts")
    out = {}
    for shell in completion.SHELLS:
        out[shell] = folder / f"hermes-relay.{shell}"
        out[shell].write_text(completion.script(shell, build_parser()))
    return out


def _shell(name: str) -> str:
    tool = shutil.which(name)
    if tool is None:
        pytest.skip(f"{name} is not installed")
    return tool


def test_the_table_reaches_every_place_a_relay_preset_or_approval_is_typed() -> None:
    nodes = {n.path: n for n in completion.command_tree(build_parser()).walk()}
    remote = [path for path, n in nodes.items() if "--remote" in n.options]
    assert remote and all(nodes[path].value_kinds.get("--remote") == ["relays"] for path in remote)
    session = [path for path, n in nodes.items() if "--session" in n.options]
    assert session == ["shell"] and nodes["shell"].value_kinds["--session"] == ["sessions"]
    kinds = {path: n.kinds for path, n in nodes.items() if n.kinds}
    expected = {"forget": ["relays"], "pin accept": ["relays"], "access": ["relays", "presets"],
                "approvals approve": ["approvals"], "approvals deny": ["approvals"],
                "sessions resume": ["sessions"], "sessions kill": ["sessions"]}
    assert expected.items() <= kinds.items()  # and any new command with a URL argument
    assert all(k == ["relays"] for path, k in kinds.items() if path not in expected)
    assert "set" in nodes["access"].words


# -- bash ------------------------------------------------------------------------------------------
def _comp_words(line: str) -> list[str]:
    """COMP_WORDS as bash splits the line: at blanks, and runs of ':' or '=' (in COMP_WORDBREAKS) apart."""
    words = [piece for token in line.split() for piece in re.findall(r"[:=]+|[^:=]+", token)]
    return words + [""] if not line or line[-1].isspace() else words


def _bash_lines(script: Path, line: str, environ: dict[str, str]) -> list[str]:
    """Every line readline would make of ``line`` with each candidate bash offers (cursor at the end)."""
    words = _comp_words(line)
    program = (f"source {script}; COMP_LINE={shlex.quote(line)}; COMP_POINT={len(line)}; "
               f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD={len(words) - 1}; "
               '_hermes_relay; printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run([_shell("bash"), "--norc", "-c", program], capture_output=True, text=True, timeout=60,
                          env=environ)
    assert (done.returncode, done.stderr) == (0, "")
    replaced = re.split(r"[\s:=]", line)[-1]  # readline replaces the text after the last word break
    return [line[: len(line) - len(replaced)] + reply for reply in done.stdout.splitlines() if reply]


@pytest.mark.parametrize(("line", "expected"), [
    ("hermes-relay forget ", [f"hermes-relay forget {r}" for r in RELAYS]),
    ("hermes-relay forget w", [f"hermes-relay forget {LAN}", f"hermes-relay forget {PUBLIC}"]),
    ("hermes-relay forget ws:", [f"hermes-relay forget {LAN}"]),
    ("hermes-relay forget ws://192", [f"hermes-relay forget {LAN}"]),
    ("hermes-relay forget ws://192.168.1.5:87", [f"hermes-relay forget {LAN}"]),
    ("hermes-relay forget of", ["hermes-relay forget office"]),
    ("hermes-relay pin accept wss", [f"hermes-relay pin accept {PUBLIC}"]),
    ("hermes-relay devices --remote ", [f"hermes-relay devices --remote {r}" for r in RELAYS]),
    ("hermes-relay devices list --remote wss://r", [f"hermes-relay devices list --remote {PUBLIC}"]),
    ("hermes-relay devices --remote=", [f"hermes-relay devices --remote={r}" for r in RELAYS]),
    ("hermes-relay devices --remote=ws://1", [f"hermes-relay devices --remote={LAN}"]),
    ("hermes-relay --json pair --remote o", ["hermes-relay --json pair --remote office"]),
    # the words after a URL that COMP_WORDS cut into pieces are still walked right
    (f"hermes-relay devices --remote {LAN} ex", [f"hermes-relay devices --remote {LAN} extend"]),
    (f"hermes-relay devices --remote={LAN} extend kd21 --r", [f"hermes-relay devices --remote={LAN} extend kd21 --remote"]),
    ("hermes-relay access ", [f"hermes-relay access {w}" for w in ["set", *RELAYS, *PRESET_NAMES]]),
    ("hermes-relay access st", ["hermes-relay access standard"]),
    (f"hermes-relay access {LAN} tr", [f"hermes-relay access {LAN} trusted"]),
    ("hermes-relay approvals approve ", []),  # no agent running: nothing, and none started
    ("hermes-relay agent logs --lines=", []),  # a value the program does not complete
])
def test_bash_completes_relays_presets_after_colons(scripts: dict[str, Path], shell_env: dict[str, str], line: str,
                                                    expected: list[str]) -> None:
    assert _bash_lines(scripts["bash"], line, shell_env) == expected
    assert not os.path.exists(paths.socket_path(shell_env))


def test_bash_completes_from_the_middle_of_a_line(scripts: dict[str, Path], shell_env: dict[str, str]) -> None:
    line = "hermes-relay forget ws://19 --yes"
    point = len("hermes-relay forget ws://19")
    words = _comp_words(line)
    program = (f"source {scripts['bash']}; COMP_LINE={shlex.quote(line)}; COMP_POINT={point}; "
               f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD=4; "
               '_hermes_relay; printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run([_shell("bash"), "--norc", "-c", program], capture_output=True, text=True, timeout=60,
                          env=shell_env)
    assert done.stdout.splitlines() == ["//192.168.1.5:8767"]  # what follows "ws:", which readline keeps


def test_bash_without_colon_in_comp_wordbreaks_gets_whole_urls(scripts: dict[str, Path],
                                                                shell_env: dict[str, str]) -> None:
    # Some setups take ':' (and '=') out of COMP_WORDBREAKS: COMP_WORDS then holds whole URLs, and so must COMPREPLY.
    line = "hermes-relay devices --remote=ws://19"
    program = (f"source {scripts['bash']}; COMP_WORDBREAKS=$' \\t\\n\"\\'><;|&('; COMP_LINE={shlex.quote(line)}; "
               f"COMP_POINT={len(line)}; COMP_WORDS=(hermes-relay devices --remote=ws://19); COMP_CWORD=2; "
               '_hermes_relay; printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run([_shell("bash"), "--norc", "-c", program], capture_output=True, text=True, timeout=60,
                          env=shell_env)
    assert (done.stdout, done.stderr) == (f"--remote={LAN}\n", "")


# -- zsh -------------------------------------------------------------------------------------------
# Stand-ins for the compsys builtins (see test_completion.py): each prints what it would offer.
_ZSH_STUBS = r"""
compdef() { }
_describe() { local -a items; items=("${(@P)4}"); (( $#items )) && print -rl -- "${items[@]%%:*}" }
_files() { print -r -- files }
compadd() { [[ $1 == -- ]] && shift; print -rl -- "$@" }
compset() { [[ $1 == -P && $2 == '*=' ]] && PREFIX=${PREFIX#*=} }
"""


@pytest.mark.parametrize(("words", "expected"), [
    (["hermes-relay", "forget", ""], RELAYS),
    (["hermes-relay", "pin", "accept", ""], RELAYS),
    (["hermes-relay", "devices", "extend", "--remote", ""], RELAYS),
    (["hermes-relay", "devices", "--remote=w"], RELAYS),  # zsh filters by the prefix itself
    (["hermes-relay", "access", ""], ["set", *RELAYS, *PRESET_NAMES]),
    (["hermes-relay", "access", LAN, ""], ["set", *RELAYS, *PRESET_NAMES]),
    (["hermes-relay", "approvals", "deny", ""], []),
    (["hermes-relay", "devices", "--remote", LAN, ""], ["list", "revoke", "extend"]),
])
def test_zsh_offers_relays_presets_and_approvals(scripts: dict[str, Path], shell_env: dict[str, str],
                                                 words: list[str], expected: list[str]) -> None:
    quoted = " ".join(shlex.quote(w) for w in words)
    program = (f"{_ZSH_STUBS}\nsource {scripts['zsh']}\nwords=({quoted}); CURRENT={len(words)}; "
               f"PREFIX={shlex.quote(words[-1])}\n_hermes_relay\nprint -r -- \"prefix=$PREFIX\"")
    done = subprocess.run([_shell("zsh"), "-f", "-c", program], capture_output=True, text=True, timeout=60,
                          env=shell_env)
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[:-1] == expected
    assert lines[-1] == ("prefix=w" if words[-1] == "--remote=w" else f"prefix={words[-1]}")  # after compset -P


# -- fish ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("line", "expected"), [
    ("hermes-relay forget ", sorted(RELAYS)),
    ("hermes-relay forget ws://1", [LAN]),
    ("hermes-relay pin accept ", sorted(RELAYS)),
    ("hermes-relay devices --remote ", sorted(RELAYS)),
    ("hermes-relay devices revoke --remote of", ["office"]),
    ("hermes-relay devices --remote=wss", [f"--remote={PUBLIC}"]),
    ("hermes-relay devices --re", ["--remote"]),  # the option itself keeps its description
    ("hermes-relay access ", sorted(["set", *RELAYS, *PRESET_NAMES])),
    ("hermes-relay access full", ["full_access"]),
    ("hermes-relay approvals approve ", []),
    ("hermes-relay devices extend --ttl ", []),  # another option's value: not a relay
])
def test_fish_offers_relays_presets_and_approvals(scripts: dict[str, Path], shell_env: dict[str, str], line: str,
                                                  expected: list[str]) -> None:
    done = subprocess.run([_shell("fish"), "--no-config", "-c", f"source {scripts['fish']}; complete -C {shlex.quote(line)}"],
                          capture_output=True, text=True, timeout=60, env=shell_env)
    assert (done.returncode, done.stderr) == (0, "")
    rows = [row.split("\t") for row in done.stdout.splitlines()]
    assert sorted(row[0] for row in rows) == expected
    if line.endswith("--re"):
        assert rows[0][1].startswith("which relay")


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_a_missing_program_completes_nothing_without_a_word_on_stderr(scripts: dict[str, Path],
                                                                       shell_env: dict[str, str], shell: str) -> None:
    prog = "/nonexistent/hermes-relay"
    environ = {**shell_env, "PATH": "/usr/bin:/bin"}
    if shell == "bash":
        program = (f"source {scripts['bash']}; COMP_LINE='{prog} forget '; COMP_POINT={len(prog) + 8}; "
                   f"COMP_WORDS=({prog} forget ''); COMP_CWORD=2; _hermes_relay; echo \"[${{COMPREPLY[*]}}]\"")
        argv = [_shell("bash"), "--norc", "-c", program]
    elif shell == "zsh":
        program = (f"{_ZSH_STUBS}\nsource {scripts['zsh']}\nwords=({prog} forget ''); CURRENT=3; PREFIX=''\n"
                   "_hermes_relay; print -r -- '[]'")
        argv = [_shell("zsh"), "-f", "-c", program]
    else:
        argv = [_shell("fish"), "--no-config", "-c", f"source {scripts['fish']}; complete -C 'hermes-relay forget '; "
                "echo '[]'"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=environ)
    assert (done.stdout, done.stderr) == ("[]\n", "")
