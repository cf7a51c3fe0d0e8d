"""scripts/bench.py --attach against a server that is not forkchat (issue 5's
reference servers): what it learns of the server, how it names and counts
its processes and connections, the JOIN a server refuses before its
welcome, and, where ngIRCd and InspIRCd are installed and we are root, the
real thing through scripts/reference/run.sh.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import psutil
import pytest

from tests.unit.test_bench import BENCH, RUN_TIMEOUT_S, load_bench, run_bench

pytestmark = pytest.mark.timeout(120)

RUN_SH = os.path.join(os.path.dirname(BENCH), "reference", "run.sh")
COMPARE_SH = os.path.join(os.path.dirname(BENCH), "reference", "compare.sh")

NGIRCD_WELCOME = [
    ":bench.ngircd 001 bp1 :Welcome to the Internet Relay Network bp1!~bp1@127.0.0.1",
    ":bench.ngircd 004 bp1 bench.ngircd ngircd-26.1 abBcCFiIoqrRswx abehiIklmMnoOPqQrRstvVz",
    ":bench.ngircd 005 bp1 RFC2812 IRCD=ngIRCd CHARSET=UTF-8 :are supported on this server",
    ":bench.ngircd 005 bp1 CHANNELLEN=50 NICKLEN=31 TOPICLEN=490 :are supported on this server",
    ":bench.ngircd 376 bp1 :End of MOTD command",
]
FORKCHAT_WELCOME = [
    ":bench.forkchat 001 bp1 :Welcome to the forkchat IRC Network bp1!bp1@127.0.0.1",
    ":bench.forkchat 004 bp1 bench.forkchat forkchat-0.1.0 iow biklmnopstv bklov",
    ":bench.forkchat 005 bp1 NICKLEN=16 CHANTYPES=# :are supported by this server",
    ":bench.forkchat 422 bp1 :MOTD File is missing",
]


def test_welcome_facts_tell_another_server_from_forkchat():
    bench = load_bench(pytest.MonkeyPatch())
    ngircd = bench.welcome_facts(NGIRCD_WELCOME)
    assert ngircd["welcomed"] and ngircd["foreign"]
    assert ngircd["software"] == "ngircd-26.1" and ngircd["nicklen"] == 31
    forkchat = bench.welcome_facts(FORKCHAT_WELCOME)
    assert forkchat["welcomed"] and not forkchat["foreign"]
    assert forkchat["software"] == "forkchat-0.1.0" and forkchat["nicklen"] == 16


def test_welcome_facts_of_a_refusal_say_what_was_said():
    bench = load_bench(pytest.MonkeyPatch())
    facts = bench.welcome_facts(["ERROR :Closing link: too many connections"])
    assert not facts["welcomed"] and facts["software"] is None
    assert facts["last_line"] == "ERROR :Closing link: too many connections"


def test_a_server_that_refuses_at_once_is_quoted_not_our_broken_pipe(monkeypatch):
    """A server full (ngIRCd's MaxConnections) sends ERROR and closes before
    it reads: the probe's QUIT then failed (reset by peer, broken pipe) and
    that error, not the server's ERROR line, was what --attach said."""
    bench = load_bench(monkeypatch)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def refuse() -> None:
            for _ in range(5):
                sock, _ = listener.accept()
                sock.sendall(b"ERROR :Closing link: too many connections\r\n")
                sock.close()
        refuser = threading.Thread(target=refuse, daemon=True)
        refuser.start()
        for _ in range(5):
            facts = bench.probe_server(listener.getsockname()[1], False, 5.0)
            assert not facts["welcomed"]
            assert facts["last_line"] == "ERROR :Closing link: too many connections"
        refuser.join(timeout=5)


def test_an_attached_servers_processes_are_server_and_child_not_forkchats_roles(monkeypatch):
    """Another server's process is no supervisor, and what it forks is no
    worker: settle() would wait for such 'workers' to go."""
    bench = load_bench(monkeypatch)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        me = psutil.Process()
        kid = psutil.Process(child.pid)
        assert bench.role_of(me, me.pid, foreign=True) == "server"
        assert bench.role_of(kid, me.pid, foreign=True) == "child"
        assert bench.role_of(me, me.pid) == "supervisor"
        roles = {role for role, *_ in bench.cpu_sample(me.pid, foreign=True).values()}
        assert roles == {"server", "child"}
        memory = bench.memory_sample(me.pid, foreign=True)
        assert set(memory["roles"]) == {"server", "child"}
    finally:
        child.kill()
        child.wait()


def test_server_connections_counts_what_the_server_side_holds_open(monkeypatch):
    """Established, and closed by the client but not yet by the server
    (CLOSE_WAIT): both are a client the server still has."""
    bench = load_bench(monkeypatch)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert bench.server_connections(port) == 0
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        accepted = [listener.accept()[0] for _ in clients]
        assert bench.server_connections(port) == 2
        clients[0].close()
        assert bench.server_connections(port) == 2       # the server has not closed it
        accepted[0].close()
        assert bench.server_connections(port) == 1
        for sock in [*clients[1:], *accepted[1:]]:
            sock.close()


def test_server_connections_of_a_server_listening_on_both_families(monkeypatch):
    """Listening on [::], a server holds our 127.0.0.1 connections as
    ::ffff:127.0.0.1 in /proc/net/tcp6: they were not counted, and settle()
    did not wait for them."""
    if not socket.has_dualstack_ipv6():
        pytest.skip("no IPv6 on this machine")
    bench = load_bench(monkeypatch)
    with socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            with accepted:
                assert bench.server_connections(port) == 1
        assert bench.server_connections(port) == 0


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass


class FakeGenerator:
    joins_resent = 0


def test_a_join_refused_before_the_welcome_is_sent_again_after_it(monkeypatch):
    """InspIRCd completes a registration on a timer and answers the JOIN sent
    with NICK and USER with 451: the client joins after the welcome instead
    of failing, and says so."""
    bench = load_bench(monkeypatch)

    async def connect() -> tuple[object, FakeTransport]:
        client = bench.Client(FakeGenerator(), bench.Spec(0, "f1x0"))
        transport = FakeTransport()
        client.connection_made(transport)
        for line in (b":s 451 f1x0 JOIN :You have not registered.",
                     b":s 001 f1x0 :Welcome", b":s 376 f1x0 :End of message of the day."):
            client.data_received(line + b"\r\n")
        assert not client.ready.done()
        client.data_received(b":f1x0!u@h JOIN :#bench\r\n:s 366 f1x0 #bench :End\r\n")
        assert client.ready.done() and client.ready.exception() is None
        return client, transport
    client, transport = asyncio.run(connect())
    assert transport.written[-1] == b"JOIN #bench\r\n"
    assert b"JOIN #bench" in transport.written[0]     # the first, with NICK and USER
    assert client.gen.joins_resent == 1 and client.errors["451"] == 1


def test_another_refusal_before_the_welcome_still_fails_the_client(monkeypatch):
    bench = load_bench(monkeypatch)

    async def connect() -> object:
        client = bench.Client(FakeGenerator(), bench.Spec(0, "f1x0"))
        client.connection_made(FakeTransport())
        client.data_received(b":s 433 * f1x0 :Nickname is already in use\r\n")
        return client
    client = asyncio.run(connect())
    assert "433" in str(client.ready.exception())


def test_attached_with_someone_elses_client_on_it_waits_for_ours_only(server, registered):
    """A person's client on the attached forkchat has a worker that is not
    ours: each scenario waited SETTLE_LIMIT_S (60 s) for it to go, then ran
    with a warning of workers 'of earlier clients'."""
    someone = registered("someone")
    began = time.monotonic()
    [result] = run_bench("--attach", f"127.0.0.1:{server.port}", "--pid", str(server.pid),
                         "--scenario", "connect", "-n", "3")
    assert "warning" not in result, result["warning"]
    assert result["connected"] == 3
    assert time.monotonic() - began < 30
    someone.send("PING :still-here")
    someone.expect("PONG")


def test_server_sendq_without_attach_is_a_clear_error():
    done = subprocess.run([sys.executable, BENCH, "--server-sendq", "32768",
                           "--scenario", "slowreader"],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 2 and "--server-sendq goes with --attach" in done.stderr


# ---------------------------------------------------------------------------
# The reference servers themselves, where installed (Debian's ngircd and
# inspircd packages) and where we may start them as user irc
# ---------------------------------------------------------------------------

def reference_server(kind: str):
    binary = f"/usr/sbin/{kind}"
    if not os.path.exists(binary) or os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip(f"needs {binary}, setpriv and root (run.sh starts it as user irc)")


@pytest.fixture
def started():
    """Factory: started(kind) -> (port, pid) of a reference server, killed at teardown.

    Its directory is not under pytest's tmp_path, which user irc cannot reach."""
    pids: list[int] = []
    top = tempfile.mkdtemp(prefix="forkchat-refservers-")
    os.chmod(top, 0o711)

    def start(kind: str) -> tuple[int, int]:
        reference_server(kind)
        done = subprocess.run([RUN_SH, kind, os.path.join(top, kind)], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        port, pid = (int(word) for word in done.stdout.split())
        pids.append(pid)
        return port, pid
    yield start
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 5
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("kind, software, resent", [("ngircd", "ngircd-", 0),
                                                    ("inspircd", "InspIRCd-", 5)])
def test_attach_to_a_reference_server_connects_and_fans_out(started, kind, software, resent):
    port, pid = started(kind)
    connect, fanout = run_bench("--attach", f"127.0.0.1:{port}", "--pid", str(pid),
                                "--scenario", "connect", "--scenario", "fanout", "-n", "5",
                                "--senders", "2", "--offered-load", "2000", "--duration", "1")
    for result in (connect, fanout):
        assert "error" not in result, result["error"]
        assert result["server_software"].startswith(software)
        assert result["server_version"] == result["server_software"]
        assert "server_s" in result["server_cpu"] and "supervisor_s" not in result["server_cpu"]
        assert "warning" not in result
    assert connect["connected"] == 5 and connect["failures"] == 0
    assert connect["joins_resent_after_welcome"] == resent
    assert connect["server_memory"]["processes"] == 1
    assert fanout["lost"] == 0 and fanout["deliveries"] == fanout["expected_deliveries"] > 0


def test_soak_on_a_reference_server_says_what_it_cannot_measure(started):
    port, pid = started("ngircd")
    [result] = run_bench("--attach", f"127.0.0.1:{port}", "--pid", str(pid),
                         "--scenario", "soak", "-n", "6", "--duration", "4")
    assert "error" not in result, result["error"]
    assert any("no broker" in note for note in result["not_measured"])
    assert result["kill_workers_per_s"] == 0 and result["broker_kills"] == 0
    assert result["unexplained_loss"] == 0 and result["received"] == result["expected"] > 0
    assert result["leaks"]["fd_leak"] is False and "brokers" not in result["leaks"]


def test_compare_runs_the_three_servers_in_turn_and_leaves_none(tmp_path):
    for kind in ("ngircd", "inspircd"):
        reference_server(kind)
    out = tmp_path / "runs.jsonl"
    before = {p.pid for p in psutil.process_iter()}
    done = subprocess.run([COMPARE_SH, "1", str(out), "--scenario", "connect", "-n", "3"],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          env={**os.environ, "PYTHON": sys.executable,
                               "BENCH_LOCK": str(tmp_path / "lock")})
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("server_software", "forkchat")[:4] for r in results] == \
        ["fork", "ngir", "Insp"]
    assert all(r["connected"] == 3 for r in results)
    left = [p for p in psutil.process_iter(["name"]) if p.pid not in before
            and p.info["name"] in ("ngircd", "inspircd")]
    assert not left, left


def test_run_sh_started_by_another_user_than_root_says_it_needs_root(tmp_path):
    """Not as root, it stops before it writes anything, with one line that
    says why (before, chown said 'Operation not permitted' and nothing more)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run it as another user")
    top = tempfile.mkdtemp(prefix="forkchat-refservers-")
    os.chmod(top, 0o777)
    try:
        done = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                               RUN_SH, "ngircd", os.path.join(top, "ngircd")],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 2
        assert done.stderr.strip().endswith("must be run as root (it starts ngircd as user irc)")
        assert not os.path.exists(os.path.join(top, "ngircd"))
    finally:
        shutil.rmtree(top, ignore_errors=True)


# ---------------------------------------------------------------------------
# compare.sh's and run.sh's errors: one line, a status that says so, and no
# server left behind.  FAKE_BENCH stands in for `python3 bench.py`: it
# writes its arguments to $FAKE_MARK and, against an attached server, waits
# (a long run) or fails at once when FAKE_FAIL is set.
# ---------------------------------------------------------------------------

FAKE_BENCH = """#!/bin/sh
echo "$*" >> "$FAKE_MARK"
[ -n "${FAKE_FAIL:-}" ] && exit 1
case "$*" in *--attach*) exec sleep 60 ;; esac
exit 0
"""


def sigint_as_at_a_terminal() -> None:
    """preexec_fn: SIGINT at its default, as a shell at a terminal starts
    commands (a test run in the background inherits it ignored, and sh
    cannot trap a signal ignored at its start)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def fake_bench(tmp_path, fail: bool = False) -> dict[str, str]:
    script = tmp_path / "fake-python"
    script.write_text(FAKE_BENCH)
    script.chmod(0o755)
    env = {**os.environ, "PYTHON": str(script), "FAKE_MARK": str(tmp_path / "mark"),
           "BENCH_LOCK": str(tmp_path / "lock")}
    if fail:
        env["FAKE_FAIL"] = "1"
    return env


def new_reference_servers(before: set[int]) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if p.pid not in before
            and p.info["name"] in ("ngircd", "inspircd")]


