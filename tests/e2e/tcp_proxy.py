"""A controllable TCP forwarder for failover tests (run as a script; commands on stdin).

    python tcp_proxy.py TARGET_PORT [LISTEN_PORT]   prints the listening port, then obeys:
    down       close the listener and every forwarded connection (the route dies)
    up         listen again on the same port (the route returns)
    blackhole  keep connections open but stop moving bytes (a silent link)
Each command is acknowledged with ``ok <command>`` once it has taken effect.
"""

from __future__ import annotations

import sys

import trio


class ProxyState:
    def __init__(self, target: int):
        self.target = target
        self.conns: set[trio.CancelScope] = set()
        self.listener_scope = trio.CancelScope()
        self.blackholed = False


async def pipe(src: trio.SocketStream, dst: trio.SocketStream, state: ProxyState) -> None:
    while True:
        data = await src.receive_some(65536)
        if not data:
            await dst.send_eof()
            return
        if state.blackholed:
            await trio.sleep_forever()
        await dst.send_all(data)


async def handle(client: trio.SocketStream, state: ProxyState) -> None:
    scope = trio.CancelScope()
    state.conns.add(scope)
    with scope:
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", state.target)
        except OSError:
            await client.aclose()
            return
        async with client, upstream:
            try:
                async with trio.open_nursery() as n:
                    n.start_soon(pipe, client, upstream, state)
                    n.start_soon(pipe, upstream, client, state)
            except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
    state.conns.discard(scope)
    with trio.CancelScope(shield=True):
        await client.aclose()


async def serve(port: int, state: ProxyState, nursery: trio.Nursery, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    bound = listeners[0].socket.getsockname()[1]
    with state.listener_scope:
        async with listeners[0] as listener:
            task_status.started(bound)
            while True:
                client = await listener.accept()
                nursery.start_soon(handle, client, state)


async def main() -> None:
    target = int(sys.argv[1])
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    state = ProxyState(target)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve, port, state, nursery)
        print(port, flush=True)
        stdin = trio.lowlevel.FdStream(0)
        buf = b""
        while True:
            data = await stdin.receive_some(1024)
            if not data:
                nursery.cancel_scope.cancel()
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                cmd = line.decode().strip()
                if cmd == "down":
                    state.listener_scope.cancel()
                    for scope in list(state.conns):
                        scope.cancel()
                    await trio.sleep(0)  # let the cancelled tasks close their sockets before acking
                    state.listener_scope = trio.CancelScope()
                elif cmd == "up":
                    state.blackholed = False
                    await nursery.start(serve, port, state, nursery)
                elif cmd == "blackhole":
                    state.blackholed = True
                print(f"ok {cmd}", flush=True)


if __name__ == "__main__":
    trio.run(main)
