"""``hermes-relay-server``: run the relay in the foreground (a service manager restarts it).

The environment knobs (core/knobs.py ``RELAY``) are read once, in ``config_from_args``, into the config
and logged at start when set; the code below receives seams built from them, never the environment.
``HERMES_RELAY_FAULT_SAVE=PATH`` (tests only): while PATH exists every sessions.json write fails as on a
full disk, so a test can prove that nothing changes unless it was saved.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..core import paths
from ..core.errors import ConfigError, HermesError

if TYPE_CHECKING:
    from .config import RelayConfig

# The server's modules (trio, wsproto, cryptography for TLS) load only when the relay runs: the
# relay-host subcommands (`call`, `sessions`) are blocking HTTP clients and start without them.


def port_number(text: str) -> int:
    """argparse type for --port (and its RELAY_PORT default): 0..65535, 0 = any free port."""
    try:
        port = int(text.strip())
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port number: use 0-65535 (0 = any free port); "
            "when --port is not given it comes from RELAY_PORT"
        )
    return port


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hermes-relay-server",
        description="Hermes relay server: pairing codes, session tokens and the WebSocket relay,\non one port.",
        epilog="examples:\n"
               "  hermes-relay-server                       # on 127.0.0.1:8767, this host only\n"
               "  hermes-relay-server --host 0.0.0.0        # also for the LAN and Tailscale\n"
               "  hermes-relay-server --host 0.0.0.0 --tls  # wss://, self-signed certificate\n"
               "then, on this host:\n"
               "  hermes-pair                               # a code for a computer to pair\n"
               "  hermes-relay-server sessions list         # paired devices; extend, revoke\n"
               "  hermes-relay-server call desktop_terminal '{\"command\": \"uname -a\"}'\n"
               "\n"
               "exit codes: 0 clean stop, 1 error, 2 usage",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default=os.environ.get("RELAY_HOST", "127.0.0.1"),
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for LAN/Tailscale clients)")
    # A string default goes through `type` too, so a bad RELAY_PORT is a usage error (exit 2), not a traceback.
    p.add_argument("--port", type=port_number, default=os.environ.get("RELAY_PORT", "8767"),
                   help="port, 0-65535; 0 picks any free port (default 8767, or RELAY_PORT)")
    p.add_argument("--tls", action="store_true", help="serve wss:// (self-signed certificate unless --cert/--key)")
    p.add_argument("--cert", type=Path, help="PEM certificate chain for wss://")
    p.add_argument("--key", type=Path, help="PEM private key for wss://")
    p.add_argument("--state-dir", type=Path, help="where sessions and the certificate live (default ~/.hermes/relay)")
    p.add_argument("--memory", action="store_true", help="keep sessions in memory only (lost on restart)")
    p.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDR",
                   help="a reverse proxy's address or network whose X-Forwarded-For/Forwarded headers are believed "
                        "(repeatable); proxied requests never count as the relay host itself")
    p.add_argument("--terminal", action="store_true",
                   help="serve shells on this host to paired devices holding the terminal grant (off by default "
                        "for new pairings: hermes-pair --grant terminal=30d)")
    p.add_argument("--tmux-socket", default=os.environ.get("HERMES_RELAY_TMUX_SOCKET", "hermes-relay"), metavar="NAME",
                   help="the private tmux server's socket name (default hermes-relay, as the reference relay; "
                        "its directory follows TMUX_TMPDIR)")
    p.add_argument("--no-tmux", action="store_true", help="with --terminal: bare shells even when tmux is installed")
    p.add_argument("--keep-revoked-sockets", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--version", action="version", version=f"hermes-relay-server {__version__}")
    return p


def config_from_args(args: argparse.Namespace) -> RelayConfig:
    from ..core import knobs
    from . import config, peers, tls
    from .config import RelayConfig

    found = knobs.read(os.environ, knobs.RELAY)  # the only place the relay reads its knobs

    state_dir = args.state_dir or paths.relay_state_dir()
    ssl_context, pin, der = None, None, None
    if args.cert or args.key:
        if not (args.cert and args.key):
            raise ConfigError("--cert and --key go together", hint="pass both, or --tls alone for a self-signed certificate")
        ssl_context, pin = tls.load_server_context(args.cert, args.key)
        der = tls.leaf_der_b64(args.cert)
    elif args.tls:
        hosts = [args.host]
        if args.host in ("0.0.0.0", "::", ""):  # offered under this host's LAN and Tailscale addresses (hermes-pair)
            from .pair_cmd import tailscale_address

            hosts += [peers.lan_address() or "", tailscale_address() or ""]
        cert, key = tls.ensure_certificate(state_dir, hosts)
        ssl_context, pin = tls.load_server_context(cert, key)
        der = tls.leaf_der_b64(cert)
    try:
        trusted = peers.parse_trusted(args.trusted_proxy)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    terminal = None
    if args.terminal and sys.platform == "win32":
        raise ConfigError("--terminal needs a POSIX relay host (PTYs); this relay runs on Windows")
    if args.terminal:
        from .term_config import TerminalSettings

        tmpdir = os.environ.get("TMUX_TMPDIR")
        terminal = TerminalSettings(tmux=False if args.no_tmux else None, tmux_socket=args.tmux_socket,
                                    tmux_tmpdir=Path(tmpdir) if tmpdir else None)
    return RelayConfig(
        terminal=terminal,
        host=args.host,
        port=args.port,
        state_dir=None if args.memory else state_dir,
        ssl_context=ssl_context,
        cert_pin=pin,
        cert_der=der,
        trusted_proxies=trusted,
        close_on_revoke=not args.keep_revoked_sockets,
        save_fault=config.save_fault(found),
        knobs=found,
    )


def settle_gc() -> None:
    """Once the relay listens: the relay's collector policy (relay/gcpolicy.py): start-up objects frozen,
    the server's thresholds, every collection timed."""
    from . import gcpolicy

    gcpolicy.install()


