"""``hermes-relay rename URL NAME``: name a relay (the same as ``hermes-relay hosts rename``)."""

from __future__ import annotations

from .hosts import register_rename as register
from .hosts import run

__all__ = ["register", "run"]
