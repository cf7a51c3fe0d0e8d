"""At the descriptor limit (RLIMIT_NOFILE) the server waits, quietly, and recovers."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest

from forkchat import supervisor
from tests.support.ircclient import IrcTestClient
from tests.support.server import ServerProcess, broker_pid

pytestmark = pytest.mark.timeout(90)

# Low enough that the broker (one descriptor per client) runs out after a
# dozen clients, before the supervisor or a worker does.
NOFILE = 26
LIMITED = ("import os, resource, sys; "
           f"resource.setrlimit(resource.RLIMIT_NOFILE, ({NOFILE}, {NOFILE})); "
           "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")


# As root, the server stays root (allow_root) rather than become 'nobody':
# the kernel refuses to pass a descriptor over a Unix socket (ETOOMANYREFS)
# while the sending user has more than its RLIMIT_NOFILE (26 here) in
# flight, counted over all of that user's processes, and every other test
# or bench server on a busy machine runs as 'nobody' too.  The supervisor
# then refused our first client ('cannot pass conn 1 ... to the spawner')
# and the broker never reached its limit.  Root (CAP_SYS_RESOURCE) is not
# held to that count; RLIMIT_NOFILE binds it as it binds anyone.
CONFIG = (("[server]\nallow_root = true\n" if os.geteuid() == 0 else "")
          + "[limits]\nflood_burst = 1000\n")


class LimitedServer(ServerProcess):
    """The real server, started with a low descriptor limit (soft and hard)."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", LIMITED, *super().command()[1:]]


def registers(server: ServerProcess, client: IrcTestClient, nick: str) -> bool:
    """Whether `client` registers within 5 s, or within 1.5 s once the broker
    has logged that it could not accept a link (it retries every 0.5 s):
    the stuck client no longer costs the whole 5 s once the broker says why."""
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :Test {nick}")
    started = time.monotonic()
    while time.monotonic() < started + 5:
        try:
            client.expect(lambda m: m.command in ("376", "422"), 0.25)
            return True
        except AssertionError:
            if (time.monotonic() >= started + 1.5
                    and "accept on broker socket failed" in server.log_text()):
                return False
    return False


def fill_the_broker(server: ServerProcess, clients: list[IrcTestClient]) -> IrcTestClient:
    """Register clients until the broker cannot take one's link; that
    client (its worker's link waits in the queue) is returned."""
    for number in range(3 * NOFILE):
        client = IrcTestClient(server.port)
        clients.append(client)
        if not registers(server, client, f"fd{number}"):
            server.wait_for_text("accept on broker socket failed")
            return client
    raise AssertionError("the broker never ran out of descriptors")


def test_the_broker_out_of_descriptors_logs_once_and_takes_the_link_once_one_frees():
    """accept() failing with EMFILE left the link queued and the listener
    readable: the broker spun at full CPU and logged the failure on every
    turn (300,000 lines in 5 s) until a client left."""
    server = LimitedServer(config_text=CONFIG).start()
    clients: list[IrcTestClient] = []
    try:
        stuck = fill_the_broker(server, clients)
        clients.pop(0).close()
        clients.pop(0).close()
        stuck.expect(lambda m: m.command in ("376", "422"), timeout=10)
        server.wait_for_text("accepting broker links again")
        assert server.log_text().count("accept on broker socket failed") == 1
        # the link taken with the last descriptor is checked (/proc) all the same
        assert "refused broker link" not in server.log_text()
    finally:
        for client in clients:
            client.close()
        server.stop()


def test_the_link_taken_with_the_one_descriptor_freed_is_no_second_failure():
    """accept() takes a descriptor before it looks at the queue: the
    waiting link, taken with the one descriptor a leaving client freed,
    left none, and the next accept() of the same turn failed with EMFILE
    on an empty queue, logged as a second failure right after 'accepting
    broker links again' (the test above, when the two clients' links
    closed half a second apart on a busy machine)."""
    server = LimitedServer(config_text=CONFIG).start()
    clients: list[IrcTestClient] = []
    try:
        stuck = fill_the_broker(server, clients)
        clients.pop(0).close()
        stuck.expect(lambda m: m.command in ("376", "422"), timeout=10)
        server.wait_for_text("accepting broker links again")
        stuck.send("PING :settled")           # a turn of the broker's loop since
        stuck.expect("PONG")
        assert server.log_text().count("accept on broker socket failed") == 1
    finally:
        for client in clients:
            client.close()
        server.stop()


def _descriptors(pid: int) -> list[str]:
    """What each of a process's descriptors is ('socket:[..]', 'anon_inode:[pidfd]'),
    but a file of /proc open for a moment (the supervisor's memory census)."""
    folder = f"/proc/{pid}/fd"
    found = []
    for name in os.listdir(folder):
        try:
            found.append(os.readlink(os.path.join(folder, name)))
        except FileNotFoundError:       # closed meanwhile
            pass
    return [what for what in found if not what.startswith("/proc/")]


def test_the_descriptors_the_limit_warning_reserves_cover_what_the_server_holds():
    """The warning at start (supervisor.warn_os_limits) reserves, beside
    one descriptor per client, BROKER_OWN_FDS for the broker and
    SUPERVISOR_OWN_FDS and one per listener for the supervisor, which
    holds a pidfd for each worker after a reload.  Counted on the real
    server, 2 listeners and 10 clients, after a reload once the retired
    spawner is gone (its two descriptors are among SUPERVISOR_OWN_FDS): a
    descriptor added to either process and not to its reservation fails
    here, where it would make the warning say nothing of a limit that
    stops clients."""
    server = ServerProcess(config_text="[limits]\nflood_burst = 1000\n",
                           listen=["127.0.0.1:0"] * 2).start()
    clients: list[IrcTestClient] = []
    try:        # (a connect failing before it left the server running)
        for number in range(10):
            clients.append(IrcTestClient(server.port))
            clients[-1].register(f"fd{number}")
        broker = broker_pid(server)
        assert len(_descriptors(broker)) <= supervisor.BROKER_OWN_FDS + len(clients)
        mark = server.log_length()
        server.signal(signal.SIGHUP)
        server.wait_for_text("configuration reloaded", start=mark)
        # the broker's and the new spawner's pidfds, and one per worker adopted
        deadline = time.monotonic() + 10
        while _descriptors(server.pid).count("anon_inode:[pidfd]") < 2 + len(clients):
            assert time.monotonic() < deadline, "the retired spawner's workers were not adopted"
            select.select([], [], [], 0.05)      # bounded poll of /proc
        retired_spawner_fds = 2
        assert len(_descriptors(server.pid)) <= \
            supervisor.SUPERVISOR_OWN_FDS - retired_spawner_fds + 2 + len(clients)
        assert len(_descriptors(broker)) <= supervisor.BROKER_OWN_FDS + len(clients)
    finally:
        for client in clients:
            client.close()
        server.stop()


@pytest.mark.parametrize("nofile", [5, 6, 8, 9, 10, 11, 12, 13, 14])
def test_a_start_with_a_handful_of_descriptors_says_so_in_one_line(nofile, tmp_path):
    """With a descriptor limit of a few (5 to 9: fewer, and Python cannot
    import what it runs), the start ran out in the supervisor's own set-up
    (its broker socket, the lifeline pipe, the signal socket pair) and died
    with a traceback; it says why in one line and exits 1.  A few more (10
    to 14) and the broker's or the spawner's fork ran out: "cannot start
    the broker: Too many open files" was followed by "cannot start the
    broker" again, without the reason."""
    limited = ("import os, resource, sys; "
               f"resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile})); "
               "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")
    config = tmp_path / "forkchat.toml"
    config.write_text(CONFIG)
    done = subprocess.run(
        [sys.executable, "-c", limited, "-m", "forkchat", "-c", str(config),
         "-l", "127.0.0.1:0", "--state-dir", str(tmp_path)],
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line.split(" ERROR ", 1)[-1].removeprefix("forkchat-server: ")
              for line in done.stderr.splitlines()
              if " ERROR " in line or line.startswith("forkchat-server: ")]
    wanted = ("cannot start:",) if nofile < 10 else ("cannot start the broker:",
                                                     "cannot start a spawner:")
    assert len(errors) == 1 and errors[0].startswith(wanted), done.stderr
    assert errors[0].endswith(": Too many open files"), done.stderr
