"""Running as a service: sd_notify, socket activation, SIGHUP, SIGUSR1, config checks."""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from forkchat import commands as worker_commands
from tests.support.ircclient import IrcTestClient
from tests.support.server import ServerProcess, run_forkchat


@pytest.fixture
def notify_socket():
    directory = tempfile.mkdtemp(prefix="forkchat-notify-")
    os.chmod(directory, 0o777)
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    os.chmod(path, 0o777)   # the server may have dropped to nobody
    yield sock, path
    sock.close()
    os.unlink(path)
    os.rmdir(directory)


def receive_until(sock, wanted: str, timeout: float = 10.0) -> list[str]:
    """Datagrams until one contains `wanted`."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {wanted!r} from the server; got {got}")
        sock.settimeout(left)
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            raise AssertionError(f"no {wanted!r} from the server; got {got}") from None
        if wanted in got[-1]:
            return got


def test_notify_ready_status_reloading_stopping_watchdog(notify_socket):
    sock, path = notify_socket
    # STATUS= is refreshed every second, not every 5 s (prelude).
    server = ServerProcess(config_text='[server]\nmotd = "one"\n', env={
        "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"},
        prelude="from forkchat import supervisor\nsupervisor.STATUS_EVERY_S = 1.0")
    server.start()
    try:
        first = receive_until(sock, "READY=1")
        assert "STATUS=0 clients, 0 rooms" in first[-1]
        # the memory is not measured yet: no figure rather than "0 MiB"
        assert " 0 MiB" not in "".join(first), first
        receive_until(sock, "WATCHDOG=1")
        client = IrcTestClient(server.port)
        client.register("alice")
        client.join("#room")
        status = receive_until(sock, "STATUS=1 clients, 1 rooms")[-1]
        # the memory census has read the tree: supervisor, broker, spawner, worker
        assert int(status.split("rooms, ")[1].split(" MiB")[0]) > 0, status
        server.signal(signal.SIGHUP)
        reloading = receive_until(sock, "RELOADING=1")
        assert "MONOTONIC_USEC=" in reloading[-1]
        receive_until(sock, "READY=1")
        client.close()
        server.signal(signal.SIGTERM)
        receive_until(sock, "STOPPING=1")
        assert server.proc.wait(10) == 0
    finally:
        server.stop()


def start_activated(closing: str = "", **popen) -> tuple[subprocess.Popen, int, str]:
    """A server started as systemd's socket activation starts it, its IRC
    listener on descriptor 3; `closing` runs first in its process (os.close
    of a standard descriptor).  Returns the process, the port and the
    configuration file, which the caller removes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    code = (f"import os, sys; os.dup2(int(sys.argv[1]), 3); {closing}"
            "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', "
            "LISTEN_FDNAMES='irc'); os.execv(sys.executable, "
            "[sys.executable, '-m', 'forkchat', '-c', sys.argv[2]])")
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as handle:
        handle.write("[server]\nallow_root = true\n")
    os.chmod(handle.name, 0o644)
    proc = subprocess.Popen([sys.executable, "-c", code, str(listener.fileno()), handle.name],
                            pass_fds=[listener.fileno()], start_new_session=True, **popen)
    listener.close()
    return proc, port, handle.name


def test_socket_activation_serves_on_fd_3():
    proc, port, config_path = start_activated(stderr=subprocess.PIPE)
    try:
        line = proc.stderr.readline().decode()
        while "listening on" not in line:
            assert line, "server exited before listening"
            line = proc.stderr.readline().decode()
        assert f"127.0.0.1:{port} (irc)" in line
        client = IrcTestClient(port)
        client.register("activated")
        proc.send_signal(signal.SIGHUP)          # the unit's socket stays served
        line = proc.stderr.readline().decode()
        while "configuration reloaded" not in line:
            assert line, "server exited on reload"
            line = proc.stderr.readline().decode()
        client.sync()
        again = IrcTestClient(port)
        again.register("again")
        again.close()
        client.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        os.unlink(config_path)


