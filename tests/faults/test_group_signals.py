"""SIGHUP and SIGUSR1 sent to every process of the server (`systemctl kill -s
HUP`, which signals the whole unit, `pkill -HUP forkchat`, a terminal hangup)
act once, in the supervisor: no child dies of them, and no client is dropped."""

import os
import signal

import pytest

from tests.conftest import TEST_LIMITS
from tests.support.ircclient import IrcTestClient


@pytest.mark.parametrize(("signum", "logged"), [(signal.SIGHUP, "configuration reloaded"),
                                                (signal.SIGUSR1, "status:")])
def test_a_signal_to_the_whole_group_drops_nobody(make_server, signum, logged):
    server = make_server(config_text=TEST_LIMITS)
    alice, bob = IrcTestClient(server.port), IrcTestClient(server.port)
    alice.register("alice")
    bob.register("bob")
    alice.join("#keep")
    bob.join("#keep")
    alice.expect(lambda m: m.command == "JOIN" and m.prefix.startswith("bob!"))
    mark = server.log_length()
    os.killpg(server.pid, signum)
    server.wait_for_text(logged, start=mark)
    bob.send("PRIVMSG #keep :still here")
    assert alice.expect("PRIVMSG").params == ["#keep", "still here"]
    since = "\n".join(server.log_text().splitlines()[mark:])
    assert "killed by signal" not in since, since
    alice.close()
    bob.close()
