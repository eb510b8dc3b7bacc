"""The streaming IPC connection of one ``hermes-relay shell``: a non-blocking socket under ``poll``.

``AgentClient.shell_open`` sends ``shell.open`` on a connection whose hello was answered and hands its
socket here. From then on both sides stream notifies (docs/shell-protocol.md): ``send`` queues a frame
and writes what the socket takes now (the rest goes out when ``poll`` says the socket is writable:
``wants_write``), ``receive`` reads what arrived and returns the decoded messages. The call's one
response ends the shell; an end of the connection without it raises ``AgentGone`` (the agent died:
the caller restarts it and reopens).
"""

from __future__ import annotations

import errno

from ..core import framing, rpc
from ..core.errors import AgentGoneError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_QUEUED = 1 << 20  # bytes of frames waiting for the socket; the CLI stops reading stdin long before
_RETRY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


AgentGone = AgentGoneError  # the IPC connection ended without the call's response (core/errors.py)


class ShellConnection:
    def __init__(self, sock: Any, msgid: int, decoder: framing.FrameDecoder):
        self._sock = sock
        self.msgid = msgid
        self._decoder = decoder
        self._out = bytearray()
        sock.setblocking(False)

    def fileno(self) -> int:
        return int(self._sock.fileno())

    @property
    def wants_write(self) -> bool:
        return bool(self._out)

    def notify(self, method: str, params: dict[str, Any]) -> None:
        """Queue a notify to the agent and write what the socket takes now."""
        if len(self._out) > MAX_QUEUED:
            raise AgentGone("the agent stopped reading the shell's connection")
        self._out += framing.encode_frame(rpc.Notify(method, params).to_wire())
        self.flush()

    def flush(self) -> None:
        while self._out:
            try:
                n = self._sock.send(self._out)
            except OSError as exc:
                if exc.errno in _RETRY:
                    return
                raise AgentGone(f"lost the connection to the agent: {exc.strerror or exc}") from None
            del self._out[:n]

    def receive(self) -> list[rpc.Message]:
        """The messages that arrived (maybe none); AgentGone at the end of the connection."""
        messages: list[rpc.Message] = [rpc.parse_message(obj) for obj in self._decoder]
        if messages:  # frames decoded earlier (behind the hello answer): hand those over first
            return messages
        try:
            data = self._sock.recv(1 << 16)
        except OSError as exc:
            if exc.errno in _RETRY:
                return []
            raise AgentGone(f"lost the connection to the agent: {exc.strerror or exc}") from None
        if not data:
            raise AgentGone("the agent closed the shell's connection")
        self._decoder.feed(data)
        return [rpc.parse_message(obj) for obj in self._decoder]

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass
