"""Every process of a server under the journal names its own role and pid
in its lines, at the level of the configuration it was started with: a
child keeps the handler inherited from its parent and only names its role
(log.setup), so a worker forked after a reload, and a broker restarted
after a crash, must still say who they are and keep to the new level."""

import os
import re
import signal
import time

from tests.conftest import TEST_LIMITS
from tests.support.ircclient import IrcTestClient
from tests.support.server import broker_pid, spawner_pid

# Run in the server's process before main: its standard error (the test's
# pipe) stands for the journal's stream, as systemd's JOURNAL_STREAM says.
UNDER_JOURNAL = ("import os\nstat = os.fstat(2)\n"
                 "os.environ['JOURNAL_STREAM'] = f'{stat.st_dev}:{stat.st_ino}'")
CONFIG = TEST_LIMITS + '[server]\nmotd = "{motd}"\n[log]\nlevel = "{level}"\n'
JOURNAL_LINE = re.compile(r"<(\d)>(supervisor|broker|spawner|worker)\[(\d+)\]: (.*)")


def lines_of(server, start: int = 0) -> list[re.Match]:
    """The log's lines from line `start` on, each taken apart."""
    lines = server.log_text().splitlines()[start:]
    found = [JOURNAL_LINE.fullmatch(line) for line in lines]
    assert all(found), [line for line in lines if not JOURNAL_LINE.fullmatch(line)]
    return found


def wait_for_motd(client: IrcTestClient, motd: str, timeout: float = 10.0) -> None:
    """Until the broker has the reloaded configuration (sent to it after
    the new spawner was forked, so a connection made next is that one's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.send("MOTD")
        if client.expect("372").params[-1] == f"- {motd}":
            return
        time.sleep(0.05)
    raise AssertionError(f"the MOTD never became {motd!r}")


def test_each_role_names_itself_at_its_level_after_a_reload_and_a_broker_crash(make_server):
    server = make_server(config_text=CONFIG.format(motd="before", level="info"),
                         prelude=UNDER_JOURNAL)
    broker, spawner = broker_pid(server), spawner_pid(server)
    first = IrcTestClient(server.port)
    first.register("first")
    server.wait_for_text("conn 1 registered as first!")
    at_info = lines_of(server)
    started = {(m.group(2), int(m.group(3))) for m in at_info}
    workers = {pid for role, pid in started if role == "worker"}
    assert {("supervisor", server.pid), ("broker", broker), ("worker", next(iter(workers)))} \
        <= started and len(workers) == 1
    assert workers.isdisjoint({server.pid, broker, spawner})
    assert [m.group(4) for m in at_info].count("conn 1 from 127.0.0.1 (irc)") == 1
    assert all(m.group(1) == "6" for m in at_info if m.group(4).startswith("conn 1 "))

    server.write_config(CONFIG.format(motd="after", level="warning"))
    mark = server.log_length()
    server.signal(signal.SIGHUP)
    wait_for_motd(first, "after")
    second = IrcTestClient(server.port)
    second.register("second")
    os.kill(broker, signal.SIGKILL)
    server.wait_for_text("conn 2: broker link lost", start=mark)
    server.wait_for_text("conn 1: broker link lost", start=mark)
    server.wait_for_text("restarting the broker", start=mark)
    # (the first worker, at level info, says so once the new broker is ready)
    server.wait_for_text("conn 1: reconnected to the broker", start=mark, timeout=15)
    after = lines_of(server, mark)
    # the first worker keeps the level it was started with (forkchat.toml(5))
    assert all(int(m.group(1)) <= 4 for m in after if int(m.group(3)) not in workers), \
        [m.group(0) for m in after]
    lost = {m.group(4).split(":")[0]: (m.group(2), int(m.group(3)))
            for m in after if "broker link lost" in m.group(4)}
    assert lost["conn 1"] == ("worker", next(iter(workers)))
    role, pid = lost["conn 2"]
    assert role == "worker" and pid not in workers | {server.pid, broker, spawner}
    assert [(m.group(2), int(m.group(3))) for m in after
            if m.group(4) == "restarting the broker"] == [("supervisor", server.pid)]
    assert len([m for m in after if "conn 2: broker link lost" in m.group(4)]) == 1
    first.close()
    second.close()
