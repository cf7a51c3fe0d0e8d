"""Smoke test of scripts/bench.py against the real server: fields exist, counts add up.

Small counts only, and no assertion on speed: figures are benchmarks, not tests.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import psutil
import pytest

from forkchat import __version__

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "bench.py")
RUN_TIMEOUT_S = 60

pytestmark = pytest.mark.timeout(120)


def run_bench(*args: str) -> list[dict]:
    """Run bench.py; returns its JSON lines.  It must exit 0 and leave no process behind."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    done = subprocess.run([sys.executable, BENCH, *args], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not left, f"bench.py left processes behind: {left}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def check_common(result: dict, scenario: str) -> None:
    assert result["scenario"] == scenario
    assert "error" not in result, result.get("error")
    for key in ("time", "server_pid", "cpus", "command", "server_version"):
        assert key in result


def check_cpu(result: dict) -> None:
    for key in ("server_cpu", "generator_cpu"):
        assert result[key]["total_s"] >= 0
        assert "cores_used" in result[key]
    assert "busy_cores" in result["machine"]


def test_connect_counts_add_up():
    [result] = run_bench("--scenario", "connect", "-n", "20")
    check_common(result, "connect")
    check_cpu(result)
    assert result["connected"] + result["failures"] == 20
    assert result["failures"] == 0
    assert result["connections_per_s"] > 0
    assert result["per_client"]["p50_ms"] <= result["per_client"]["p99_ms"] \
        <= result["per_client"]["max_ms"]
    assert result["server_memory"]["processes"] >= 22     # supervisor, broker, 20 workers


def test_fanout_delivers_everything_once_in_order():
    [result] = run_bench("--scenario", "fanout", "-n", "10", "--messages", "50")
    check_common(result, "fanout")
    check_cpu(result)
    assert result["mode"] == "unpaced"
    assert result["messages_sent"] == 10 * 50          # every client sends (10 senders)
    assert result["expected_deliveries"] == 10 * 50 * 9
    assert result["deliveries"] + result["lost"] == result["expected_deliveries"]
    assert result["lost"] == result["reordered"] == result["duplicated"] == 0
    assert result["latency"]["p50_ms"] is not None
    assert result["server_cpu_us_per_delivery"] is not None


def test_latency_and_paced_counts():
    [result] = run_bench("--scenario", "latency", "-n", "5", "--messages", "30")
    check_common(result, "latency")
    assert result["senders"] == 1 and result["receivers"] == 6
    assert result["messages_sent"] == 30
    assert result["expected_deliveries"] == 30 * 5
    assert result["deliveries"] == 150 and result["lost"] == 0
    latency = result["latency"]
    assert latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]


def test_idle_memory_reports_per_client_figures():
    [result] = run_bench("--scenario", "idle-memory", "-n", "10")
    check_common(result, "idle-memory")
    assert result["setup"]["connected"] == 10
    assert result["after"]["processes"] - result["before"]["processes"] == 10
    for key in ("pss_per_client_bytes", "uss_per_client_bytes", "rss_per_client_bytes"):
        assert result[key] > 0
    assert result["tls"] is False


def test_idle_memory_with_tls_connects_every_client_over_tls():
    """--tls: the clients handshake with the server's TLS listener (a
    client speaking plain text to it is refused, and fails the setup), and
    the line says so."""
    [result] = run_bench("--scenario", "idle-memory", "-n", "10", "--tls")
    check_common(result, "idle-memory")
    assert result["tls"] is True
    assert result["setup"]["connected"] == 10 and result["setup"]["failures"] == 0
    assert result["after"]["processes"] - result["before"]["processes"] == 10
    assert result["pss_per_client_bytes"] > 0


