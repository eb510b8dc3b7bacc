"""tmux in the reference relay's namespace: a private server, its config file, session names, commands.

Sessions live on the private server ``-L hermes-relay`` (``TerminalSettings.tmux_socket``; tests use
their own name and ``TMUX_TMPDIR`` so they never share the machine's server), configured by
``~/.hermes/hermes-relay-tmux.conf`` (written when absent, with the reference's options), and named
``hermes-<name>``: a session made by the reference relay is attached by ours and the other way round.
An attachment is a tmux client on a PTY, ``new-session -A`` (attach or create). Other commands
(``list-sessions``, ``kill-session``, ``refresh-client``) run as short processes.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .term_config import TMUX_PREFIX, TerminalSettings, tmux_name

log = logging.getLogger(__name__)
COMMAND_TIMEOUT = 5.0  # seconds for one tmux command
CONF = """\
# Written by hermes-relay-server for its terminal channel (the reference relay writes the same options).
set -sg escape-time 0
set -g default-terminal "tmux-256color"
set -as terminal-features ",*:RGB"
set -g mouse on
set -g focus-events on
set -g set-clipboard on
setw -g aggressive-resize on
set -g history-limit 10000
set -g status off
"""


@dataclass(frozen=True)
class Tmux:
    """The private tmux server the relay's sessions live on."""

    exe: str
    socket: str
    env: dict[str, str]
    conf: Path

    def base(self) -> list[str]:
        return [self.exe, "-L", self.socket, "-f", str(self.conf)]

    def attach_argv(self, name: str) -> list[str]:
        return [*self.base(), "new-session", "-A", "-s", tmux_name(name)]

    async def run(self, *args: str) -> tuple[int, str]:
        """One tmux command: (exit status, stdout)."""
        with trio.move_on_after(COMMAND_TIMEOUT):
            done = await trio.run_process([*self.base(), *args], env=self.env, check=False, capture_stdout=True,
                                          capture_stderr=True, stdin=b"")
            return done.returncode, done.stdout.decode("utf-8", "replace")
        return 124, ""

    async def sessions(self) -> list[dict[str, Any]]:
        """The hermes-* sessions on the server: name, tmux_name, attached, windows, created_at."""
        code, out = await self.run("list-sessions", "-F", "#{session_name}\t#{session_attached}\t#{session_windows}\t"
                                   "#{session_created}")
        if code != 0:
            return []  # no server running: no sessions
        found = []
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) != 4 or not parts[0].startswith(TMUX_PREFIX):
                continue
            found.append({"name": parts[0][len(TMUX_PREFIX):], "tmux_name": parts[0], "attached": _int(parts[1]),
                          "windows": _int(parts[2]), "created_at": _int(parts[3])})
        return found

    async def exists(self, name: str) -> bool:
        """Whether the session of ``name`` is on the server (an attach to it is a reattach)."""
        code, _ = await self.run("has-session", "-t", "=" + tmux_name(name))
        return code == 0

    async def kill(self, name: str) -> bool:
        code, _ = await self.run("kill-session", "-t", "=" + tmux_name(name))
        return code == 0

    async def refresh(self, client_tty: str) -> None:
        code, _ = await self.run("refresh-client", "-t", client_tty)
        if code != 0:
            log.info("terminal_redraw_failed client=%s status=%d", client_tty, code)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def find(settings: TerminalSettings, base_env: dict[str, str], home: Path) -> Tmux | None:
    """The relay's tmux, or None when tmux is off or not installed. Writes the config file if absent."""
    if settings.tmux is False:
        return None
    exe = shutil.which("tmux", path=base_env.get("PATH", os.defpath))
    if exe is None:
        if settings.tmux:
            log.warning("terminal_tmux_missing using=bare")
        return None
    env = {k: v for k, v in base_env.items() if k not in ("TMUX", "TMUX_PANE")}  # never nested in the relay's tmux
    if settings.tmux_tmpdir is not None:
        env["TMUX_TMPDIR"] = str(settings.tmux_tmpdir)
    conf = settings.tmux_conf or home / ".hermes" / "hermes-relay-tmux.conf"
    try:
        if not conf.exists():
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text(CONF, encoding="utf-8")
    except OSError as exc:
        log.warning("terminal_tmux_conf_unwritable path=%s error=%s", conf, exc)
    return Tmux(exe, settings.tmux_socket, env, conf)
