"""memory_merge = true: every worker's memory is offered to same-page merging.

Whether the kernel then merges anything depends on /sys/kernel/mm/ksm/run,
which is the machine's, not the test's: the tests check the opt-in each
worker carries (/proc/PID/ksm_stat) and the log line that tells the
operator which case applies.
"""

import signal

import pytest

from forkchat import children
from tests.conftest import TEST_LIMITS
from tests.support.ircclient import IrcTestClient
from tests.support.server import worker_pid


def merge_any(pid: int) -> str:
    """The ksm_merge_any field of a process: "yes" or "no"."""
    try:
        with open(f"/proc/{pid}/ksm_stat") as stat:
            for line in stat:
                if line.startswith("ksm_merge_any:"):
                    return line.split()[1]
    except FileNotFoundError:
        pass
    pytest.skip("this kernel shows no ksm_merge_any in /proc/PID/ksm_stat (Linux < 6.8)")


def registered_worker(server, nick: str) -> tuple[IrcTestClient, int]:
    client = IrcTestClient(server.port)
    client.register(nick)
    return client, worker_pid(server, nick)


def test_memory_merge_offers_every_worker_and_says_so(make_server):
    server = make_server(config_text="[server]\nmemory_merge = true\n" + TEST_LIMITS)
    expected = ("offered to same-page merging" if children.ksm_running()
                else "same-page merging is not running")
    assert "memory_merge" in server.wait_for_text(expected)
    clients = [registered_worker(server, nick) for nick in ("alice", "bob")]
    assert [merge_any(pid) for _, pid in clients] == ["yes", "yes"]
    for client, _ in clients:
        client.close()


def test_workers_are_not_offered_by_default(make_server):
    server = make_server()
    client, pid = registered_worker(server, "carol")
    assert merge_any(pid) == "no"
    assert "memory_merge" not in server.log_text()
    client.close()


def test_a_reload_applies_memory_merge_to_new_connections_only(make_server):
    """forkchat.toml(5): memory_merge takes effect for new connections, through
    the new spawner a reload starts; workers already running keep theirs."""
    server = make_server()
    before, old_pid = registered_worker(server, "dora")
    server.write_config("[server]\nmemory_merge = true\n" + TEST_LIMITS)
    mark = server.log_length()
    server.signal(signal.SIGHUP)
    server.wait_for_text("configuration reloaded", start=mark)
    server.wait_for_text("memory_merge", start=mark)      # the new spawner says it
    after, new_pid = registered_worker(server, "eve")
    assert (merge_any(old_pid), merge_any(new_pid)) == ("no", "yes")
    before.close()
    after.close()
