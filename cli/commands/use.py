"""``hermes-relay use URL|NAME``: the default relay (the same as ``hermes-relay hosts use``)."""

from __future__ import annotations

from .hosts import register_use as register
from .hosts import run

__all__ = ["register", "run"]
