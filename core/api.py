"""The agent's IPC methods and the shapes of their params and results (the CLI ⇄ agent contract).

The method names below are the constants every caller uses; the shapes are typed in
core/apitypes.py (one TypedDict each, checked against the real agent and the CLI tests' fake), and
``cli.client.AgentCalls`` wraps each method in a typed call. This module stays import-free for the
CLI's start-up.

Every value is plain msgpack data (dicts, lists, str, int, float, bool, None). Times are epoch
seconds (float) from the agent's wall clock; ``None`` means never/unknown. Tokens never cross this
API except in ``status`` with ``reveal_tokens=True``.

``hello`` {client_version, api_version} -> {api_version, agent_version, pid, started_at}
  The first request on every connection; the client may send its first call right behind it
  without waiting, so hello + one call is one round trip.

``status`` {reveal_tokens?: bool} -> {
    agent: AgentInfo,
    relays: [RelayState, ...] (every link, then every paused pairing: state "paused", its hint says
            how to restore or forget it; ``paired`` shows the record the agent keeps for it),
    paired: [PairedRelay, ...]}
  AgentInfo = {pid, version, started_at, socket, netwatch: <backend name> | "off", store: <path>,
               store_error: {code, message, data} | None,
               store_problems: [{url, problem}] (records skipped as malformed and fields ignored, why),
               unsaved_pairings: [{url, since, error}] (paired, but held by the agent until the store
                                  can be written; never the token),
               tasks: int (not counting IPC clients'), ipc_clients: int, open_files: int | None}
  PairedRelay = {url, record: <store record, redacted unless reveal_tokens> | None, live: RelayState | None,
                 alternates: [url], role_label: str | None}: the store joined with the live states
                 (store order, then relays only the agent knows), so ``status`` reads no file
  RelayState = {url, state, route: RouteInfo | None, since, latency_ms, attempts,
                last_error: {code, message, data: {hint?, ...}} | None, next_retry_at, routes: [RouteInfo],
                server_version, replaced_by?: URL | None (state "replaced": the newer pairing),
                token_prefix?, token?: str (only with reveal_tokens),
                desktop?: DesktopSummary | None (the desktop channel on this relay)}
  DesktopSummary = {tools_advertised: int, policy: <access_mode>, policy_label: str, policy_error: str | None,
                    calls_today: int, last_call: {tool, ok, ts} | None, pending_approvals: int}
  RouteInfo = {url, role, label, priority}
  state is one of the link states below (core/linkstate.LinkState; its module header says what changes them).

``pair.start`` {url?: str, code?: str, invite?: str, device_name?: str, ignore_signature?: bool}
  An invite whose signature fails is refused (UsageError) unless ``ignore_signature``; then it is used
  with a ``warn`` progress line. ``device_name`` is stored with the pairing and sent on every login;
  omitted, a re-pairing keeps the stored name. Everything the store write needs is checked before
  the code is spent; credentials the store cannot take yet are held (``status`` unsaved_pairings).
  Notifies ``pair.progress`` {kind: "info"|"probe"|"pick"|"warn", line: str, route?: RouteInfo,
                             ok?: bool, ms?: float}
  -> {url: <store key>, server_version, route: RouteInfo, expires_at, grants, port_added: bool,
      verified: True | False | None, verify_note: str, attempts: [...], store: <store path>,
      device_name: str | None (the name sent, None for the agent's default),
      cert_pin_sha256: str | None (the certificate pinned from now on; wss:// only)}

``devices.list`` {url?} -> {url, sessions: [server session dicts as GET /sessions returns them]}
``devices.revoke`` {url?, prefix} -> {url, revoked: <prefix>, is_current: bool, revoked_self: bool}
  ``is_current`` and ``revoked_self`` are equal: this computer's own session was revoked.
``devices.extend`` {url?, prefix, ttl_seconds?: int >= 0 (0 = never; default 86400)}
  -> {url, session: <server session dict>, store_updated: bool}
  ``store_updated``: it was this computer's session and the stored expiry was updated.
  ``url`` picks one relay when several are paired; omitted with several is an AmbiguousError.

``forget`` {url, contact_relay?: bool (default True)} -> {url: <store key>, prefix: str | None, removed: [str],
    relay: {status: "revoked"|"already_ended"|"unreachable"|"skipped", message?}}
  Revokes this computer's session on the relay (when reachable), then removes the record (routes,
  pins), the verdict, the refresh token and the desktop access-policy entry.

``restore`` {url} -> {url: <store key>, restored: bool}
  Puts a pairing another client removed from the store (``status`` shows it as state "paused", its
  record kept by the agent) back into the store and reconnects it. ``restored`` is False when the
  store already holds a pairing for that relay again (the paused copy is dropped). ``forget`` also
  accepts a paused pairing.

``down`` {url?: str} -> {url: str | None, down: [url], all: bool, changed: bool}
``up`` {url?: str} -> {url: str | None, down: [url], all: bool, changed: bool}
  ``down`` takes this computer off one relay (``url``) or every relay (none, pairings made later
  included): the links stop, records, tokens and policies stay; kept in the agent's own file
  (core/offline.py) across restarts. ``up`` lifts it (``up URL`` while every relay is down keeps the
  others down). ``down`` lists the relays down now; a down relay's RelayState has state "down".
  NotPairedError for a URL that is neither stored nor paused.

``route`` {} -> RouteIndicator = {label, state, url, role, since, relay, updated_at?, valid_until?, pid?,
                                   approvals_waiting?, relays?: [{url, name, label, state}]}
  ``label`` carries every relay when several are paired and one is connected (``LAN | office: Tailscale``)
  and the waiting approvals (``LAN !1``); agent/indicator.py.
``watch`` {} -> never answers; notifies until the client disconnects:
  ``state`` RelayState: every relay's state first (paused pairings too), then on every change (a
  pairing another client removed from the store shows up once as "paused");
  ``approval`` {event: "approval.requested", ...Approval} (first for every pending one, then each new
  one) and {event: "approval.resolved", id, outcome: "approved"|"denied"|"expired"|"withdrawn", tool, url}.
``pin.accept`` {url, apply?: bool (default True), pin?: str} -> {url, old_pin, new_pin, changed, applied}
  ``apply: False`` only reports the presented certificate; ``pin`` refuses (PinMismatchError) when the
  relay now presents another one than the user was shown. An unchanged pin is never rewritten.
``reload`` {} -> {relays: int}           re-read the store, (re)start links, clear revoked marks
                                          for records whose token changed
``agent.stop`` {} -> {stopping: True}     answered first, then the agent stops
``approvals.list`` {} -> {approvals: [Approval]}
  Approval = {id, url, tool, capability, preview, reason, request_id, created_at, expires_at}
``approvals.decide`` {id, approve: bool, always?: bool, reason?: str} -> {id, approved, always, tool, url,
                                                                          capability}
  NotFoundError when the request was answered, expired or its call ended (a late answer runs nothing).
  ``always`` with ``approve`` sets that capability to ``allow`` for that host in the policy file.
``doctor`` {deadline?: float (s, default 10), url?: str} -> {netwatch: {backend, enabled}, store_error, deadline,
                                                  elapsed_ms, relays: [DoctorRelay],
                                                  desktop: {notify: {program: str | None, disabled: str | None}}}
  Checks every route of every stored relay (with ``url``: of that pairing only, else NotPairedError) on
  its own short-lived connections; changes nothing. ``desktop.notify`` names the notifier approvals use.
  DoctorRelay = {url, status, working_routes, link: RelayState | None, link_status, routes: [DoctorRoute]}
  DoctorRoute = {url, role, label, priority, address, status, steps: [DoctorStep]}
  DoctorStep = {step: "dns"|"tcp"|"tls"|"ws"|"auth", status: "ok"|"warn"|"fail"|"skip", summary, ms,
                detail, fix, ...step facts (addresses, error, http_status, recorded_pin, presented_pin, reason)}

Errors answer with {code, message, data: {hint?, ...}} from core/errors.py's HermesError tree.
"""

