"""The per-host desktop access policy (``~/.hermes/desktop-host-access.json``), pure.

Which tools a relay host may call on this computer, per canonical relay URL, in the format other
Hermes clients read and write (version 2)::

    {"version": 2, "hosts": {"wss://relay.example:8767": {"access_mode": "trusted",
                                                         "capabilities": {"commands": "allow", ...},
                                                         "updated_at": "2026-...Z"}}}

Safe by default: a host with no record, an unparseable file or an unknown value is *restricted*
(everything disabled), and a tool without a capability is denied. Duplicate keys for one canonical
URL resolve to the least privilege, so a hand edit can never widen access by accident. Writes keep
every field this module does not know, and an unparseable file is never overwritten (the caller
reports it; the user fixes or removes it).

``workspace`` (ours; other clients do not know it and read it as restricted) is *confinement*, not
a set of capabilities: commands run in the kernel sandbox, confined to the host's roots, without
network. It is kept as ``"access_mode": "workspace"`` plus ``"confined": true`` whatever the
capabilities become: a capability edit, an "always" answer or a least-privilege merge keeps it, and
a mode is never *inferred* to be workspace (only an explicit preset enters or leaves it). "Always"
for ``commands`` on an unconfined host allows commands only inside that sandbox.

The legacy ``tools_consented: true`` flag of a pairing (written by earlier clients) lifts a host
with *no record at all* to trusted, shown as "trusted (legacy consent)"; it never lifts an explicit
record (restricted, workspace or any other), and an unreadable policy file ignores it.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from . import fileio
from .errors import StateError, StateVersionError, UsageError

VERSION: Final = 2

ASK: Final = "ask"  # shown as "restricted": everything disabled
ASK_EVERY_TIME: Final = "ask_every_time"
STRUCTURED: Final = "structured"  # shown as "standard"
TRUSTED: Final = "trusted"
FULL_ACCESS: Final = "full_access"
CUSTOM: Final = "custom"
WORKSPACE: Final = "workspace"  # ours: commands and files confined to the host's roots (kernel sandbox)
MODES: Final = (ASK, ASK_EVERY_TIME, STRUCTURED, WORKSPACE, TRUSTED, FULL_ACCESS, CUSTOM)
MODE_LABELS: Final = {ASK: "restricted", ASK_EVERY_TIME: "ask every time", STRUCTURED: "standard",
                      WORKSPACE: "workspace", TRUSTED: "trusted", FULL_ACCESS: "full access", CUSTOM: "custom"}
LEGACY_LABEL: Final = "trusted (legacy consent)"
PRESET_ALIASES: Final = {"restricted": ASK, "standard": STRUCTURED, "ask-every-time": ASK_EVERY_TIME,
                         "full-access": FULL_ACCESS}

CAPABILITIES: Final = ("commands", "files", "screen_input", "usb", "microphone", "camera")
DISABLED: Final = "disabled"
ALLOW: Final = "allow"
CAP_MODES: Final = (DISABLED, ASK, ALLOW)  # least to most privilege
# The capabilities this agent has tools for (tests/agent/test_desktop_consent.py checks it against the tool
# table); `access` marks the others, which other Hermes clients serve (screen, USB, microphone, camera).
SERVED_HERE: Final = ("commands", "files")

# decide() answers
DECIDE_ALLOW: Final = "allow"
DECIDE_ASK: Final = "ask"
DECIDE_DENY: Final = "deny"


def _caps(commands: str, files: str, screen: str, usb: str, media: str) -> dict[str, str]:
    return {"commands": commands, "files": files, "screen_input": screen, "usb": usb,
            "microphone": media, "camera": media}


PRESETS: Final[dict[str, dict[str, str]]] = {
    ASK: _caps(DISABLED, DISABLED, DISABLED, DISABLED, DISABLED),
    ASK_EVERY_TIME: _caps(ASK, ASK, ASK, ASK, DISABLED),
    STRUCTURED: _caps(DISABLED, ALLOW, ASK, ASK, DISABLED),
    WORKSPACE: _caps(ALLOW, ALLOW, DISABLED, DISABLED, DISABLED),
    TRUSTED: _caps(ALLOW, ALLOW, ASK, ASK, DISABLED),
    FULL_ACCESS: _caps(ALLOW, ALLOW, ALLOW, ALLOW, ALLOW),
}


@dataclass(frozen=True)
class HostPolicy:
    access_mode: str
    capabilities: dict[str, str]
    updated_at: str | None = None
    confined: bool = False  # workspace: commands in the kernel sandbox, confined to the roots
    legacy: bool = False  # lifted to trusted by a pairing's legacy ``tools_consented`` flag

    @property
    def label(self) -> str:
        if self.legacy:
            return LEGACY_LABEL
        if self.confined:
            return "workspace" if self.capabilities == PRESETS[WORKSPACE] else "workspace (custom)"
        return MODE_LABELS[self.access_mode]


RESTRICTED: Final = HostPolicy(ASK, dict(PRESETS[ASK]))


@dataclass(frozen=True)
class Policies:
    """Parsed policy file: canonical URL -> HostPolicy (duplicates already merged)."""

    hosts: dict[str, HostPolicy] = field(default_factory=dict)

    def for_url(self, url: str, *, legacy_consented: bool = False) -> HostPolicy:
        """The effective policy for a relay URL (restricted when unknown)."""
        key = canonical_url(url)
        policy = self.hosts.get(key) if key else None
        if policy is None:
            return HostPolicy(TRUSTED, dict(PRESETS[TRUSTED]), legacy=True) if legacy_consented else RESTRICTED
        return policy


def canonical_url(raw: str) -> str | None:
    """The policy key for a relay URL: ``ws``/``wss`` only, lower-case scheme and host, default port
    dropped, trailing slashes removed; URLs with credentials, a query or a fragment have no key."""
    if not isinstance(raw, str):
        return None
    return _canonical(raw)


@functools.lru_cache(maxsize=256)
def _canonical(raw: str) -> str | None:
    """``canonical_url`` of a string: a pure function of it, remembered (a desktop call asks ~7 times)."""
    try:
        parts = urlsplit(raw.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        return None
    if "?" in raw or "#" in raw:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != (80 if scheme == "ws" else 443):
        host = f"{host}:{port}"
    path = parts.path.rstrip("/")
    return f"{scheme}://{host}{path}"


def infer_mode(capabilities: Mapping[str, str]) -> str:
    """The unconfined preset these capabilities match, else ``custom`` (never ``workspace``: confinement
    is chosen explicitly, not read off a set of capabilities)."""
    for mode, preset in PRESETS.items():
        if mode != WORKSPACE and all(capabilities.get(c) == preset[c] for c in CAPABILITIES):
            return mode
    return CUSTOM


def normalize_mode(name: str) -> str:
    """A CLI preset name (``restricted``, ``standard``, ``trusted``...) -> the stored access_mode."""
    mode = PRESET_ALIASES.get(name.lower(), name.lower())
    if mode not in MODES:
        raise UsageError(f"unknown access mode {name!r}",
                         hint="use one of: restricted, ask_every_time, standard, workspace, trusted, full_access")
    return mode


def _host(caps: dict[str, str], confined: bool, updated: str | None = None) -> HostPolicy:
    return HostPolicy(WORKSPACE if confined else infer_mode(caps), caps, updated, confined)


def _parse_host(value: Any) -> HostPolicy | None:
    if isinstance(value, str) and value in MODES:
        return HostPolicy(value, dict(PRESETS.get(value, PRESETS[ASK])), confined=value == WORKSPACE)
    if not isinstance(value, dict):
        return None
    mode = value.get("access_mode", value.get("mode"))
    if mode not in MODES:
        return None
    caps = dict(PRESETS.get(mode, PRESETS[ASK]))
    given = value.get("capabilities")
    raw_caps = given if isinstance(given, dict) else {}
    explicit = False
    for cap in CAPABILITIES:
        if raw_caps.get(cap) in CAP_MODES:
            caps[cap] = raw_caps[cap]
            explicit = True
    confined = mode == WORKSPACE or value.get("confined") is True  # the flag only ever narrows
    if mode == FULL_ACCESS and not confined:
        caps = dict(PRESETS[FULL_ACCESS])
    if confined or (mode != CUSTOM and explicit):
        mode = WORKSPACE if confined else infer_mode(caps)
    updated = value.get("updated_at") if isinstance(value.get("updated_at"), str) else None
    return HostPolicy(mode, caps, updated, confined)


def _least(a: HostPolicy, b: HostPolicy) -> HostPolicy:
    caps = {c: min(a.capabilities[c], b.capabilities[c], key=CAP_MODES.index) for c in CAPABILITIES}
    return _host(caps, a.confined or b.confined)


def parse(doc: Any) -> Policies:
    """Parse a policy document (also the bare URL map and ``trusted_hosts``/``full_access_hosts``
    lists earlier clients wrote). Entries that cannot be read are skipped (= restricted)."""
    hosts: dict[str, HostPolicy] = {}
    if not isinstance(doc, dict):
        return Policies()

    def merge(url: str, policy: HostPolicy) -> None:
        key = canonical_url(url)
        if key is None:
            return
        hosts[key] = _least(hosts[key], policy) if key in hosts else policy

    listed = doc.get("hosts")
    table = listed if isinstance(listed, dict) else doc
    for url, value in table.items():
        policy = _parse_host(value)
        if policy is not None:
            merge(url, policy)
    for key, mode in (("trusted_hosts", TRUSTED), ("full_access_hosts", FULL_ACCESS)):
        if isinstance(doc.get(key), list):
            for url in doc[key]:
                if isinstance(url, str):
                    merge(url, HostPolicy(mode, dict(PRESETS[mode])))
    return Policies(hosts)


def decide(policies: Policies, url: str, capability: str | None, *, legacy_consented: bool = False) -> str:
    """``allow`` | ``ask`` | ``deny`` for a tool needing ``capability`` (None: denied, every tool has one)."""
    if capability is None:
        return DECIDE_DENY
    mode = policies.for_url(url, legacy_consented=legacy_consented).capabilities.get(capability, DISABLED)
    return {ALLOW: DECIDE_ALLOW, ASK: DECIDE_ASK}.get(mode, DECIDE_DENY)


# -- the file ------------------------------------------------------------------------------------
def load(path: Path) -> Policies:
    """Read the policy file: missing/empty -> no hosts; unparseable -> StateCorruptError (left as is)."""
    doc = _read(path)
    return parse(doc) if doc is not None else Policies()


def _read(path: Path) -> dict[str, Any] | None:
    """The policy document; None when missing or empty. Bounded, and never turns damage into "no hosts"."""
    try:
        return fileio.read_json_versioned(path, supported=VERSION)
    except StateVersionError:
        raise
    except StateError as exc:
        exc.hint = f"fix or delete {path}; until then every relay host is restricted"
        raise


def now_iso(now: float | None) -> str:
    t = time.time() if now is None else now
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def _update(path: Path, url: str, change: Any, now: float | None) -> HostPolicy:
    key = canonical_url(url)
    if key is None:
        raise UsageError(f"{url!r} is not a relay URL a policy can name",
                         hint="use the ws:// or wss:// URL `hermes-relay status` shows, without user, query or fragment")
    with fileio.FileLock(path):
        doc = _read(path) or {}
        if not isinstance(doc.get("hosts"), dict):
            legacy = {k: v for k, v in doc.items() if canonical_url(k)}
            doc = {k: v for k, v in doc.items() if k not in legacy}
            doc["hosts"] = legacy
        doc["version"] = VERSION
        hosts: dict[str, Any] = doc["hosts"]
        current = parse({"hosts": hosts}).hosts.get(key)
        dupes = [k for k in hosts if k != key and canonical_url(k) == key]
        raw: dict[str, Any] = {}
        for k in [*dupes, key]:  # folded duplicates keep their unknown fields; the canonical key's win
            value = hosts.pop(k, None)
            if isinstance(value, dict):
                raw.update(value)
        policy = change(current)
        if policy is None:
            return current or RESTRICTED
        entry = dict(raw)
        entry.update({"access_mode": policy.access_mode, "capabilities": dict(policy.capabilities),
                      "updated_at": now_iso(now)})
        entry.pop("mode", None)
        if policy.confined:
            entry["confined"] = True
        else:
            entry.pop("confined", None)
        hosts[key] = entry
        ordered = {"version": VERSION, "hosts": hosts, **{k: v for k, v in doc.items() if k not in ("version", "hosts")}}
        fileio.atomic_write(path, (json.dumps(ordered, indent=2, ensure_ascii=False) + "\n").encode())
        return HostPolicy(policy.access_mode, dict(policy.capabilities), entry["updated_at"], policy.confined)


def set_mode(path: Path, url: str, mode: str, *, now: float | None = None) -> HostPolicy:
    """Set a preset (or ``custom``, keeping the current capabilities) for one host."""
    if mode not in MODES:
        raise UsageError(f"unknown access mode {mode!r}", hint="use one of: " + ", ".join(MODES))

    def change(current: HostPolicy | None) -> HostPolicy:
        if mode == CUSTOM:
            host = current or RESTRICTED
            return _host(dict(host.capabilities), host.confined) if host.confined else HostPolicy(CUSTOM, dict(host.capabilities))
        return HostPolicy(mode, dict(PRESETS[mode]), confined=mode == WORKSPACE)

    return _update(path, url, change, now)


def set_capability(path: Path, url: str, capability: str, mode: str, *, now: float | None = None) -> HostPolicy:
    """Set one capability to disabled|ask|allow for one host; the access_mode follows (preset or custom,
    a confined host stays confined)."""
    if capability not in CAPABILITIES:
        raise UsageError(f"unknown capability {capability!r}", hint="use one of: " + ", ".join(CAPABILITIES))
    if mode not in CAP_MODES:
        raise UsageError(f"unknown capability mode {mode!r}", hint="use one of: disabled, ask, allow")

    def change(current: HostPolicy | None) -> HostPolicy:
        host = current or RESTRICTED
        caps = dict(host.capabilities)
        caps[capability] = mode
        return _host(caps, host.confined)

    return _update(path, url, change, now)


def allow_always(path: Path, url: str, capability: str, *, now: float | None = None) -> HostPolicy:
    """The user answered "always" for ``capability``: allow it from now on, within the host's confinement.

    ``commands`` on an unconfined host (ask every time, custom) become allowed *inside the workspace
    sandbox*: one approved ``ls`` never turns into unconfined commands for ever.
    """
    if capability not in CAPABILITIES:
        raise UsageError(f"unknown capability {capability!r}", hint="use one of: " + ", ".join(CAPABILITIES))

    def change(current: HostPolicy | None) -> HostPolicy:
        host = current or RESTRICTED
        caps = dict(host.capabilities)
        if caps[capability] == ALLOW:
            return host
        caps[capability] = ALLOW
        return _host(caps, host.confined or capability == "commands")

    return _update(path, url, change, now)


def forget(path: Path, urls: list[str]) -> bool:
    """Remove every host entry naming one of ``urls`` (duplicates of its canonical URL too).

    True when something was removed. An unparseable file raises and is left untouched; the other
    hosts and every unknown field are kept.
    """
    keys = {k for k in (canonical_url(u) for u in urls) if k}
    if not keys:
        return False
    with fileio.FileLock(path):
        doc = _read(path)
        hosts = doc.get("hosts") if doc is not None else None
        if not isinstance(hosts, dict):
            return False
        gone = [k for k in hosts if canonical_url(k) in keys]
        if not gone:
            return False
        for k in gone:
            del hosts[k]
        fileio.atomic_write(path, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode())
        return True


def init_paired(path: Path, url: str, *, now: float | None = None) -> HostPolicy:
    """A fresh pairing: write ``ask_every_time`` unless the host already has a record."""

    def change(current: HostPolicy | None) -> HostPolicy | None:
        return None if current is not None else HostPolicy(ASK_EVERY_TIME, dict(PRESETS[ASK_EVERY_TIME]))

    return _update(path, url, change, now)


def policy_file(env: Mapping[str, str] | None = None) -> Path:
    """``~/.hermes/desktop-host-access.json`` (override: ``HERMES_RELAY_HOST_ACCESS_POLICY_PATH``)."""
    from . import paths

    e = paths._env(env)
    if e.get("HERMES_RELAY_HOST_ACCESS_POLICY_PATH"):
        return Path(e["HERMES_RELAY_HOST_ACCESS_POLICY_PATH"])
    return paths.hermes_home(e) / "desktop-host-access.json"
