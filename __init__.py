"""hermes-relay: pair a computer with a Hermes relay and keep it connected."""

__version__ = "0.1.0"
