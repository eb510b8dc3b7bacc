"""``python -m hermes_relay.cli``: the same as the ``hermes-relay`` console script."""

from .main import entry

if __name__ == "__main__":
    entry()
