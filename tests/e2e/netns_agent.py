"""Run inside ``unshare --user --map-root-user --net``: a real agent re-probes on a real address change.

Usage: ``python netns_agent.py IP_PATH WORKDIR``. Inside the fresh namespace it brings up loopback,
starts a relay and an agent (real netlink watcher), pairs, stops the relay, and waits until the
link's next retry is far away. Then it restarts the relay and adds an address to a new interface:
the agent must reconnect long before the backoff would have let it, and say why in its log.
Prints one JSON object and exits 0 on success.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from procs import AgentEnv, RelayProc, free_port, wait_state  # noqa: E402

from hermes_relay.core import api, paths  # noqa: E402

FAR = 8.0  # the retry must be at least this far away before the network changes


def main() -> int:
    ip, work = sys.argv[1], Path(sys.argv[2])
    subprocess.run([ip, "link", "set", "lo", "up"], check=True)
    relay = RelayProc(work / "relay", port=free_port()).start()
    env = AgentEnv(work / "user", HERMES_RELAY_NETWATCH="1", HERMES_RELAY_BACKOFF_BASE="30",
                   HERMES_RELAY_BACKOFF_CAP="30")
    report: dict[str, object] = {}
    try:
        env.pair(relay)
        wait_state(env, lambda s: s["state"] == api.CONNECTED)
        with env.client() as c:
            report["netwatch"] = c.call(api.STATUS, {})["agent"]["netwatch"]
        relay.stop()
        # Full jitter may draw a short delay; wait for a long one (each retry against the dead relay
        # draws a new delay from up to 30 s).
        down = wait_state(env, lambda s: s["state"] == api.BACKOFF and s["next_retry_at"] - time.time() > FAR,
                          timeout=120)
        report["retry_in"] = round(down["next_retry_at"] - time.time(), 1)
        relay.start()
        subprocess.run([ip, "link", "add", "hrnet0", "type", "bridge"], check=True)
        subprocess.run([ip, "addr", "add", "10.77.0.1/24", "dev", "hrnet0"], check=True)
        subprocess.run([ip, "link", "set", "hrnet0", "up"], check=True)
        up = wait_state(env, lambda s: s["state"] == api.CONNECTED, timeout=FAR)
        # Before the retry the backoff had planned (at least FAR seconds away): the change woke the link.
        report["reconnected_before_retry"] = time.time() < down["next_retry_at"]
        report["route"] = up["route"]["url"] == relay.url
        log = paths.agent_log_file(env.env).read_text()
        report["log_says_network_changed"] = "network_changed reason=interface up: hrnet0" in log
    finally:
        env.stop()
        relay.stop()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
