"""core/desktop.py: envelopes, request ids, command parsing, previews, redaction and result bounding."""

from __future__ import annotations

import json

import pytest

from hermes_relay.core import desktop, wire
from hermes_relay.core.desktop import BadCommand, RequestIds, ToolSpec


async def _noop(args, ctx):  # pragma: no cover - never called
    return None


def test_response_and_status_envelopes() -> None:
    ok = desktop.response_envelope("r", True, result={"a": 1})
    assert (ok["channel"], ok["type"]) == ("desktop", "desktop.response") and ok["id"]
    assert ok["payload"] == {"request_id": "r", "ok": True, "result": {"a": 1}}
    assert desktop.response_envelope("r", False, error="no")["payload"] == {"request_id": "r", "ok": False, "error": "no"}
    assert desktop.status_envelope({"advertised_tools": []})["type"] == "desktop.status"


def test_envelope_ids_are_distinct_uuid4_strings() -> None:
    import uuid

    ids = [desktop.response_envelope("r", True)["id"] for _ in range(1000)] + [desktop.status_envelope({})["id"]]
    assert len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {4} and all(str(uuid.UUID(i)) == i for i in ids)


def test_request_id_memory_refuses_repeats_and_forgets_the_oldest() -> None:
    ids = RequestIds(size=3)
    assert [ids.admit(x) for x in ("a", "b", "a", "", None, 5, "x" * 257, "x" * 256)] == [
        True, True, False, False, False, False, False, True]
    assert ids.admit("c") and ids.admit("d")
    assert ids.admit("a")  # forgotten after 3 newer ids
    assert not ids.admit("d")
    assert RequestIds()._size == desktop.REMEMBERED_REQUEST_IDS == 2048


def test_parse_command() -> None:
    cmd = desktop.parse_command({"request_id": "r", "tool": "t", "args": {"a": 1}, "target_device_id": None})
    assert (cmd.request_id, cmd.tool, cmd.args) == ("r", "t", {"a": 1})
    assert desktop.parse_command({"request_id": "r", "tool": "t"}).args == {}
    for payload, answerable in [([], None), ({"tool": "t"}, None), ({"request_id": "", "tool": "t"}, None),
                                ({"request_id": "r", "tool": ""}, "r"), ({"request_id": "r", "tool": "t", "args": []}, "r")]:
        with pytest.raises(BadCommand) as err:
            desktop.parse_command(payload)
        assert err.value.request_id == answerable


def test_args_preview_is_one_line_of_at_most_120_chars() -> None:
    spec = ToolSpec("t", None, _noop, preview=lambda a: a["command"])
    assert desktop.args_preview(spec, {"command": "ls\n -la"}) == "ls -la"
    long = desktop.args_preview(spec, {"command": "y" * 500})
    assert len(long) == desktop.ARGS_PREVIEW and long.endswith("…")
    broken = ToolSpec("t", None, _noop, preview=lambda a: a["missing"])
    assert desktop.args_preview(broken, {"path": "/x"}) == '{"path":"/x"}'


def test_redact_hides_secrets() -> None:
    text = desktop.redact('curl -H "Authorization: Bearer abc.def" "https://x/?token=s3cr3t&b=1" --password=hunter2')
    assert "abc.def" not in text and "s3cr3t" not in text and "hunter2" not in text
    assert "b=1" in text


def test_small_responses_are_untouched() -> None:
    env = desktop.response_envelope("r", True, result={"stdout": "hi"})
    assert desktop.bound_response(env) is env


def test_a_bare_string_result_is_cut_with_a_marker() -> None:
    env = desktop.response_envelope("r", True, result="é" * (3 << 20))
    bounded = desktop.bound_response(env)
    assert desktop.encoded_size(bounded) < wire.MAX_WS_MESSAGE
    assert "[... truncated at" in bounded["payload"]["result"]
    assert bounded["payload"]["ok"] is True


def test_escaped_output_is_bounded_by_its_encoded_size() -> None:
    env = desktop.response_envelope("r", True, result={"stdout": "\x01" * (2 << 20), "stderr": "e", "exit_code": 1})
    bounded = desktop.bound_response(env)
    assert desktop.encoded_size(bounded) < wire.MAX_WS_MESSAGE
    result = bounded["payload"]["result"]
    assert result["stdout_truncated"] is True and result["stdout_bytes"] == 2 << 20 and result["truncated"] is True
    assert result["stderr"] == "e" and result["exit_code"] == 1


def test_many_small_items_are_shortened_as_a_list() -> None:
    matches = [f"/some/long/path/number/{i:08d}.txt" for i in range(200_000)]
    env = desktop.response_envelope("r", True, result={"matches": matches, "truncated": False})
    bounded = desktop.bound_response(env)
    assert desktop.encoded_size(bounded) < wire.MAX_WS_MESSAGE
    result = bounded["payload"]["result"]
    assert result["truncated"] is True and 0 < len(result["matches"]) < len(matches)
    assert result["matches"][0] == matches[0]


def test_a_huge_error_is_cut() -> None:
    env = desktop.response_envelope("r", False, error="e" * (5 << 20))
    bounded = desktop.bound_response(env)
    assert desktop.encoded_size(bounded) < wire.MAX_WS_MESSAGE
    assert json.loads(json.dumps(bounded))["payload"]["ok"] is False


def test_tool_table_and_categories() -> None:
    table = desktop.ToolTable([ToolSpec("b", desktop.FILES, _noop, deadline=180.0), ToolSpec("a", None, _noop)])
    assert table.names() == ["a", "b"]
    assert (table.capability("b"), table.deadline("b"), table.deadline("zzz")) == ("files", 180.0, desktop.DEFAULT_DEADLINE)
    assert table.get("zzz") is None
    assert [desktop.category(c) for c in ("commands", "files", None)] == ["command", "files", "system"]


def test_a_response_that_fits_carries_the_text_the_link_would_have_encoded():
    """The size check encodes the response once and the link sends that text (UTF-8): it is exactly what
    encoding the envelope again would give (non-ASCII kept, a lone surrogate escaped)."""
    from hermes_relay.core.envelope import Encoded, Envelope

    for result in ({"content": "héllo ✓"}, {"content": "bad \udcff name"}, [1, None, {"a": "b"}]):
        env = desktop.response_envelope("r1", True, result=result)
        bounded = desktop.bound_encoded(env)
        assert isinstance(bounded, Encoded) and bounded == env
        assert bounded.data == Envelope(env["channel"], env["type"], env["payload"], env["id"]).encode().encode()
    big = desktop.response_envelope("r2", True, result={"content": "x" * 2000})
    assert not isinstance(desktop.bound_encoded(big, limit=1000), Encoded)  # cut: encoded by the link
