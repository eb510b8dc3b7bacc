"""core/knobs.py: every test switch in one table, parsed once; bad values configure nothing."""

from __future__ import annotations

import threading

from hermes_relay.core import knobs


def test_every_knob_is_in_the_table_once_with_a_meaning() -> None:
    names = [k.name for k in knobs.KNOBS]
    assert len(names) == len(set(names))
    assert all(k.name.startswith("HERMES_RELAY_") and k.meaning for k in knobs.KNOBS)
    assert knobs.REGISTRY[knobs.KILL_AT.name] is knobs.KILL_AT
    assert all(k.test_only for k in knobs.AGENT)  # the agent's knobs are all fault injection for tests


def test_parse_reads_each_knob_and_keeps_only_the_set_ones_for_display() -> None:
    parsed = knobs.parse_agent({"HERMES_RELAY_TEST_KILL_AT": "pair.kept", "HERMES_RELAY_TEST_STORE_WRITE_FAULTS": "2",
                                "HERMES_RELAY_DESKTOP_DEADLINE": "2.5", "HOME": "/home/x"})
    assert (parsed.kill_at, parsed.store_write_faults, parsed.desktop_deadline) == ("pair.kept", 2, 2.5)
    assert parsed.shown() == {"HERMES_RELAY_TEST_KILL_AT": "pair.kept", "HERMES_RELAY_TEST_STORE_WRITE_FAULTS": "2",
                              "HERMES_RELAY_DESKTOP_DEADLINE": "2.5"}
    assert [k.name for k in parsed.knobs.set()] == sorted(parsed.shown())
    lines = knobs.describe(parsed.knobs)
    assert len(lines) == 3 and any(line.startswith("knob=TEST_KILL_AT value='pair.kept' test_only=yes (")
                                   for line in lines)


def test_nothing_set_is_the_default_and_bad_values_configure_nothing() -> None:
    assert knobs.parse_agent({}) == knobs.AgentKnobs()
    assert knobs.parse_agent({}).shown() == {} and knobs.describe(knobs.Knobs()) == []
    assert knobs.read({"HERMES_RELAY_TEST_KILL_AT": ""}, knobs.AGENT) == knobs.Knobs()  # empty is unset
    bad = knobs.parse_agent({"HERMES_RELAY_TEST_STORE_WRITE_FAULTS": "many", "HERMES_RELAY_DESKTOP_DEADLINE": "soon"})
    assert (bad.store_write_faults, bad.desktop_deadline) == (0, None)
    assert knobs.parse_agent({"HERMES_RELAY_DESKTOP_DEADLINE": "-3"}).desktop_deadline is None
    assert set(bad.shown()) == {"HERMES_RELAY_TEST_STORE_WRITE_FAULTS", "HERMES_RELAY_DESKTOP_DEADLINE"}


def test_a_countdown_fires_exactly_n_times_across_threads() -> None:
    countdown = knobs.Countdown(50)
    fired: list[bool] = []

    def use() -> None:
        for _ in range(20):
            fired.append(countdown.fire())

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fired.count(True) == 50 and countdown.left == 0
    assert knobs.Countdown(-1).fire() is False