@pytest.mark.parametrize("rounds", ["x", "0", "-1", ""])
def test_compare_with_rounds_not_a_count_says_so_and_fails(tmp_path, rounds):
    """It was `[: Illegal number: x` and status 0, nothing run."""
    done = subprocess.run([COMPARE_SH, rounds, str(tmp_path / "out"), "--scenario", "connect"],
                          capture_output=True, text=True, timeout=30, env=fake_bench(tmp_path))
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "ROUNDS" in done.stderr
    assert not (tmp_path / "mark").exists()


def test_compare_with_an_out_file_it_cannot_write_says_so_before_any_run(tmp_path):
    """It was three runs, three usage texts of bench.py, two servers started
    and stopped for nothing, and status 0."""
    out = tmp_path / "no-such-directory" / "out.jsonl"
    done = subprocess.run([COMPARE_SH, "1", str(out), "--scenario", "connect"],
                          capture_output=True, text=True, timeout=30,
                          env=fake_bench(tmp_path, fail=True))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"{COMPARE_SH}: cannot write {out}"]
    assert not (tmp_path / "mark").exists()


def test_compare_whose_runs_fail_ends_with_a_failure_status(tmp_path):
    for kind in ("ngircd", "inspircd"):
        reference_server(kind)
    before = {p.pid for p in psutil.process_iter()}
    done = subprocess.run([COMPARE_SH, "1", str(tmp_path / "out"), "--scenario", "connect"],
                          capture_output=True, text=True, timeout=60,
                          env=fake_bench(tmp_path, fail=True))
    assert len((tmp_path / "mark").read_text().splitlines()) == 3
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1].endswith("3 of 3 runs failed")
    assert not new_reference_servers(before)


