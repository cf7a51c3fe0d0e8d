"""warmup.warm_up: whole connections run through a Worker by the server's
start, so that CPython's first-use writes to the code a connection runs
happen in the supervisor, not in each worker (see WARM_UP_ROUNDS)."""

import gc
import logging
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import pytest

from forkchat import config, ipc, link, listeners, warmup


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A TLS listener's certificate and key (readable after a drop to nobody)."""
    directory = tmp_path_factory.mktemp("warm-tls")
    os.chmod(directory, 0o755)
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o644)
    return cert, key


def listener_context(certificate) -> ssl.SSLContext:
    cert, key = certificate
    context = listeners.tls_context(config.Listener(port=0, tls_cert=cert, tls_key=key))
    assert context is not None
    return context


def accepted(context: ssl.SSLContext) -> int:
    """Handshakes the server's side of `context` finished."""
    return context.session_stats()["accept_good"]


def test_the_warm_up_leaves_nothing_behind(caplog, capfd, certificate):
    """Run in the supervisor at the start: no descriptor, no log line, no
    output, no thread, no signal handling changed, whatever it uses; of a
    TLS listener's context, no session in its cache and no reference (a
    reload's new context replaces it: the old one must not live on)."""
    context = listener_context(certificate)
    options, verify = context.options, context.verify_mode
    gc.collect()        # earlier tests' sockets in cycles are not the warm-up's to close
    before = sorted(os.listdir("/proc/self/fd"))
    handlers = [signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGCHLD)]
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    with caplog.at_level(logging.DEBUG):
        warmup.warm_up(rounds=3, tls=[context])
    assert accepted(context) == 3
    assert context.session_stats()["number"] == 0
    assert (context.options, context.verify_mode) == (options, verify)
    gone = weakref.ref(context)
    del context
    gc.collect()        # (as children.start does before it forks)
    assert gone() is None
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


def _rewritten_instructions(argument: str, *more: str, code: str = _QUICKENED) -> list[int]:
    done = subprocess.run([sys.executable, "-c", code, argument, *more], capture_output=True,
                          text=True, timeout=60, check=True)
    return [int(word) for word in done.stdout.split()]


# A TLS client's own path: the wrap and handshake, its reads and writes
# through OpenSSL, the close_notify at the end (Worker._close_notify is
# not here: every plain round runs its first lines).
_QUICKENED_TLS = textwrap.dedent("""
    import dis, ssl, sys
    from forkchat import config, listeners, log, warmup, worker
    log.setup("supervisor", "info")
    spec = config.Listener(port=0, tls_cert=sys.argv[2], tls_key=sys.argv[3])
    warmup.warm_up(tls=[listeners.tls_context(spec)] if sys.argv[1] == "warm" else [])
    path = [worker.Worker.on_handshake, worker.Worker._wrap_tls, ssl.SSLContext.wrap_socket, ssl.SSLSocket._create, ssl.SSLSocket.do_handshake,
            ssl.SSLSocket.recv, ssl.SSLSocket.send, ssl.SSLSocket.unwrap]
    def rewritten(function):
        pairs = zip(dis.get_instructions(function, adaptive=True), dis.get_instructions(function))
        return sum(quick.opname != plain.opname for quick, plain in pairs)
    print(" ".join(str(rewritten(function)) for function in path))
""")


def test_the_warm_up_runs_a_connections_own_code_until_cpython_has_specialised_it():
    """Each function on a connection's path (the Worker's start, reading
    lines, taking the broker's frames, registration, the close, the link,
    dispatch, the log line) has its bytecode rewritten by CPython after the
    warm-up: done once there, not in every worker."""
    assert all(count == 0 for count in _rewritten_instructions("cold"))
    assert all(count > 0 for count in _rewritten_instructions("warm"))


