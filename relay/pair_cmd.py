"""``hermes-pair``: mint a one-time pairing code on the relay host and show it (and an invite QR).

Runs next to the relay: it registers the code over loopback (``POST /pairing/register`` is refused
from anywhere else), then prints ``Code``, ``Relay`` and ``Session TTL``. With more than one route
(LAN, Tailscale, public URL), or a TLS relay whose certificate pin the invite carries, it also prints a
signed v3 invite as one ``hermes-relay://`` line (for a TLS relay with the certificate, in the pinned-TLS
``plugin_proxy`` endpoint the reference desktop CLI needs). When stdout is a terminal it draws a QR code
that fits its width (relay/qr.py): the whole invite when it fits, else a compact one (the first route
and its pin), else none, saying so (the code and the invite line are printed either way). Raw JSON only
with ``--json``. A relay listening on loopback only
is offered as its loopback URL (nothing else could reach it). Minted codes avoid look-alike characters.
This module is plain blocking Python: it neither needs nor imports trio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any, TextIO
from urllib.parse import urlsplit

from .. import __version__
from ..core import codes, paths, payload, timefmt
from ..core.errors import HermesError, TransportError, UsageError
from ..core.pin import pinned_trust_context
from ..core.routes import http_base, infer_role, normalize_relay_url
from . import listening, qr
from .peers import lan_address

DEFAULT_TTL = 30 * 86400  # the reference hermes-pair's default session TTL: 30 days
DEFAULT_RELAY = listening.DEFAULT_RELAY
REGISTER_TIMEOUT = 5.0
MODES = ("auto", "lan", "tailscale", "public")
CERT_FILES = "relay-cert.pem and relay-key.pem in its state directory"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hermes-pair",
        description="Mint a one-time pairing code on this relay host (valid 10 minutes, single use).",
        epilog="examples:\n"
               "  hermes-pair                      # a code and an invite for this host's relay\n"
               "  hermes-pair --ttl 7d             # the paired computer's session: 7 days\n"
               "  hermes-pair --grant terminal=30d  # shells here for 30 days (--terminal)\n"
               "  hermes-pair --mode tailscale     # offer only the Tailscale route\n"
               "  hermes-pair --public-url wss://relay.example.com\n"
               "then, on the computer to pair:\n"
               "  hermes-relay pair --remote ws://192.168.1.5:8767   # then type the code\n"
               "  hermes-relay pair --pair-qr 'hermes-relay://pair?payload=...'\n"
               "\n"
               "exit codes: 0 ok, 1 relay unreachable or refused, 2 usage",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ttl", default=str(DEFAULT_TTL),
                   help="session lifetime: seconds, or 1d/7d/30d/90d/1y, or 0/never (default 30 days)")
    p.add_argument("--grant", action="append", default=[], metavar="CHANNEL=DURATION",
                   help="a channel grant for the paired device: 30d, 12h, 3600, 0/never, or off (repeatable; "
                        "e.g. --grant terminal=30d on a relay run with --terminal, where it is off by default)")
    p.add_argument("--mode", choices=MODES, default="auto",
                   help="which routes the invite offers (default auto: every route found)")
    p.add_argument("--public-url", help="the relay's public URL, e.g. wss://relay.example.com")
    p.add_argument("--lan-host", help="LAN address to advertise (default: this host's outbound address)")
    p.add_argument("--tailscale-host", help="Tailscale address or MagicDNS name (default: `tailscale ip -4`)")
    p.add_argument("--relay", help="the local relay to register with; " + listening.RELAY_HELP)
    p.add_argument("--code", help="use this code instead of a random one (6 chars A-Z/0-9)")
    p.add_argument("--no-qr", action="store_true", help="do not draw the QR code")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--version", action="version", version=f"hermes-pair {__version__}")
    return p


def main(argv: list[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except HermesError as exc:
        return exc.report("hermes-pair", err)
    for warning in result.pop("warnings"):
        print(f"hermes-pair: warning: {warning}", file=err)
    candidates = result.pop("qr_candidates")
    if args.json:
        print(json.dumps(result, indent=2), file=out)
    else:
        drawn = not args.no_qr and _is_terminal(out)
        _print_text(result, out, qr=candidates if drawn else None, columns=qr.terminal_columns(out))
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    ttl = timefmt.parse_ttl(args.ttl)
    grants = parse_grants(args.grant)
    code = _chosen_code(args.code) if args.code else codes.generate_code()
    local, _ = normalize_relay_url(args.relay or listening.local_relay())
    local, health = find_relay(local)
    if _loopback_only(health, args):
        endpoints = [("lan", local)]
    else:
        endpoints = select_endpoints(args.mode, local, args)
    warnings = _reachability_warnings(health, endpoints)
    hint = "wss" if local.startswith("wss://") else "ws"
    pin, der, proxied = None, None, None
    if hint == "wss":  # the relay says its pin in /health; an older relay's is read off a TLS handshake
        pin = health.get("cert_pin") if isinstance(health.get("cert_pin"), str) else relay_pin(local)
        der = health.get("cert_der") if isinstance(health.get("cert_der"), str) and pin else None
        if der:
            proxied, unnamed = _named_routes(der, endpoints)
            warnings += [f"the relay's certificate does not name {host}, so the reference desktop CLI cannot trust "
                         f"the route through it; to add it, move {CERT_FILES} aside and restart the relay with --tls "
                         "(paired devices then pair again)" for host in unnamed]
            warnings += [f"the reference desktop CLI refuses an IP address as a TLS server name, so it cannot use the "
                         f"pinned route to {host}; pass --lan-host with a name of this host the computer resolves "
                         "(hermes-relay pairs either way)" for host in _ip_routes(proxied or [])]
    registered = register(local, code, ttl, grants)
    secret = payload.load_or_create_secret(paths.qr_secret_file())
    invite = payload.build(code=registered["code"], ttl_seconds=ttl, transport_hint=hint, endpoints=endpoints,
                           secret=secret, cert_pin=pin, cert_der=der, proxy_urls=proxied)
    full = payload.encode(invite)
    candidates = [full, payload.encode(payload.compact(invite, secret))]
    return {
        "code": registered["code"],
        "relay_url": endpoints[0][1],
        "ttl_seconds": ttl,
        "code_expires_at": registered.get("expires_at"),
        "endpoints": [{"role": role, "url": url} for role, url in endpoints],
        "payload": invite,
        "invite_url": payload.invite_url(invite),
        "qr_payload": _qr_text(candidates, qr.DEFAULT_COLUMNS),
        "qr_candidates": candidates,
        "cert_pin": pin,
        "grants": grants,
        "warnings": warnings,
    }


def parse_grants(raw: list[str]) -> dict[str, int | str]:
    """``--grant CHANNEL=DURATION|off`` values as ``/pairing/register`` takes them (seconds; 0 never; "off")."""
    grants: dict[str, int | str] = {}
    for item in raw:
        channel, sep, value = item.partition("=")
        channel, value = channel.strip(), value.strip().lower()
        if not sep or not channel or not value:
            raise UsageError(f'--grant "{item}" is not CHANNEL=DURATION', hint="e.g. --grant terminal=30d or terminal=off")
        grants[channel] = "off" if value == "off" else timefmt.parse_ttl(value, flag=f"--grant {channel}")
    return grants


def _named_routes(cert_der: str, endpoints: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(the wss:// non-public route URLs whose host the certificate names, the hosts it does not name)."""
    from .tls import names_host  # cryptography: only for a TLS relay

    named, unnamed = [], []
    for role, url in endpoints:
        host = urlsplit(url).hostname or ""
        if not url.startswith("wss://") or role == "public":
            continue
        if names_host(cert_der, host):
            named.append(url)
        else:
            unnamed.append(host)
    return named, unnamed


