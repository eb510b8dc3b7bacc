"""IPC framing, sans-IO: a 4-byte big-endian length, then a msgpack body.

The length prefix counts body bytes only. The size limit is checked as soon as the prefix has
arrived, before any body is buffered, so a hostile peer cannot make us allocate more than the limit.
Both the trio adapter in the agent and the blocking socket in the CLI drive the same decoder
(wsproto's synchronous-example pattern), which is why no I/O happens here.

Decoding is bounded too: msgpack turns one byte into a whole Python object (an empty map is ~64
bytes), so besides the frame size a frame may hold at most ``max_containers`` maps and arrays. The
agent reads client requests with the small ``REQUEST_LIMITS`` (the biggest request, a pairing
invite, is a few KiB; ``shell.open`` carries up to 64 KiB of input), which keeps what one connection
can make it allocate near 1 MB.
"""

from __future__ import annotations

import struct

import msgpack

from .errors import FrameTooLargeError, RemoteProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

MAX_FRAME = 1 << 20  # 1 MiB: trio-websocket's default message cap, ample for status of many relays
MAX_CONTAINERS = 1 << 16  # maps + arrays in one frame (a status reply uses ~25 per relay)
MAX_REQUEST_FRAME = 128 << 10  # what the agent reads from a client (a shell.open holds ≤ 64 KiB of unacked input)
MAX_REQUEST_CONTAINERS = 4096
REQUEST_LIMITS = {"max_frame": MAX_REQUEST_FRAME, "max_containers": MAX_REQUEST_CONTAINERS}
_HEADER = struct.Struct(">I")


class _TooManyContainers(Exception):
    pass


def pack(obj: Any) -> bytes:
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    return body


def unpack(body: bytes, *, max_size: int = MAX_FRAME, max_containers: int = MAX_CONTAINERS) -> Any:
    """Decode one msgpack body with strict, bounded settings."""
    left = [max_containers]

    def count(obj: Any) -> Any:
        left[0] -= 1
        if left[0] < 0:
            raise _TooManyContainers
        return obj

    try:
        return msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            max_str_len=max_size,
            max_bin_len=max_size,
            max_array_len=max_size,
            max_map_len=max_size,
            list_hook=count,
            object_hook=count,
        )
    except _TooManyContainers:
        raise RemoteProtocolError(f"msgpack frame holds more than {max_containers} maps and arrays") from None
    except ValueError as exc:  # ExtraData, FormatError, StackError and UnicodeDecodeError included
        raise RemoteProtocolError(f"undecodable msgpack frame: {exc}") from exc


def encode_frame(obj: Any, *, max_frame: int = MAX_FRAME) -> bytes:
    body = pack(obj)
    if len(body) > max_frame:
        raise FrameTooLargeError(len(body), max_frame)
    return _HEADER.pack(len(body)) + body


class FrameDecoder:
    """Feed bytes in, iterate decoded objects out.

    After an error the decoder is poisoned: the stream position is unknowable, so the connection
    must be closed.
    """

    def __init__(self, max_frame: int = MAX_FRAME, max_containers: int = MAX_CONTAINERS):
        self.max_frame = max_frame
        self.max_containers = max_containers
        self._buf = bytearray()
        self._error: Exception | None = None

    def feed(self, data: bytes | bytearray) -> None:
        if self._error is not None:
            raise self._error
        self._buf += data
        if len(self._buf) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buf)
            if length > self.max_frame:
                self._error = FrameTooLargeError(length, self.max_frame)
                raise self._error

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet form a complete frame."""
        return len(self._buf)

    def __iter__(self) -> Iterator[Any]:
        while True:
            if self._error is not None:
                raise self._error
            if len(self._buf) < _HEADER.size:
                return
            (length,) = _HEADER.unpack_from(self._buf)
            if length > self.max_frame:
                self._error = FrameTooLargeError(length, self.max_frame)
                raise self._error
            end = _HEADER.size + length
            if len(self._buf) < end:
                return
            body = bytes(self._buf[_HEADER.size : end])
            del self._buf[:end]
            try:
                obj = unpack(body, max_size=self.max_frame, max_containers=self.max_containers)
            except RemoteProtocolError as exc:
                self._error = exc
                raise
            yield obj
