"""The host access policy file: presets, canonical URLs, least privilege, legacy consent, safe writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hermes_relay.core import fileio, policy
from hermes_relay.core.errors import StateCorruptError, StateError, StateVersionError, UsageError

URL = "wss://relay.example:8767"


@pytest.mark.parametrize(("raw", "canonical"), [
    ("wss://relay.example:8767", "wss://relay.example:8767"),
    ("WSS://Relay.Example:8767/", "wss://relay.example:8767"),
    ("ws://host:80/", "ws://host"),
    ("wss://host:443", "wss://host"),
    ("ws://host:8767/relay//", "ws://host:8767/relay"),
    ("ws://[::1]:8767", "ws://[::1]:8767"),
    (" ws://10.0.0.2:8767 ", "ws://10.0.0.2:8767"),
])
def test_canonical_url(raw: str, canonical: str) -> None:
    assert policy.canonical_url(raw) == canonical


@pytest.mark.parametrize("raw", ["http://host", "ws://user:pw@host", "ws://host/?a=1", "ws://host/#x", "ws://",
                                 "not a url", "ws://host:99999"])
def test_urls_without_a_policy_key(raw: str) -> None:
    assert policy.canonical_url(raw) is None


def test_presets_match_the_reference_table() -> None:
    p = policy.PRESETS
    assert set(p[policy.ASK].values()) == {"disabled"}
    assert p[policy.ASK_EVERY_TIME] == {"commands": "ask", "files": "ask", "screen_input": "ask", "usb": "ask",
                                        "microphone": "disabled", "camera": "disabled"}
    assert (p[policy.STRUCTURED]["commands"], p[policy.STRUCTURED]["files"]) == ("disabled", "allow")
    assert (p[policy.TRUSTED]["commands"], p[policy.TRUSTED]["files"], p[policy.TRUSTED]["usb"]) == ("allow", "allow", "ask")
    assert set(p[policy.FULL_ACCESS].values()) == {"allow"}


def test_no_record_is_restricted_and_decide_follows_the_capabilities() -> None:
    empty = policy.parse({})
    assert empty.for_url(URL).access_mode == policy.ASK
    assert policy.decide(empty, URL, "commands") == "deny"
    trusted = policy.parse({"version": 2, "hosts": {URL: {"access_mode": "trusted"}}})
    assert policy.decide(trusted, URL + "/", "commands") == "allow"
    assert policy.decide(trusted, URL, "screen_input") == "ask"
    assert policy.decide(trusted, URL, "camera") == "deny"
    assert policy.decide(trusted, "wss://other:8767", "files") == "deny"


def test_explicit_capabilities_make_a_custom_mode_and_full_access_is_absolute() -> None:
    parsed = policy.parse({"hosts": {
        URL: {"access_mode": "trusted", "capabilities": {"commands": "ask", "bogus": "allow", "files": "maybe"}},
        "ws://b:1": {"access_mode": "full_access", "capabilities": {"usb": "ask"}},
        "ws://c:1": {"access_mode": "structured", "capabilities": dict(policy.PRESETS[policy.STRUCTURED])},
        "ws://d:1": "trusted",
        "ws://e:1": {"access_mode": "root"},
    }})
    host = parsed.for_url(URL)
    assert host.access_mode == policy.CUSTOM and host.capabilities["commands"] == "ask"
    assert host.capabilities["files"] == "allow"
    assert parsed.for_url("ws://b:1").capabilities["usb"] == "allow"
    assert parsed.for_url("ws://c:1").access_mode == policy.STRUCTURED
    assert parsed.for_url("ws://d:1").access_mode == policy.TRUSTED
    assert parsed.for_url("ws://e:1").access_mode == policy.ASK  # unknown mode: restricted


def test_duplicate_urls_resolve_to_the_least_privilege() -> None:
    parsed = policy.parse({"hosts": {
        "wss://relay.example:8767": {"access_mode": "full_access"},
        "WSS://relay.example:8767/": {"access_mode": "structured"},
    }, "trusted_hosts": ["wss://relay.example:8767"]})
    host = parsed.for_url(URL)
    assert host.capabilities == policy.PRESETS[policy.STRUCTURED]
    assert host.access_mode == policy.STRUCTURED


def test_writes_keep_unknown_fields_and_fold_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "desktop-host-access.json"
    path.write_text(json.dumps({
        "version": 2, "written_by": "tray",
        "hosts": {URL + "/": {"access_mode": "structured", "note": "office", "capabilities": {}},
                  "ws://other:1": {"access_mode": "trusted", "x": 1}},
    }))
    written = policy.set_mode(path, URL, policy.TRUSTED, now=1_800_000_000.0)
    assert written.access_mode == policy.TRUSTED
    doc = json.loads(path.read_text())
    assert doc["version"] == 2 and doc["written_by"] == "tray"
    assert doc["hosts"]["ws://other:1"] == {"access_mode": "trusted", "x": 1}
    assert list(doc["hosts"]) == ["ws://other:1", URL]
    assert doc["hosts"][URL]["note"] == "office"
    assert doc["hosts"][URL]["capabilities"] == policy.PRESETS[policy.TRUSTED]
    assert doc["hosts"][URL]["updated_at"] == "2027-01-15T08:00:00.000Z"
    assert path.stat().st_mode & 0o777 == 0o600


def test_set_capability_infers_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    assert policy.set_capability(path, URL, "files", "allow").access_mode == policy.CUSTOM
    assert policy.set_capability(path, URL, "screen_input", "ask").access_mode == policy.CUSTOM
    assert policy.set_capability(path, URL, "usb", "ask").access_mode == policy.STRUCTURED
    assert policy.load(path).for_url(URL).access_mode == policy.STRUCTURED
    with pytest.raises(UsageError):
        policy.set_capability(path, URL, "teleport", "allow")
    with pytest.raises(UsageError):
        policy.set_capability(path, URL, "files", "sometimes")
    with pytest.raises(UsageError):
        policy.set_mode(path, "http://nope", policy.TRUSTED)


def test_a_fresh_pairing_writes_ask_every_time_once(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    assert policy.init_paired(path, URL).access_mode == policy.ASK_EVERY_TIME
    policy.set_mode(path, URL, policy.TRUSTED)
    assert policy.init_paired(path, URL + "/").access_mode == policy.TRUSTED
    assert policy.load(path).for_url(URL).access_mode == policy.TRUSTED


@pytest.mark.parametrize("content", ["{ nope", "[1, 2]", '{"version": "two"}', "\xff\xfe"])
def test_an_unparseable_file_is_an_error_and_is_never_overwritten(tmp_path: Path, content: str) -> None:
    path = tmp_path / "p.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(StateCorruptError) as err:
        policy.load(path)
    assert str(path) in err.value.message and "restricted" in (err.value.hint or "")
    with pytest.raises(StateCorruptError):
        policy.set_mode(path, URL, policy.TRUSTED)
    assert path.read_bytes() == content.encode("latin-1")


def test_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"version": 3, "hosts": {}}')
    with pytest.raises(StateVersionError):
        policy.load(path)


def test_missing_or_empty_file_means_no_hosts(tmp_path: Path) -> None:
    assert policy.load(tmp_path / "missing.json").hosts == {}
    (tmp_path / "empty.json").write_text("  \n")
    assert policy.load(tmp_path / "empty.json").hosts == {}


def test_mode_names_from_the_command_line() -> None:
    assert policy.normalize_mode("restricted") == policy.ASK
    assert policy.normalize_mode("standard") == policy.STRUCTURED
    assert policy.normalize_mode("Full-Access") == policy.FULL_ACCESS
    with pytest.raises(UsageError):
        policy.normalize_mode("root")


# -- forget (hermes-relay forget) ------------------------------------------------------------------
def test_forget_removes_only_the_forgotten_hosts_and_keeps_unknown_fields(tmp_path) -> None:
    path = tmp_path / "desktop-host-access.json"
    doc = {"version": 2, "hosts": {"ws://a:8767": {"access_mode": "trusted"}, "WS://B:8767/": {"access_mode": "ask"},
                                   "ws://c:8767": {"access_mode": "structured"}}, "extra": [1]}
    path.write_text(json.dumps(doc))
    assert policy.forget(path, ["ws://a:8767", "ws://b:8767"]) is True  # the same host under another spelling too
    assert json.loads(path.read_text()) == {"version": 2, "hosts": {"ws://c:8767": {"access_mode": "structured"}},
                                            "extra": [1]}
    assert policy.forget(path, ["ws://a:8767"]) is False
    assert policy.forget(tmp_path / "missing.json", ["ws://a:8767"]) is False


def test_forget_leaves_an_unparseable_policy_untouched(tmp_path) -> None:
    path = tmp_path / "desktop-host-access.json"
    path.write_bytes(b'{"version": 2, "hosts": {"ws://a:8767"')
    with pytest.raises(StateError, match="not valid JSON"):
        policy.forget(path, ["ws://a:8767"])
    assert path.read_bytes() == b'{"version": 2, "hosts": {"ws://a:8767"'


@pytest.mark.parametrize("kind", ["fifo", "directory", "huge"])
def test_a_policy_that_is_not_a_small_regular_file_is_refused_without_hanging(tmp_path, kind) -> None:
    path = tmp_path / "desktop-host-access.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        with open(path, "wb") as f:
            f.truncate(fileio.MAX_STATE_BYTES + 1)
    with pytest.raises(StateError, match="not a regular file|more than") as info:
        policy.load(path)
    assert "every relay host is restricted" in (info.value.hint or "")


def test_a_policy_nested_too_deeply_is_a_clear_error_not_a_crash(tmp_path) -> None:
    path = tmp_path / "desktop-host-access.json"
    path.write_text("[" * 100_000)
    with pytest.raises(StateError) as info:
        policy.load(path)
    assert "every relay host is restricted" in (info.value.hint or "")


# -- the consent model: no capability-less tools, workspace confinement, legacy consent -----------
def test_a_tool_without_a_capability_is_denied_everywhere() -> None:
    full = policy.parse({"hosts": {URL: {"access_mode": "full_access"}}})
    assert policy.decide(full, URL, None) == "deny"
    assert policy.decide(policy.parse({}), URL, None) == "deny"


def test_workspace_is_a_confined_preset_and_no_caps_make_it_trusted() -> None:
    parsed = policy.parse({"hosts": {URL: {"access_mode": "workspace"}}})
    host = parsed.for_url(URL)
    assert (host.access_mode, host.confined, host.label) == (policy.WORKSPACE, True, "workspace")
    assert policy.decide(parsed, URL, "commands") == "allow" and policy.decide(parsed, URL, "files") == "allow"
    assert policy.decide(parsed, URL, "camera") == "deny"
    trusted_caps = dict(policy.PRESETS[policy.TRUSTED])
    explicit = policy.parse({"hosts": {URL: {"access_mode": "workspace", "capabilities": trusted_caps}}})
    assert explicit.for_url(URL).access_mode == policy.WORKSPACE and explicit.for_url(URL).confined
    assert not policy.parse({"hosts": {URL: {"access_mode": "trusted"}}}).for_url(URL).confined
    # a "confined" flag beside another mode only ever narrows it
    flagged = policy.parse({"hosts": {URL: {"access_mode": "trusted", "confined": True}}})
    assert flagged.for_url(URL).confined and flagged.for_url(URL).access_mode == policy.WORKSPACE


def test_workspace_survives_capability_edits_and_merges(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    policy.set_mode(path, URL, policy.WORKSPACE)
    edited = policy.set_capability(path, URL, "commands", "ask")
    assert edited.confined and edited.access_mode == policy.WORKSPACE and edited.label == "workspace (custom)"
    back = policy.set_capability(path, URL, "commands", "allow")
    assert back.confined and back.label == "workspace"
    stored = json.loads(path.read_text())["hosts"][URL]
    assert stored["access_mode"] == "workspace" and stored["confined"] is True  # the reference reads it as restricted
    assert policy.load(path).for_url(URL).confined
    merged = policy.parse({"hosts": {URL: {"access_mode": "workspace"}, URL + "/": {"access_mode": "full_access"}}})
    assert merged.for_url(URL).confined and merged.for_url(URL).access_mode == policy.WORKSPACE
    assert merged.for_url(URL).capabilities["screen_input"] == "disabled"
    policy.set_mode(path, URL, policy.TRUSTED)  # only an explicit preset leaves the workspace
    assert not policy.load(path).for_url(URL).confined
    assert "confined" not in json.loads(path.read_text())["hosts"][URL]


def test_inferring_a_mode_never_yields_workspace(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    policy.set_mode(path, URL, policy.TRUSTED)
    for cap in ("screen_input", "usb"):
        host = policy.set_capability(path, URL, cap, "disabled")
    assert host.capabilities == policy.PRESETS[policy.WORKSPACE]
    assert not host.confined and host.access_mode == policy.CUSTOM


def test_always_for_commands_stays_confined(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    policy.set_mode(path, URL, policy.WORKSPACE)
    policy.set_capability(path, URL, "commands", "ask")
    assert policy.allow_always(path, URL, "commands").confined
    assert policy.load(path).for_url(URL).access_mode == policy.WORKSPACE
    # on an unconfined host, "always" allows commands only inside the workspace sandbox
    policy.set_mode(path, URL, policy.ASK_EVERY_TIME)
    host = policy.allow_always(path, URL, "commands")
    assert host.confined and host.capabilities["commands"] == "allow" and host.capabilities["files"] == "ask"
    policy.set_mode(path, URL, policy.ASK_EVERY_TIME)
    files = policy.allow_always(path, URL, "files")  # files are confined to roots in every mode below full access
    assert not files.confined and files.capabilities["files"] == "allow"


def test_legacy_consent_lifts_only_a_host_without_a_record() -> None:
    assert policy.parse({}).for_url(URL, legacy_consented=True).access_mode == policy.TRUSTED
    assert policy.parse({}).for_url(URL, legacy_consented=True).legacy
    assert policy.decide(policy.parse({}), URL, "commands", legacy_consented=True) == "allow"
    for mode in ("ask", "workspace", "structured", "ask_every_time"):
        parsed = policy.parse({"hosts": {URL: {"access_mode": mode}}})
        assert parsed.for_url(URL, legacy_consented=True) == parsed.for_url(URL)
        assert policy.decide(parsed, URL, "commands", legacy_consented=True) != "allow" or mode == "workspace"
    assert policy.parse({}).for_url(URL, legacy_consented=True).label == "trusted (legacy consent)"
