"""Run inside ``unshare --user --map-root-user --net``: real kernel events must reach the watcher.

Usage: ``python netns_probe.py IP_PATH``. Prints one JSON object on stdout and exits 0 when:

1. ``InterfaceWatcher()`` picks the netlink backend and the real ``snapshot_interfaces``;
2. adding an interface with an address produces a major ``NetChange`` naming it, and removing the
   address produces a second one (the safety timer is off, so only netlink can cause them);
3. a netlink socket with a tiny receive buffer that is not read during a burst of address changes
   reports the overrun (ENOBUFS) as a wakeup.

Creating an interface in a fresh network namespace needs no host privileges. The kernel may lack
the ``dummy`` driver (module not loaded and not loadable from a namespace), so a port-less bridge
is used instead; both just hold an address.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import trio

from hermes_relay.agent._netwatch_linux import open_netlink_wakeups
from hermes_relay.agent.netwatch import InterfaceWatcher
from hermes_relay.core.netif import NetChange

IFACE = "hrprobe0"
ADDRESS = "10.77.0.1/24"
STEP_TIMEOUT = 8.0  # seconds per expected event; generous, events normally arrive in milliseconds
OVERRUN_RCVBUF = 1  # the kernel rounds this up to its minimum (a few KiB)
OVERRUN_ADDRESSES = 200  # several hundred RTM_NEWADDR messages overflow that minimum buffer


async def ip(ip_path: str, *args: str, stdin: bytes = b"") -> None:
    await trio.run_process([ip_path, *args], stdin=stdin, capture_stdout=True, capture_stderr=True)


async def add_interface(ip_path: str) -> str:
    try:
        await ip(ip_path, "link", "add", IFACE, "type", "dummy")
        kind = "dummy"
    except subprocess.CalledProcessError:
        await ip(ip_path, "link", "add", IFACE, "type", "bridge")
        kind = "bridge"
    await ip(ip_path, "addr", "add", ADDRESS, "dev", IFACE)
    await ip(ip_path, "link", "set", IFACE, "up")
    return kind


async def next_major(receive: trio.MemoryReceiveChannel[NetChange], seen: list[dict[str, Any]]) -> NetChange:
    with trio.fail_after(STEP_TIMEOUT):
        async for change in receive:
            seen.append({"major": change.major, "reason": change.reason})
            if change.major:
                return change
    raise RuntimeError("watcher stopped")


async def check_watcher(ip_path: str) -> dict[str, Any]:
    watcher = InterfaceWatcher(debounce=0.1, safety_interval=math.inf)
    send, receive = trio.open_memory_channel[NetChange](16)
    seen: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:
        initial = await nursery.start(watcher.run, send)
        kind = await add_interface(ip_path)
        added = await next_major(receive, seen)
        await ip(ip_path, "addr", "del", ADDRESS, "dev", IFACE)
        removed = await next_major(receive, seen)
        nursery.cancel_scope.cancel()
    return {
        "backend": watcher.backend,
        "kind": kind,
        "initial_interfaces": sorted(initial.interfaces) if initial else None,
        "added": {"reason": added.reason, "interfaces": sorted(added.new.interfaces)},
        "removed": {"reason": removed.reason, "interfaces": sorted(removed.new.interfaces)},
        "changes": seen,
    }


async def check_overrun(ip_path: str) -> str:
    wakeups = open_netlink_wakeups(rcvbuf=OVERRUN_RCVBUF)
    try:
        batch = "".join(f"addr add 10.78.{i // 250}.{i % 250 + 1}/32 dev {IFACE}\n" for i in range(OVERRUN_ADDRESSES))
        await ip(ip_path, "-batch", "-", stdin=batch.encode())
        with trio.fail_after(STEP_TIMEOUT):
            return await wakeups.wait()
    finally:
        wakeups.close()


async def main(ip_path: str) -> dict[str, Any]:
    report = await check_watcher(ip_path)
    report["overrun_reason"] = await check_overrun(ip_path)
    return report


if __name__ == "__main__":
    print(json.dumps(trio.run(main, sys.argv[1])))
