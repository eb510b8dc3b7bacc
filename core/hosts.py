"""The default relay and the relays' names (``~/.hermes/desktop-control.json``), shared with the reference client.

    {"relay_url": "ws://10.0.0.2:8767", "host_aliases": {"ws://10.0.0.2:8767": "home"}, ...}

``relay_url`` is the relay a command uses when several are paired and none is named (the reference
client's tray-selected host); ``host_aliases`` maps a relay URL to the name the user gave it, which
every command accepts where it takes a URL (``--remote home``). The reference client writes the same
file, so every field this module does not know is kept, writes are atomic and locked, and a file that
cannot be parsed raises (naming the file) and is never overwritten.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import fileio, policy
from .errors import StateCorruptError, StateError, UsageError
from .policy import canonical_url

MAX_NAME = 64  # the reference client's limit
# Words `hermes-relay access` reads as a preset, capability or mode: a relay with such a name would be ambiguous.
RESERVED = frozenset(w.casefold() for w in (*policy.MODES, *policy.PRESET_ALIASES, *policy.CAPABILITIES,
                                             *policy.CAP_MODES, "set", "screen-input"))


@dataclass(frozen=True)
class Control:
    relay_url: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)  # relay URL -> name

    def name_for(self, url: str) -> str | None:
        """The name given to ``url`` (matched by canonical URL), or None."""
        key = canonical_url(url)
        return next((name for u, name in self.aliases.items() if key is not None and canonical_url(u) == key), None)

    def url_for(self, name: str) -> str | None:
        """The relay URL named ``name`` (case-insensitive), or None."""
        wanted = name.strip().casefold()
        return next((u for u, n in self.aliases.items() if n.casefold() == wanted), None)

    def is_default(self, url: str) -> bool:
        key = canonical_url(url)
        return key is not None and self.relay_url is not None and canonical_url(self.relay_url) == key


def load(path: Path) -> Control:
    """The file's default relay and names; a missing or empty file has none. Fields of the wrong type are ignored."""
    doc = _read(path)
    relay_url = doc.get("relay_url")
    aliases = doc.get("host_aliases")
    names = {u: n.strip() for u, n in aliases.items() if isinstance(n, str) and n.strip()} if isinstance(aliases, dict) else {}
    return Control(relay_url if isinstance(relay_url, str) and relay_url.strip() else None, names)


def load_quietly(path: Path) -> Control:
    """``load`` for displays (the prompt indicator): an unreadable file shows no names instead of failing."""
    try:
        return load(path)
    except (StateError, OSError):
        return Control()


def signature(path: Path) -> tuple[int, int, int] | None:
    """(mtime ns, size, inode) of the file, None when it is missing: cheap change detection."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def validate_name(raw: str) -> str:
    """A relay name: 1 to 64 printable characters on one line that cannot be mistaken for a URL or a flag."""
    name = raw.strip() if isinstance(raw, str) else ""
    if not name or len(name) > MAX_NAME:
        raise UsageError(f"a relay name must be 1 to {MAX_NAME} characters", hint="e.g. hermes-relay rename URL office")
    if not name.isprintable() or any(c in name for c in "|"):
        raise UsageError(f"{name!r} cannot be a relay name: use printable characters on one line, without '|'")
    if name.casefold() in RESERVED:
        raise UsageError(f"{name!r} cannot be a relay name: `hermes-relay access` reads it as a preset or capability",
                         hint="pick another word, such as home or office")
    if "://" in name or name.startswith("-"):
        raise UsageError(f"{name!r} cannot be a relay name: it looks like a URL or an option",
                         hint="pick a word such as home or office")
    return name


def set_default(path: Path, url: str | None) -> None:
    """Make ``url`` the default relay (None: no default)."""

    def change(doc: dict[str, Any]) -> None:
        if url is None:
            doc.pop("relay_url", None)
        else:
            doc["relay_url"] = url

    _update(path, change)


def rename(path: Path, url: str, name: str | None) -> str | None:
    """Name the relay ``url`` (None: remove its name); returns the name it had. A name names one relay only."""
    new = validate_name(name) if name is not None else None
    key = canonical_url(url)
    previous: list[str | None] = [None]

    def change(doc: dict[str, Any]) -> None:
        aliases = doc.get("host_aliases", {})
        if not isinstance(aliases, dict):
            raise StateCorruptError(str(path), "host_aliases is not an object",
                                    hint=f"fix host_aliases in {path} (a map of relay URL to name) or remove it")
        mine = [u for u in aliases if canonical_url(u) == key]
        previous[0] = next((aliases[u] for u in mine if isinstance(aliases[u], str)), None)
        if new is not None:
            taken = [u for u, n in aliases.items()
                     if isinstance(n, str) and n.strip().casefold() == new.casefold() and canonical_url(u) != key]
            if taken:
                raise UsageError(f"the name {new!r} already names {taken[0]}",
                                 hint=f"pick another name, or rename that relay first: hermes-relay rename {taken[0]} NEWNAME")
        for u in mine:
            del aliases[u]
        if new is not None:
            aliases[url] = new
        doc["host_aliases"] = aliases

    _update(path, change)
    return previous[0]


def forget(path: Path, urls: list[str]) -> bool:
    """Remove the names of ``urls`` and the default when it is one of them; True when something changed."""
    keys = {k for k in (canonical_url(u) for u in urls) if k}
    changed = [False]
    if not keys or not path.exists():
        return False

    def change(doc: dict[str, Any]) -> None:
        aliases = doc.get("host_aliases")
        if isinstance(aliases, dict):
            for u in [u for u in aliases if canonical_url(u) in keys]:
                del aliases[u]
                changed[0] = True
        relay_url = doc.get("relay_url")
        if isinstance(relay_url, str) and canonical_url(relay_url) in keys:
            del doc["relay_url"]
            changed[0] = True

    _update(path, change)
    return changed[0]


def resolve_name(control: Control, word: str) -> str:
    """``word`` itself, or the URL it names."""
    return control.url_for(word) or word


def control_file(env: Mapping[str, str] | None = None) -> Path:
    from . import paths

    return paths.desktop_control_file(env)


# -- the file --------------------------------------------------------------------------------------
def _read(path: Path) -> dict[str, Any]:
    raw = fileio.read_bounded(path)
    if raw is None or not raw.strip():
        return {}
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise StateCorruptError(str(path), f"not valid JSON: {exc}", hint=_FIX.format(path=path)) from exc
    if not isinstance(doc, dict):
        raise StateCorruptError(str(path), f"top level is {type(doc).__name__}, expected an object",
                                hint=_FIX.format(path=path))
    return doc


_FIX = ("fix {path} by hand or move it aside; it holds only the default relay and relay names "
        "(your pairings are elsewhere and untouched)")


def _update(path: Path, change: Any) -> None:
    try:
        _locked_update(path, change)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}",
                         hint=f"check that {path.parent} is yours and writable; nothing was changed",
                         data={"path": str(path)}) from exc


def _locked_update(path: Path, change: Any) -> None:
    fileio.ensure_private_dir(path.parent)
    with fileio.FileLock(path):
        doc = _read(path)
        change(doc)
        try:
            data = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a \udcxx escape: JSON escapes keep it intact
            data = (json.dumps(doc, indent=2) + "\n").encode("ascii")
        fileio.atomic_write(path, data)
