"""``python -m hermes_relay.agent run``: argv/env → AgentConfig → trio.run(runner.run).

The CLI's ``hermes-relay agent run`` execs this. Logs go to a rotating file (and stderr unless
``--detached``); a filter masks anything shaped like a token, as a second line of defence behind the
rule that tokens are never passed to a logger.
"""

from __future__ import annotations

import argparse
import gc
import logging
import logging.handlers
import os
import re
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import __version__
from ..core import fileio
from ..core.errors import HermesError, members

LOG_BYTES = 1 << 20
LOG_BACKUPS = 3
_TOKENISH = re.compile(r"\b[A-Za-z0-9_\-]{32,}\b")


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Creates the log file (and each rotated successor) 0600 whatever the umask: logs name relays and devices."""

    def _open(self):  # type: ignore[no-untyped-def]
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, fileio.FILE_MODE)
        if sys.platform != "win32":
            os.fchmod(fd, fileio.FILE_MODE)
        return os.fdopen(fd, self.mode.replace("w", "a"), encoding=self.encoding, errors=self.errors)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        cleaned = _TOKENISH.sub(lambda m: m.group(0)[:4] + "…(redacted)", msg)
        if cleaned != msg:
            record.msg, record.args = cleaned, None
        return True


def setup_logging(log_file: Path, *, to_stderr: bool, level: str) -> None:
    root = logging.getLogger()
    root.setLevel(level)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    redact = RedactTokens()
    fileio.ensure_private_dir(log_file.parent)
    handlers: list[logging.Handler] = [
        PrivateRotatingFileHandler(log_file, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")
    ]
    if to_stderr:
        console = logging.StreamHandler(sys.stderr)
        console.addFilter(lambda record: not getattr(record, "file_only", False))
        handlers.append(console)
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(redact)
        root.addHandler(h)


IDLE_EXIT = 60.0  # seconds: a command on a fresh HOME (approvals, status...) leaves no agent behind


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hermes-relay-agent", description="The per-user hermes-relay agent.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the agent in the foreground")
    run.add_argument("--detached", action="store_true", help="started by the CLI: log to the file only")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    check = sub.add_parser("doctor", help="check every route of every pairing once, without running the agent "
                                          "(JSON on stdout; what `hermes-relay doctor` runs when no agent answers)")
    check.add_argument("--deadline", type=float, default=10.0)
    p.add_argument("--version", action="version", version=f"hermes-relay-agent {__version__}")
    return p


async def _serve(config: Any) -> None:
    import trio

    from . import runner
    from .backend import AgentBackend

    watcher = None
    if config.netwatch:
        from .netwatch import InterfaceWatcher

        watcher = InterfaceWatcher(debounce=config.netwatch_debounce, poll_interval=config.netwatch_poll_interval)
    agent = AgentBackend(config, watcher=watcher)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run, agent)
        settle_collector()
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            nursery.start_soon(_stop_on_signal, signals, agent)
            await agent.stop_event.wait()
            nursery.cancel_scope.cancel()


def settle_collector() -> None:
    """Once started: collect, then freeze what start-up built (modules, tables, config: most of the
    agent's ~35,000 objects), so a full collection walks only what came after. Unfrozen, an idle agent's
    occasional full collection took ~25 ms, more than a minute of its wake-ups. Start-up's objects live
    as long as the process; a cycle among them that dies later is not collected (bounded: it happens once).
    The process only (``_serve``): a test process keeps its collector as it is."""
    gc.collect()
    gc.freeze()


async def _stop_on_signal(signals: Any, agent: Any) -> None:
    async for signum in signals:
        logging.getLogger(__name__).info("agent_signal signal=%s", signal.Signals(signum).name)
        agent.stop()
        return


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "doctor":
        return _doctor_once(args.deadline)
    import trio

    from .config import AgentConfig
    from .memtrim import one_arena

    one_arena()  # before any thread: the memory a big result used can then be given back (agent/memtrim.py)
    config = AgentConfig.from_env(idle_exit=_idle_exit(os.environ))
    setup_logging(config.log_file, to_stderr=not args.detached, level=args.log_level)
    try:
        try:
            trio.run(_serve, config)
        except BaseExceptionGroup as group:
            raise _sole_error(group) from None
    except HermesError as exc:
        # The log file keeps it; the terminal gets it once, with its hint, just below.
        logging.getLogger(__name__).error("agent_failed error=%s", exc.message, extra={"file_only": True})
        print(f"hermes-relay agent: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


def _idle_exit(env: Mapping[str, str]) -> float:
    """Seconds an agent process with nothing paired and no client waits before it stops
    (``HERMES_RELAY_IDLE_EXIT``; 0 never stops it). Only the process sets it: in-process test agents never stop."""
    try:
        value = float(env.get("HERMES_RELAY_IDLE_EXIT", IDLE_EXIT))
    except ValueError:
        value = IDLE_EXIT
    return value if value >= 0 else IDLE_EXIT


def _doctor_once(deadline: float) -> int:
    import json

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        result = _standalone_doctor({"deadline": deadline})
    except HermesError as exc:
        print(f"hermes-relay agent doctor: {exc.message}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result, default=str))
    return 0


def _standalone_doctor(params: dict[str, Any]) -> Any:
    """The route checks without a running agent (``python -m hermes_relay.agent doctor``, which the CLI's
    doctor runs when no agent answers): an agent object that is never started runs no link and opens
    only doctor's own short-lived connections. A relay taken off with ``down`` shows as down."""
    import trio

    from ..core.errors import StateError
    from ..core.record import owner_urls
    from . import doctor
    from .backend import AgentBackend
    from .config import AgentConfig

    agent = AgentBackend(AgentConfig.from_env())
    try:
        sessions = agent.store.sessions()
        agent.down = agent.down_states(sessions, owner_urls(sessions), {})
    except StateError:
        pass  # run_doctor reports the store's problem
    return trio.run(doctor.run_doctor, agent, {**params, "standalone": True})


def _sole_error(group: BaseExceptionGroup) -> BaseException:
    """A start-up failure inside the agent's nurseries, as the HermesError itself when there is one."""
    errors = [e for e in members(group) if isinstance(e, HermesError)]
    return errors[0] if errors else group


def entry() -> None:
    sys.exit(main())