def _qr_text(candidates: list[str], columns: int) -> str:
    """What the QR code holds (``--json``'s ``qr_payload``): the whole invite when its QR fits ``columns``,
    else the compact one."""
    chosen = qr.pick(candidates[:1], columns)
    return chosen[0] if chosen is not None else candidates[-1]


def _chosen_code(raw: str) -> str:
    try:
        return codes.validate_code(raw)
    except HermesError:
        raise UsageError(f'--code "{raw}" is not a pairing code: use 6 characters A-Z/0-9') from None


def _loopback_only(health: dict[str, Any], args: argparse.Namespace) -> bool:
    """A relay bound to loopback, and no route asked for: only its loopback URL can reach it."""
    explicit = args.lan_host or args.tailscale_host or args.public_url or args.mode != "auto"
    return health.get("host") in ("127.0.0.1", "::1", "localhost") and not explicit


def relay_pin(relay_url: str) -> str | None:
    """The certificate pin the local TLS relay presents (read over loopback), or None if it cannot be read."""
    from ..core.pin import spki_pin_from_der

    parts = urlsplit(relay_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    try:
        with socket.create_connection((host, port), timeout=REGISTER_TIMEOUT) as raw:
            with pinned_trust_context().wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
        return spki_pin_from_der(der) if der else None
    except (OSError, HermesError):
        return None


def find_relay(relay_url: str) -> tuple[str, dict[str, Any]]:
    """``GET /health`` on the local relay; a ws:// URL that meets a TLS relay is upgraded to wss://.

    The default ``--relay`` is ws://127.0.0.1:8767, but the README's own first step may have been
    ``hermes-relay-server --tls``: rather than fail with "cannot reach", find out and say nothing.
    """
    try:
        return relay_url, _get_json(http_base(relay_url) + "/health")
    except TransportError:
        if not relay_url.startswith("ws://"):
            raise
        secure = "wss://" + relay_url[len("ws://"):]
        try:
            return secure, _get_json(http_base(secure) + "/health")
        except TransportError:
            pass
        raise


def _context(url: str) -> ssl.SSLContext | None:
    # Loopback to our own relay, whose certificate is self-signed: clients check its pin.
    return pinned_trust_context() if url.startswith("https://") else None


def request_json(method: str, url: str, body: dict[str, Any] | None = None, *,
                 timeout: float = REGISTER_TIMEOUT) -> tuple[int, dict[str, Any]]:
    """One JSON request to the relay on this host: (HTTP status, JSON object), error statuses included.

    Raises TransportError when nothing answers, or when the answer is not a JSON object.
    """
    base = url.split("/", 3)
    origin = "/".join(base[:3])
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=_context(url)) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise TransportError(f"cannot reach the relay at {origin}: {getattr(exc, 'reason', exc)}",
                             hint="start it with `hermes-relay-server`, or point --relay at the running relay") from None
    try:
        obj = json.loads(raw or b"{}")
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        raise TransportError(f"the relay at {origin} answered HTTP {status} with something that is not JSON",
                             hint="is --relay pointing at a Hermes relay?")
    return status, obj


