"""The shell's escape key: Ctrl+A (or ``--escape ^B``, or ``none``) followed by a command key.

``parse`` turns the user's spelling into the key's byte (None for ``none``); ``EscapeReader`` splits
what the user typed into bytes for the remote and local commands, keeping the prefix between reads
(a Ctrl+A at the end of one read and ``.`` at the start of the next is a detach).
"""

from __future__ import annotations

from ..core.errors import UsageError

DEFAULT = "^A"
COMMANDS = {
    ord("."): "detach",
    ord("k"): "kill",
    ord("?"): "help",
    ord("h"): "help",
    ord("z"): "suspend",
}


def parse(spec: str) -> int | None:
    """``^A``, ``^b``, ``C-a``, ``ctrl-a`` -> the control byte; ``none`` -> None."""
    text = spec.strip()
    if text.lower() == "none":
        return None
    lowered = text.lower()
    for prefix in ("^", "c-", "ctrl-", "ctrl+"):
        if lowered.startswith(prefix) and len(text) == len(prefix) + 1:
            char = text[-1].upper()
            if "@" <= char <= "_" and char not in "[":  # Ctrl+[ is ESC: every arrow key would start a chord
                return ord(char) - 0x40
    raise UsageError(f"invalid escape key {spec!r}",
                     hint="give a control key as ^A .. ^Z (e.g. --escape ^B), or none for no escape key")


def describe(key: int | None) -> str:
    return "none" if key is None else "Ctrl+" + chr(key + 0x40)


def help_text(key: int | None) -> str:
    if key is None:
        return "no escape key (--escape none): detach by closing the terminal, end the shell with exit"
    name = describe(key)
    return (f"{name} .  detach (the session lives on: hermes-relay sessions resume NAME)\n"
            f"{name} k  kill the session\n"
            f"{name} z  suspend this client (fg resumes it)\n"
            f"{name} ?  this help\n"
            f"{name} {name}  send a literal {name}\n")


class EscapeReader:
    """Feed what the user typed; get [("data", bytes) | ("cmd", name)] in order."""

    def __init__(self, key: int | None):
        self.key = key
        self._pending = False  # the escape key arrived; its command key has not

    def feed(self, data: bytes) -> list[tuple[str, bytes | str]]:
        if self.key is None:
            return [("data", data)] if data else []
        events: list[tuple[str, bytes | str]] = []
        chunk = bytearray()
        for b in data:
            if self._pending:
                self._pending = False
                command = COMMANDS.get(b)
                if b == self.key:
                    chunk.append(b)  # the key twice: the key itself
                elif command is not None:
                    if chunk:
                        events.append(("data", bytes(chunk)))
                        chunk = bytearray()
                    events.append(("cmd", command))
                else:  # not a command: both keys go to the remote, as typed
                    chunk += bytes((self.key, b))
            elif b == self.key:
                self._pending = True
            else:
                chunk.append(b)
        if chunk:
            events.append(("data", bytes(chunk)))
        return events