def test_a_start_without_stdin_and_stderr_puts_no_socket_on_them():
    """Started with descriptors 0 and 2 closed, the server's first sockets
    took their numbers: log lines went to a socket, and every child
    inherited it as its standard error.  (Socket activation gives the
    port, since no log line can.)"""
    proc, port, config_path = start_activated("os.close(0); os.close(2); ",
                                              stdout=subprocess.DEVNULL)
    client = None
    try:
        client = IrcTestClient(port)
        client.register("unseen")          # served: every role is up
        client.join("#quiet")
        server = psutil.Process(proc.pid)
        processes = [server, *server.children(recursive=True)]
        assert len(processes) >= 4         # supervisor, broker, spawner, a worker
        for process in processes:
            for fd in (0, 2):
                target = os.readlink(f"/proc/{process.pid}/fd/{fd}")
                assert target == os.devnull, (process.name(), fd, target)
    finally:
        if client is not None:
            client.close()
        proc.terminate()
        assert proc.wait(10) == 0
        os.unlink(config_path)


def test_sighup_reloads_motd_and_keeps_clients(make_server):
    server = make_server(config_text='[server]\nmotd = "old news"\n')
    alice = IrcTestClient(server.port)
    alice.register("alice")
    server.write_config('[server]\nmotd = "fresh news"\n[[listen]]\naddress = "127.0.0.1"\n'
                        'port = 0\n')
    mark = server.log_length()
    server.signal(signal.SIGHUP)
    server.wait_for_text("configuration reloaded", start=mark)
    server.wait_for_text("broker took the new configuration", start=mark)
    alice.send("MOTD")
    assert alice.expect("372").params[-1] == "- fresh news"
    bob = IrcTestClient(server.port)
    assert any(m.params[-1] == "- fresh news" for m in bob.register("bob") if m.command == "372")
    alice.close()
    bob.close()


def test_sighup_with_a_broken_config_keeps_the_old_one(make_server):
    server = make_server(config_text='[server]\nmotd = "stable"\n')
    alice = IrcTestClient(server.port)
    alice.register("alice")
    server.write_config('[server]\nmotd = "x"\n[limits]\nnicklen = "long"\n')
    mark = server.log_length()
    server.signal(signal.SIGHUP)
    failure = server.wait_for_text("reload failed", start=mark)
    assert "keeping the running configuration" in failure
    server.wait_for_text("limits.nicklen", start=mark)
    alice.send("MOTD")
    assert alice.expect("372").params[-1] == "- stable"
    alice.close()


def test_a_reload_whose_new_listener_cannot_bind_says_so(notify_socket):
    """The log's last word and systemd's STATUS= say the reload was partial."""
    sock, path = notify_socket
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    busy = taken.getsockname()[1]
    listen = '[[listen]]\naddress = "127.0.0.1"\nport = 0\n'
    server = ServerProcess(config_text=listen, listen=[], env={"NOTIFY_SOCKET": path})
    server.start()
    try:
        receive_until(sock, "READY=1")
        server.write_config(listen + f'[[listen]]\naddress = "127.0.0.1"\nport = {busy}\n')
        mark = server.log_length()
        server.signal(signal.SIGHUP)
        ready = receive_until(sock, "READY=1")[-1]
        assert "STATUS=configuration reloaded, but 1 listener(s) could not be bound" in ready
        line = server.wait_for_text("configuration reloaded", start=mark)
        assert " WARNING configuration reloaded, but 1 listener(s) could not be bound" in line
        assert f"cannot listen on 127.0.0.1:{busy}" in server.log_text()
        IrcTestClient(server.port).close()      # the running listener serves on
    finally:
        server.stop()
        taken.close()


def test_sigusr1_logs_a_status_report(make_server):
    server = make_server()
    alice = IrcTestClient(server.port)
    alice.register("alice")
    alice.join("#a")
    mark = server.log_length()
    server.signal(signal.SIGUSR1)
    line = server.wait_for_text("status:", start=mark)
    server.wait_for_text("workers", start=mark)
    # figures, or, after a switch of user, a plain "not readable" (never 0.0 MiB)
    server.wait_for_text("status: spawner ", start=mark)
    broker = re.search(r"status: broker (.*)", server.log_text()[mark:]).group(1)
    assert broker.startswith("rss ") or broker == "memory not readable", broker
    assert "rss 0.0 MiB" not in server.log_text()[mark:]
    assert "clients" in line
    alice.close()


def run_server(*args, stdin=None):
    if stdin is None:
        return run_forkchat(*args)
    return subprocess.run([sys.executable, "-m", "forkchat", *args], input=stdin,
                          capture_output=True, text=True, timeout=30)


