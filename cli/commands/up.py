"""``hermes-relay up [URL|NAME]``: back on the relay after ``hermes-relay down`` (cli/commands/down.py)."""

from __future__ import annotations

from typing import Any

from .down import _register, run

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    _register(sub, "up", help="back on the relay after `hermes-relay down` (all, or one)",
              description="Undo `hermes-relay down`: the agent connects to every relay again, or to the one "
                          "named (the others taken off stay off).",
              examples="  hermes-relay up                          # back on every relay\n"
                       "  hermes-relay up office                   # back on one; the others stay down")
