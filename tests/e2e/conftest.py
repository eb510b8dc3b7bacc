"""Fixtures for end-to-end tests: real relay processes and real agent processes on loopback."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from procs import AgentEnv, RelayProc


@pytest.fixture
def relay_proc(tmp_path: Path) -> Iterator[RelayProc]:
    relay = RelayProc(tmp_path / "relay").start()
    yield relay
    relay.stop()


@pytest.fixture
def make_relay(tmp_path: Path) -> Iterator[Callable[..., RelayProc]]:
    started: list[RelayProc] = []

    def make(name: str = "relay", **kw) -> RelayProc:  # type: ignore[no-untyped-def]
        relay = RelayProc(tmp_path / name, **kw).start()
        started.append(relay)
        return relay

    yield make
    for relay in started:
        relay.stop()


@pytest.fixture
def make_agent_env(tmp_path: Path) -> Iterator[Callable[..., AgentEnv]]:
    envs: list[AgentEnv] = []

    def make(name: str = "user", **env: str) -> AgentEnv:
        e = AgentEnv(tmp_path / name, **env)
        envs.append(e)
        return e

    yield make
    for e in envs:
        e.stop()
        shutil.rmtree(e.run, ignore_errors=True)


@pytest.fixture
def agent_env(make_agent_env: Callable[..., AgentEnv]) -> AgentEnv:
    return make_agent_env()
