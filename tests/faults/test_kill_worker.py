"""A worker's death costs only its own client."""

import os
import signal

import psutil

from tests.support.ircclient import IrcTestClient
from tests.support.server import worker_pid


def test_kill_9_worker_frees_nick_and_tells_the_room(server, registered):
    alice = registered("alice")
    bob = registered("bob")
    alice.join("#room")
    bob.join("#room")
    alice.expect("JOIN")
    os.kill(worker_pid(server, "bob"), signal.SIGKILL)
    quit_msg = alice.expect("QUIT")
    assert quit_msg.prefix.startswith("bob!") and quit_msg.params == ["Connection closed"]
    again = IrcTestClient(server.port)
    again.register("bob")
    again.join("#room")
    alice.expect("JOIN")
    alice.send("PRIVMSG #room :still here")
    assert again.expect("PRIVMSG").params == ["#room", "still here"]
    again.close()
    assert "worker for conn" in server.wait_for_text("killed by SIGKILL")


def test_worker_exception_is_logged_and_isolated(make_server):
    server = make_server(env={"FORKCHAT_TEST_HOOKS": "1"})
    alice = IrcTestClient(server.port)
    alice.register("alice")
    bob = IrcTestClient(server.port)
    bob.register("bob")
    alice.join("#room")
    bob.join("#room")
    alice.expect("JOIN")
    bob.send("CRASH")
    quit_msg = alice.expect("QUIT")
    assert quit_msg.prefix.startswith("bob!")
    server.wait_for_text("RuntimeError: crash requested by the test suite")
    assert "Traceback" in server.log_text()
    server.wait_for_text("exited with status 70")
    alice.sync()
    alice.close()
    bob.close()


def test_supervisor_kill_9_takes_every_child_down(make_server):
    server = make_server()
    clients = [IrcTestClient(server.port) for _ in range(3)]
    for index, client in enumerate(clients):
        client.register(f"user{index}")
    kids = server.descendants()
    assert len(kids) >= 4
    os.kill(server.pid, signal.SIGKILL)
    gone, alive = psutil.wait_procs(kids, timeout=5)
    assert not alive, f"children survived the supervisor: {alive}"
    for client in clients:
        client.close()
