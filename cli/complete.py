"""``hermes-relay __complete KIND``: the candidates the completion scripts ask for while you press Tab.

Hidden (no help, not in the completion tree) and called before argparse by ``cli/main.py``. Prints
one candidate per line and always exits 0: a completion that fails prints nothing rather than an
error into the middle of the line being typed. It never starts the agent.

- ``relays``: the relay URLs in the session store, then the names in ``~/.hermes/desktop-control.json``
  ``host_aliases`` (the file the reference keeps a default relay and host names in);
- ``presets``: the presets ``hermes-relay access`` accepts;
- ``approvals``: the ids of the calls waiting for approval, asked of the running agent (nothing
  when none answers within ``AGENT_TIMEOUT``);
- ``sessions``: the terminal sessions on the default relay's host, asked of the running agent (the same
  deadline).

Each source is read on its own: an unreadable store still leaves the names, and the other way round.
A candidate that a shell could not take as one word (whitespace, control characters, text that is not
valid Unicode, characters the shell would act on: bash inserts candidates unquoted) is left out.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any, TextIO

    Env = Mapping[str, str]

COMMAND = "__complete"
AGENT_TIMEOUT = 0.3  # seconds for connecting and for the answer: Tab must not hang on a wedged agent
CONTROL_FILE = "desktop-control.json"
MAX_CONTROL_BYTES = 1 << 20
SHELL_SPECIAL = frozenset("`$;&|<>()\\\"'!*?{}")  # never offered: a name is typed, a command line runs


def run(words: list[str], out: TextIO, env: Env, connect: Any = None) -> int:
    """Print the candidates of ``words[0]`` (one of KINDS) and return 0, whatever happens."""
    source = KINDS.get(words[0]) if len(words) == 1 else None
    if source is None:
        return 0
    found: list[str] = []
    for produce in source:
        try:
            found.extend(produce(env, connect))
        except Exception:  # noqa: BLE001 — a completion never fails loudly; the next source may still answer
            continue
    text = "".join(f"{word}\n" for word in dict.fromkeys(found) if _one_word(word))
    try:
        out.write(text)
    except (OSError, ValueError):  # a closed pipe: the shell stopped listening
        pass
    return 0


def _one_word(word: Any) -> bool:
    if not isinstance(word, str) or not word or not word.isprintable() or any(c.isspace() for c in word):
        return False
    if word[0] in "-~#" or not SHELL_SPECIAL.isdisjoint(word):  # bash puts a candidate in the line unquoted
        return False
    try:
        word.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON file
        return False
    return True


# -- the sources -----------------------------------------------------------------------------------
def _store_urls(env: Env, connect: Any) -> list[str]:
    from ..core import paths
    from ..core.record import owner_urls
    from ..core.store import SessionStore

    return owner_urls(SessionStore(paths.sessions_file(env)).sessions())


def _host_names(env: Env, connect: Any) -> list[str]:
    import json
    import os

    from ..core import paths

    path = os.path.join(paths.hermes_home_str(env), CONTROL_FILE)
    with open(path, "rb") as f:
        doc = json.loads(f.read(MAX_CONTROL_BYTES + 1)[:MAX_CONTROL_BYTES])
    aliases = doc.get("host_aliases") if isinstance(doc, dict) else None
    if not isinstance(aliases, dict):
        return []
    return [name for url, name in aliases.items() if isinstance(name, str) and name]  # {relay URL: name}


def _presets(env: Env, connect: Any) -> Iterable[str]:
    from .commands.access import PRESET_NAMES

    return PRESET_NAMES


def _running_agent(env: Env, connect: Any) -> Any:
    if connect is None:
        from ..core import paths
        from .client import AgentClient

        return AgentClient.connect(paths.socket_path(env), timeout=AGENT_TIMEOUT, quiet=True)
    return connect(env, autostart=False, stderr=None)  # the tests' fake agent


def _session_names(env: Env, connect: Any) -> list[str]:
    with _running_agent(env, connect) as client:
        reply = client.terminal_list(None, timeout=AGENT_TIMEOUT)
    sessions = reply.get("sessions") if isinstance(reply, dict) else None
    return [s["name"] for s in sessions or [] if isinstance(s, dict) and isinstance(s.get("name"), str)]


def _approval_ids(env: Env, connect: Any) -> list[str]:
    with _running_agent(env, connect) as client:
        reply = client.approvals_list(timeout=AGENT_TIMEOUT)
    approvals = reply.get("approvals") if isinstance(reply, dict) else None
    return [a["id"] for a in approvals or [] if isinstance(a, dict) and isinstance(a.get("id"), str)]


KINDS: dict[str, tuple[Callable[[Env, Any], Iterable[str]], ...]] = {
    "relays": (_store_urls, _host_names),
    "presets": (_presets,),
    "approvals": (_approval_ids,),
    "sessions": (_session_names,),
}