def _get_json(url: str) -> dict[str, Any]:
    status, obj = request_json("GET", url)
    if status != 200:
        raise TransportError(f"the relay at {url.rsplit('/', 1)[0]} answered HTTP {status}: {obj.get('error', '')}",
                             hint="is --relay pointing at a Hermes relay?")
    return obj


def _reachability_warnings(health: dict[str, Any], endpoints: list[tuple[str, str]]) -> list[str]:
    bound = health.get("host")
    if bound not in ("127.0.0.1", "::1", "localhost"):
        return []
    remote = [url for _, url in endpoints if not _is_loopback_host(urlsplit(url).hostname)]
    if not remote or all(role == "public" for role, _ in endpoints):
        return []  # a public URL usually sits behind a reverse proxy on this host
    return [f"the relay listens on {bound} only, so other machines cannot reach {remote[0]}; "
            "restart it with `hermes-relay-server --host 0.0.0.0`"]


def select_endpoints(mode: str, local: str, args: argparse.Namespace) -> list[tuple[str, str]]:
    """[(role, url)] in priority order for ``mode``; a mode that finds nothing is a UsageError."""
    parts = urlsplit(local)
    scheme, port = parts.scheme, parts.port

    def at(host: str) -> str:
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{port}"

    found: list[tuple[str, str]] = []
    if mode in ("auto", "lan"):
        own = parts.hostname if infer_role(local) == "lan" and not _is_loopback_host(parts.hostname) else None
        host = args.lan_host or own or lan_address()
        if host:
            found.append(("lan", at(host)))
        elif mode == "lan":
            raise UsageError("no LAN address found for this host", hint="pass --lan-host ADDRESS")
    if mode in ("auto", "tailscale"):
        host = args.tailscale_host or tailscale_address()
        if host:
            found.append(("tailscale", at(host)))
        elif mode == "tailscale":
            raise UsageError("no Tailscale address found (is `tailscale up`?)", hint="pass --tailscale-host ADDRESS")
    if mode in ("auto", "public"):
        if args.public_url:
            found.append(("public", normalize_relay_url(args.public_url)[0]))
        elif mode == "public":
            raise UsageError("--mode public needs --public-url URL")
    if not found:
        found.append((infer_role(local), local))
    return found


