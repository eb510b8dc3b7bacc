"""``hermes-relay completion bash|zsh|fish``: generated from the real parser, valid, and actually completing.

Each script is checked by its shell's own parser (``bash -n``, ``zsh -n``, ``fish --no-execute``)
where that shell is installed, and must name every subcommand and flag of the parser. bash and fish
are also driven for real: bash through ``COMP_WORDS``/``COMP_CWORD``, fish through ``complete -C``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from hermes_relay.cli import completion_scripts as completion
from hermes_relay.cli.commands import completion as completion_command
from hermes_relay.cli.main import build_parser

SHELL_CHECKS = {"bash": ["bash", "-n"], "zsh": ["zsh", "-n"], "fish": ["fish", "--no-execute"]}


def parser_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], list[str]]:
    """Every (sub)command path of the parser and its option strings, walked independently of completion.py."""
    found = {path: [o for a in parser._actions for o in a.option_strings if a.help != argparse.SUPPRESS]}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.update(parser_commands(child, (*path, name)))
    return found


@pytest.fixture(scope="module")
def scripts() -> dict[str, str]:
    return {shell: completion.script(shell, build_parser()) for shell in completion.SHELLS}


def _shell(name: str) -> str:
    tool = shutil.which(name)
    if tool is None:
        pytest.skip(f"{name} is not installed")
    return tool


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_the_command_prints_the_script(cli, shell: str, scripts: dict[str, str]) -> None:
    result = cli("completion", shell)
    assert (result.code, result.err) == (0, "")
    assert result.out == scripts[shell]
    assert result.out.splitlines()[0 if shell != "zsh" else 1].startswith(f"# {shell} completion for hermes-relay")


def test_an_unknown_shell_is_a_usage_error(cli) -> None:
    result = cli("completion", "tcsh")
    assert result.code == 2
    assert "invalid choice: 'tcsh'" in result.err


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_the_script_passes_the_shells_own_syntax_check(shell: str, scripts: dict[str, str], tmp_path: Path) -> None:
    tool = _shell(shell)
    path = tmp_path / f"hermes-relay.{shell}"
    path.write_text(scripts[shell])
    done = subprocess.run([tool, *SHELL_CHECKS[shell][1:], str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_every_subcommand_and_flag_of_the_parser_is_in_the_script(shell: str, scripts: dict[str, str]) -> None:
    commands = parser_commands(build_parser())
    assert ("agent", "install") in commands and ("completion",) in commands  # the walk is real
    text = scripts[shell]
    for path, options in commands.items():
        if path:
            assert f"{' '.join(path[:-1])}:{path[-1]}" in text, path  # the word descends into its node
            assert path[-1] in text
        for option in options:
            word = option.lstrip("-") if shell == "fish" else option
            assert word in text, (path, option)


def test_the_tree_matches_the_parser() -> None:
    commands = parser_commands(build_parser())
    tree = {tuple(n.path.split()): n for n in completion.command_tree(build_parser()).walk()}
    assert set(tree) == set(commands)
    for path, options in commands.items():
        assert sorted(tree[path].options) == sorted(options)
    assert "--lines" in tree[("agent", "logs")].takes_value and "--follow" not in tree[("agent", "logs")].takes_value
    assert tree[("completion",)].words == ["bash", "zsh", "fish"]


def _bash_complete(script: Path, words: list[str]) -> list[str]:
    bash = _shell("bash")
    line = " ".join(f"'{w}'" for w in words)
    program = (f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _hermes_relay; "
               'printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run([bash, "--norc", "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [w for w in done.stdout.splitlines() if w]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["hermes-relay", "agent", "in"], ["install"]),
        (["hermes-relay", "--json", "agent", "un"], ["uninstall"]),
        (["hermes-relay", "agent", "install", "--d"], ["--dry-run"]),
        (["hermes-relay", "comp"], ["completion"]),
        (["hermes-relay", "completion", "z"], ["zsh"]),
        (["hermes-relay", "agent", "logs", "--lines", ""], []),  # the option's value: nothing offered
        (["hermes-relay", "agent", "logs", "--lines", "5", "--f"], ["--follow"]),
    ],
)
def test_bash_completes_words(tmp_path: Path, scripts: dict[str, str], words: list[str], expected: list[str]) -> None:
    script = tmp_path / "c.bash"
    script.write_text(scripts["bash"])
    assert _bash_complete(script, words) == expected


def test_bash_offers_every_top_level_command(tmp_path: Path, scripts: dict[str, str]) -> None:
    script = tmp_path / "c.bash"
    script.write_text(scripts["bash"])
    top = [path[0] for path in parser_commands(build_parser()) if len(path) == 1]
    assert sorted(_bash_complete(script, ["hermes-relay", ""])) == sorted(top)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("hermes-relay agent in", ["install"]),
        ("hermes-relay agent install --dr", ["--dry-run"]),
        ("hermes-relay completion f", ["fish"]),
    ],
)
def test_fish_completes_words(tmp_path: Path, scripts: dict[str, str], line: str, expected: list[str]) -> None:
    fish = _shell("fish")
    script = tmp_path / "c.fish"
    script.write_text(scripts["fish"])
    home = tmp_path / "home"  # fish writes its history and universal variables under $HOME
    home.mkdir()
    done = subprocess.run([fish, "--no-config", "-c", f"source {script}; complete -C '{line}'"],
                          capture_output=True, text=True, timeout=60,
                          env={"HOME": str(home), "PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": str(home / ".config")})
    assert done.returncode == 0, done.stderr
    assert [row.split("\t")[0] for row in done.stdout.splitlines()] == expected


# zsh completion only runs inside a completion widget; stand-ins for the compsys functions it calls
# let the node walk and the candidate table run in a plain zsh, printing what would be offered.
_ZSH_STUBS = r"""
compdef() { print -r -- "compdef $*" }
_describe() { local -a items; items=("${(@P)4}"); print -rl -- "$3" "${items[@]%%:*}" }
_files() { print -r -- files }
"""


@pytest.mark.parametrize(
    ("words", "prefix", "expected"),
    [
        (["hermes-relay", "agent", ""], "", ["command", "start", "stop", "restart", "status", "logs", "run",
                                             "install", "uninstall"]),
        (["hermes-relay", "--json", "completion", ""], "", ["command", "bash", "zsh", "fish"]),
        (["hermes-relay", "agent", "uninstall", "--"], "--",
         ["option", "-h", "--help", "--dry-run", "--json"]),
        (["hermes-relay", "agent", "logs", "--lines", ""], "", ["files"]),  # a value the program does not complete
    ],
)
def test_zsh_walks_to_the_right_candidates(tmp_path: Path, scripts: dict[str, str], words: list[str], prefix: str,
                                           expected: list[str]) -> None:
    zsh = _shell("zsh")
    script = tmp_path / "_hermes-relay"
    script.write_text(scripts["zsh"])
    quoted = " ".join(f"'{w}'" for w in words)
    program = (f"{_ZSH_STUBS}\nsource {script}\nwords=({quoted}); CURRENT={len(words)}; PREFIX='{prefix}'\n"
               "_hermes_relay")
    done = subprocess.run([zsh, "-f", "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "compdef _hermes_relay hermes-relay"  # sourcing registers the function
    assert lines[1:] == expected


def test_command_and_generator_agree_on_shells() -> None:
    assert completion_command.SHELLS == completion.SHELLS
