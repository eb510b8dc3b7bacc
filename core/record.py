"""One pairing record of the shared store as a typed, validated, frozen view (pure, stdlib only).

Other Hermes clients write the store too, so any field may hold anything. ``from_dict`` never
raises: a field with the wrong type reads as absent and is named in ``problems``; a route URL we
cannot use is skipped (and named). ``parse_sessions`` turns the whole ``sessions`` map into records
plus the entries that are not records at all, each with a reason, so one bad record (ours or
another client's) cannot break pairing, status or the links.

Route candidates are read in both shapes: the reference shape
``{role, priority, api: {host, port, tls}, relay: {url, transport_hint}}`` (``transportHint`` too),
older ``{"url", "role", "priority"}`` objects and bare URL strings. ``stored_candidates`` writes the
reference shape, which the reference CLI reads without checking (``c.api.host``, ``c.relay.url``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from .errors import UsageError
from .routes import Route, host_port, make_routes, normalize_relay_url


@dataclass(frozen=True)
class Candidate:
    """One stored route of a pairing. ``priority``/``role`` None: inferred when routes are built."""

    url: str
    role: str | None = None
    priority: int | None = None


@dataclass(frozen=True)
class Record:
    owner: str
    token: str | None = None
    refresh_token: str | None = None
    server_version: str | None = None
    paired_at: float | None = None
    expires_at: float | None = None  # ttl_expires_at; None (or 0) = never expires (or not known)
    grants: Mapping[str, float | None] = field(default_factory=dict)
    cert_pin: str | None = None
    route_pins: Mapping[str, str] = field(default_factory=dict)
    endpoint_role: str | None = None
    candidates: tuple[Candidate, ...] = ()
    device_name: str | None = None
    problems: tuple[str, ...] = ()

    @property
    def paired(self) -> bool:
        """A record with a token is a pairing (one link each); a record without one is inert."""
        return bool(self.token)

    def routes(self) -> list[Route]:
        """The owner URL plus every alternate route, strict priority order, unusable URLs skipped."""
        cands: list[tuple[str, str | None, int | None]] = [(c.url, c.role, c.priority) for c in self.candidates]
        if self.owner not in [c[0] for c in cands]:
            cands.insert(0, (self.owner, self.endpoint_role, 0 if not cands else None))
        return make_routes([c for c in cands if usable_url(c[0])])

    def urls(self) -> list[str]:
        """Every URL this pairing answers to: the owner first, then the candidates."""
        out = [self.owner]
        out.extend(c.url for c in self.candidates if c.url not in out)
        return out

    def pin_for(self, url: str) -> str | None:
        """The certificate pin trusted for ``url`` (each route has its own; None = not pinned yet)."""
        if url == self.owner:
            return self.cert_pin
        return self.route_pins.get(url)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def same_relay(self, other: Record) -> bool:
        """Whether two pairings name the same relay by a common route URL or certificate pin."""
        mine, theirs = self.routes(), other.routes()
        if {r.url.rstrip("/") for r in mine} & {r.url.rstrip("/") for r in theirs}:
            return True
        pins = {self.pin_for(r.url) for r in mine} - {None}
        return bool(pins & ({other.pin_for(r.url) for r in theirs} - {None}))


@dataclass(frozen=True)
class BadRecord:
    url: str
    reason: str


@dataclass(frozen=True)
class Parsed:
    records: dict[str, Record]
    bad: list[BadRecord]

    def problems(self) -> list[dict[str, str]]:
        """What to show the user: every record skipped and every field ignored, with the reason."""
        out = [{"url": b.url, "problem": b.reason} for b in self.bad]
        for url, rec in self.records.items():
            out.extend({"url": url, "problem": p} for p in rec.problems)
        return out


def usable_url(url: str) -> bool:
    try:
        normalize_relay_url(url)
        host_port(url)
    except (UsageError, ValueError):
        return False
    return True


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return v


def expiry(value: Any) -> float | None:
    """An expiry time (epoch seconds) as stored or sent by the relay; None, 0 or not a number = never."""
    n = _number(value)
    return float(n) if n is not None and n > 0 else None


def from_dict(owner: str, raw: Mapping[str, Any]) -> Record:
    """The typed view of ``raw`` stored under ``owner``. Never raises."""
    problems: list[str] = []

    def text(name: str) -> str | None:
        v = raw.get(name)
        if v is None:
            return None
        if isinstance(v, str):
            return v or None
        problems.append(f"{name} is {type(v).__name__}, expected a string: ignored")
        return None

    def number(name: str) -> float | None:
        v = raw.get(name)
        if v is None:
            return None
        n = _number(v)
        if n is None:
            problems.append(f"{name} is {type(v).__name__}, expected a number: ignored")
        return n

    token, refresh, version = text("token"), text("refresh_token"), text("server_version")
    pin, role, name = text("cert_pin_sha256"), text("endpoint_role"), text("device_name")
    paired_at = number("paired_at")
    expires_at = expiry(number("ttl_expires_at"))

    grants: dict[str, float | None] = {}
    g = raw.get("grants")
    if isinstance(g, Mapping):
        for ch, exp in g.items():
            if exp is None or _number(exp) is not None:
                grants[str(ch)] = exp
            else:
                problems.append(f"grants[{ch!r}] is {type(exp).__name__}, expected a number or null: ignored")
    elif g is not None:
        problems.append(f"grants is {type(g).__name__}, expected an object: ignored")

    pins: dict[str, str] = {}
    rp = raw.get("route_cert_pins")
    if isinstance(rp, Mapping):
        pins = {str(k): v for k, v in rp.items() if isinstance(v, str) and v}
        if len(pins) != len(rp):
            problems.append("route_cert_pins has entries that are not pins: those were ignored")
    elif rp is not None:
        problems.append(f"route_cert_pins is {type(rp).__name__}, expected an object: ignored")

    cands: list[Candidate] = []
    rc = raw.get("route_candidates")
    if isinstance(rc, list):
        for i, c in enumerate(rc):
            cand = _candidate(c)
            if cand is None:
                problems.append(f"route_candidates[{i}] has no relay URL: skipped")
            elif not usable_url(cand.url):
                problems.append(f"route_candidates[{i}] URL {cand.url!r} is not a ws:// or wss:// URL: skipped")
            else:
                cands.append(cand)
    elif rc is not None:
        problems.append(f"route_candidates is {type(rc).__name__}, expected a list: ignored")
    if token is not None and not usable_url(owner):
        problems.append(f"the record's URL {owner!r} is not a ws:// or wss:// URL: only its route candidates are used")

    return Record(
        owner=owner, token=token, refresh_token=refresh, server_version=version,
        paired_at=paired_at, expires_at=expires_at,
        grants=grants, cert_pin=pin, route_pins=pins, endpoint_role=role, candidates=tuple(cands),
        device_name=name, problems=tuple(problems),
    )


def _candidate(c: Any) -> Candidate | None:
    if isinstance(c, str):
        return Candidate(c) if c else None
    if not isinstance(c, Mapping):
        return None
    relay = c.get("relay")
    url = relay.get("url") if isinstance(relay, Mapping) else None
    if not isinstance(url, str) or not url:
        url = c.get("url")
    if not isinstance(url, str) or not url:
        return None
    role = c.get("role") if isinstance(c.get("role"), str) and c.get("role") else None
    prio = c.get("priority")
    prio = prio if isinstance(prio, int) and not isinstance(prio, bool) and prio >= 0 else None
    return Candidate(url, role, prio)


def parse_sessions(sessions: Any) -> Parsed:
    """Every record of a ``sessions`` map; entries that are not objects are listed in ``bad``."""
    records: dict[str, Record] = {}
    bad: list[BadRecord] = []
    if not isinstance(sessions, Mapping):
        return Parsed({}, [BadRecord("", f"'sessions' is {type(sessions).__name__}, expected an object")])
    for url, raw in sessions.items():
        if not isinstance(raw, Mapping):
            bad.append(BadRecord(str(url), f"the record is {type(raw).__name__}, expected an object: skipped"))
            continue
        records[str(url)] = from_dict(str(url), raw)
    return Parsed(records, bad)


def resolve(records: Mapping[str, Record], url: str) -> Record | None:
    """The record owning ``url``: its key first (trailing slash ignored), then any of its routes."""
    stripped = url.rstrip("/")
    for key, rec in records.items():
        if key == url or key.rstrip("/") == stripped:
            return rec
    for rec in records.values():
        if any(u.rstrip("/") == stripped for u in rec.urls()[1:]):
            return rec
    return None


def stored_candidates(routes: Iterable[Route], endpoints: Any = None) -> list[dict[str, Any]]:
    """``route_candidates`` in the reference shape, one per route in priority order.

    ``api`` is the Hermes API server of that route: taken from the invite's matching endpoint when
    it names one, else the relay's own host and port (our relay serves ``/health`` there).
    """
    given: dict[str, dict[str, Any]] = {}
    for ep in endpoints if isinstance(endpoints, list) else []:
        relay = ep.get("relay") if isinstance(ep, Mapping) else None
        api = ep.get("api") if isinstance(ep, Mapping) else None
        if isinstance(relay, Mapping) and isinstance(relay.get("url"), str) and _api_ok(api):
            given[relay["url"]] = {"host": api["host"], "port": api["port"], "tls": bool(api.get("tls", False))}
    out = []
    for r in routes:
        hint = "wss" if r.secure else "ws"
        out.append({"role": r.role, "priority": r.priority, "api": given.get(r.url) or _api_of(r.url),
                    "relay": {"url": r.url, "transport_hint": hint}})
    return out


def _api_ok(api: Any) -> TypeGuard[Mapping[str, Any]]:
    return (isinstance(api, Mapping) and isinstance(api.get("host"), str) and isinstance(api.get("port"), int)
            and not isinstance(api.get("port"), bool) and isinstance(api.get("tls", False), bool))


def _api_of(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    tls = parts.scheme == "wss"
    try:
        port = parts.port
    except ValueError:
        port = None
    return {"host": parts.hostname or "", "port": port or (443 if tls else 80), "tls": tls}


def owner_urls(sessions: Any) -> list[str]:
    """Every record that has a token (one link each); alternate routes are not separate links."""
    return [url for url, rec in parse_sessions(sessions).records.items() if rec.paired]


# -- edits: what the agent writes into a raw record (no I/O; applied inside SessionStore.update) ------

def set_pin(raw: dict[str, Any], owner: str, route_url: str, pin: str | None) -> None:
    """Trust ``pin`` for ``route_url``: the owner URL's pin field, or another route's entry in ``route_cert_pins``."""
    if route_url == owner:
        raw["cert_pin_sha256"] = pin
        return
    given = raw.get("route_cert_pins")
    pins = given if isinstance(given, dict) else {}
    pins[route_url] = pin
    raw["route_cert_pins"] = pins


def apply_auth(raw: dict[str, Any], owner: str, route_url: str, ok: Mapping[str, Any], pin: str | None,
               used_token: str | None) -> bool:
    """A successful authentication's answer into the record it used (rotated tokens, expiry, grants, and a
    first pin: a recorded one is never replaced here). False, nothing changed, when the record now holds
    another token (re-paired meanwhile)."""
    if raw.get("token") != used_token:
        return False
    for field_name, key in (("token", "session_token"), ("refresh_token", "refresh_token")):
        if isinstance(ok.get(key), str) and ok[key]:
            raw[field_name] = ok[key]
    if ok.get("server_version"):
        raw["server_version"] = ok["server_version"]
    if "expires_at" in ok:
        raw["ttl_expires_at"] = ok["expires_at"]
    if isinstance(ok.get("grants"), dict):
        raw["grants"] = ok["grants"]
    if pin:
        if route_url == owner:
            raw.setdefault("cert_pin_sha256", None)
            if not raw["cert_pin_sha256"]:
                raw["cert_pin_sha256"] = pin
        else:
            given = raw.get("route_cert_pins")
            pins = given if isinstance(given, dict) else {}
            pins.setdefault(route_url, pin)
            raw["route_cert_pins"] = pins
    return True


def apply_expiry(raw: Any, session: Mapping[str, Any]) -> bool:
    """A changed session's expiry (and grants) into the record when that session is this record's own
    (its token starts with the session's prefix). False when it is another device's."""
    prefix = session.get("token_prefix")
    if not isinstance(raw, dict) or not isinstance(prefix, str) or not prefix or "expires_at" not in session:
        return False
    token = raw.get("token")
    if not isinstance(token, str) or not token.startswith(prefix):
        return False
    raw["ttl_expires_at"] = session["expires_at"]
    if isinstance(session.get("grants"), dict):
        raw["grants"] = session["grants"]
    return True
