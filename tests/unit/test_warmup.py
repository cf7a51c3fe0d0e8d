"""warmup.warm_up: whole connections run through a Worker by the server's
start, so that CPython's first-use writes to the code a connection runs
happen in the supervisor, not in each worker (see WARM_UP_ROUNDS)."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

from forkchat import config, ipc, link, warmup


def test_the_warm_up_leaves_nothing_behind(caplog, capfd):
    """Run in the supervisor at the start: no descriptor, no log line, no
    output, no thread, no signal handling changed, whatever it uses."""
    before = sorted(os.listdir("/proc/self/fd"))
    handlers = [signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGCHLD)]
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    with caplog.at_level(logging.DEBUG):
        warmup.warm_up(rounds=3)
    assert sorted(os.listdir("/proc/self/fd")) == before
    assert caplog.records == []
    assert capfd.readouterr() == ("", "")
    assert threading.active_count() == 1
    assert [signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGCHLD)] == handlers
    assert signal.set_wakeup_fd(wakeup) == wakeup


# Run in a fresh interpreter: other tests of this process run the same code.
_QUICKENED = textwrap.dedent("""
    import dis, logging, sys
    from forkchat import commands, link, log, warmup, worker
    log.setup("supervisor", "info")
    if sys.argv[1] == "warm":
        warmup.warm_up()
    path = [worker.Worker.__init__, worker.Worker.start, worker.Worker._process_lines,
            worker.Worker._take_frames, worker.Worker._on_update, worker.Worker._finish,
            link.BrokerLink.read, link.BrokerLink.flush, commands.dispatch,
            logging.LogRecord.__init__, logging.StreamHandler.emit]
    def rewritten(function):
        pairs = zip(dis.get_instructions(function, adaptive=True), dis.get_instructions(function))
        return sum(quick.opname != plain.opname for quick, plain in pairs)
    print(" ".join(str(rewritten(function)) for function in path))
""")


def _rewritten_instructions(argument: str) -> list[int]:
    done = subprocess.run([sys.executable, "-c", _QUICKENED, argument], capture_output=True,
                          text=True, timeout=60, check=True)
    return [int(word) for word in done.stdout.split()]


def test_the_warm_up_runs_a_connections_own_code_until_cpython_has_specialised_it():
    """Each function on a connection's path (the Worker's start, reading
    lines, taking the broker's frames, registration, the close, the link,
    dispatch, the log line) has its bytecode rewritten by CPython after the
    warm-up: done once there, not in every worker."""
    assert all(count == 0 for count in _rewritten_instructions("cold"))
    assert all(count > 0 for count in _rewritten_instructions("warm"))


def test_a_warm_up_connection_registers_joins_and_quits_as_a_clients_does():
    """Its client is answered as a real one is: the welcome, its JOIN, a
    line from the room, its PONG, and the ERROR of its QUIT."""
    lines = warmup._warm_connection(config.Config()).split(b"\r\n")
    assert [line.split(b" ")[1] for line in lines[:15]] == [
        code.encode() for code in warmup._WARM_WELCOME]
    assert lines[15:] == [b":warm!warm@127.0.0.1 JOIN #warm",
                          b":warm.up 353 warm = #warm :@warm", b":warm.up 366 warm #warm :End",
                          b":other!o@127.0.0.1 PRIVMSG #warm :up",
                          b":forkchat.local PONG forkchat.local warm",
                          b"ERROR :Closing Link: 127.0.0.1 (Client Quit)", b""]


def test_a_warm_up_whose_worker_gets_no_broker_link_stops_at_once(monkeypatch):
    """Out of descriptors for the link alone (EMFILE at a low limit, or
    ENFILE), each round waited its registration timer, a second, and the
    server's start waited 16 of them; the rounds after such a one are
    skipped, as the warm-up only saves memory."""
    opened = sorted(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(link.BrokerLink, "connect", lambda self, timeout=0.0: False)
    started = time.monotonic()
    warmup.warm_up(rounds=3)
    assert time.monotonic() - started < warmup._WARM_UP_LIMIT_S
    assert sorted(os.listdir("/proc/self/fd")) == opened


def test_the_warm_up_stops_after_a_round_that_had_to_wait(monkeypatch):
    """A round that waited for its timers (here its broker never answers
    REGISTER) is not run 15 more times at the server's start."""
    answer = warmup._WarmBroker.answer
    monkeypatch.setattr(warmup._WarmBroker, "answer", lambda self, kind, payload: b"" if
                        kind == ipc.Kind.REGISTER else answer(self, kind, payload))
    started = time.monotonic()
    warmup.warm_up(rounds=3)
    assert time.monotonic() - started < 2 * warmup._WARM_UP_LIMIT_S
