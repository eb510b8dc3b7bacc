from hermes_relay.cli.main import entry

entry()
