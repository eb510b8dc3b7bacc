"""IPC message shapes between the CLI and the agent (msgpack-RPC arrays).

    [0, msgid, method, params]   request   (params: a map)
    [1, msgid, error, result]    response  (error: None or {"code", "message", "data"})
    [2, method, params]          notify    (streamed progress or watch events for the open request)

The first request on every connection is ``hello``; it answers ``{api_version, agent_version, pid, started_at}``.
A client may send its next request right behind ``hello`` without waiting (requests on one
connection are answered in order), which makes ``hello`` + the first call one round trip.
Streaming methods (``pair.start``, ``watch``) send notifies, then one final response.
"""

from __future__ import annotations

from .errors import RemoteProtocolError

TYPE_CHECKING = False  # the CLI imports this on every call: no typing at run time
if TYPE_CHECKING:
    from typing import Any

API_VERSION = 1

REQUEST = 0
RESPONSE = 1
NOTIFY = 2


# Plain slotted classes: dataclasses and typing.NamedTuple each cost the CLI milliseconds per start.
class Request:
    __slots__ = ("msgid", "method", "params")

    def __init__(self, msgid: int, method: str, params: dict[str, Any]):
        self.msgid, self.method, self.params = msgid, method, params

    def to_wire(self) -> list[Any]:
        return [REQUEST, self.msgid, self.method, self.params]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Request) and self.to_wire() == other.to_wire()

    def __repr__(self) -> str:
        return f"Request({self.msgid!r}, {self.method!r}, {self.params!r})"


class Response:
    __slots__ = ("msgid", "error", "result")

    def __init__(self, msgid: int, error: dict[str, Any] | None, result: Any):
        self.msgid, self.error, self.result = msgid, error, result

    def to_wire(self) -> list[Any]:
        return [RESPONSE, self.msgid, self.error, self.result]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Response) and self.to_wire() == other.to_wire()

    def __repr__(self) -> str:
        return f"Response({self.msgid!r}, {self.error!r}, {self.result!r})"


class Notify:
    __slots__ = ("method", "params")

    def __init__(self, method: str, params: dict[str, Any]):
        self.method, self.params = method, params

    def to_wire(self) -> list[Any]:
        return [NOTIFY, self.method, self.params]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Notify) and self.to_wire() == other.to_wire()

    def __repr__(self) -> str:
        return f"Notify({self.method!r}, {self.params!r})"


if TYPE_CHECKING:
    Message = Request | Response | Notify


def parse_message(obj: Any) -> Message:
    """Validate a decoded frame and return the typed message. Raises RemoteProtocolError."""
    if not isinstance(obj, list) or not obj:
        raise RemoteProtocolError(f"IPC message must be a non-empty array, got {type(obj).__name__}")
    kind = obj[0]
    if isinstance(kind, bool) or not isinstance(kind, int):  # True == 1 and 1.0 == 1 are not kinds
        raise RemoteProtocolError(f"unknown IPC message kind {kind!r} with {len(obj)} elements")
    if kind == REQUEST and len(obj) == 4:
        _, msgid, method, params = obj
        if not isinstance(msgid, int) or isinstance(msgid, bool) or not isinstance(method, str):
            raise RemoteProtocolError("request needs an integer msgid and a string method")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise RemoteProtocolError(f"request params must be a map, got {type(params).__name__}")
        return Request(msgid, method, params)
    if kind == RESPONSE and len(obj) == 4:
        _, msgid, error, result = obj
        if not isinstance(msgid, int) or isinstance(msgid, bool):
            raise RemoteProtocolError("response needs an integer msgid")
        if error is not None and not isinstance(error, dict):
            raise RemoteProtocolError("response error must be a map or nil")
        return Response(msgid, error, result)
    if kind == NOTIFY and len(obj) == 3:
        _, method, params = obj
        if not isinstance(method, str) or not isinstance(params, dict):
            raise RemoteProtocolError("notify needs a string method and a map of params")
        return Notify(method, params)
    raise RemoteProtocolError(f"unknown IPC message kind {kind!r} with {len(obj)} elements")