def test_check_config_good_and_bad(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[server]\nname = "chat.example.org"\n[[listen]]\nport = 6667\n')
    result = run_server("-c", str(good), "--check-config")
    assert result.returncode == 0 and "configuration OK" in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nname = "x"\ncolour = "blue"\n\n[limits]\nsendq_bytes = -1\n'
                   '[[listen]]\nprotocol = "gopher"\n')
    result = run_server("-c", str(bad), "--check-config")
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert any(":3: server.colour: unknown key" in line for line in errors)
    assert any(":6: limits.sendq_bytes: must be positive" in line for line in errors)
    assert any(":8: listen[0].protocol" in line for line in errors)
    assert "Traceback" not in result.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\n")
    result = run_server("-c", str(broken), "--check-config")
    assert result.returncode == 2 and ":1:" in result.stderr


def test_check_config_refuses_an_empty_name_option():
    """--name "" (an unset variable, say) was ignored: the server started as
    forkchat.local, where the file's name = "" is an error."""
    result = run_server("--name", "", "--check-config")
    assert result.returncode == 2, result.stdout
    assert result.stderr == "forkchat-server: --name '': must be a host-like name without " \
                            "spaces or control characters\n"


def test_check_config_warns_of_relative_paths(tmp_path):
    """A relative motd_file passed a check run next to the file and failed
    the service, started in /; a relative state_dir put the store wherever
    the server was started.  The paths are the server's working directory's,
    so a check run elsewhere says so, without failing."""
    (tmp_path / "motd.txt").write_text("hello\n")
    path = tmp_path / "forkchat.toml"
    path.write_text('[server]\nmotd_file = "motd.txt"\nstate_dir = "state"\n'
                    '[[listen]]\nport = 0\n')

    def check(*args):
        return run_forkchat("-c", str(path), *args, "--check-config", cwd=str(tmp_path))

    result = check()
    assert result.returncode == 0 and "configuration OK" in result.stdout
    lines = result.stderr.splitlines()
    assert [line.split(" is relative")[0] for line in lines] == [
        "forkchat-server: warning: server.motd_file = 'motd.txt'",
        "forkchat-server: warning: server.state_dir = 'state'"]
    assert f"the directory it is started in ({tmp_path} now; / under systemd)" in lines[0]
    given = check("--state-dir", "state")       # meant from where it is typed
    assert given.returncode == 0 and len(given.stderr.splitlines()) == 1, given.stderr
    path.write_text('[[listen]]\nport = 0\ntls_cert = "cert.pem"\ntls_key = "/key.pem"\n')
    tls = check()
    assert tls.returncode == 2          # no such files: the start's own words, status 2
    assert "warning: listen[0].tls_cert = 'cert.pem' is relative" in tls.stderr
    assert "tls_key = '/key.pem'" not in tls.stderr
    page = (Path(__file__).resolve().parents[2] / "man" / "forkchat-server.8").read_text()
    assert "is relative: the server opens it from the directory it is started in" in page


@pytest.mark.parametrize("option, wanted", [
    ("--user", "--user '': must name a user or user ID (leave the option out for the "
               "file's user)"),
    ("--state-dir", "--state-dir '': must name a directory, such as \"/var/lib/forkchat\""),
    ("--password", "--password '': would let every client in (to serve without a password, "
                   "remove it from the configuration file)"),
])
def test_check_config_refuses_an_empty_user_or_state_dir_option(option, wanted):
    """--user "" and --state-dir "" (unset variables in a unit's command line)
    were ignored without a word, where --name "" is refused: the file's user,
    or none (a root start then switched to nobody), and its state_dir served.
    --password "" removed the file's password: the server opened to all."""
    result = run_server(option, "", "--check-config")
    assert result.returncode == 2, result.stdout
    assert result.stderr == f"forkchat-server: {wanted}\n"


@pytest.mark.parametrize("option, wanted", [
    ("-c", "-c '': names no file (leave the option out for the built-in defaults)"),
    ("-l", "bad address '': write HOST:PORT, as in 127.0.0.1:6667, or :PORT for every IPv4 "
           "address"),
    ("--tutorial-listen", "bad address '': write HOST:PORT, as in 127.0.0.1:6667, or :PORT "
                          "for every IPv4 address"),
])
def test_check_config_refuses_an_empty_file_or_listen_option(option, wanted):
    """-c "" served the built-in defaults (with no file to reload), and -l ""
    every IPv4 address on port 6667: "configuration OK" for both."""
    result = run_server(option, "", "--check-config")
    assert result.returncode == 2, result.stdout
    assert result.stderr == f"forkchat-server: {wanted}\n"