async def _gc_ticks() -> None:
    import trio

    from . import gcpolicy

    policy = gcpolicy.install()
    while True:
        await trio.sleep(gcpolicy.TICK)
        policy.tick()


async def _run(config: RelayConfig, listening_dir: Path) -> None:
    import trio

    from . import listening
    from .config import RelayInfo
    from .server import serve_relay

    # Signals are caught before the "listening" line: a supervisor may stop us as soon as it reads it.
    # A start-up failure is re-raised outside the nursery so main() gets the HermesError itself,
    # not an ExceptionGroup wrapping it.
    failure: HermesError | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                info: RelayInfo = await nursery.start(serve_relay, config)
            except HermesError as exc:
                failure = exc
            else:
                settle_gc()
                nursery.start_soon(_gc_ticks)
                print(f"hermes-relay-server {__version__} listening on {info.url}", flush=True)
                if info.cert_pin:
                    print(f"certificate pin: {info.cert_pin}", flush=True)
                local = listening.local_url(info.scheme, info.host, info.port)
                listening.record(listening_dir, local, os.getpid())
                found = listening.local_relay() == local
                print("next: run `hermes-pair" + ("" if found else f" --relay {local}") + "` on this host to pair a "
                      "computer (it prints the `hermes-relay pair` command to type there)", flush=True)
                if config.terminal is not None:
                    print(terminal_banner(), flush=True)
                try:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        break
                finally:
                    listening.clear(listening_dir, os.getpid())
    if failure is not None:
        raise failure


def terminal_banner(euid: int | None = None) -> str:
    """What --terminal prints at start: who may open a shell, how to grant it, and the root warning."""
    lines = ["terminal: serving shells on this host; the terminal grant is OFF for new pairings. A shell here is a "
             "local (loopback) user of this relay, which trusts loopback for /pairing/register, /sessions and "
             "/desktop: grant it only to devices you would give a login. To grant it: "
             "`hermes-pair --grant terminal=30d` (then pair the device)."]
    if (getattr(os, "geteuid", lambda: -1)() if euid is None else euid) == 0:
        lines.append("warning: the relay runs as root, so its shells are root shells; run it as an ordinary user")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["call"]:
        from . import call_cmd  # blocking HTTP only: no relay start-up cost

        return call_cmd.main(argv[1:])
    if argv[:1] == ["sessions"]:
        from . import sessions_cmd

        return sessions_cmd.main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = config_from_args(args)
        import trio

        from . import capacity

        capacity.raise_fd_limit()
        trio.run(_run, config, args.state_dir or paths.relay_state_dir())
    except HermesError as exc:
        return exc.report("hermes-relay-server", sys.stderr)
    return 0


def entry() -> None:
    sys.exit(main())
