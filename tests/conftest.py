"""Shared fixtures: real relays on 127.0.0.1:0, started and stopped inside the test's trio run.

``relay_factory`` returns ``start(state_dir=None, tls=False, cert_dir=None, **cfg)``. Each relay runs in
its own cancel scope, so ``await handle.stop()`` ends just that relay and a test can start another on
the same ``state_dir``. WebSocket clients opened through ``helpers.ws_connect``/``ws_auth`` live in a
client nursery owned by the fixture and are closed before the relays stop.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helpers
import pytest
import trio

from hermes_relay.relay import tls as relay_tls
from hermes_relay.relay.server import RelayConfig, RelayInfo, serve_relay

CLIENT_CLOSE_GRACE = 1.0  # seconds to close each leftover client at teardown before giving up on it
RELAY_TEST_GUARD = 5.0  # house style B6: every real-socket test runs under a 5 s deadline


@dataclass
class RelayHandle:
    """A running relay: where to reach it and how to stop it."""

    info: RelayInfo
    config: RelayConfig
    _scope: trio.CancelScope = field(repr=False)
    _stopped: trio.Event = field(repr=False)

    @property
    def url(self) -> str:
        """The WebSocket base URL, ``ws://127.0.0.1:PORT`` (``wss://`` with TLS)."""
        return self.info.url

    @property
    def http(self) -> str:
        """The HTTP base URL on the same port, ``http://127.0.0.1:PORT`` (``https://`` with TLS)."""
        scheme = "https" if self.info.scheme == "wss" else "http"
        return f"{scheme}://{self.info.host}:{self.info.port}"

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context that accepts this relay's self-signed certificate, or None for ws://."""
        return helpers.client_ssl_context() if self.info.scheme == "wss" else None

    async def stop(self) -> None:
        """Cancel this relay only and wait until its listeners and connections are gone."""
        self._scope.cancel()
        await self._stopped.wait()


StartRelay = Callable[..., Awaitable[RelayHandle]]


@pytest.fixture(scope="session", autouse=True)
def one_temp_dir_per_run() -> Iterator[Path]:
    """Every temporary folder of a run (runtime dirs, tmux dirs, bench roots) goes in one, removed at the end.

    Runtime dirs live in the system temp dir, not under pytest's tmp_path, because Unix socket paths are
    short; this keeps them short (``/tmp/hrs-XXXXXXXX/hr-XXXXXXXX``) and leaves nothing behind. Processes
    the tests start inherit it through TMPDIR.
    """
    root = Path(tempfile.mkdtemp(prefix="hrs-"))
    root.chmod(0o711)  # others may pass through, as in /tmp (a test serves a socket as another uid in here)
    saved_env, saved_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = str(root)
    try:
        yield root
    finally:
        tempfile.tempdir = saved_dir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(root, ignore_errors=True)


class RelayTestTimeout(Exception):
    """A test using real relays ran past RELAY_TEST_GUARD: something is hung."""


async def _guard(seconds: float) -> None:
    await trio.sleep(seconds)
    raise RelayTestTimeout(f"test still running after {seconds} s with a real relay (hung socket?)")


@pytest.fixture
def relay_test_guard() -> float:
    """Seconds a test using ``relay_factory`` may run. Override this fixture in a module to change it."""
    return RELAY_TEST_GUARD


@pytest.fixture
async def relay_factory(tmp_path: Path, relay_test_guard: float) -> AsyncIterator[StartRelay]:
    """``start(state_dir=None, tls=False, cert_dir=None, **cfg) -> RelayHandle``; ``cfg`` goes to RelayConfig.

    Real sockets and the real clock only (never with autojump_clock). The test fails with
    RelayTestTimeout if it is still running after ``relay_test_guard`` seconds.
    """
    clients: list[trio.abc.AsyncResource] = []
    async with trio.open_nursery() as relays:
        relays.start_soon(_guard, relay_test_guard)
        async with trio.open_nursery() as client_nursery:
            nursery_token = helpers.CLIENT_NURSERY.set(client_nursery)
            clients_token = helpers.OPEN_CLIENTS.set(clients)

            async def start(
                state_dir: Path | None = None, tls: bool = False, cert_dir: Path | None = None, **cfg: Any
            ) -> RelayHandle:
                if tls:
                    cert, key = relay_tls.ensure_certificate(cert_dir or tmp_path / "tls", ["127.0.0.1"])
                    cfg["ssl_context"], cfg["cert_pin"] = relay_tls.load_server_context(cert, key)
                config = RelayConfig(**{"host": "127.0.0.1", "port": 0, "state_dir": state_dir, **cfg})
                scope, stopped = trio.CancelScope(), trio.Event()

                async def run(*, task_status: trio.TaskStatus[RelayInfo]) -> None:
                    try:
                        with scope:
                            await serve_relay(config, task_status=task_status)
                    finally:
                        stopped.set()

                info = await relays.start(run)
                return RelayHandle(info, config, scope, stopped)

            try:
                yield start
            finally:
                helpers.CLIENT_NURSERY.reset(nursery_token)
                helpers.OPEN_CLIENTS.reset(clients_token)
                with trio.CancelScope(shield=True):
                    # Newest first: each WebSocket closes before the stream under it.
                    for resource in reversed(clients):
                        with trio.move_on_after(CLIENT_CLOSE_GRACE):
                            await resource.aclose()
                client_nursery.cancel_scope.cancel()
        relays.cancel_scope.cancel()


@pytest.fixture
async def relay(relay_factory: StartRelay) -> RelayHandle:
    """A started relay with in-memory sessions on ``ws://127.0.0.1:PORT``."""
    return await relay_factory()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip, with the reason, what cannot apply on this platform (tests/platforms.py; none on Linux)."""
    import sys

    import platforms

    root = Path(__file__).parent
    for item in items:
        try:
            rel = Path(str(item.fspath)).relative_to(root).as_posix()
        except ValueError:
            continue
        reason = platforms.reason_to_skip(sys.platform, rel)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
