"""SIGHUP as operators meet it: restart-only keys, listeners that fail, bad files."""

import os
import re
import signal

from tests.conftest import TEST_LIMITS
from tests.support.ircclient import IrcTestClient
from tests.support.server import ServerProcess, broker_pid


class FileStateServer(ServerProcess):
    """A server whose state_dir comes from its file, not from --state-dir."""

    def command(self) -> list[str]:
        cmd = super().command()
        index = cmd.index("--state-dir")
        return cmd[:index] + cmd[index + 2:]


def _state_config(state_dir: str) -> str:
    return TEST_LIMITS + f'[server]\nstate_dir = "{state_dir}"\n'


def _lines_since(server: ServerProcess, mark: int) -> list[str]:
    return server.log_text().splitlines()[mark:]


def test_a_changed_state_dir_waits_for_the_next_start():
    server = FileStateServer(config_text="")
    first, second = server.state_dir, server.state_dir + "-new"
    server.config_text = _state_config(first)
    server.start()
    try:
        alice = IrcTestClient(server.port)
        alice.register("alice")
        alice.join("#keep")
        mark = server.log_length()
        server.write_config(_state_config(second))
        server.signal(signal.SIGHUP)
        server.wait_for_text("configuration reloaded", start=mark)
        warned = [line for line in _lines_since(server, mark)
                  if "state_dir changed in the file: takes effect at the next start" in line]
        assert len(warned) == 1 and " WARNING " in warned[0], _lines_since(server, mark)

        # the next broker (after a crash) still uses the running directory
        mark = server.log_length()
        os.kill(broker_pid(server), signal.SIGKILL)
        server.wait_for_text("broker ready", start=mark)
        after = _lines_since(server, mark)
        assert not any(second in line for line in after), after
        assert not os.path.exists(second)
        alice.close()
    finally:
        server.stop()


LINE_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \w+\[\d+\] [A-Z]+ ")


def test_a_failed_reload_logs_each_problem_on_a_line_of_its_own(make_server):
    server = make_server(config_text='[server]\nmotd = "stable"\n')
    server.write_config('[server]\nmotd = "x"\n[limits]\nnicklen = "long"\n'
                        'max_clients = "many"\n')
    mark = server.log_length()
    server.signal(signal.SIGHUP)
    server.wait_for_text("reload failed", start=mark)
    server.signal(signal.SIGUSR1)          # its report comes after every reload line
    server.wait_for_text("status: ", start=mark)
    lines = _lines_since(server, mark)
    assert all(LINE_START.match(line) for line in lines), lines
    failed = [line for line in lines if "reload failed" in line]
    assert len(failed) == 2, lines
    assert any("limits.nicklen" in line for line in failed), failed
    assert any("limits.max_clients" in line for line in failed), failed
    assert all(" ERROR " in line for line in failed), failed


def test_a_reload_naming_an_operator_twice_keeps_the_running_operators(make_server):
    """A block added with a new password, the old one left above it: the
    reload took both, and OPER accepted either password."""
    server = make_server(config_text=TEST_LIMITS +
                         '[[operators]]\nname = "admin"\npassword = "old"\n')
    server.write_config(TEST_LIMITS + '[[operators]]\nname = "admin"\npassword = "old"\n'
                        '[[operators]]\nname = "admin"\npassword = "new"\n')
    mark = server.log_length()
    server.signal(signal.SIGHUP)
    failed = server.wait_for_text("reload failed", start=mark)
    assert " ERROR " in failed and "operators[1].name: 'admin' is the name of " \
        "operators[0] too" in failed, failed
    old, new = IrcTestClient(server.port), IrcTestClient(server.port)
    old.register("olduser")
    old.send("OPER admin old")
    old.expect("381")
    new.register("newuser")
    new.send("OPER admin new")
    new.expect("464")
    old.close()
    new.close()