def test_the_tls_warm_up_runs_a_tls_clients_own_code_until_cpython_has_specialised_it(
        certificate):
    """The handshake, reads and writes through ssl.py, the close_notify:
    specialised in the supervisor when it has a TLS listener, not in each
    TLS client's worker."""
    assert all(count == 0 for count in _rewritten_instructions("cold", *certificate,
                                                                code=_QUICKENED_TLS))
    assert all(count > 0 for count in _rewritten_instructions("warm", *certificate,
                                                               code=_QUICKENED_TLS))


def test_a_tls_warm_up_connection_handshakes_through_the_listeners_context(certificate):
    """Over TLS, its client is answered as over plain TCP, through the
    listener's own context (what a worker of that listener runs with)."""
    context = listener_context(certificate)
    sent = warmup._warm_connection(config.Config(), context, warmup._client_context())
    assert sent == warmup._warm_connection(config.Config())
    assert accepted(context) == 1


def test_the_tls_warm_up_goes_through_every_tls_listeners_context(certificate):
    """As many TLS rounds as plain ones, through the contexts in turn, and
    through each at least once however many there are."""
    first, second = listener_context(certificate), listener_context(certificate)
    warmup.warm_up(rounds=3, tls=[first, second])
    assert (accepted(first), accepted(second)) == (2, 1)
    many = [listener_context(certificate) for _ in range(3)]
    warmup.warm_up(rounds=1, tls=many)
    assert [accepted(context) for context in many] == [1, 1, 1]


def test_a_tls_warm_up_whose_handshake_fails_stops_at_once(caplog, capfd):
    """A context the handshake fails with (here, no certificate: OpenSSL
    finds no cipher to share) ends the warm-up at its first TLS round,
    quietly, leaving nothing open: it only saves memory."""
    broken = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    opened = sorted(os.listdir("/proc/self/fd"))
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        warmup.warm_up(rounds=3, tls=[broken])
    assert time.monotonic() - started < warmup._WARM_UP_LIMIT_S
    assert broken.session_stats()["accept"] == 1
    assert accepted(broken) == 0
    assert caplog.records == []
    assert capfd.readouterr() == ("", "")
    assert sorted(os.listdir("/proc/self/fd")) == opened


def test_each_refused_context_is_told_and_the_others_are_still_warmed(certificate):
    """forkchat-server(8) LOGGING: the certificate no client can use is
    told for each TLS listener that has one.  The start's warm-up ended at
    the first refused handshake: a second such listener was not told of,
    and the listeners after it were not warmed."""
    first, second = (ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER) for _ in range(2))
    good = listener_context(certificate)
    refused = warmup.warm_up(rounds=3, tls=[first, good, second])
    assert [context for context, _ in refused] == [first, second]
    assert all(reason for _, reason in refused)
    assert (first.session_stats()["accept"], second.session_stats()["accept"]) == (1, 1)
    assert accepted(good) == 1


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
    gc.collect()        # earlier tests' sockets in cycles are not the warm-up's to close
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


# The server's start up to its supervisor's loop, which is not run: what
# the warm-up was given.  Started as root, the start drops to nobody first.
_STARTED = textwrap.dedent("""
    import sys
    from forkchat import cli, supervisor, warmup
    given = []
    real = warmup._warm_connection
    def counted(cfg, tls=None, client_tls=None):
        given.append(tls)
        return real(cfg, tls, client_tls)
    warmup._warm_connection = counted
    class Started:
        def __init__(self, cfg, targets, reload, bound):
            self.tls = [each.tls for each in bound if each.tls is not None]
        def run(self):
            over_tls = [context for context in given if context is not None]
            print(len(over_tls), all(context in self.tls for context in over_tls),
                  len(self.tls))
            return 0
    supervisor.Supervisor = Started
    sys.exit(cli.main(["-c", sys.argv[1]]))
""")


