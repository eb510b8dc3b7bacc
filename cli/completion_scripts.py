"""Shell completion scripts generated from the real argparse parser (imported only by `completion`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

SHELLS = ("bash", "zsh", "fish")
PROG = "hermes-relay"

# What the program itself completes while Tab is pressed: `hermes-relay __complete KIND` prints the
# candidates of KIND (cli/complete.py: relays, presets, approvals, sessions). The one table of where each applies:
# the value of these options, anywhere
OPTION_KINDS: dict[str, tuple[str, ...]] = {"--remote": ("relays",), "--session": ("sessions",)}
METAVAR_KINDS: dict[str, tuple[str, ...]] = {"URL": ("relays",), "URL|NAME": ("relays",)}  # positionals shown as these
COMMAND_KINDS: dict[str, tuple[str, ...]] = {  # the positional words of these commands
    "access": ("relays", "presets"),  # [URL] [PRESET] | set CAP MODE [URL]
    "approvals approve": ("approvals",),  # ID
    "approvals deny": ("approvals",),  # ID
    "sessions resume": ("sessions",),  # NAME
    "sessions kill": ("sessions",),  # NAME
}
COMMAND_WORDS: dict[str, tuple[str, ...]] = {"access": ("set",)}  # fixed words no parser choice names


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
    kinds: list[str] = field(default_factory=list)  # `__complete` kinds of its positional words
    value_kinds: dict[str, list[str]] = field(default_factory=dict)  # option -> `__complete` kinds of its value

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
                    if opt in OPTION_KINDS:
                        node.value_kinds[opt] = list(OPTION_KINDS[opt])
        elif action.choices:
            node.choices += [str(c) for c in action.choices]
        else:
            node.kinds += METAVAR_KINDS.get(str(action.metavar), ())
    node.kinds = list(dict.fromkeys(node.kinds + list(COMMAND_KINDS.get(path, ()))))
    node.choices += [w for w in COMMAND_WORDS.get(path, ()) if w not in node.choices]
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


def _kind_cases(nodes: list[Node], sep: str, indent: str) -> str:
    """``'node:--opt'|...) kinds='relays' ;;`` lines: the kinds of every option value completed by the program."""
    groups: dict[str, list[str]] = {}
    for n in nodes:
        for opt, kinds in n.value_kinds.items():
            groups.setdefault(" ".join(kinds), []).append(_sq(f"{n.path}:{opt}"))
    if not groups:
        return f"{indent}'') ;;"
    return "\n".join(f"{indent}{sep.join(pats)}) kinds={_sq(kinds)} ;;" for kinds, pats in groups.items())


# -- bash ------------------------------------------------------------------------------------------
def _bash(nodes: list[Node]) -> str:
    value_cases = "|".join(_cases(nodes, lambda n: n.takes_value, _sq)) or "''"
    child_cases = "|".join(_cases(nodes, lambda n: n.children, _sq)) or "''"
    kind_cases = _kind_cases(nodes, "|", " " * 12)
    table = "\n".join(
        f"            {_sq(n.path)}) opts={_sq(' '.join(n.options))}; words={_sq(' '.join(n.words))}; "
        f"kinds={_sq(' '.join(n.kinds))} ;;" for n in nodes
    )
    return f"""# bash completion for {PROG}, from: {PROG} completion bash