def test_hash_password_makes_a_hash_oper_accepts(make_server, tmp_path):
    result = run_server("--hash-password", stdin="opensesame\n")
    assert result.returncode == 0
    hashed = result.stdout.strip()
    assert hashed.startswith("scrypt$")
    server = make_server(config_text=f'[[operators]]\nname = "root"\npassword = "{hashed}"\n')
    guesser = IrcTestClient(server.port)
    guesser.register("guesser")
    since = time.monotonic()
    guesser.send("OPER root wrong")
    guesser.expect("464")
    guesser.send("OPER root opensesame")     # too soon after a failure: refused
    reply = guesser.expect(lambda m: m.command in ("464", "381"))
    if reply.command == "381":
        # only a machine too slow to ask within the wait may see this
        assert time.monotonic() - since >= worker_commands.OPER_RETRY_S, \
            "OPER accepted within the wait after a failure"
    else:
        refusal = reply.params[-1]
        assert refusal.startswith("Too soon after a failed OPER attempt, try again in ")
        assert refusal.endswith((" 1 s", " 2 s"))       # the first wait is 2 s
    server.wait_for_text("failed OPER attempt as 'root'")
    guesser.close()
    client = IrcTestClient(server.port)
    client.register("admin")
    client.send("OPER root opensesame")
    client.expect("381")
    client.send("STATS p")
    assert any("workers" in m.params[-1] for m in client.collect_until("219"))
    client.send("STATS u")
    assert "Server Up" in client.expect("242").params[-1]
    client.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change user")
def test_root_start_drops_privileges_before_serving(make_server, tmp_path):
    """And names, at start, a file a reload reads that the new user cannot
    (the MOTD here, root's only; the configuration itself is readable)."""
    motd = tmp_path / "motd.txt"
    motd.write_text("root's words\n")
    motd.chmod(0o600)
    server = make_server(config_text=f'[server]\nuser = "nobody"\nmotd_file = "{motd}"\n')
    client = IrcTestClient(server.port)
    client.register("alice")
    users = {p.username() for p in [psutil.Process(server.pid), *server.descendants()]}
    assert users == {"nobody"}
    client.close()
    warned = [line for line in server.log_text().splitlines() if "is not readable as" in line]
    assert len(warned) == 1 and f"{motd} is not readable as nobody" in warned[0], warned


def test_stats_m_counts_commands_for_operators(make_server):
    server = make_server(config_text='[[operators]]\nname = "op"\npassword = "pw"\n'
                                     '[limits]\nflood_burst = 100\nflood_rate = 100.0\n')
    client = IrcTestClient(server.port)
    client.register("counter")
    client.send("STATS m")
    client.expect("481")
    client.send("OPER op pw")
    client.expect("381")
    client.join("#a")
    client.send("PRIVMSG #a :one")
    for index in range(20):                  # made-up names: answered, never counted
        client.send(f"ZZJUNK{index} x")
        client.expect("421")
    client.send("STATS m")
    counts = {m.params[1]: int(m.params[2]) for m in client.collect_until("219")
              if m.command == "212"}
    assert counts["JOIN"] >= 1 and counts["PRIVMSG"] >= 1
    assert not [name for name in counts if name.startswith("ZZJUNK")], counts
    client.close()


def test_check_config_reports_a_malformed_operator_hash(tmp_path):
    bad = tmp_path / "hash.toml"
    bad.write_text('[[operators]]\nname = "op"\npassword = "scrypt$nope"\n')
    result = run_server("-c", str(bad), "--check-config")
    assert result.returncode == 2
    assert ":3: operators[0].password: malformed scrypt hash" in result.stderr


def test_ping_interval_zero_turns_pinging_off(make_server):
    server = make_server(config_text="[limits]\nping_interval = 0\nping_timeout = 1\n")
    client = IrcTestClient(server.port)
    client.register("quiet")
    with pytest.raises(AssertionError):
        client.expect("PING", 2.5)        # no PING, and no ping-timeout close
    client.sync()
    client.close()