def test_the_servers_start_warms_up_its_tls_listener_through_its_context(certificate,
                                                                         tmp_path):
    """A TLS listener's context is the one its workers use; after the drop
    to nobody (as root), which a module imported late would fail."""
    cert, key = certificate
    os.chmod(tmp_path, 0o777)
    (tmp_path / "forkchat.toml").write_text(
        f'[server]\nstate_dir = "{tmp_path}"\n[log]\nlevel = "warning"\n'
        f'[[listen]]\naddress = "127.0.0.1"\nport = 0\n'
        f'[[listen]]\naddress = "127.0.0.1"\nport = 0\ntls_cert = "{cert}"\n'
        f'tls_key = "{key}"\n')
    done = subprocess.run([sys.executable, "-c", _STARTED, str(tmp_path / "forkchat.toml")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(warmup.WARM_UP_ROUNDS), "True", "1"], done.stderr


def test_a_reloads_warm_up_runs_its_rounds_through_each_new_context_within_its_budget(
        certificate, monkeypatch):
    """Run by the serving supervisor at a SIGHUP: RELOAD_ROUNDS handshakes
    through each new context, none started after RELOAD_BUDGET_S."""
    first, second = listener_context(certificate), listener_context(certificate)
    warmup.warm_reloaded([first, second])
    assert (accepted(first), accepted(second)) == (warmup.RELOAD_ROUNDS, warmup.RELOAD_ROUNDS)
    monkeypatch.setattr(warmup, "RELOAD_BUDGET_S", 0.0)
    third, fourth = listener_context(certificate), listener_context(certificate)
    warmup.warm_reloaded([third, fourth])
    assert (accepted(third), accepted(fourth)) == (1, 0)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("over_tls", [False, True])
def test_a_round_whose_process_was_not_run_past_its_deadline_ends_at_once(
        monkeypatch, certificate, over_tls):
    """A round's loop ends at its deadline whether or not its worker is done:
    so it does when the process is not run for that long (a busy machine, a
    VM paused, SIGSTOP) just after its client registered.  The broker's end
    of its link then read from a blocking socket that nothing more would be
    written to, and the supervisor waited for ever: at a reload, a server
    that had served until then accepted nobody again.  (Or, had a frame
    been waiting, the worker's _finish waited a second for the broker's
    answer to a goodbye it never sent.)  Here the warm-up's clock jumps a
    minute once the client registered, as a stalled process finds it."""
    from forkchat import worker
    registered = []
    step = worker.Worker._step

    def step_then_stall(self):
        step(self)
        if self.session.registered:
            registered.append(True)

    class StalledClock:
        @staticmethod
        def monotonic():
            return time.monotonic() + (60.0 if registered else 0.0)

    monkeypatch.setattr(worker.Worker, "_step", step_then_stall)
    monkeypatch.setattr(warmup, "time", StalledClock)
    gc.collect()        # earlier tests' sockets in cycles are not the warm-up's to close
    opened = sorted(os.listdir("/proc/self/fd"))
    started = time.monotonic()
    if over_tls:
        warmup.warm_reloaded([listener_context(certificate)])
    else:
        warmup.warm_up(rounds=1, limit_s=warmup.RELOAD_LIMIT_S)
    assert registered
    assert time.monotonic() - started < warmup.RELOAD_BUDGET_S
    assert sorted(os.listdir("/proc/self/fd")) == opened


def test_a_warm_up_without_a_descriptor_left_is_skipped_quietly(certificate):
    """At a SIGHUP the serving supervisor may have no descriptor left (the
    clients it accepted and has not handed on yet fill its limit): the null
    device its rounds' lines go to could not be opened, and that OSError
    came out of the warm-up, which the reload logged with a traceback as a
    fault of the server's own code ("the warm-up of the new TLS contexts
    failed").  Out of descriptors, the warm-up is skipped, as its rounds
    are once they run out."""
    import resource
    context = listener_context(certificate)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    held = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 16, hard))
    try:
        with pytest.raises(OSError):
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        warmup.warm_reloaded([context])
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert accepted(context) == 0