def register(relay_url: str, code: str, ttl: int, grants: dict[str, int | str] | None = None) -> dict[str, Any]:
    """``POST /pairing/register`` on the local relay; errors say whether it is down or refusing."""
    base = http_base(relay_url)
    body: dict[str, Any] = {"code": code, "ttl_seconds": ttl}
    if grants:
        body["grants"] = grants
    status, reply = request_json("POST", f"{base}/pairing/register", body)
    if status == 403:
        raise TransportError(f"the relay at {base} refused to register a code: {reply.get('error', '')}",
                             hint="run hermes-pair on the relay host itself (registration is loopback-only)")
    if status != 200:
        raise TransportError(f"the relay at {base} refused the code (HTTP {status}): {reply.get('error', '')}")
    if not reply.get("ok") or not isinstance(reply.get("code"), str):
        raise TransportError(f"the relay at {base} did not accept the code: {reply.get('error', reply)}")
    return reply


def _is_loopback_host(host: str | None) -> bool:
    return host in (None, "", "localhost") or (host or "").startswith("127.") or host == "::1"


def tailscale_address() -> str | None:
    """This host's Tailscale IPv4 address (``tailscale ip -4``), or None without Tailscale."""
    exe = shutil.which("tailscale")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "ip", "-4"], capture_output=True, text=True, timeout=3, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.strip().splitlines()[0] if out.strip() else ""
    return first or None


def _is_terminal(out: TextIO) -> bool:
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError):
        return False


def _print_text(result: dict[str, Any], out: TextIO, *, qr: list[str] | None, columns: int) -> None:
    """The text output; ``qr``: the invites a QR may hold, best first (None: draw none), fitted to ``columns``."""
    ttl = result["ttl_seconds"]
    print(f"Code : {result['code']}", file=out)
    print(f"Relay : {result['relay_url']}", file=out)
    print(f"Session TTL : {ttl} seconds ({timefmt.ttl_words(ttl)})", file=out)
    print("The code is valid for 10 minutes and works once.", file=out)
    for channel, value in (result.get("grants") or {}).items():
        words = "off" if value == "off" else timefmt.ttl_words(int(value)).replace("never expires", "never expiring")
        print(f"Grant {channel} : {words}", file=out)
    if result.get("cert_pin"):
        print(f"Certificate pin : {result['cert_pin']}", file=out)
    invite = len(result["endpoints"]) > 1 or result.get("cert_pin")
    if invite:
        print("Routes (strict priority):", file=out)
        for i, ep in enumerate(result["endpoints"]):
            print(f"  {i}. {ep['role']:<10} {ep['url']}", file=out)
    if qr:
        _print_qr(qr, out, columns)
    # The code at the prompt, not in argv: a command line is readable by other users in the process list.
    print(f"On the computer: hermes-relay pair --remote {result['relay_url']}", file=out)
    print(f"  and type the code {result['code']} when it asks", file=out)
    if invite or qr:
        print(f"  or: hermes-relay pair --pair-qr '{result['invite_url']}'", file=out)
        print("  (the reference desktop CLI's `pair` takes the same invite)", file=out)


def _print_qr(candidates: list[str], out: TextIO, columns: int) -> None:
    """The largest invite whose QR fits ``columns`` (quiet zone included), or why there is none."""
    chosen = qr.pick(candidates, columns)
    if chosen is None:
        need = qr.width(qr.make(candidates[-1]))
        print(f"No QR code: it needs {need} columns, this terminal has {columns}.", file=out)
        print("Pair with the code, or with the invite line below.", file=out)
        return
    text, symbol = chosen
    qr.draw(symbol, out)
    if text != candidates[0]:
        print("The QR code has the first route; the invite below has them all.", file=out)


def _ip_routes(urls: list[str]) -> list[str]:
    """The non-loopback IP hosts of the pinned routes (a loopback one is offered as localhost)."""
    from urllib.parse import urlsplit

    hosts = [urlsplit(u).hostname or "" for u in urls]
    return [h for h in dict.fromkeys(hosts) if payload.is_ip(h) and not payload.is_loopback_ip(h)]


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
