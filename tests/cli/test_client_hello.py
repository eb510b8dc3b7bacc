"""The CLI's IPC client gives a hung agent no longer than a dead one."""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path

import pytest

from hermes_relay.cli.client import DEFAULT_CALL_TIMEOUT, AgentClient
from hermes_relay.core.errors import IpcError


def test_an_agent_that_accepts_but_never_says_hello_fails_within_the_connect_timeout() -> None:
    with tempfile.TemporaryDirectory(prefix="hr-") as d:
        path = str(Path(d) / "agent.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)  # accepts into the backlog and never answers
        try:
            client = AgentClient.connect(path, timeout=0.3)
            started = time.monotonic()
            with pytest.raises(IpcError, match="did not answer hello in time"):
                client.hello  # noqa: B018 - reading it waits for the answer
            # The alternative is the 30 s call timeout: a bound at a third of it holds however busy the
            # machine is, and the hello timeout itself (0.3 s) is nowhere near it.
            assert time.monotonic() - started < DEFAULT_CALL_TIMEOUT / 3
            client.close()
        finally:
            server.close()
