"""The spawner forks workers; its death or a reload costs no client anything."""

import os
import signal

import psutil

from tests.conftest import TEST_LIMITS
from tests.support.ircclient import IrcTestClient
from tests.support.server import broker_pid, spawner_pid, worker_pid

PER_IP = 3
CONFIG = TEST_LIMITS + f"max_clients_per_ip = {PER_IP}\n"


def test_kill_9_spawner_keeps_clients_and_accounts_for_its_orphans(make_server, registered):
    server = make_server(config_text=CONFIG)
    alice = IrcTestClient(server.port)
    alice.register("alice")
    bob = IrcTestClient(server.port)
    bob.register("bob")
    for client in (alice, bob):
        client.join("#room")
    alice.expect(lambda m: m.command == "JOIN" and m.prefix.startswith("bob!"))
    first = spawner_pid(server)
    assert psutil.Process(worker_pid(server, "bob")).ppid() == first
    mark = server.log_length()
    os.kill(first, signal.SIGKILL)
    second = spawner_pid(server, after=mark)
    assert second != first

    # the clients it forked talk on, and their workers are now the supervisor's
    bob.send("PRIVMSG #room :still here")
    assert alice.expect("PRIVMSG").params == ["#room", "still here"]
    assert psutil.Process(worker_pid(server, "bob")).ppid() == server.pid

    # a newcomer is forked by the new spawner
    carol = IrcTestClient(server.port)
    carol.register("carol")
    assert psutil.Process(worker_pid(server, "carol")).ppid() == second

    # an orphan's death is seen, logged and frees its per-address slot
    mark = server.log_length()
    os.kill(worker_pid(server, "bob"), signal.SIGKILL)
    assert alice.expect("QUIT").prefix.startswith("bob!")
    assert "worker for conn" in server.wait_for_text("killed by SIGKILL", start=mark)
    dave = IrcTestClient(server.port)
    dave.register("dave")            # the third of PER_IP: bob's slot was given back
    for client in (alice, bob, carol, dave):
        client.close()


def log_since(server, mark):
    return "\n".join(server.log_text().splitlines()[mark:])


def supervisor_spawners(server):
    """The pids of the spawners among the supervisor's own children."""
    return sorted(p.pid for p in psutil.Process(server.pid).children()
                  if p.name() == "forkchat-spawn")


def test_reload_starts_a_new_spawner_and_the_old_one_retires(make_server):
    """A retired spawner exits at once, not after its last worker: each
    reload with long-lived clients connected left one more (~3 MiB) behind.
    Its workers become the supervisor's, counted and reported as before."""
    server = make_server(config_text=CONFIG, env={"FORKCHAT_TEST_HOOKS": "1"})
    alice = IrcTestClient(server.port)
    alice.register("alice")
    bob = IrcTestClient(server.port)
    bob.register("bob")
    for client in (alice, bob):
        client.join("#room")
    alice.expect(lambda m: m.command == "JOIN" and m.prefix.startswith("bob!"))
    retired = [psutil.Process(spawner_pid(server))]
    mark = server.log_length()
    for _ in range(3):
        reloaded = server.log_length()
        server.signal(signal.SIGHUP)
        new = spawner_pid(server, after=reloaded)
        server.wait_for_text("configuration reloaded", start=reloaded)
        retired.append(psutil.Process(new))
    retired.pop()
    gone, alive = psutil.wait_procs(retired, timeout=10)
    assert not alive, "a retired spawner waits for workers it no longer needs"
    assert supervisor_spawners(server) == [new]
    for nick in ("alice", "bob"):
        assert psutil.Process(worker_pid(server, nick)).ppid() == server.pid

    # the old clients chat on; a newcomer is the new spawner's
    bob.send("PRIVMSG #room :still here")
    assert alice.expect("PRIVMSG").params == ["#room", "still here"]
    carol = IrcTestClient(server.port)
    carol.register("carol")
    assert psutil.Process(worker_pid(server, "carol")).ppid() == new

    # an adopted worker that crashes is reported as one of a live spawner's
    bob.send("CRASH")
    assert alice.expect("QUIT").prefix.startswith("bob!")
    line = server.wait_for_text("exited with status 70", start=mark)
    assert "worker for conn" in line
    assert "RuntimeError: crash requested by the test suite" in log_since(server, mark)
    alice.send("QUIT :bye")
    alice.expect_closed()
    keep = {broker_pid(server), new, worker_pid(server, "carol")}
    assert server.settle_children(keep, 10) == []
    log = log_since(server, mark)
    for alarm in ("retired spawner", "spawner was killed", "restarting the spawner",
                  "died while starting", "unreported worker", "cannot watch"):
        assert alarm not in log, log
    # the status report counts the supervisor, the broker, one spawner, carol's worker
    mark = server.log_length()
    server.signal(signal.SIGUSR1)
    assert "status: processes 4 workers 1" in server.wait_for_text("status: processes",
                                                                   start=mark)
    carol.close()