from __future__ import annotations

from hermes_relay.core import rpc

API_VERSION = rpc.API_VERSION  # one version number, defined with the message shapes

HELLO = "hello"
STATUS = "status"
PAIR_START = "pair.start"
PAIR_PROGRESS = "pair.progress"
PAIR_CHECK = "pair.check"  # which stored pairing a pair.start would replace (nothing is sent to the relay)
DEVICES_LIST = "devices.list"
DEVICES_REVOKE = "devices.revoke"
DEVICES_EXTEND = "devices.extend"
ROUTE = "route"
WATCH = "watch"
STATE = "state"
PIN_ACCEPT = "pin.accept"
RELOAD = "reload"
AGENT_STOP = "agent.stop"
DOCTOR = "doctor"
APPROVALS_LIST = "approvals.list"
APPROVALS_DECIDE = "approvals.decide"
APPROVAL = "approval"
FORGET = "forget"
ACCESS_CHANGING = "access.changing"  # the CLI is about to change a host's policy or roots (for the audit)
RESTORE = "restore"
DOWN_SET = "down"
UP_SET = "up"

# Relay link states.
CONNECTING = "connecting"
CONNECTED = "connected"
BACKOFF = "backoff"  # waiting before the next attempt after a network failure
REVOKED = "revoked"  # the relay rejected the stored credentials; needs a new pairing
EXPIRED = "expired"  # the session's TTL ran out; needs a new pairing
REPLACED = "replaced"  # a newer pairing of the same relay (under another URL) replaced this session
PIN_MISMATCH = "pin_mismatch"  # the certificate changed; needs `hermes-relay pin accept URL`
RATE_LIMITED = "rate_limited"  # HTTP 429: waiting out the relay's block
NOT_PAIRED = "not_paired"  # the record was removed from the store while the link ran
DOWN = "down"  # `hermes-relay down`: the user took this computer off the relay (core/offline.py); `up` lifts it
PAUSED = "paused"  # another client removed the record; the agent keeps it aside (`restore` / `forget`)
STOPPED = "stopped"  # the agent stopped cleanly (route indicator only)

# Route indicator labels (the shell prompt shows these).
OFFLINE = "offline"
