"""Refused connections in the log: the reason, and a count instead of a flood."""

import signal

from forkchat import admission
from tests.conftest import TEST_LIMITS
from tests.support.ircclient import IrcTestClient

PEER = "192.0.2.7"
WHY = admission.TOO_MANY_FROM_ADDRESS


def test_the_first_refusal_is_logged_with_its_reason_the_rest_counted():
    refusals = admission.RefusalLog(window_s=10.0)
    assert refusals.refused(PEER, WHY, 100.0) == [f"refused connection from {PEER}: {WHY}"]
    assert all(refusals.refused(PEER, WHY, 100.0 + i / 100) == [] for i in range(298))
    assert refusals.next_due() == 110.0
    assert refusals.expire(109.9) == []
    assert refusals.expire(110.0) == [f"refused 298 more connections from {PEER} in 10 s ({WHY})"]
    assert refusals.next_due() is None


def test_the_next_first_refusal_brings_the_count_of_the_window_before():
    refusals = admission.RefusalLog(window_s=10.0)
    refusals.refused(PEER, WHY, 0.0)
    refusals.refused(PEER, WHY, 5.0)
    assert refusals.refused(PEER, WHY, 10.0) == [
        f"refused 1 more connection from {PEER} in 10 s ({WHY})",
        f"refused connection from {PEER}: {WHY}"]


def test_addresses_and_reasons_are_counted_apart_and_a_lone_refusal_has_no_summary():
    refusals = admission.RefusalLog(window_s=10.0)
    assert refusals.refused(PEER, WHY, 0.0)
    assert refusals.refused("198.51.100.1", WHY, 1.0)
    assert refusals.refused(PEER, admission.TOO_FAST, 2.0)
    refusals.refused(PEER, admission.TOO_FAST, 3.0)
    assert refusals.expire(11.0) == []          # the first two ended without repeats
    assert refusals.flush() == [
        f"refused 1 more connection from {PEER} in 10 s ({admission.TOO_FAST})"]
    assert refusals.windows == {}


def test_a_flood_of_refusals_costs_two_lines(make_server):
    flood = 30
    server = make_server(config_text=TEST_LIMITS + "max_clients_per_ip = 1\n")
    alice = IrcTestClient(server.port)
    alice.register("alice")
    for _ in range(flood):
        refused = IrcTestClient(server.port)
        assert WHY in refused.expect_closed(timeout=5)[-1].params[-1]
        refused.close()
    server.signal(signal.SIGTERM)      # the count of an open window comes at the stop
    assert server.proc.wait(10) == 0
    lines = [line for line in server.log_text().splitlines() if "refused" in line]
    assert len(lines) == 2, lines
    assert lines[0].endswith(f"WARNING refused connection from 127.0.0.1: {WHY}"), lines
    assert lines[1].endswith(f"WARNING refused {flood - 1} more connections from 127.0.0.1 "
                             f"in 10 s ({WHY})"), lines
    alice.close()


# The supervisor's window, lowered from 10 s in the server's own process,
# so that the count at the window's end is waited for 2 s, not 10.
SHORT_WINDOW_S = 2
SHORT_WINDOW = f"from forkchat import admission\nadmission.REFUSAL_WINDOW_S = {SHORT_WINDOW_S}.0"


def test_the_count_comes_when_the_window_ends(make_server):
    server = make_server(config_text=TEST_LIMITS + "max_clients_per_ip = 1\n",
                         prelude=SHORT_WINDOW)
    alice = IrcTestClient(server.port)
    alice.register("alice")
    for _ in range(3):
        refused = IrcTestClient(server.port)
        refused.expect_closed(timeout=5)
        refused.close()
    line = server.wait_for_text("more connections from 127.0.0.1",
                                timeout=SHORT_WINDOW_S + 10)
    assert line.endswith(f"refused 2 more connections from 127.0.0.1 "
                         f"in {SHORT_WINDOW_S} s ({WHY})"), line
    alice.close()