def test_ctrl_c_in_compare_stops_the_reference_server_it_started(tmp_path):
    """Ctrl+C (SIGINT to the foreground process group) while bench.py runs
    against ngIRCd: run.sh starts the server in a session of its own, which
    the terminal's signal does not reach, and it was left running."""
    reference_server("ngircd")
    before = {p.pid for p in psutil.process_iter()}
    env = fake_bench(tmp_path)
    mark = tmp_path / "mark"
    proc = subprocess.Popen([COMPARE_SH, "1", str(tmp_path / "out"), "--scenario", "connect"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            start_new_session=True, preexec_fn=sigint_as_at_a_terminal)
    try:
        deadline = time.monotonic() + 30
        while "--attach" not in (mark.read_text() if mark.exists() else ""):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        [server] = new_reference_servers(before)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
        assert proc.returncode != 0
        assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for left in new_reference_servers(before):
            left.kill()


def run_sh_on_port(tmp_path, port: int) -> dict[str, str]:
    """run.sh's environment with `python3` (what picks its free port)
    answering `port`: the race where another process takes the port
    between run.sh's choice and the server's bind, made certain."""
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    (fakebin / "python3").write_text(f"#!/bin/sh\necho {port}\n")
    (fakebin / "python3").chmod(0o755)
    return {**os.environ, "PATH": f"{fakebin}:{os.environ['PATH']}"}


def test_ctrl_c_while_run_sh_waits_for_the_server_stops_it(tmp_path):
    """InspIRCd whose port is taken keeps running without a listener, and
    run.sh waits up to 10 s for it: Ctrl+C then left it running."""
    reference_server("inspircd")
    top = tempfile.mkdtemp(prefix="forkchat-refservers-")
    os.chmod(top, 0o711)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    try:
        proc = subprocess.Popen([RUN_SH, "inspircd", os.path.join(top, "i")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=run_sh_on_port(tmp_path, taken.getsockname()[1]),
                                start_new_session=True, preexec_fn=sigint_as_at_a_terminal)
        console = os.path.join(top, "i", "console")
        deadline = time.monotonic() + 8
        text = ""
        while "is now running" not in text:
            assert time.monotonic() < deadline and proc.poll() is None, text
            time.sleep(0.05)
            text = open(console).read() if os.path.exists(console) else ""
        server = psutil.Process(int(text.split("Process ID: ")[1].split()[0]))
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=5)
        assert proc.returncode != 0
        server.wait(timeout=5)
    finally:
        taken.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for left in psutil.process_iter(["cmdline"]):
            if top in " ".join(left.info["cmdline"] or []):
                left.kill()
        shutil.rmtree(top, ignore_errors=True)


def test_run_sh_whose_port_another_process_took_fails_instead_of_naming_it(tmp_path):
    """Another process listening on the chosen port: ngIRCd could not bind
    and exited, but run.sh saw the other's listener and printed PORT PID
    with status 0."""
    reference_server("ngircd")
    top = tempfile.mkdtemp(prefix="forkchat-refservers-")
    os.chmod(top, 0o711)
    other = socket.create_server(("127.0.0.1", 0))
    try:
        done = subprocess.run([RUN_SH, "ngircd", os.path.join(top, "n")], capture_output=True,
                              text=True, timeout=30,
                              env=run_sh_on_port(tmp_path, other.getsockname()[1]))
        assert done.returncode == 1 and done.stdout == ""
        assert "ngircd did not start listening on 127.0.0.1:" in done.stderr.splitlines()[0]
    finally:
        other.close()
        for left in psutil.process_iter(["cmdline"]):
            if top in " ".join(left.info["cmdline"] or []):
                left.kill()
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("name", ["a&b", "a#b", 'a"b', "a b"])
def test_run_sh_refuses_a_dir_its_configuration_cannot_carry(tmp_path, name):
    """sed put the matched text where the path had '&' (IncludeDir =
    .../a@DIR@b/conf.d), '#' ended the sed expression, and a '"' or a space
    broke InspIRCd's quoted values; the server started with those paths."""
    reference_server("ngircd")
    top = tempfile.mkdtemp(prefix="forkchat-refservers-")
    os.chmod(top, 0o711)
    try:
        done = subprocess.run([RUN_SH, "ngircd", os.path.join(top, name)], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 2 and done.stdout == ""
        assert len(done.stderr.splitlines()) == 1
        assert "can be written into ngircd's configuration" in done.stderr
        assert os.listdir(top) == []
    finally:
        for left in psutil.process_iter(["cmdline"]):
            if top in " ".join(left.info["cmdline"] or []):
                left.kill()
        shutil.rmtree(top, ignore_errors=True)