@pytest.mark.parametrize(("text", "wanted"), [
    ("listen = [1, 2]\n", [":1: listen[0]: must be a table", ":1: listen[1]: must be a table"]),
    ('operators = ["x"]\n', [":1: operators[0]: must be a table"]),
    ("[limits]\nping_interval = 2592000\nregistration_timeout = 1e10\nping_timeout = inf\n",
     [":2: limits.ping_interval: must be at most 86400 seconds (one day)",
      ":3: limits.registration_timeout: must be at most 86400 seconds (one day)",
      ":4: limits.ping_timeout: must be a finite number"]),
    ('[server]\ndefault_room = "#a:b"\n', [":2: server.default_room: must be a room name"]),
])
def test_check_config_reports_values_that_used_to_crash(tmp_path, text, wanted):
    """Each of these once passed --check-config or crashed it with a traceback;
    now each problem is one line and the status is 2."""
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    result = run_server("-c", str(bad), "--check-config")
    lines = result.stderr.strip().splitlines()
    assert (result.returncode, len(lines)) == (2, len(wanted)), result.stderr
    assert all(any(want in line for line in lines) for want in wanted), result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_warns_of_two_listeners_on_one_port(tmp_path):
    """It said "configuration OK" and the start then failed on the clash."""
    clashing = tmp_path / "clash.toml"
    clashing.write_text('[[listen]]\naddress = "127.0.0.1"\nport = 6667\n'
                        '[[listen]]\naddress = "0.0.0.0"\nport = 6667\nprotocol = "tutorial"\n')
    result = run_server("-c", str(clashing), "--check-config")
    assert result.returncode == 0 and "configuration OK" in result.stdout
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1
    assert "warning: listen[1] (0.0.0.0:6667) clashes with listen[0] (127.0.0.1:6667)" \
        in warnings[0]


def test_an_operator_named_twice_is_refused_by_check_config_and_start(tmp_path):
    """Both blocks loaded, and OPER took the old password beside the new."""
    twice = tmp_path / "twice.toml"
    twice.write_text('[[operators]]\nname = "op"\npassword = "old"\n\n'
                     '[[operators]]\nname = "op"\npassword = "new"\n')
    wanted = (f"forkchat-server: {twice}:6: operators[1].name: 'op' is the name of "
              f"operators[0] too (line 2): an operator has one block (with two, either "
              f"password is accepted)\n")
    checked = run_server("-c", str(twice), "--check-config")
    assert (checked.returncode, checked.stdout, checked.stderr) == (2, "", wanted)
    started = run_server("-c", str(twice), "-l", "127.0.0.1:0", "--state-dir",
                         str(tmp_path / "state"))
    assert (started.returncode, started.stderr) == (2, wanted)


@pytest.mark.parametrize("address", ["0x7f.1", "127.1"])
def test_an_ipv4_address_not_in_dotted_quad_form_stops_a_start(address, tmp_path):
    """-l 0x7f.1:0 served 127.0.0.1 (inet_aton's hexadecimal form, taken for
    a host name), while -l 127.1:0 was refused: both are usage errors now."""
    result = run_server("-l", f"{address}:0", "--state-dir", str(tmp_path / "state"))
    assert (result.returncode, result.stderr) == (
        2, f"forkchat-server: bad address in '{address}:0': '{address}' is not an IPv4 address "
           f"in dotted-quad form (four decimal numbers from 0 to 255, as in 127.0.0.1)\n")


@pytest.mark.parametrize(("password", "wanted"), [
    ("scrypt$nope", "malformed scrypt hash (make one with forkchat-server --hash-password)"),
    ("two\nlines", "a plain password cannot hold CR, LF or NUL: no PASS line carries them"),
    ("x" * 506, "PASS with this password is a 513-byte line, and lines are at most 512 bytes"),
])
def test_a_password_option_no_pass_can_match_is_a_usage_error(password, wanted):
    """The file refused password = "scrypt$nope"; --password took it, and
    then every client's PASS failed: no one could register."""
    result = run_server("--password", password, "--check-config")
    assert (result.returncode, result.stdout, result.stderr) == (
        2, "", f"forkchat-server: --password: {wanted}\n")


def test_the_longest_password_a_pass_line_carries_is_taken():
    result = run_server("--password", "x" * 505, "--check-config")
    assert result.returncode == 0, result.stderr
