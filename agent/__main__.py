from hermes_relay.agent.main import entry

entry()