# Load it in ~/.bashrc with:  source <({PROG} completion bash)
_hermes_relay_ask() {{  # KIND: what `{PROG} __complete KIND` answers, asked of the program being completed
    local prog=${{COMP_WORDS[0]}}
    [[ $prog == "~/"* ]] && prog=$HOME/${{prog:2}}
    "$prog" __complete "$1" 2>/dev/null </dev/null
}}
_hermes_relay() {{
    local node="" skip=0 i k w c opt="" opts="" words="" kinds="" cur val lead="" line glue inline=1
    local -a typed=()
    # COMP_WORDS is also split at COMP_WORDBREAKS (ws://h:1 arrives as ws : //h : 1): rejoin the pieces
    # that touch in COMP_LINE, up to the cursor, so that the walk sees the words as they were typed.
    line=${{COMP_LINE:0:COMP_POINT}}
    [[ -z $COMP_LINE ]] && inline=0
    for ((k = 0; k <= COMP_CWORD; k++)); do
        w=${{COMP_WORDS[k]}}
        glue=0
        if ((inline)); then
            ((k > 0)) && [[ $line != [[:space:]]* ]] && glue=1
            line=${{line#"${{line%%[![:space:]]*}}"}}
            ((k == COMP_CWORD)) && w=$line  # the word being completed ends at the cursor
            if [[ $line == "$w"* ]]; then line=${{line:${{#w}}}}; else inline=0; fi  # out of step: plain words
        fi
        if ((glue)); then typed[${{#typed[@]}} - 1]+=$w; else typed+=("$w"); fi
    done
    cur=${{typed[${{#typed[@]}} - 1]}}
    for ((i = 1; i < ${{#typed[@]}} - 1; i++)); do
        w=${{typed[i]}}
        if ((skip)); then skip=0; continue; fi
        case "$node:$w" in
            {value_cases}) skip=1; opt=$w; continue ;;
        esac
        case "$node:$w" in
            {child_cases}) node=${{node:+$node }}$w ;;
        esac
    done
    COMPREPLY=()
    val=$cur
    if ((skip)) || [[ $cur == --*=* ]]; then  # an option's value: --remote URL or --remote=URL
        if ((!skip)); then
            opt=${{cur%%=*}} lead=${{cur%%=*}}= val=${{cur#*=}}
            case "$node:$opt" in
                {value_cases}) ;;
                *) return 0 ;;
            esac
        fi
        case "$node:$opt" in
{kind_cases}
        esac
        if [[ -z $kinds ]]; then  # file names (compopt is bash 4+)
            compopt -o default 2>/dev/null
            return 0
        fi
    else
        case "$node" in
{table}
        esac
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "$opts" -- "$cur"))
            kinds=""
        else
            COMPREPLY=($(compgen -W "$words" -- "$cur"))
        fi
    fi
    for k in $kinds; do
        while IFS= read -r c; do
            [[ -n $c && $c == "$val"* ]] && COMPREPLY+=("$lead$c")
        done < <(_hermes_relay_ask "$k")
    done
    # readline replaces only what follows the last COMP_WORDBREAKS character of the word (':' in a URL,
    # '=' after an option): offer the rest of each candidate, as bash-completion's __ltrim_colon_completions
    for ((i = ${{#cur}}; i > 0; i--)); do
        c=${{cur:i-1:1}}
        if [[ ($c == ":" || $c == "=") && $COMP_WORDBREAKS == *"$c"* ]]; then break; fi
    done
    if ((i > 0 && ${{#COMPREPLY[@]}} > 0)); then
        COMPREPLY=("${{COMPREPLY[@]#"${{cur:0:i}}"}}")
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
    kind_cases = _kind_cases(nodes, "|", " " * 8)
    rows = []
    for n in nodes:
        opts = " ".join(_zsh_item(o, n.help.get(o, "")) for o in n.options)
        words = " ".join(_zsh_item(w, n.help.get(w, "")) for w in n.words)
        rows.append(f"        {_sq(n.path)}) opts=({opts}); cands=({words}); kinds={_sq(' '.join(n.kinds))} ;;")
    table = "\n".join(rows)
    return f"""#compdef {PROG}
# zsh completion for {PROG}, from: {PROG} completion zsh
# Load it in ~/.zshrc after compinit with:  source <({PROG} completion zsh)
# or save it as _{PROG} in a directory on $fpath.
_hermes_relay_ask() {{  # KIND...: offer what `{PROG} __complete KIND` answers, asked of the program being completed
    local prog=${{words[1]}} kind
    local -a vals
    [[ $prog == "~/"* ]] && prog=$HOME/${{prog:2}}
    for kind; do
        vals=(${{(f)"$("$prog" __complete $kind 2>/dev/null </dev/null)"}})
        (( ${{#vals}} )) && compadd -- "${{vals[@]}}"
    done
}}
_hermes_relay() {{
    local node="" w opt="" kinds=""
    local -i i skip=0
    local -a opts cands
    for ((i = 2; i < CURRENT; i++)); do
        w=${{words[i]}}
        if ((skip)); then skip=0; continue; fi
        case "$node:$w" in
            {value_cases}) skip=1; opt=$w; continue ;;
        esac
        case "$node:$w" in
            {child_cases}) node=${{node:+$node }}$w ;;
        esac
    done
    if ((!skip)) && [[ $PREFIX == --*=* ]]; then  # --remote=URL
        opt=${{PREFIX%%=*}}
        case "$node:$opt" in
            {value_cases}) skip=1; compset -P '*=' ;;
        esac
    fi
    if ((skip)); then  # an option's value
        case "$node:$opt" in
{kind_cases}
        esac
        if [[ -n $kinds ]]; then _hermes_relay_ask ${{=kinds}}; else _files; fi
        return
    fi
    case "$node" in
{table}
    esac
    if [[ $PREFIX == -* ]]; then
        _describe -t options option opts
    else
        _describe -t commands command cands
        _hermes_relay_ask ${{=kinds}}
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
        "    set -l opt ''",
        "    set -l skip 0",
        "    for w in (commandline -opc)[2..-1]",
        "        if test $skip -eq 1",
        "            set skip 0",
        "            continue",
        "        end",
        '        switch "$node:$w"',
        f"            case {value_cases}",
        "                set skip 1",
        "                set opt $w",
        "                continue",
        "        end",
        '        switch "$node:$w"',
        f"            case {child_cases}",
        "                set node (string trim -- \"$node $w\")",
        "        end",
        "    end",
        "    if test $skip -eq 1",
        '        echo "$node <$opt>"',  # after an option that takes a value: only that option's values
        "    else",
        '        echo "$node"',
        "    end",
        "end",
        "function __hermes_relay_at",
        "    contains -- (__hermes_relay_node) $argv",
        "end",
        f"function __hermes_relay_ask  # KIND: what `{PROG} __complete KIND` answers, asked of the program being completed",
        "    set -l prog (commandline -opc)[1]",
        "    string match -q -- '~/*' $prog; and set prog $HOME/(string sub -s 3 -- $prog)",
        "    command -s $prog >/dev/null 2>&1; or return 0  # fish itself would complain of a missing program",
        "    for kind in $argv",
        "        command $prog __complete $kind 2>/dev/null </dev/null",
        "    end",
        "end",
        f"complete -c {PROG} -f",
    ]
    for n in nodes:
        cond = f"-n {_fish_sq('__hermes_relay_at ' + _fish_sq(n.path))}"
        for word in n.words:
            desc = _clean(n.help.get(word, ""))
            lines.append(f"complete -c {PROG} {cond} -a {_fish_sq(word)}" + (f" -d {_fish_sq(desc)}" if desc else ""))
        if n.kinds:
            lines.append(f"complete -c {PROG} {cond} -a {_fish_sq('(__hermes_relay_ask ' + ' '.join(n.kinds) + ')')}")
        for opt in n.options:
            flag = f"-l {_fish_sq(opt[2:])}" if opt.startswith("--") else f"-s {_fish_sq(opt[1:])}"
            desc = _clean(n.help.get(opt, ""))
            if opt in n.value_kinds:  # its value from the program, after `--remote ` (the node reads
                # "devices <--remote>") and in `--remote=`; declared before the described entry, whose
                # description fish then shows for the option itself (and not for every value)
                at = f"__hermes_relay_at {_fish_sq(n.path)} {_fish_sq(f'{n.path} <{opt}>'.strip())}"
                ask = "(__hermes_relay_ask " + " ".join(n.value_kinds[opt]) + ")"
                lines.append(f"complete -c {PROG} -n {_fish_sq(at)} {flag} -x -a {_fish_sq(ask)}")
            lines.append(f"complete -c {PROG} {cond} {flag}" + (" -r" if opt in n.takes_value else "")
                         + (f" -d {_fish_sq(desc)}" if desc else ""))
    return "\n".join(lines) + "\n"