def test_bad_option_is_a_clear_error():
    done = subprocess.run([sys.executable, BENCH, "--scenario", "nosuch"],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 2
    assert "unknown scenario nosuch" in done.stderr
    assert "Traceback" not in done.stderr


def test_soak_with_kills_loses_nothing_unexplained_and_leaks_nothing():
    [result] = run_bench("--scenario", "soak", "--duration", "8", "-n", "12",
                         "--kill-workers-per-s", "1", "--kill-broker-every", "2.5")
    check_common(result, "soak")
    check_cpu(result)
    assert result["stayers"] + result["churners"] == 12
    assert result["server_alive"]
    assert result["stayers_disconnected"] == []
    assert result["broker_kills"] == 2, result["broker_kill_log"]
    assert all(kill["new_pid"] for kill in result["broker_kill_log"])
    assert result["worker_kills"] > 0 and result["churner_connects"] > 0
    assert result["messages_sent"] > 0 and result["expected"] > 0
    assert result["received"] + result["lost"] == result["expected"]
    assert result["lost"] == (result["lost_across_broker_deaths"]
                              + result["lost_from_killed_senders"] + result["unexplained_loss"])
    assert result["unexplained_loss"] == 0, result["unexplained_examples"]
    assert result["duplicated"] == result["reordered"] == 0
    leaks = result["leaks"]
    assert not leaks["process_leak"], leaks
    assert leaks["brokers"] == 1 and leaks["workers"] == leaks["expected_workers"] \
        == result["stayers"]
    assert not leaks["fd_leak"], leaks
    for key in ("supervisor_uss_growth_bytes", "broker_uss_growth_bytes"):
        assert key in leaks


@pytest.mark.parametrize("args, message", [
    (["--scenario", "soak", "--attach", "127.0.0.1:6667"], "--attach needs --pid"),
    (["--scenario", "soak", "--kill-broker-every", "-1"], "must be 0 or more"),
    (["--scenario", "soak", "--kill-workers-per-s", "many"], "not a number"),
])
def test_soak_bad_options_are_clear_errors(args, message):
    done = subprocess.run([sys.executable, BENCH, *args],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def load_bench(monkeypatch):
    """scripts/bench.py as a module (its dataclasses need it in sys.modules)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_ksm_settle_reports_ksm_off_without_waiting(tmp_path, monkeypatch):
    bench = load_bench(monkeypatch)
    (tmp_path / "run").write_text("0\n")
    monkeypatch.setattr(bench, "KSM_DIR", str(tmp_path))
    result = bench.ksm_settle(30.0)
    assert result["waited_s"] == 0.0 and result["ksm"]["run"] == 0 and "not running" in result["note"]


def test_ksm_settle_waits_for_two_scans_and_no_more_growth(tmp_path, monkeypatch):
    """Polls see (full_scans, pages_sharing): growth continues through the first
    scan, then stops; it settles at the first poll after two scans without growth."""
    bench = load_bench(monkeypatch)
    polls = iter([(1, 5000), (2, 9000), (3, 9050), (4, 9060)])
    def write(scans: int, sharing: int) -> None:
        (tmp_path / "full_scans").write_text(f"{scans}\n")
        (tmp_path / "pages_sharing").write_text(f"{sharing}\n")
    (tmp_path / "run").write_text("1\n")
    write(0, 0)
    slept: list[float] = []
    def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        write(*next(polls))
    monkeypatch.setattr(bench, "KSM_DIR", str(tmp_path))
    monkeypatch.setattr(bench.time, "sleep", fake_sleep)
    monkeypatch.setattr(bench, "ksmd_cpu_s", lambda: 1.0)
    result = bench.ksm_settle(600.0)
    assert len(slept) == 3 and result["settled"] is True
    assert result["ksm"]["pages_sharing"] == 9050 and result["ksmd_cpu_s"] == 0.0


def test_idle_memory_with_memory_merge_reports_the_merging():
    [result] = run_bench("--scenario", "idle-memory", "-n", "5", "--memory-merge",
                         "--merge-wait", "1")
    check_common(result, "idle-memory")
    merging = result["memory_merge"]
    assert "ksm" in merging and merging["waited_s"] <= 6


class FakePinged:
    """Stands for a Client in op_ping: its PONG comes back after `rtt` seconds."""

    def __init__(self, rtt: float) -> None:
        self.rtt = rtt
        self.rtts: list[float] = []
        self.closed = FakeFuture()

    def ping(self, token: str) -> None:
        self.rtts.append(self.rtt)


class FakeFuture:
    def done(self) -> bool:
        return False


def test_capacity_ping_counts_no_pong_read_after_the_deadline(monkeypatch):
    """A PONG read 1.2 s after its PING is not 'answered within 1 s'."""
    import asyncio
    bench = load_bench(monkeypatch)
    gen = bench.Generator(None, 0, 0)
    gen.clients = {0: FakePinged(0.004), 1: FakePinged(1.2), 2: FakePinged(0.9)}
    result = asyncio.run(gen.op_ping({"round": 0, "deadline": 1.0}))
    assert result["asked"] == 3
    assert result["answered"] == 2 and sorted(result["rtts"]) == [0.004, 0.9]
    assert result["late"] == 1


def test_attach_runs_against_a_running_server_and_measures_its_tree(server):
    [result] = run_bench("--attach", f"127.0.0.1:{server.port}", "--pid", str(server.pid),
                         "--scenario", "connect", "-n", "5")
    check_common(result, "connect")
    assert result["attached"] is True and result["server_pid"] == server.pid
    # what the server says of itself, not the commit of this checkout
    assert result["server_version"] == result["server_software"] == f"forkchat-{__version__}"
    assert result["connected"] == 5 and result["failures"] == 0
    assert result["server_cpu"]["total_s"] > 0 and "supervisor_s" in result["server_cpu"]
    assert result["server_memory"]["processes"] >= 7     # supervisor, broker, spawner, 5 workers
    assert server.proc.poll() is None                    # an attached server is left running


def test_attach_to_a_closed_port_is_a_clear_error():
    import socket
    with socket.socket() as probe:      # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run([sys.executable, BENCH, "--attach", f"127.0.0.1:{port}",
                           "--scenario", "connect", "-n", "5"],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 1, done.stdout
    assert f"--attach 127.0.0.1:{port}: cannot connect" in done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr


@pytest.mark.parametrize("spec", ["127.0.0.1:70000", "127.0.0.1:0", "localhost:6667"])
def test_attach_to_a_bad_address_is_a_clear_error(spec):
    done = subprocess.run([sys.executable, BENCH, "--attach", spec, "--scenario", "connect"],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 1
    assert "--attach wants 127.0.0.1:PORT" in done.stderr and "Traceback" not in done.stderr


def test_attach_with_the_pid_of_another_process_is_a_clear_error(server):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        done = subprocess.run([sys.executable, BENCH, "--attach", f"127.0.0.1:{server.port}",
                               "--pid", str(other.pid), "--scenario", "connect", "-n", "5"],
                              capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    finally:
        other.kill()
        other.wait()
    assert done.returncode == 1 and done.stdout == ""
    assert f"--pid {other.pid} is not the server listening on" in done.stderr
    assert "Traceback" not in done.stderr


def test_cpu_delta_counts_what_an_ended_process_ran_from_its_parents_reaped_time(monkeypatch):
    """Worker 12 ran 0.5 s before the window and 0.3 s in it, then ended and was reaped
    by the spawner (11); worker 13 came and went in the window (0.2 s)."""
    bench = load_bench(monkeypatch)
    before = {10: ("supervisor", 1.0, 0.1, 0.0), 11: ("spawner", 2.0, 0.5, 4.0),
              12: ("worker", 0.5, 0.1, 0.0)}
    after = {10: ("supervisor", 1.1, 0.1, 0.0), 11: ("spawner", 2.0, 0.5, 4.0 + 0.8 + 0.2)}
    figures = bench.cpu_delta(before, after, 1.0)
    assert figures["exited_s"] == 0.5
    assert figures["total_s"] == 0.6 and figures["supervisor_s"] == 0.1


def test_cpu_delta_without_ended_processes_has_no_exited_role(monkeypatch):
    bench = load_bench(monkeypatch)
    before = {10: ("supervisor", 1.0, 0.1, 3.0)}
    after = {10: ("supervisor", 1.25, 0.1, 3.0), 14: ("worker", 0.25, 0.0, 0.0)}
    figures = bench.cpu_delta(before, after, 1.0)
    assert "exited_s" not in figures and figures["total_s"] == 0.5


REAPING_PARENT = """
import os, sys, time
read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(write_end)
    os.read(read_end, 1)
    began = time.process_time()
    while time.process_time() - began < 0.3:
        pass
    os._exit(0)
os.close(read_end)
print(pid, flush=True)
sys.stdin.readline()
os.write(write_end, b"g")
os.waitpid(pid, 0)
print("reaped", flush=True)
sys.stdin.readline()
"""


def test_server_cpu_includes_a_child_that_ended_during_the_window(monkeypatch):
    """A child that burns 0.3 s of CPU and ends between the samples is counted."""
    bench = load_bench(monkeypatch)
    parent = subprocess.Popen([sys.executable, "-c", REAPING_PARENT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        before = bench.cpu_sample(parent.pid)
        assert child in before
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.stdout.readline() == "reaped\n"
        after = bench.cpu_sample(parent.pid)
    finally:
        parent.kill()
        parent.wait()
    assert child not in after
    figures = bench.cpu_delta(before, after, 1.0)
    assert figures["exited_s"] >= 0.25 and figures["total_s"] >= 0.25, figures


def test_out_in_a_missing_directory_is_a_clear_error_before_any_run(tmp_path):
    out = tmp_path / "no" / "such" / "results.jsonl"
    done = subprocess.run([sys.executable, BENCH, "--scenario", "connect", "-n", "2",
                           "--out", str(out)], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    assert done.returncode == 2 and done.stdout == ""
    assert f"--out {out}: No such file or directory" in done.stderr
    assert "Traceback" not in done.stderr


def test_out_that_cannot_be_written_later_is_a_clear_error(monkeypatch, tmp_path):
    bench = load_bench(monkeypatch)
    gone = tmp_path / "gone"
    with pytest.raises(bench.BenchError, match="--out .*gone/results.jsonl"):
        bench.emit({"scenario": "connect"}, str(gone / "results.jsonl"))


def test_record_counts_loss_order_and_copies_per_sender_and_receiver(monkeypatch):
    """Sender 0 sends 0..4 and 1 is late, 3 never comes, 2 and the late 1 come twice;
    sender 1's 0 comes twice.  A copy is no delivery and no latency sample."""
    import types
    bench = load_bench(monkeypatch)
    gen = bench.Generator(None, 0, 0)
    client = types.SimpleNamespace()
    bench.Client.reset_counts(client)
    now = bench.time.monotonic_ns()
    def hits(*pairs):
        return [(b"%d" % sid, b"%d" % seq, b"%d" % (now - 5_000_000)) for sid, seq in pairs]
    gen.record(client, hits((0, 0), (0, 2), (1, 0)))
    gen.record(client, hits((0, 1), (0, 2), (0, 4), (1, 0), (0, 1)))
    assert (client.unique, client.reordered, client.dup) == (5, 1, 3)
    assert client.gaps == {(0, 3)}                  # still missing at the end: lost
    assert sum(gen.hist.values()) == 5
    assert bench.hist_percentiles(gen.hist)["max_ms"] >= 5.0


def test_server_log_mark_stays_right_once_the_kept_lines_are_full(monkeypatch):
    """With the last 5 lines kept, the lines after a mark taken at line 8 are
    lines 8-10, not nothing (an index into the full deque pointed past its end)."""
    bench = load_bench(monkeypatch)
    server = bench.Server("info", [])
    server.lines = collections.deque(maxlen=5)
    seen: dict[str, list[str]] = {}

    def stderr():
        for number in range(20):
            if number == 8:
                seen["mark"] = server.log_mark()
            if number == 11:
                seen["after 3"] = server.log_since(seen["mark"])
            yield b"line %d\n" % number
    server.proc = type("Proc", (), {"stderr": stderr()})
    server._read_log()
    assert seen["after 3"] == ["line 8", "line 9", "line 10"]
    assert server.log_since(seen["mark"]) == [f"line {n}" for n in range(16, 20)] + ["<eof>"]
    assert server.log_since(server.log_mark()) == []


def test_the_server_started_is_this_checkouts(monkeypatch):
    """`scripts/bench.py` has scripts/ on sys.path, not the checkout: it ran
    whatever forkchat was installed (another checkout's, here), and its
    figures were read as this one's."""
    bench = load_bench(monkeypatch)
    root = os.path.dirname(os.path.dirname(os.path.abspath(BENCH)))
    environ = {"PYTHONPATH": "/elsewhere"}
    assert bench.prefer_this_checkout(environ) == root
    assert environ["PYTHONPATH"] == os.pathsep.join([root, "/elsewhere"])
    found = subprocess.run([sys.executable, "-c", "import forkchat; print(forkchat.__file__)"],
                           env={**os.environ, **environ}, cwd="/", capture_output=True,
                           text=True, timeout=30)
    assert found.stdout.startswith(os.path.join(root, "forkchat"))


def test_the_server_started_from_inside_another_checkout_is_still_this_ones(monkeypatch,
                                                                           tmp_path):
    """`python -m` puts the current directory first on the path: run from
    another checkout, bench.py started that checkout's server, and two
    trees compared from there ran the same code."""
    bench = load_bench(monkeypatch)
    environ = {"PYTHONPATH": ""}
    bench.prefer_this_checkout(environ)
    decoy = tmp_path / "forkchat"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("")
    (decoy / "__main__.py").write_text("print('the other checkout')\n")
    found = subprocess.run([*bench.SERVER_PYTHON, "-m", "forkchat", "--version"],
                           env={**os.environ, **environ}, cwd=tmp_path, capture_output=True,
                           text=True, timeout=30)
    assert "the other checkout" not in found.stdout
    assert found.stdout.startswith("forkchat-server"), found.stdout + found.stderr


def test_the_started_servers_room_store_can_be_written(monkeypatch):
    """Started as root, the server serves as nobody, who could not write a
    store in the bench's 0700 directory: every run measured a server whose
    store failed.  Its log says nothing about the store not persisting."""
    bench = load_bench(monkeypatch)
    server = bench.Server("info", [])
    try:
        server.start()
        lines = server.log_since(0)
    finally:
        server.stop()
    assert not [line for line in lines if "may not persist" in line or "room store" in line]


def test_the_started_server_with_tls_serves_tls_on_its_one_listener(monkeypatch):
    """--tls: the server gets one listener, a TLS one, with a certificate
    made for the run: not a plain one beside it that clients might reach."""
    import socket
    import ssl
    bench = load_bench(monkeypatch)
    server = bench.Server("info", [], tls=True)
    try:
        server.start()
        listening = [line for line in server.log_since(0) if "listening on" in line]
        context = bench.client_tls_context()
        with context.wrap_socket(socket.create_connection((bench.HOST, server.port), timeout=10),
                                 server_hostname="localhost") as sock:
            assert sock.version() is not None
            assert sock.getpeercert(binary_form=True)
    finally:
        server.stop()
    assert len(listening) == 1 and listening[0].endswith(f":{server.port} (irc) with TLS")