def test_stop_ends_every_spawner_and_their_workers(make_server):
    server = make_server(config_text=CONFIG)
    alice = IrcTestClient(server.port)
    alice.register("alice")
    retired = psutil.Process(spawner_pid(server))
    mark = server.log_length()
    server.signal(signal.SIGHUP)
    spawner_pid(server, after=mark)
    # it exits when told to retire, not after alice's worker: gone and reaped
    gone, alive = psutil.wait_procs([retired], timeout=10)
    assert not alive, "a retired spawner waits for workers it no longer needs"
    bob = IrcTestClient(server.port)
    bob.register("bob")
    kids = server.descendants()
    # the retired spawner is gone; alice's worker is the supervisor's now
    assert sum(1 for p in kids if p.name() == "forkchat-spawn") == 1
    assert psutil.Process(worker_pid(server, "alice")).ppid() == server.pid
    server.signal(signal.SIGTERM)
    for client in (alice, bob):       # each worker was told, and said goodbye
        assert client.expect_closed(timeout=5)[-1].command == "ERROR"
    assert server.proc.wait(10) == 0
    gone, alive = psutil.wait_procs(kids, timeout=2)
    assert not alive
    assert "did not stop" not in server.log_text()


def test_sigterm_to_the_whole_group_is_a_clean_stop(make_server):
    """As `timeout` or `kill -- -PGID` do: only the supervisor acts on it."""
    server = make_server(config_text=CONFIG)
    alice = IrcTestClient(server.port)
    alice.register("alice")
    kids = server.descendants()
    os.killpg(server.pid, signal.SIGTERM)
    assert alice.expect_closed(timeout=5)[-1].command == "ERROR"
    assert server.proc.wait(10) == 0
    log = server.log_text()
    assert "spawner was killed" not in log and "restarting the spawner" not in log, log
    gone, alive = psutil.wait_procs(kids, timeout=2)
    assert not alive
    alice.close()


def test_the_spawner_leaves_sigterm_to_the_supervisor(make_server):
    server = make_server(config_text=CONFIG)
    spawner = spawner_pid(server)
    alice = IrcTestClient(server.port)      # the spawner is past its start-up
    alice.register("alice")
    os.kill(spawner, signal.SIGTERM)
    bob = IrcTestClient(server.port)        # served after the signal was delivered
    bob.register("bob")
    assert psutil.Process(worker_pid(server, "bob")).ppid() == spawner
    assert "spawner was killed" not in server.log_text()
    alice.close()
    bob.close()


def test_connections_waiting_on_a_dead_spawner_go_to_the_next_one(make_server):
    """Nothing already accepted is lost: a stopped spawner is handed
    connections it never reads, then killed; a new one starts them all."""
    waiting = 12
    server = make_server(config_text=TEST_LIMITS + f"max_clients_per_ip = {waiting}\n")
    first = spawner_pid(server)
    os.kill(first, signal.SIGSTOP)
    clients = [IrcTestClient(server.port) for _ in range(waiting)]
    for index, client in enumerate(clients):
        client.send(f"NICK w{index}")
        client.send(f"USER w{index} 0 * :waiting")
    while True:       # until the supervisor has admitted and handed on every one
        mark = server.log_length()
        server.signal(signal.SIGUSR1)
        if f"({waiting} workers)" in server.wait_for_text("status: ", start=mark):
            break
    mark = server.log_length()
    os.kill(first, signal.SIGKILL)
    assert spawner_pid(server, after=mark) != first
    for index, client in enumerate(clients):
        assert client.expect("001").params[0] == f"w{index}"
    assert "died while starting" not in server.log_text()
    for client in clients:
        client.close()
