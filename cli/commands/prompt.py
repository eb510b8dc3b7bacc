"""``hermes-relay prompt init bash|zsh|fish`` and ``prompt show``: the route in the shell prompt.

The agent keeps one line in the route file: ``<valid_until_epoch> <label words>``. The snippets read
it with shell builtins only, so drawing a prompt starts no process (no ``hermes-relay``, no ``cat``,
no ``date``): bash uses ``read`` and ``$EPOCHSECONDS`` (bash 5) or ``printf '%(%s)T'`` (bash 4.2);
zsh uses ``read`` and ``$EPOCHSECONDS`` from zsh/datetime; fish uses ``read`` and derives the time
from the file's own mtime (``path mtime``, fish 3.5+). Where a shell has no builtin clock the label
is shown without the staleness check. The route file's path is resolved once, at init, and quoted.

Shown: ``[LAN]``, ``[Tailscale]``, ``[Public]`` (any label the agent writes, ``[expired]`` and
``[revoked]`` included; several relays on one line, ``[LAN | office: Tailscale]``; desktop calls
waiting for approval counted at the end, ``[LAN !1]``), ``[LAN?]`` when the line is past its
valid-until (the agent stopped updating it) or when the agent pid on the file's second line is gone (bash and zsh: the ``kill -0``
builtin; fish, which has no kill builtin: ``test -d /proc/PID``, skipped where there is no ``/proc``),
``[offline]`` without a file. ``render.prompt_indicator`` plus the pid check is the same
rule in Python, used by ``prompt show`` and the tests.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..context import Context, add_common_flags

SHELLS = ("bash", "zsh", "fish")

_BASH = r"""# hermes-relay route indicator for bash, from: hermes-relay prompt init bash
# Each prompt reads one line from the route file with builtins (no process is started).
# [LAN] fresh, [LAN?] stale (the agent stopped updating it), [offline] without a file.
# If your prompt framework rewrites PS1, put ${HERMES_RELAY_INDICATOR} into it yourself.
__hermes_relay_route_file=@PATH@
__hermes_relay_prompt() {
    local __hr_status=$? __hr_until= __hr_label= __hr_now= __hr_pid= __hr_rest=
    HERMES_RELAY_INDICATOR='[offline]'
    { { IFS=$' \t' read -r __hr_until __hr_label; IFS=$' \t' read -r __hr_pid __hr_rest; } < "$__hermes_relay_route_file"; } 2>/dev/null
    __hr_label=${__hr_label//[^[:print:]]/}
    case $__hr_label in
        '' | [Oo][Ff][Ff][Ll][Ii][Nn][Ee]) return $__hr_status ;;
    esac
    if [[ -n ${EPOCHSECONDS-} ]]; then
        __hr_now=$EPOCHSECONDS
    else
        { printf -v __hr_now '%(%s)T' -1; } 2>/dev/null
    fi
    if [[ -z $__hr_now || $__hr_now == *[!0-9]* ]]; then
        HERMES_RELAY_INDICATOR="[$__hr_label]"  # no builtin clock (bash < 4.2): unchecked
    elif [[ -n $__hr_until && $__hr_until != *[!0-9]* ]] && (( 10#$__hr_now <= 10#$__hr_until )) &&
         { [[ $__hr_pid != [1-9]* || $__hr_pid == *[!0-9]* ]] || kill -0 "$__hr_pid" 2>/dev/null; }; then
        HERMES_RELAY_INDICATOR="[$__hr_label]"
    else
        HERMES_RELAY_INDICATOR="[$__hr_label?]"
    fi
    return $__hr_status
}
if [[ ${PROMPT_COMMAND-} != *__hermes_relay_prompt* ]]; then
    PROMPT_COMMAND="__hermes_relay_prompt${PROMPT_COMMAND:+;$PROMPT_COMMAND}"
fi
if [[ ${PS1-} != *HERMES_RELAY_INDICATOR* ]]; then
    PS1='${HERMES_RELAY_INDICATOR:+$HERMES_RELAY_INDICATOR }'"${PS1-}"
fi
"""  # noqa: E501 - shell code emitted as written

_ZSH = r"""# hermes-relay route indicator for zsh, from: hermes-relay prompt init zsh
# Each prompt reads one line from the route file with builtins (no process is started).
# [LAN] fresh, [LAN?] stale (the agent stopped updating it), [offline] without a file.
# Without the zsh/datetime module there is no clock, and the label is shown unchecked.
# If your prompt framework rewrites PROMPT, put ${HERMES_RELAY_INDICATOR} into it yourself.
zmodload zsh/datetime 2>/dev/null
typeset -g __hermes_relay_route_file=@PATH@
typeset -g HERMES_RELAY_INDICATOR='[offline]'
__hermes_relay_precmd() {
    local __hr_status=$? __hr_bang=0
    [[ -o prompt_bang ]] && __hr_bang=1  # the user's option, before emulate resets it here
    emulate -L zsh
    local __hr_until= __hr_label= __hr_pid= __hr_rest=
    HERMES_RELAY_INDICATOR='[offline]'
    { { IFS=$' \t' read -r __hr_until __hr_label; IFS=$' \t' read -r __hr_pid __hr_rest; } < $__hermes_relay_route_file; } 2>/dev/null
    __hr_label=${__hr_label//[^[:print:]]/}
    __hr_label=${__hr_label//\%/%%}
    (( __hr_bang )) && __hr_label=${__hr_label//\!/!!}  # [LAN !1]: with prompt_bang a lone ! is the history number
    if [[ -z $__hr_label || ${(L)__hr_label} == offline ]]; then
        return $__hr_status
    fi
    if (( ! ${+EPOCHSECONDS} )); then
        HERMES_RELAY_INDICATOR="[$__hr_label]"
    elif [[ $__hr_until == <-> ]] && (( EPOCHSECONDS <= 10#$__hr_until )) &&
         { [[ $__hr_pid != <1-> ]] || kill -0 $__hr_pid 2>/dev/null; }; then
        HERMES_RELAY_INDICATOR="[$__hr_label]"
    else
        HERMES_RELAY_INDICATOR="[$__hr_label?]"
    fi
    return $__hr_status
}
autoload -Uz add-zsh-hook
add-zsh-hook precmd __hermes_relay_precmd
setopt prompt_subst
if [[ $PROMPT != *HERMES_RELAY_INDICATOR* ]]; then
    PROMPT='${HERMES_RELAY_INDICATOR:+$HERMES_RELAY_INDICATOR }'$PROMPT
fi
"""  # noqa: E501 - shell code emitted as written

_FISH = r"""# hermes-relay route indicator for fish, from: hermes-relay prompt init fish
# Each prompt reads one line from the route file with builtins (no process is started).
# [LAN] fresh, [LAN?] stale (the agent stopped updating it), [offline] without a file.
# fish has no clock variable: the time is the file's mtime plus its age (path mtime, fish 3.5+);
# without it the label is shown unchecked. fish has no kill builtin: a dead agent (the pid on the
# file's second line) is seen through /proc where there is one. If a theme replaces fish_prompt after
# this runs, call __hermes_relay_indicator from it yourself.
set -g __hermes_relay_route_file @PATH@
set -g __hermes_relay_has_path 0
set -g __hermes_relay_has_proc 0
# Probed once, here: path is a builtin from fish 3.5, and only then is it safe to call per prompt.
if contains -- path (builtin -n); and path mtime --relative -- / >/dev/null 2>/dev/null
    set -g __hermes_relay_has_path 1
end
if test -d /proc/$fish_pid
    set -g __hermes_relay_has_proc 1
end
function __hermes_relay_indicator --description 'hermes-relay route indicator'
    set -l line
    set -l second
    if test -r $__hermes_relay_route_file
        begin
            read line; read second
        end < $__hermes_relay_route_file 2>/dev/null  # no -l: that would scope them to this block
    end
    set -l parts (string split -m 1 ' ' -- (string trim -- "$line"))
    set -l until $parts[1]
    set -l label (string replace -ra '[^[:print:]]' '' -- (string trim -- "$parts[2]"))
    if test -z "$label"; or test (string lower -- $label) = offline
        echo '[offline]'
        return 0
    end
    set -l pid (string split -m 1 ' ' -- (string trim -- "$second"))[1]
    if test $__hermes_relay_has_proc = 1; and string match -qr '^[1-9][0-9]*$' -- "$pid"
        and not test -d /proc/$pid
        echo "[$label?]"
        return 0
    end
    if test $__hermes_relay_has_path = 0
        echo "[$label]"
        return 0
    end
    set -l mtime (path mtime -- $__hermes_relay_route_file 2>/dev/null)
    set -l age (path mtime --relative -- $__hermes_relay_route_file 2>/dev/null)
    if string match -qr '^[0-9]+$' -- "$until"
        and string match -qr '^[0-9]+$' -- "$mtime"
        and string match -qr '^-?[0-9]+$' -- "$age"
        and test (math $mtime + $age) -le $until
        echo "[$label]"
    else
        echo "[$label?]"
    end
end
if not functions -q __hermes_relay_orig_fish_prompt
    functions -q fish_prompt; and functions -c fish_prompt __hermes_relay_orig_fish_prompt
    function __hermes_relay_set_status
        return $argv[1]
    end
    function fish_prompt
        set -l __hr_status $status
        printf '%s ' (__hermes_relay_indicator)
        if functions -q __hermes_relay_orig_fish_prompt
            __hermes_relay_set_status $__hr_status
            __hermes_relay_orig_fish_prompt
        end
    end
end
"""

_TEMPLATES = {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}


def register(sub: Any) -> None:
    p = sub.add_parser("prompt", help="show the route in your shell prompt",
                       description="Put the route indicator ([LAN], [Tailscale], [Public], [offline]) into "
                                   "your shell prompt without running any program per prompt. Desktop calls "
                                   "waiting for your approval are counted ([LAN !1]); with several relays "
                                   "paired, each is shown ([LAN | office: Tailscale]).",
                       epilog="examples (once, in your shell's startup file):\n"
                              "  bash (~/.bashrc):  eval \"$(hermes-relay prompt init bash)\"\n"
                              "  zsh (~/.zshrc):    eval \"$(hermes-relay prompt init zsh)\"\n"
                              "  fish (config.fish): hermes-relay prompt init fish | source",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="prompt_cmd", prog="hermes-relay prompt", metavar="{init,show}")
    init = verbs.add_parser("init", help="print the snippet for your shell's startup file",
                            description="Print the prompt snippet for SHELL. It reads the agent's route file "
                                        "with shell builtins on each prompt: no program runs.",
                            epilog="example:\n  eval \"$(hermes-relay prompt init bash)\"    # in ~/.bashrc",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    init.add_argument("shell", choices=SHELLS)
    show = verbs.add_parser("show", help="print the indicator once",
                            description="Print the indicator as the prompt would show it: [LAN], [LAN?] when "
                                        "stale, [revoked], [offline].",
                            epilog="example:\n  hermes-relay prompt show        # [LAN]",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(show, autostart=False)  # prompt never talks to the agent
    p.set_defaults(run=run)


def snippet(shell: str, route_file: str) -> str:
    """The init snippet for ``shell`` with ``route_file`` embedded, quoted for that shell."""
    quoted = _fish_quote(route_file) if shell == "fish" else _posix_quote(route_file)
    return _TEMPLATES[shell].replace("@PATH@", quoted)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from ...core import paths
    from ...core.errors import UsageError

    verb = getattr(args, "prompt_cmd", None)
    route_file = paths.route_file(ctx.env)
    if verb == "init":
        ctx.stdout.write(snippet(args.shell, str(route_file)))
        return 0
    if verb == "show":
        from .. import render
        from .route import agent_alive, parse_route_file

        try:
            with open(route_file, encoding="utf-8", errors="replace") as f:
                raw: str | None = f.read(4096)
        except OSError:
            raw = None
        line = raw.splitlines()[0] if raw else None
        pid = parse_route_file(raw).get("pid") if raw else None
        text = render.prompt_indicator(line, ctx.now())
        if text != f"[{render.OFFLINE_LABEL}]" and not text.endswith("?]") and agent_alive(pid) is False:
            text = text[:-1] + "?]"
        if getattr(args, "json", False):
            ctx.print_json({"text": text, "stale": text.endswith("?]"), "route_file": str(route_file)})
        else:
            ctx.out(text)
        return 0
    raise UsageError("prompt needs a subcommand: init SHELL or show", hint="see `hermes-relay prompt --help`")


def _posix_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
