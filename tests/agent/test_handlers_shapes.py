"""What the agent makes of the two relays' answers before the CLI sees them."""

from __future__ import annotations

from hermes_relay.agent.devices import patched_session as _patched_session


def test_a_patch_answer_is_read_in_the_reference_relays_flat_shape_and_in_ours() -> None:
    flat = {"ok": True, "token_prefix": "abcd1234", "expires_at": 1_800_000_000.0, "grants": {"chat": None}}
    nested = {"ok": True, "session": {"token_prefix": "abcd1234", "expires_at": 1_800_000_000.0,
                                      "grants": {"chat": None}, "device_name": "vm"}}
    assert _patched_session(flat)["expires_at"] == 1_800_000_000.0
    assert _patched_session(flat)["token_prefix"] == "abcd1234"
    assert _patched_session(nested)["device_name"] == "vm"
    assert _patched_session(nested)["expires_at"] == 1_800_000_000.0
