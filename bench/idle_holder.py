"""Idle authenticated WebSocket connections held open against a relay, in a process of their own.

    python bench/idle_holder.py URL SESSION_TOKEN

Commands on stdin, one per line:
- a number N: open and authenticate connections until N are held, then print ``reached N BUSY`` (BUSY: the
  upgrades turned away as busy (503) so far, each retried after a short pause);
- ``close`` (or end of input): close every held connection, print ``closed`` and exit.

The relay rows of bench/run.py measure handshake latency while these connections are held. Holding them in
the probing process would put this process's own work in the probe (a heartbeat round of the relay makes
every held connection answer a ping, here), so a relay's pause could not be told from the client's.
"""

from __future__ import annotations

import sys

import trio
import trio_websocket
from wsproto.utilities import LocalProtocolError

from hermes_relay.core import envelope

OPEN_AT_ONCE = 16  # the relay caps unauthenticated connections per address; stay well under it
ATTEMPTS = 50


async def _auth(ws: trio_websocket.WebSocketConnection, token: str) -> None:
    await ws.send_message(envelope.Envelope(envelope.SYSTEM, envelope.AUTH, {"session_token": token}).encode())
    while True:
        reply = envelope.decode(await ws.get_message())
        if reply.channel == envelope.SYSTEM and reply.type == envelope.AUTH_OK:
            return
        if reply.channel == envelope.SYSTEM and reply.type == envelope.AUTH_FAIL:
            raise RuntimeError(f"auth failed: {reply.payload}")


class Holder:
    def __init__(self, url: str, token: str):
        self.url, self.token = url, token
        self.opened = 0
        self.busy = 0
        self.target = 0
        self.reached = trio.Event()
        self.release = trio.Event()
        self.limiter = trio.CapacityLimiter(OPEN_AT_ONCE)

    async def hold(self) -> None:
        for attempt in range(ATTEMPTS):
            # A private nursery per connection: trio-websocket raises a refused upgrade (a 503 "busy" while
            # the relay is behind on reading request heads) from its reader task, in that nursery.
            try:
                async with trio.open_nursery() as own:
                    async with self.limiter:
                        ws = await trio_websocket.connect_websocket_url(own, self.url)
                        await _auth(ws, self.token)
                    self.opened += 1
                    if self.opened == self.target:
                        self.reached.set()
                    await self.release.wait()
                    with trio.move_on_after(5):
                        await ws.aclose()
                return
            except* LocalProtocolError:  # trio-websocket answering a ping while it closes: the client's race
                pass
            except* trio_websocket.ConnectionRejected:
                self.busy += 1
                if attempt == ATTEMPTS - 1:
                    raise
            if self.release.is_set():
                return
            await trio.sleep(0.05)


async def main(url: str, token: str) -> None:
    holder = Holder(url, token)
    stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
    buffered = b""
    async with trio.open_nursery() as nursery:
        while True:
            while b"\n" not in buffered:
                chunk = await stdin.receive_some(4096)
                if not chunk:
                    buffered += b"\nclose\n"
                    break
                buffered += chunk
            line, buffered = buffered.split(b"\n", 1)
            command = line.decode().strip()
            if not command:
                continue
            if command == "close":
                holder.release.set()
                break
            holder.target, holder.reached = int(command), trio.Event()
            if holder.opened >= holder.target:
                holder.reached.set()
            for _ in range(holder.target - holder.opened):
                nursery.start_soon(holder.hold)
            await holder.reached.wait()
            print(f"reached {holder.opened} {holder.busy}", flush=True)
    print("closed", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
