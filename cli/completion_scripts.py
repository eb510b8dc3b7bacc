"""Shell completion scripts generated from the real argparse parser (imported only by `completion`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

SHELLS = ("bash", "zsh", "fish")
PROG = "hermes-relay"


# -- the command tree ------------------------------------------------------------------------------
@dataclass
class Node:
    """One (sub)command: its path from the root, flags, value-taking flags, words and their help."""

    path: str
    options: list[str] = field(default_factory=list)
    takes_value: list[str] = field(default_factory=list)
    children: dict[str, Node] = field(default_factory=dict)
    choices: list[str] = field(default_factory=list)
    help: dict[str, str] = field(default_factory=dict)

    def walk(self) -> list[Node]:
        nodes = [self]
        for child in self.children.values():
            nodes += child.walk()
        return nodes

    @property
    def words(self) -> list[str]:
        return list(self.children) + [c for c in self.choices if c not in self.children]


def command_tree(parser: argparse.ArgumentParser, path: str = "") -> Node:
    """The parser's commands, flags and positional choices; options hidden with SUPPRESS are left out."""
    node = Node(path)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, child in action.choices.items():
                node.children[name] = command_tree(child, f"{path} {name}".strip())
                node.help[name] = helps.get(name, "")
        elif action.option_strings:
            if action.help == argparse.SUPPRESS:
                continue
            for opt in action.option_strings:
                node.options.append(opt)
                node.help[opt] = action.help or ""
                if action.nargs != 0:
                    node.takes_value.append(opt)
        elif action.choices:
            node.choices += [str(c) for c in action.choices]
    return node


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    tree = command_tree(parser)
    return {"bash": _bash, "zsh": _zsh, "fish": _fish}[shell](tree.walk())


def _clean(text: str) -> str:
    return " ".join(text.replace("%%", "%").split())


def _sq(text: str) -> str:
    """A POSIX-shell (and fish) single-quoted word."""
    return "'" + text.replace("'", "'\\''") + "'"


