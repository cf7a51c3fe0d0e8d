"""LUSERS's highest user count (265, 266) survives a broker's death.

The broker counts the users; the supervisor, which outlives it, keeps the
highest count the broker reached and gives it to the next broker, as it
keeps the highest flood limits (forkchat(7)).
"""

import os
import signal

from tests.support.ircclient import IrcTestClient
from tests.support.server import broker_pid


def lusers_counts(client: IrcTestClient) -> tuple[str, str]:
    """(current, max) of the 265 line a LUSERS is answered with."""
    client.send("LUSERS")
    msg = client.expect("265", 15)
    return msg.params[1], msg.params[2]


def test_the_highest_user_count_outlives_a_kill_9_of_the_broker(make_server):
    """After a broker crash the max was whatever had re-registered since:
    three users had been on at once, two had left, and LUSERS said max 1."""
    server = make_server()
    stay = IrcTestClient(server.port)
    stay.register("stay")
    leaving = [IrcTestClient(server.port) for _ in range(2)]
    for number, client in enumerate(leaving):
        client.register(f"gone{number}")
    for client in leaving:
        client.send("QUIT :bye")
        client.expect_closed()
        client.close()
    assert lusers_counts(stay) == ("1", "3")
    first = broker_pid(server)
    mark = server.log_length()
    os.kill(first, signal.SIGKILL)
    assert broker_pid(server, after=mark) != first
    server.wait_for_text("recovery done", start=mark)
    assert lusers_counts(stay) == ("1", "3")
    stay.close()
