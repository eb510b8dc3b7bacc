from hermes_relay.relay.main import entry

entry()
