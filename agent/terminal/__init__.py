"""The agent's side of ``hermes-relay shell`` (docs/shell-protocol.md): terminal sessions on the relay
link that outlive connections.

- ledger.py: the input marks (acked ≤ sent ≤ typed), chunking and in-doubt accounting (pure);
- wire.py: the ``terminal`` channel's envelopes, and the shell's options (the ``shell.open`` params);
- outbox.py: the ordered, bounded stream of notifies toward the CLI;
- session.py: one TerminalSession per (relay, session name): the state machine and its tasks, with
  states.py (its states, the relay kinds), input_flow.py (the keys toward the relay: acks, marks, in-doubt
  ranges) and relay_inbound.py (each relay message, with the offset re-basing) as its parts;
- service.py: the sessions of every relay, one ``serve_link`` per connection, ``open``/``list``/``kill``;
- ports.py: the seams (what a connection gives the terminal service), so nothing imports back.
"""
