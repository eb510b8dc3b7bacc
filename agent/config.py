"""AgentConfig: every path and timing the agent uses, resolved once from the environment.

Precedence: explicit arguments (tests, flags) > environment > defaults. Timings are plain numbers so
tests can shrink them; every wait still goes through trio so MockClock controls it.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..core import knobs as envknobs
from ..core import paths
from . import checkpoints


def _float_env(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(env[name]) if env.get(name) else default
    except ValueError:
        return default


@dataclass(frozen=True)
class AgentConfig:
    env: Mapping[str, str]
    sessions_file: Path
    state_file: Path
    socket_path: str
    ipc_mode: str
    lock_file: Path
    home_lock_file: Path  # one agent per HOME and host (core/instance.py)
    route_file: Path
    route_json_file: Path
    log_file: Path
    qr_secret_file: Path
    device_id_file: Path
    credentials_file: Path
    ping_interval: float = 20.0  # keepalive; a silent link is declared dead within 2 intervals
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    stable_after: float = 60.0  # a link up this long resets the backoff schedule
    upgrade_interval: float = 30.0  # while on a lower tier, probe higher tiers this often
    upgrade_hysteresis: float = 5.0  # a higher tier must answer twice this far apart before we move
    probe_timeout: float = 4.0
    revocation_check_interval: float = 300.0  # while connected, a bearer check this often (relays that keep revoked sockets)
    probe_stagger: float = 0.25
    probe_cache_ttl: float = 60.0
    indicator_heartbeat: float = 30.0  # the route file is rewritten at least this often
    clock_check_interval: float = 5.0
    ipc_nonce_timeout: float = 5.0  # a tcp-mode IPC client must send the endpoint's nonce this fast
    fence_interval: float = 60.0  # how often the agent checks its endpoint is still its own
    idle_exit: float = 0.0  # stop after this long with nothing paired and no client (0: never; the process: 60 s)
    clock_jump_threshold: float = 10.0
    netwatch_debounce: float = 1.0
    netwatch_poll_interval: float = 10.0
    netwatch: bool = True
    pending_retry: float = 5.0  # seconds between attempts to store credentials the store did not take
    pair_lock_timeout: float | None = None  # pairing's wait for the store lock (None: the store's default)
    wall_clock: Callable[[], float] = field(default=time.time)
    rng: random.Random = field(default_factory=random.Random)
    knobs: envknobs.AgentKnobs = field(default_factory=envknobs.AgentKnobs)  # the test switches (core/knobs.py), parsed once
    store_write_faults: envknobs.Countdown = field(default_factory=envknobs.Countdown)  # seam: failing credential writes

    def checkpoint(self, name: str) -> None:
        """A named crash point (agent/checkpoints.py): dies there when the kill-at knob names it."""
        checkpoints.checkpoint(self.knobs.kill_at, name)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> AgentConfig:
        e = dict(os.environ if env is None else env)
        knobs = envknobs.parse_agent(e)
        base: dict[str, object] = dict(
            env=e,
            sessions_file=paths.sessions_file(e),
            state_file=paths.agent_state_file(e),
            socket_path=paths.socket_path(e),
            ipc_mode=paths.ipc_mode(e),
            lock_file=paths.instance_lock_file(e),
            home_lock_file=paths.home_lock_file(e),
            route_file=paths.route_file(e),
            route_json_file=paths.route_json_file(e),
            log_file=paths.agent_log_file(e),
            qr_secret_file=paths.qr_secret_file(e),
            device_id_file=paths.device_id_file(e),
            credentials_file=paths.hermes_home(e) / "hermes-relay-credentials.json",
            ping_interval=_float_env(e, "HERMES_RELAY_PING_INTERVAL", 20.0),
            backoff_cap=_float_env(e, "HERMES_RELAY_BACKOFF_CAP", 30.0),
            upgrade_interval=_float_env(e, "HERMES_RELAY_UPGRADE_INTERVAL", 30.0),
            upgrade_hysteresis=_float_env(e, "HERMES_RELAY_UPGRADE_HYSTERESIS", 5.0),
            backoff_base=_float_env(e, "HERMES_RELAY_BACKOFF_BASE", 1.0),
            probe_timeout=_float_env(e, "HERMES_RELAY_PROBE_TIMEOUT", 4.0),
            netwatch=e.get("HERMES_RELAY_NETWATCH", "1") != "0",
            fence_interval=_float_env(e, "HERMES_RELAY_FENCE_INTERVAL", 60.0),
            revocation_check_interval=_float_env(e, "HERMES_RELAY_REVOCATION_CHECK_INTERVAL", 300.0),
            pending_retry=_float_env(e, "HERMES_RELAY_PENDING_RETRY", 5.0),
            pair_lock_timeout=_float_env(e, "HERMES_RELAY_STORE_LOCK_TIMEOUT", 0.0) or None,
            knobs=knobs,
            store_write_faults=envknobs.Countdown(knobs.store_write_faults),
        )
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]