def _fish_sq(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _cases(nodes: list[Node], pick: Any, fmt: Any) -> list[str]:
    """``node:word`` case patterns for every node's words that ``pick`` selects, quoted by ``fmt``."""
    return [fmt(f"{n.path}:{w}") for n in nodes for w in pick(n)]


# -- bash ------------------------------------------------------------------------------------------
def _bash(nodes: list[Node]) -> str:
    value_cases = "|".join(_cases(nodes, lambda n: n.takes_value, _sq)) or "''"
    child_cases = "|".join(_cases(nodes, lambda n: n.children, _sq)) or "''"
    table = "\n".join(
        f"        {_sq(n.path)}) opts={_sq(' '.join(n.options))}; words={_sq(' '.join(n.words))} ;;" for n in nodes
    )
    return f"""# bash completion for {PROG}, from: {PROG} completion bash
# Load it in ~/.bashrc with:  source <({PROG} completion bash)
_hermes_relay() {{
    local cur node="" skip=0 i w opts="" words=""
    cur=${{COMP_WORDS[COMP_CWORD]}}
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${{COMP_WORDS[i]}}
        if ((skip)); then skip=0; continue; fi
        case "$node:$w" in
            {value_cases}) skip=1; continue ;;
        esac
        case "$node:$w" in
            {child_cases}) node=${{node:+$node }}$w ;;
        esac
    done
    COMPREPLY=()
    if ((skip)); then  # an option's value: file names (compopt is bash 4+)
        compopt -o default 2>/dev/null
        return 0
    fi
    case "$node" in
{table}
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$words" -- "$cur"))
    fi
    return 0
}}
complete -F _hermes_relay {PROG}
"""


# -- zsh -------------------------------------------------------------------------------------------
def _zsh_item(name: str, text: str) -> str:
    return _sq(f"{name.replace(':', chr(92) + ':')}:{_clean(text)}" if text else name.replace(":", "\\:"))


def _zsh(nodes: list[Node]) -> str:
    value_cases = "|".join(_cases(nodes, lambda n: n.takes_value, _sq)) or "''"
    child_cases = "|".join(_cases(nodes, lambda n: n.children, _sq)) or "''"
    rows = []
    for n in nodes:
        opts = " ".join(_zsh_item(o, n.help.get(o, "")) for o in n.options)
        words = " ".join(_zsh_item(w, n.help.get(w, "")) for w in n.words)
        rows.append(f"        {_sq(n.path)}) opts=({opts}); cands=({words}) ;;")
    table = "\n".join(rows)
    return f"""#compdef {PROG}
# zsh completion for {PROG}, from: {PROG} completion zsh
# Load it in ~/.zshrc after compinit with:  source <({PROG} completion zsh)
# or save it as _{PROG} in a directory on $fpath.
_hermes_relay() {{
    local node="" w
    local -i i skip=0
    local -a opts cands
    for ((i = 2; i < CURRENT; i++)); do
        w=${{words[i]}}
        if ((skip)); then skip=0; continue; fi
        case "$node:$w" in
            {value_cases}) skip=1; continue ;;
        esac
        case "$node:$w" in
            {child_cases}) node=${{node:+$node }}$w ;;
        esac
    done
    if ((skip)); then _files; return; fi
    case "$node" in
{table}
    esac
    if [[ $PREFIX == -* ]]; then
        _describe -t options option opts
    else
        _describe -t commands command cands
    fi
}}
if [[ ${{zsh_eval_context[-1]-}} == loadautofunc ]]; then
    _hermes_relay "$@"
else
    compdef _hermes_relay {PROG}
fi
"""


# -- fish ------------------------------------------------------------------------------------------
def _fish(nodes: list[Node]) -> str:
    value_cases = " ".join(_cases(nodes, lambda n: n.takes_value, _fish_sq)) or "''"
    child_cases = " ".join(_cases(nodes, lambda n: n.children, _fish_sq)) or "''"
    lines = [
        f"# fish completion for {PROG}, from: {PROG} completion fish",
        f"# Save it as ~/.config/fish/completions/{PROG}.fish",
        "function __hermes_relay_node",
        "    set -l node ''",
        "    set -l skip 0",
        "    for w in (commandline -opc)[2..-1]",
        "        if test $skip -eq 1",
        "            set skip 0",
        "            continue",
        "        end",
        '        switch "$node:$w"',
        f"            case {value_cases}",
        "                set skip 1",
        "                continue",
        "        end",
        '        switch "$node:$w"',
        f"            case {child_cases}",
        "                set node (string trim -- \"$node $w\")",
        "        end",
        "    end",
        "    if test $skip -eq 1",
        "        echo '<value>'",  # after an option that takes a value: nothing matches
        "    else",
        '        echo "$node"',
        "    end",
        "end",
        "function __hermes_relay_at",
        "    set -l node (__hermes_relay_node)",
        '    test "$node" = "$argv[1]"',
        "end",
        f"complete -c {PROG} -f",
    ]
    for n in nodes:
        cond = f"-n {_fish_sq('__hermes_relay_at ' + _fish_sq(n.path))}"
        for word in n.words:
            desc = _clean(n.help.get(word, ""))
            lines.append(f"complete -c {PROG} {cond} -a {_fish_sq(word)}" + (f" -d {_fish_sq(desc)}" if desc else ""))
        for opt in n.options:
            flag = f"-l {_fish_sq(opt[2:])}" if opt.startswith("--") else f"-s {_fish_sq(opt[1:])}"
            desc = _clean(n.help.get(opt, ""))
            lines.append(f"complete -c {PROG} {cond} {flag}" + (" -r" if opt in n.takes_value else "")
                         + (f" -d {_fish_sq(desc)}" if desc else ""))
    return "\n".join(lines) + "\n"
