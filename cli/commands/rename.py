"""``hermes-relay rename URL NAME``: name a relay (the same as ``hermes-relay hosts rename``)."""

from __future__ import annotations

from hermes_relay.cli.commands.hosts import register_rename as register
from hermes_relay.cli.commands.hosts import run

__all__ = ["register", "run"]
