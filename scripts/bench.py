#!/usr/bin/env python3
"""forkchat's load generator: real IRC clients over TCP, one JSON line per scenario.

    bench.py (parent) ──Pipe──▶ generator process 0 ── asyncio ── clients 0, P, 2P, ...
         │            ──Pipe──▶ generator process 1 ── asyncio ── clients 1, P+1, ...
         │                                  (spawned; P = --processes)
         └── forkchat-server -c <temp config> -l 127.0.0.1:0   (or --attach HOST:PORT --pid PID)

With --tls the server's one listener speaks TLS, with a self-signed
certificate made for the run (openssl, into the temporary directory), and
every client connects with TLS: what irssi and WeeChat do on port 6697.

The clients live in several generator processes so that the generator is
not what limits the figures; its own CPU use is reported beside the
server's so that a saturated generator shows.  The parent only
coordinates: it sends each generator process one command at a time
(connect, run, ping, close) and merges what they answer.

Every message a sender sends carries its sender id, a sequence number and
its send time (CLOCK_MONOTONIC, shared by all processes on the machine):
a receiver counts lost, reordered and duplicated messages per sender and
keeps a latency histogram.  Server figures come from psutil, summed over
the supervisor and all its descendants (CPU per role, RSS/USS/PSS).

The soak scenario (issue 6) mixes stayers, who keep their rooms and
record every message they get, with churners, who join, part, change
nicks and leave; meanwhile the generators SIGKILL random churners'
workers (found by their TCP peer port) and the parent SIGKILLs the broker
(the server's child named forkchat-broker) on schedule.  Afterwards it
compares what each stayer got with what was sent to its rooms, and checks
the server's process tree, the supervisor's fds and USS for leaks.

Every loop is bounded in count and time; the server this script starts is
stopped on every path (error, Ctrl+C, SIGTERM), and the generator
processes die with their parent (PR_SET_PDEATHSIG).  Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import datetime
import json
import math
import multiprocessing
import os
import pwd
import re
import resource
import shlex
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psutil

SCENARIOS = ("connect", "fanout", "latency", "idle-memory", "slowreader", "capacity", "soak")
HOST = "127.0.0.1"
ROOM = "#bench"
PAYLOAD = b"PRIVMSG %s :fc %d %d %d%s\r\n"          # room, sender, seq, send ns, padding
PAYLOAD_RE = re.compile(rb" :fc (\d+) (\d+) (\d+)")
SOAK_PAYLOAD = b"PRIVMSG %s :fs %d %d %d\r\n"          # room, sender, seq, send ns
SOAK_RE = re.compile(rb"PRIVMSG (\S+) :fs (\d+) (\d+) (\d+)")
MP = multiprocessing.get_context("spawn")            # the parent runs a log thread: no fork

SERVER_START_S = 20.0
SERVER_STOP_S = 10.0
LOG_LINES_KEPT = 100000         # the server's last log lines, for error texts and the drop
ATTACH_CONNECT_S = 5.0          # --attach: the one TCP connect that checks the server is there
ATTACH_PROBE_S = 10.0           # --attach: one client's registration (InspIRCd 3 takes 1 s)
CONNECT_TIMEOUT_S = 30.0        # one client: TCP connect to end of its JOIN reply
REPLY_GRACE_S = 30.0            # extra time a generator process gets to answer a command
DRAIN_S = 5.0                   # after the last send, how long receivers may wait
UNPACED_SEND_LIMIT_S = 120.0    # an unpaced run stops sending after this, whatever is left
SETTLE_LIMIT_S = 60.0           # waiting for the server's workers to go after a scenario
PING_DEADLINE_S = 1.0           # capacity: every client must get its PONG within this
LATENCY_INTERVAL_S = 0.010      # latency: one message every 10 ms
TICK_S = 0.001                  # pacing granularity of the senders
UNPACED_BATCH = 50              # messages per write when sending unpaced
SLOW_RCVBUF = 4096              # the stuck reader's receive buffer
MEMORY_MARGIN_BYTES = 1 << 30   # capacity stops before the machine has less than this free
TCP_STATES = {"01": "ESTABLISHED", "04": "FIN_WAIT1", "05": "FIN_WAIT2", "06": "TIME_WAIT",
              "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0B": "CLOSING"}
PR_SET_PDEATHSIG = 1
# Who forkchat-server becomes when started as root with no user configured.
SERVER_USER_AS_ROOT = "nobody"

BENCH_CONFIG = """\
# written by scripts/bench.py: every client comes from 127.0.0.1 and talks fast
[server]
name = "bench.forkchat"
state_dir = "{state_dir}"
{server_extra}
[limits]
max_clients = 100000
max_clients_per_ip = 100000
flood_burst = 100000
flood_rate = 1000000.0
{optional_limits}recvq_bytes = 1048576
members_per_room = 100000
ping_interval = 600
ping_timeout = 600
registration_timeout = 60

[log]
level = "{log_level}"
"""


# --tls: the server's listener, from the file instead of -l (which would
# replace it), and the certificate it serves, made for the run.  RSA 2048,
# as the tests' certificates and most served ones are.
TLS_LISTENER = """
[[listen]]
address = "{host}"
port = 0
tls_cert = "{cert}"
tls_key = "{key}"
"""
TLS_CERT_COMMAND = ("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost")


# Limits that only newer servers know (a per-IP connection-rate throttle):
# written when the server accepts them, dropped when --check-config says
# "unknown key", so that the benchmark runs against older commits too.
OPTIONAL_LIMITS = {"connect_burst": "100000", "connect_rate": "1000000.0"}


class BenchError(Exception):
    """A scenario could not be run; the message is for the user."""


# ---------------------------------------------------------------------------
# Statistics helpers
# ---------------------------------------------------------------------------

def bucket_us(value: int) -> int:
    """Round a latency in µs to ~0.1% (10 significant bits) for a compact histogram."""
    bits = value.bit_length()
    if bits <= 10:
        return value
    shift = bits - 10
    return (value >> shift) << shift


def hist_percentiles(hist: dict[int, int], points: tuple[float, ...] = (50, 99)) -> dict[str, Any]:
    """p50/p99/max (ms) of a {µs bucket: count} histogram; None when empty."""
    total = sum(hist.values())
    if not total:
        return {**{f"p{p:g}_ms": None for p in points}, "max_ms": None}
    ordered = sorted(hist.items())
    result: dict[str, Any] = {}
    for point in points:
        rank = max(1, math.ceil(total * point / 100))
        seen = 0
        for value, count in ordered:
            seen += count
            if seen >= rank:
                result[f"p{point:g}_ms"] = round(value / 1000, 3)
                break
    result["max_ms"] = round(ordered[-1][0] / 1000, 3)
    return result


def list_percentiles(values: list[float]) -> dict[str, Any]:
    """p50/p99/max of plain seconds, reported in ms."""
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)

    def at(point: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(len(ordered) * point) - 1)] * 1000, 3)
    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": round(ordered[-1] * 1000, 3)}


def merge_hist(into: dict[int, int], more: dict[int, int]) -> None:
    for key, count in more.items():
        into[key] = into.get(key, 0) + count


# ---------------------------------------------------------------------------
# Process-tree figures (psutil)
# ---------------------------------------------------------------------------

def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def role_of(process: psutil.Process, root_pid: int, foreign: bool = False) -> str:
    """forkchat's process roles; another server (--attach) has only its
    own process ("server") and whatever children it forks ("child")."""
    if process.pid == root_pid:
        return "server" if foreign else "supervisor"
    if foreign:
        return "child"
    try:
        name = process.name()
    except psutil.Error:
        return "worker"
    if "broker" in name:
        return "broker"
    return "spawner" if "spawn" in name else "worker"


def run_seconds(pid: int) -> float | None:
    """CPU time a process really ran (ns-precise), summed over its threads.

    /proc/PID/schedstat, not utime/stime: the kernel charges those per
    clock tick, and a worker that wakes for a few microseconds at a time
    is charged almost nothing (we saw 0 ticks for 100 workers that had run
    294 ms between them), which would make per-delivery CPU look cheap.
    """
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as handle:
                total += int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


CpuSample = dict[int, tuple[str, float, float, float]]   # pid: (role, ran, kernel, reaped)


def cpu_sample(pid: int | None, foreign: bool = False) -> CpuSample:
    """{pid: (role, run seconds, kernel seconds, reaped children's seconds)}
    over the tree rooted at pid.

    The kernel part is the tick-based system share of utime+stime applied
    to the precise run time: an estimate.  The reaped part is the CPU of
    the process's children that it has waited for (cutime+cstime): what
    shows a worker that ended between two samples.
    """
    sample: CpuSample = {}
    if pid is None:
        return sample
    for process in process_tree(pid):
        sample_one(sample, process.pid, role_of(process, pid, foreign))
    return sample


def sample_one(sample: CpuSample, pid: int, role: str, reaped: bool = True) -> None:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return
    ticked = times.user + times.system
    ran = run_seconds(pid)
    if ran is None:
        ran = ticked
    kernel = ran * times.system / ticked if ticked > 0 else 0.0
    children = times.children_user + times.children_system if reaped else 0.0
    sample[pid] = (role, ran, kernel, children)


def cpu_delta(before: CpuSample, after: CpuSample, wall: float) -> dict[str, Any]:
    """CPU seconds per role (and the kernel's estimated part) between two samples.

    `busiest_process_core_share` near 1.0 means one process (the broker,
    say) is saturated.  A process that ended between the samples is
    missing from `after`; what it ran since `before` (or since it started,
    if it came and went in between) is in its parent's reaped-children
    time once the parent has waited for it: that growth, less what the
    ended processes had already run (and reaped) at `before`, is the
    `exited` role.  Without it a worker that ended, a dropped client's
    or a killed one's, took its last CPU out of the figures.
    """
    roles: dict[str, float] = {}
    kernel: dict[str, float] = {}
    busiest = 0.0
    reaped = 0.0
    for pid, (role, ran, system, children) in after.items():
        _, ran0, system0, children0 = before.get(pid, (role, 0.0, 0.0, 0.0))
        used = ran - ran0
        roles[role] = roles.get(role, 0.0) + used
        kernel[role] = kernel.get(role, 0.0) + max(0.0, system - system0)
        busiest = max(busiest, used)
        reaped += max(0.0, children - children0)
    gone = [pid for pid in before if pid not in after]
    ended = max(0.0, reaped - sum(before[pid][1] + before[pid][3] for pid in gone))
    if gone or ended:
        roles["exited"] = ended
    total = sum(roles.values())
    return {"total_s": round(total, 3),
            **{f"{role}_s": round(value, 3) for role, value in sorted(roles.items())},
            **{f"{role}_sys_s": round(value, 3) for role, value in sorted(kernel.items())},
            "cores_used": round(total / wall, 3) if wall > 0 else None,
            "busiest_process_core_share": round(busiest / wall, 3) if wall > 0 else None}


def memory_sample(pid: int | None, foreign: bool = False) -> dict[str, Any] | None:
    """RSS, USS and PSS summed over the tree, and per role."""
    if pid is None:
        return None
    totals = {"rss": 0, "uss": 0, "pss": 0}
    roles: dict[str, dict[str, int]] = {}
    count = 0
    for process in process_tree(pid):
        try:
            info = process.memory_full_info()
        except psutil.Error:
            continue
        count += 1
        role = roles.setdefault(role_of(process, pid, foreign),
                                {"rss": 0, "uss": 0, "pss": 0, "n": 0})
        role["n"] += 1
        for key in totals:
            value = getattr(info, key, 0)
            totals[key] += value
            role[key] += value
    return {"processes": count, **{f"{k}_bytes": v for k, v in totals.items()},
            "roles": {name: {f"{k}_bytes" if k != "n" else "processes": v
                             for k, v in figures.items()} for name, figures in roles.items()}}


KSM_DIR = "/sys/kernel/mm/ksm"
KSM_POLL_S = 5.0
KSM_SETTLED = 0.01     # pages_sharing grew by less than this share in one poll


def ksm_figures() -> dict[str, Any]:
    """The kernel's same-page merging switches and counters, as they are now."""
    figures: dict[str, Any] = {}
    for name in ("run", "pages_to_scan", "sleep_millisecs", "advisor_mode",
                 "pages_sharing", "pages_shared", "full_scans"):
        try:
            with open(os.path.join(KSM_DIR, name)) as handle:
                text = handle.read().strip()
        except OSError:
            continue
        figures[name] = int(text) if text.isdigit() else text
    return figures


def ksmd_cpu_s() -> float | None:
    """CPU seconds of the kernel's merging thread (ksmd), from its schedstat."""
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "ksmd":
            try:
                with open(f"/proc/{process.pid}/schedstat") as handle:
                    return int(handle.read().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                return None
    return None


def ksm_settle(limit_s: float) -> dict[str, Any]:
    """Wait (at most limit_s) until merging stops finding pages to share.

    The figures say what it cost: ksmd's CPU over the wait, and how long it
    took.  Nothing here changes the kernel's settings: they are the
    machine's, and reported as found."""
    start = ksm_figures()
    if start.get("run") != 1:
        return {"waited_s": 0.0, "note": "KSM is not running (/sys/kernel/mm/ksm/run)",
                "ksm": start}
    began, cpu_before = time.monotonic(), ksmd_cpu_s()
    sharing = start.get("pages_sharing", 0)
    while time.monotonic() - began < limit_s:
        time.sleep(min(KSM_POLL_S, max(0.0, limit_s - (time.monotonic() - began))))
        figures = ksm_figures()
        now = figures.get("pages_sharing", 0)
        # a page is merged when a scan finds it unchanged since the last one:
        # two whole scans since the clients came, and no more growth, is done
        scanned_twice = figures.get("full_scans", 0) - start.get("full_scans", 0) >= 2
        if scanned_twice and now - sharing <= KSM_SETTLED * max(now, 1):
            break
        sharing = now
    waited = time.monotonic() - began
    cpu_after = ksmd_cpu_s()
    result: dict[str, Any] = {"waited_s": round(waited, 1), "ksm": ksm_figures(),
                              "settled": waited < limit_s}
    if cpu_before is not None and cpu_after is not None:
        result["ksmd_cpu_s"] = round(cpu_after - cpu_before, 2)
        result["ksmd_core_share"] = round((cpu_after - cpu_before) / max(waited, 1e-9), 3)
    return result


def worker_count(pid: int | None) -> int:
    return sum(1 for p in process_tree(pid) if role_of(p, pid) == "worker") if pid else 0


# ---------------------------------------------------------------------------
# The server under test
# ---------------------------------------------------------------------------

LISTEN_RE = re.compile(r"listening on \[?([^\]\s]+?)\]?:(\d+) \(irc\)")


class Server:
    """The server under test: started here (port 0, own config) or attached to."""

    def __init__(self, log_level: str, server_args: list[str], memory_merge: bool = False,
                 tls: bool = False) -> None:
        self.log_level = log_level
        self.server_args = server_args
        self.memory_merge = memory_merge
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.pid: int | None = None
        self.sendq_bytes: int | None = 262144
        self.lines: collections.deque[str] = collections.deque(maxlen=LOG_LINES_KEPT)
        self.lines_seen = 0     # ever appended: a mark stays right after the deque is full
        self._cond = threading.Condition()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.started = False
        # attached: what the server says of itself (RPL_MYINFO, RPL_ISUPPORT);
        # foreign: it is not forkchat (no broker, spawner or workers, no log here)
        self.welcome: dict[str, Any] = {}
        self.foreign = False
        self.other_connections = 0      # attached: clients that were not ours
        self.other_workers = 0          # attached: their workers (forkchat)

    def cpu(self) -> CpuSample:
        return cpu_sample(self.pid, self.foreign)

    def memory(self) -> dict[str, Any] | None:
        return memory_sample(self.pid, self.foreign)

    def attach(self, spec: str, pid: int | None, sendq_bytes: int | None = None) -> "Server":
        """Check before any scenario that the server is there and `pid` is it.

        Else every scenario would run against nothing (connect reported 0
        of N connected and exit 0), or CPU and memory would be another
        process's figures beside the server's latencies.  One client
        registers to learn what server it is (any IRC server will do:
        forkchat's roles and log lines are then used only if it is forkchat).
        """
        host, _, port = spec.rpartition(":")
        if host != HOST or not port.isdigit() or not 0 < int(port) < 65536:
            raise BenchError(f"--attach wants {HOST}:PORT, not {spec!r} (only 127.0.0.1)")
        self.port = int(port)
        self.pid = pid
        self.sendq_bytes = sendq_bytes
        if pid is not None and not psutil.pid_exists(pid):
            raise BenchError(f"--pid {pid}: no such process")
        try:
            socket.create_connection((HOST, self.port), timeout=ATTACH_CONNECT_S).close()
        except OSError as error:
            raise BenchError(f"--attach {spec}: cannot connect: "
                             f"{error.strerror or error}") from None
        if pid is not None and listens_on(pid, self.port) is False:
            raise BenchError(f"--pid {pid} is not the server listening on {spec}: give the "
                             "pid of the server (of forkchat-server, its supervisor)")
        self.other_connections = server_connections(self.port)
        self.other_workers = worker_count(pid)
        self.welcome = probe_server(self.port, self.tls, ATTACH_PROBE_S)
        if not self.welcome.get("welcomed"):
            raise BenchError(f"--attach {spec}: no IRC welcome within {ATTACH_PROBE_S:.0f} s "
                             f"({self.welcome.get('last_line') or 'nothing was said'})")
        self.foreign = self.welcome["foreign"]
        return self

    def start(self) -> "Server":
        self._tmp = tempfile.TemporaryDirectory(prefix="forkchat-bench-")
        path = self._write_config(dict(OPTIONAL_LIMITS))
        unknown = [key for key in OPTIONAL_LIMITS if f"limits.{key}: unknown key" in
                   self._check_config(path)]
        if unknown:
            path = self._write_config({k: v for k, v in OPTIONAL_LIMITS.items()
                                       if k not in unknown})
        listen = [] if self.tls else ["-l", f"{HOST}:0"]
        command = [*SERVER_PYTHON, "-m", "forkchat", "-c", path, *listen, *self.server_args]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True,
                                     preexec_fn=_die_with_parent(signal.SIGTERM))
        self.pid = self.proc.pid
        self.started = True
        threading.Thread(target=self._read_log, daemon=True).start()
        self._wait_listening(command)
        return self

    def _write_config(self, optional: dict[str, str]) -> str:
        assert self._tmp is not None
        path = os.path.join(self._tmp.name, "bench.toml")
        extra = "".join(f"{key} = {value}\n" for key, value in optional.items())
        with open(path, "w") as handle:
            handle.write(BENCH_CONFIG.format(
                state_dir=self._state_dir(), log_level=self.log_level, optional_limits=extra,
                server_extra="memory_merge = true\n" if self.memory_merge else ""))
            if self.tls:
                cert, key = self._certificate()
                handle.write(TLS_LISTENER.format(host=HOST, cert=cert, key=key))
        return path

    def _certificate(self) -> tuple[str, str]:
        """A self-signed certificate and its key in our temporary directory
        (made once); the server reads them before it drops root.

        Raises:
            BenchError: openssl is missing or failed.
        """
        assert self._tmp is not None
        cert, key = (os.path.join(self._tmp.name, name) for name in ("cert.pem", "key.pem"))
        if not os.path.exists(cert):
            try:
                subprocess.run([*TLS_CERT_COMMAND, "-keyout", key, "-out", cert], check=True,
                               capture_output=True, timeout=SERVER_START_S,
                               stdin=subprocess.DEVNULL)
            except (OSError, subprocess.SubprocessError) as error:
                raise BenchError(f"--tls: cannot make a certificate with openssl: "
                                 f"{error}") from None
        return cert, key

    def _state_dir(self) -> str:
        """The room store's directory, writable by the user the server runs as.

        Started as root with no user configured, the server serves as
        `nobody`: in our 0700 temporary directory its room store could not
        be written, and every figure was that of a server logging a failing
        store (a JOIN's record tried and refused)."""
        assert self._tmp is not None
        state = os.path.join(self._tmp.name, "state")
        os.makedirs(state, exist_ok=True)
        if os.geteuid() == 0:
            nobody = pwd.getpwnam(SERVER_USER_AS_ROOT)
            os.chown(state, nobody.pw_uid, nobody.pw_gid)
            os.chmod(self._tmp.name, 0o711)     # nobody may pass through to it
        return state

    def _check_config(self, path: str) -> str:
        """What `forkchat-server --check-config` says about our file (empty if fine)."""
        try:
            done = subprocess.run([*SERVER_PYTHON, "-m", "forkchat", "-c", path, "--check-config"],
                                  capture_output=True, text=True, timeout=SERVER_START_S,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as error:
            raise BenchError(f"cannot run forkchat-server --check-config: {error}") from None
        return done.stdout + done.stderr

    def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                self.lines_seen += 1
                match = LISTEN_RE.search(line)
                if match and not self.port:
                    self.port = int(match.group(2))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<eof>")
            self.lines_seen += 1
            self._cond.notify_all()

    def _wait_listening(self, command: list[str]) -> None:
        deadline = time.monotonic() + SERVER_START_S
        with self._cond:
            while not self.port:
                left = deadline - time.monotonic()
                if left <= 0 or (self.lines and self.lines[-1] == "<eof>"):
                    tail = "\n".join(list(self.lines)[-15:])
                    raise BenchError(f"the server did not start ({shlex.join(command)}):\n{tail}")
                self._cond.wait(left)

    def log_since(self, mark: int) -> list[str]:
        """The lines logged after log_mark() said `mark`, as many as are still kept."""
        with self._cond:
            wanted = min(self.lines_seen - mark, len(self.lines))
            return list(self.lines)[len(self.lines) - wanted:] if wanted > 0 else []

    def log_mark(self) -> int:
        with self._cond:
            return self.lines_seen

    def alive(self) -> bool:
        return self.proc.poll() is None if self.proc else (self.pid is None
                                                             or psutil.pid_exists(self.pid))

    def stop(self) -> int | None:
        """SIGTERM, wait, then SIGKILL the whole session; always reaps."""
        if self.proc is None:
            return None
        kids = process_tree(self.proc.pid)[1:]
        code = self.proc.poll()
        if code is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(SERVER_STOP_S)
            except subprocess.TimeoutExpired:
                code = None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for kid in kids:
            try:
                kid.kill()
            except psutil.Error:
                pass
        if code is None:
            self.proc.wait(5)
        psutil.wait_procs(kids, timeout=5)
        if self._tmp is not None:
            self._tmp.cleanup()
        self.proc = None
        return code


def listens_on(pid: int, port: int) -> bool | None:
    """Does the process tree at `pid` hold a TCP socket listening on `port`?
    None when the tree's sockets cannot be read (another user's server)."""
    denied = False
    for process in process_tree(pid):
        lister = getattr(process, "net_connections", None) or process.connections
        try:
            sockets = lister(kind="tcp")
        except psutil.AccessDenied:
            denied = True
            continue
        except psutil.Error:
            continue
        if any(s.status == psutil.CONN_LISTEN and s.laddr and s.laddr.port == port
               for s in sockets):
            return True
    return None if denied else False


def probe_server(port: int, tls: bool, timeout: float) -> dict[str, Any]:
    """Register one client, read the welcome, QUIT: see welcome_facts().

    A PING before the welcome (some servers' registration check) is
    answered.  Never raises: an error is the result's last_line."""
    lines: list[str] = []
    nick = f"bp{os.getpid() % 10000000}"        # 9 characters at most: RFC 2812's NICKLEN
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as raw:
            sock = client_tls_context().wrap_socket(raw, server_hostname="localhost") \
                if tls else raw
            sock.sendall(f"NICK {nick}\r\nUSER {nick} 0 * :forkchat bench probe\r\n".encode())
            _read_welcome(sock, lines, deadline)
            try:
                sock.sendall(b"QUIT :bench probe\r\n")
                _read_welcome(sock, [], time.monotonic() + 1.0)    # until the server closes
            except OSError:
                pass    # it had closed: what it said before is its answer, not our EPIPE
    except OSError as error:
        lines.append(f"probe: {error.strerror or error}")
    return welcome_facts(lines)


def _read_welcome(sock: socket.socket, lines: list[str], deadline: float) -> None:
    """Read lines into `lines` until the end of the MOTD, ERROR, EOF or `deadline`."""
    buf = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except (TimeoutError, OSError):
            return
        if not data:
            return
        *complete, buf = (buf + data).split(b"\n")
        for raw in complete:
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            lines.append(line)
            words = line.split(" ")
            if words[0] == "PING":
                sock.sendall(f"PONG {' '.join(words[1:])}\r\n".encode())
            elif words[0] == "ERROR" or (len(words) > 1 and words[1] in ("376", "422")):
                return


def welcome_facts(lines: list[str]) -> dict[str, Any]:
    """What a server's welcome says of it: its software (RPL_MYINFO's
    version), NICKLEN (RPL_ISUPPORT), whether it welcomed us (001) and
    whether it is some other server than forkchat."""
    facts: dict[str, Any] = {"welcomed": False, "software": None, "nicklen": None,
                             "last_line": lines[-1][:200] if lines else None}
    for line in lines:
        words = line.split(" ")
        numeric = words[1] if line.startswith(":") and len(words) > 1 else ""
        if numeric == "001":
            facts["welcomed"] = True
        elif numeric == "004" and len(words) > 4:
            facts["software"] = words[4]
        elif numeric == "005":
            for token in words[3:]:
                if token.startswith("NICKLEN=") and token[8:].isdigit():
                    facts["nicklen"] = int(token[8:])
    facts["foreign"] = not (facts["software"] or "").startswith("forkchat")
    return facts


def server_connections(port: int) -> int:
    """The server's open TCP connections on 127.0.0.1:`port` (its side
    established, or closed by the client and not yet by the server).

    A server listening on [::] (both families) holds our connections to
    127.0.0.1 as ::ffff:127.0.0.1, listed in /proc/net/tcp6."""
    locals_ = {f"0100007F:{port:04X}", f"0000000000000000FFFF00000100007F:{port:04X}"}
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                for line in handle:
                    parts = line.split()
                    if len(parts) > 3 and parts[1] in locals_ and parts[3] in ("01", "08"):
                        count += 1
        except OSError:
            continue
    return count


def _die_with_parent(signum: int) -> Callable[[], None]:
    """preexec_fn: the child gets `signum` when this process dies (Linux prctl)."""
    def preexec() -> None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    return preexec


def server_tcp_row(server_port: int, client_port: int) -> list[str] | None:
    """The /proc/net/tcp fields of the server side of the 127.0.0.1
    connection from `client_port`, or None if it is gone."""
    want_local = f"0100007F:{server_port:04X}"
    want_remote = f"0100007F:{client_port:04X}"
    try:
        with open("/proc/net/tcp") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) > 9 and parts[1] == want_local and parts[2] == want_remote:
                    return parts
    except OSError:
        return None
    return None


def tcp_socket_state(server_port: int, client_port: int) -> tuple[str, int] | None:
    """(state, tx_queue bytes) of the server side of one TCP connection, or None if gone."""
    parts = server_tcp_row(server_port, client_port)
    if parts is None:
        return None
    return TCP_STATES.get(parts[3], parts[3]), int(parts[4].split(":")[0], 16)


# ---------------------------------------------------------------------------
# Generator processes: the clients
# ---------------------------------------------------------------------------

@dataclass
class Spec:
    """One client as the parent describes it to a generator process."""
    cid: int
    nick: str
    room: str | None = ROOM
    sid: int | None = None          # sender id, when this client sends
    stuck: bool = False             # joins, then never reads


class Client(asyncio.Protocol):
    """One IRC client; counting of benchmark messages happens in data_received."""

    def __init__(self, gen: "Generator", spec: Spec) -> None:
        self.gen = gen
        self.spec = spec
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.buf = b""
        self.error_text = ""
        self.errors: collections.Counter[str] = collections.Counter()
        self.write_ok = asyncio.Event()
        self.write_ok.set()
        self.pings: dict[str, float] = {}
        self.rtts: list[float] = []
        self.names_left = len(spec.room.split(",")) if spec.room else 0
        self.ready_ns = 0
        self.welcomed = False
        self.join_again = False
        self.soak_rx: list[tuple[int, int, str]] | None = None   # soak stayers only
        self.reset_counts()

    def reset_counts(self) -> None:
        self.next_seq: dict[int, int] = {}
        self.gaps: set[tuple[int, int]] = set()
        self.unique = 0
        self.dup = 0
        self.reordered = 0

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        nick = self.spec.nick
        lines = f"NICK {nick}\r\nUSER {nick} 0 * :forkchat bench\r\n"
        if self.spec.room:
            lines += f"JOIN {self.spec.room}\r\n"
        transport.write(lines.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        reason = self.error_text or (f"connection lost: {exc}" if exc else "connection closed")
        self._fail(reason)
        if not self.closed.done():
            self.closed.set_result(None)
        self.gen.lost_client(self)

    def pause_writing(self) -> None:
        self.write_ok.clear()

    def resume_writing(self) -> None:
        self.write_ok.set()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        end = buf.rfind(b"\n")
        if end < 0:
            self.buf = buf
            return
        self.buf = buf[end + 1:]
        chunk = buf[:end + 1]
        hits = PAYLOAD_RE.findall(chunk)
        if hits:
            self.gen.record(self, hits)
            self.gen.rx_bytes += len(chunk)
        if len(hits) != chunk.count(b"\n"):
            for line in chunk.split(b"\n"):
                if line and b" :fc " not in line:
                    self.on_line(line.rstrip(b"\r"))

    # -- lines other than benchmark messages ----------------------------------

    def on_line(self, line: bytes) -> None:
        parts = line.split(b" ", 3)
        if line.startswith(b":"):
            parts = parts[1:]
        command = parts[0] if parts else b""
        handler = LINE_HANDLERS.get(command)
        if handler is not None:
            handler(self, line)
        elif command == b"451" and self.spec.room and not self.welcomed:
            # the JOIN sent with NICK and USER came before the registration
            # was complete (InspIRCd completes it on a timer): JOIN again
            # after the welcome, as a person's client would have anyway
            self.errors["451"] += 1
            self.join_again = True
        elif command[:1] in (b"4", b"5") and len(command) == 3:
            self.errors[command.decode()] += 1
            if not self.ready.done():        # registration or JOIN refused
                self._fail(line.decode("utf-8", "replace")[:120])

    def on_ping(self, line: bytes) -> None:
        token = line.split(b" ", 2)[-1] if not line.startswith(b":") else line.split(b" ")[-1]
        if self.transport is not None:
            self.transport.write(b"PONG " + token + b"\r\n")

    def on_pong(self, line: bytes) -> None:
        token = line.rsplit(b" ", 1)[-1].lstrip(b":").decode("ascii", "replace")
        sent = self.pings.pop(token, None)
        if sent is not None:
            self.rtts.append(time.monotonic() - sent)

    def stage(self) -> str:
        """How far the client got, for a timeout's error text."""
        if self.transport is None:
            return "in TCP connect"
        if not self.welcomed:
            return "before the end of MOTD"
        return f"in JOIN ({self.names_left} NAMES ends missing)"

    def on_welcome_end(self, line: bytes) -> None:
        self.welcomed = True
        if self.join_again and self.transport is not None:
            self.join_again = False
            self.gen.joins_resent += 1
            self.transport.write(f"JOIN {self.spec.room}\r\n".encode())
        if not self.spec.room and not self.ready.done():
            self.ready.set_result(None)

    def on_names_end(self, line: bytes) -> None:
        """Ready once the end of NAMES came for every room of its JOIN (comma list)."""
        self.names_left -= 1
        if self.ready.done() or self.names_left > 0:
            return
        self.ready_ns = time.monotonic_ns()
        self.ready.set_result(None)
        if self.spec.stuck and self.transport is not None:
            self.transport.pause_reading()

    def on_privmsg(self, line: bytes) -> None:
        """A soak stayer keeps (sender, seq, room) of every soak message it receives."""
        if self.soak_rx is None:
            return
        match = SOAK_RE.search(line)
        if match:
            self.soak_rx.append((int(match.group(2)), int(match.group(3)),
                                 match.group(1).decode("ascii", "replace")))

    def on_error(self, line: bytes) -> None:
        self.error_text = line.decode("utf-8", "replace")
        self._fail(self.error_text)

    def _fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(BenchError(reason))

    # -- actions ---------------------------------------------------------------

    def ping(self, token: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.pings[token] = time.monotonic()
            self.transport.write(f"PING :{token}\r\n".encode())

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def quit(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"QUIT :bench done\r\n")
            self.transport.close()


LINE_HANDLERS: dict[bytes, Callable[[Client, bytes], None]] = {
    b"PING": Client.on_ping,
    b"PONG": Client.on_pong,
    b"376": Client.on_welcome_end,
    b"422": Client.on_welcome_end,
    b"366": Client.on_names_end,
    b"ERROR": Client.on_error,
    b"PRIVMSG": Client.on_privmsg,
}


class Generator:
    """One generator process: its share of the clients and one command at a time."""

    def __init__(self, conn: Any, index: int, port: int, tls: bool = False) -> None:
        self.conn = conn
        self.index = index
        self.port = port
        self.tls = client_tls_context() if tls else None
        self.clients: dict[int, Client] = {}
        self.hist: dict[int, int] = {}
        self.first_ns = 0
        self.last_ns = 0
        self.lost_during: list[str] = []
        self.rx_bytes = 0
        self.joins_resent = 0
        self.measuring = False
        self.done = asyncio.Event()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self._on_command)
        await self.done.wait()
        loop.remove_reader(self.conn.fileno())
        await self.op_close({})

    def _on_command(self) -> None:
        try:
            request = self.conn.recv()
        except (EOFError, OSError):
            self.done.set()
            return
        asyncio.get_running_loop().create_task(self._answer(request))

    async def _answer(self, request: dict[str, Any]) -> None:
        op = request.get("op", "")
        handler = GENERATOR_OPS.get(op)
        try:
            if handler is None:
                raise BenchError(f"unknown op {op!r}")
            result = await handler(self, request)
        except Exception as error:     # reported to the parent, which decides
            result = {"error": f"{type(error).__name__}: {error}"}
        result["cpu_s"] = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        try:
            self.conn.send(result)
        except OSError:
            self.done.set()
        if op == "exit":
            self.done.set()

    # -- bookkeeping of received benchmark messages --------------------------------

    def record(self, client: Client, hits: list[tuple[bytes, bytes, bytes]]) -> None:
        """Count one chunk's benchmark messages: latency, loss, order, duplicates."""
        now = time.monotonic_ns()
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now
        hist = self.hist
        next_seq = client.next_seq
        for sender, seq, stamp in hits:
            sid = int(sender)
            number = int(seq)
            expected = next_seq.get(sid, 0)
            if number == expected:
                next_seq[sid] = number + 1
            elif number > expected:
                client.gaps.update((sid, missing) for missing in range(expected, number))
                next_seq[sid] = number + 1
            elif (sid, number) in client.gaps:
                client.gaps.discard((sid, number))
                client.reordered += 1
            else:
                client.dup += 1     # a second copy: no delivery, no latency sample
                continue
            client.unique += 1
            latency = (now - int(stamp)) // 1000
            bits = latency.bit_length()
            if bits > 10:
                latency = (latency >> (bits - 10)) << (bits - 10)
            hist[latency] = hist.get(latency, 0) + 1

    def lost_client(self, client: Client) -> None:
        if self.measuring and not client.spec.stuck:
            self.lost_during.append(f"{client.spec.nick}: {client.error_text or 'closed'}")

    # -- ops -------------------------------------------------------------------------

    async def op_connect(self, request: dict[str, Any]) -> dict[str, Any]:
        """Open clients (at most `in_flight` at once); time each to its ready line."""
        specs = [Spec(**spec) for spec in request["specs"]]
        limit = asyncio.Semaphore(max(1, int(request["in_flight"])))
        timeout = float(request.get("timeout", CONNECT_TIMEOUT_S))
        resent = self.joins_resent
        results = await asyncio.gather(*(self._open(spec, limit, timeout) for spec in specs))
        times = [seconds for seconds, error in results if error is None]
        errors = collections.Counter(error for _, error in results if error is not None)
        return {"ok": len(times), "failed": sum(errors.values()), "times": times,
                "errors": dict(errors.most_common(5)), "start": request.get("start", 0),
                "joins_resent": self.joins_resent - resent}

    async def _open(self, spec: Spec, limit: asyncio.Semaphore,
                    timeout: float) -> tuple[float, str | None]:
        loop = asyncio.get_running_loop()
        async with limit:
            began = time.monotonic()
            client = Client(self, spec)
            sock = _client_socket(spec.stuck)
            try:
                async with asyncio.timeout(timeout):
                    await loop.sock_connect(sock, (HOST, self.port))
                    await loop.create_connection(lambda: client, sock=sock, ssl=self.tls,
                                                 server_hostname="localhost" if self.tls
                                                 else None)
                    self.clients[spec.cid] = client
                    await client.ready
            except TimeoutError:
                _abort(client, sock)
                return 0.0, f"timeout {client.stage()}"
            except (OSError, BenchError) as error:
                _abort(client, sock)
                return 0.0, str(error)[:120]
            return time.monotonic() - began, None

    async def op_run(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send benchmark messages on a shared schedule; count what arrives."""
        for client in self.clients.values():
            client.reset_counts()
        self.hist, self.first_ns, self.last_ns, self.lost_during = {}, 0, 0, []
        self.rx_bytes = 0
        self.measuring = True
        t0 = int(request["t0_ns"])
        senders = [c for c in self.clients.values() if c.spec.sid is not None]
        rate = request.get("rate")     # messages/s per sender, or None: unpaced
        messages = int(request["messages"])
        pad = b" " + b"x" * int(request.get("pad", 0)) if request.get("pad") else b""
        pinger = self._pinger(request.get("ping_every"), t0)
        if rate:
            sent, lag = await self._send_paced(senders, float(rate), messages, t0,
                                               int(request["senders_total"]), pad)
        else:
            sent, lag = await self._send_unpaced(senders, messages, t0, pad), 0.0
        end_ns = time.monotonic_ns()
        await self._drain(request, sent)
        pinger.cancel()
        self.measuring = False
        return self._run_result(sent, lag, t0, end_ns)

    def _pinger(self, every: float | None, t0: int) -> asyncio.Task[None]:
        async def loop() -> None:
            if not every or not self.clients:
                return
            client = next(c for c in self.clients.values() if not c.spec.stuck)
            number = 0
            await asyncio.sleep(max(0.0, (t0 - time.monotonic_ns()) / 1e9))
            while number < 100000:
                client.ping(f"rt{number}")
                number += 1
                await asyncio.sleep(every)
        return asyncio.get_running_loop().create_task(loop())

    async def _send_paced(self, senders: list[Client], rate: float, messages: int, t0: int,
                          senders_total: int, pad: bytes) -> tuple[dict[int, int], float]:
        """Each sender sends `messages` at `rate`/s, staggered by its id across all senders."""
        period = 1e9 / rate
        offsets = {c.spec.sid: int(period * (c.spec.sid or 0) / max(1, senders_total))
                   for c in senders}
        sent = {c.spec.sid: 0 for c in senders}
        room = ROOM.encode()
        lag = 0.0
        deadline = t0 + int(period * (messages + 1)) + int(DRAIN_S * 1e9)
        while True:
            now = time.monotonic_ns()
            pending = False
            for client in senders:
                sid = client.spec.sid
                assert sid is not None
                start = t0 + offsets[sid]
                due = 0 if now < start else min(messages, int((now - start) / period) + 1)
                first = sent[sid]
                if due > first:
                    lag = max(lag, (now - (start + first * period)) / 1e9)
                    client.send(b"".join(PAYLOAD % (room, sid, seq, now, pad)
                                         for seq in range(first, due)))
                    sent[sid] = due
                if due < messages:
                    pending = True
            if not pending or now > deadline:
                return sent, lag
            await asyncio.sleep(TICK_S)

    async def _send_unpaced(self, senders: list[Client], messages: int, t0: int,
                            pad: bytes) -> dict[int, int]:
        await asyncio.sleep(max(0.0, (t0 - time.monotonic_ns()) / 1e9))
        deadline = time.monotonic() + UNPACED_SEND_LIMIT_S
        room = ROOM.encode()

        async def one(client: Client) -> int:
            sid = client.spec.sid
            seq = 0
            while seq < messages and time.monotonic() < deadline:
                if client.transport is None or client.transport.is_closing():
                    break
                if not client.write_ok.is_set():
                    try:
                        await asyncio.wait_for(client.write_ok.wait(), deadline - time.monotonic())
                    except TimeoutError:
                        break
                count = min(UNPACED_BATCH, messages - seq)
                now = time.monotonic_ns()
                client.send(b"".join(PAYLOAD % (room, sid, number, now, pad)
                                     for number in range(seq, seq + count)))
                seq += count
                await asyncio.sleep(0)
            return seq
        counts = await asyncio.gather(*(one(c) for c in senders))
        return {c.spec.sid: n for c, n in zip(senders, counts)}  # type: ignore[misc]

    async def _drain(self, request: dict[str, Any], sent: dict[int, int]) -> None:
        """Wait until every local receiver has all it should get, or DRAIN_S passes."""
        per_sender = int(request["messages"])
        senders_total = int(request["senders_total"])
        # from the end of the whole plan, not of this process's sending: a
        # process without senders is done sending at once
        rate = request.get("rate")
        planned_end_ns = int(request["t0_ns"]) + int(
            (per_sender / float(rate) if rate else UNPACED_SEND_LIMIT_S) * 1e9)
        deadline = time.monotonic() + float(request.get("drain", DRAIN_S)) + max(
            0.0, (planned_end_ns - time.monotonic_ns()) / 1e9)
        receivers = [c for c in self.clients.values() if not c.spec.stuck]

        def complete() -> bool:
            for client in receivers:
                own = 1 if client.spec.sid is not None else 0
                if client.unique < per_sender * (senders_total - own) and \
                        not client.closed.done():
                    return False
            return True
        quiet_ns = int(float(request.get("drain", DRAIN_S)) * 1e9)
        drain_began = time.monotonic_ns()
        while not complete() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            now = time.monotonic_ns()
            if not rate and now - max(self.last_ns, drain_began) > quiet_ns:
                return    # unpaced, and nothing came for DRAIN_S: senders were dropped

    def _run_result(self, sent: dict[int, int], lag: float, t0: int,
                    end_ns: int) -> dict[str, Any]:
        receivers = [c for c in self.clients.values() if not c.spec.stuck]
        rtts = [rtt for c in receivers for rtt in c.rtts]
        for client in receivers:
            client.rtts.clear()
        return {"sent": sent, "send_lag_s": lag, "send_end_ns": end_ns,
                "receivers": len(receivers),
                "receiving_senders": sum(1 for c in receivers if c.spec.sid is not None),
                "unique": sum(c.unique for c in receivers),
                "dup": sum(c.dup for c in receivers),
                "reordered": sum(c.reordered for c in receivers),
                "hist": self.hist, "first_ns": self.first_ns, "last_ns": self.last_ns,
                "rx_bytes": self.rx_bytes,
                "disconnected": len(self.lost_during), "lost_clients": self.lost_during[:5],
                "rtts": rtts, "stuck": self._stuck_report()}

    def _stuck_report(self) -> dict[str, Any] | None:
        stuck = [c for c in self.clients.values() if c.spec.stuck]
        if not stuck or stuck[0].transport is None:
            return None
        sock = stuck[0].transport.get_extra_info("socket")
        return {"local_port": sock.getsockname()[1] if sock is not None else None}

    async def op_stuck_port(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"stuck": self._stuck_report()}

    async def op_unstick(self, request: dict[str, Any]) -> dict[str, Any]:
        """Let the stuck reader read again: what did the server send last?"""
        stuck = [c for c in self.clients.values() if c.spec.stuck]
        if not stuck or stuck[0].transport is None:
            return {"stuck": None}
        client = stuck[0]
        inq = _inq_bytes(client.transport)
        client.transport.resume_reading()
        try:
            await asyncio.wait_for(asyncio.shield(client.closed), float(request.get("wait", 5)))
        except TimeoutError:
            pass
        return {"stuck": {"error_line": client.error_text, "closed": client.closed.done(),
                          "inq_bytes": inq}}

    async def op_ping(self, request: dict[str, Any]) -> dict[str, Any]:
        """Every client sends one PING at once; RTTs within the deadline, and failures.

        A PONG read after the deadline (a busy loop reads late; the last
        sleep may overshoot) is not an answer within it: `late` counts those.
        """
        deadline = float(request.get("deadline", PING_DEADLINE_S))
        token = f"cap{request.get('round', 0)}"
        alive = [c for c in self.clients.values() if not c.closed.done()]
        for client in alive:
            client.rtts.clear()
            client.ping(token)
        end = time.monotonic() + deadline
        while time.monotonic() < end and any(not c.rtts for c in alive):
            await asyncio.sleep(0.005)
        rtts = [c.rtts[0] for c in alive if c.rtts and c.rtts[0] <= deadline]
        late = sum(1 for c in alive if c.rtts and c.rtts[0] > deadline)
        return {"asked": len(alive), "answered": len(rtts), "rtts": rtts, "late": late,
                "dead": len(self.clients) - len(alive)}

    async def op_status(self, request: dict[str, Any]) -> dict[str, Any]:
        alive = sum(1 for c in self.clients.values() if not c.closed.done())
        errors: collections.Counter[str] = collections.Counter()
        for client in self.clients.values():
            errors.update(client.errors)
        return {"alive": alive, "total": len(self.clients), "errors": dict(errors)}

    async def op_soak(self, request: dict[str, Any]) -> dict[str, Any]:
        return await soak_run(self, request)

    async def op_close(self, request: dict[str, Any]) -> dict[str, Any]:
        """QUIT every client and wait (bounded) for the server to close them."""
        clients = list(self.clients.values())
        for client in clients:
            client.quit()
        waits = [c.closed for c in clients if not c.closed.done()]
        if waits:
            await asyncio.wait(waits, timeout=float(request.get("timeout", 10)))
        for client in clients:
            if client.transport is not None:
                client.transport.abort()
        self.clients.clear()
        return {"closed": len(clients)}

    async def op_exit(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self.op_close(request)


GENERATOR_OPS: dict[str, Callable[[Generator, dict[str, Any]], Any]] = {
    "connect": Generator.op_connect,
    "run": Generator.op_run,
    "ping": Generator.op_ping,
    "status": Generator.op_status,
    "stuck_port": Generator.op_stuck_port,
    "unstick": Generator.op_unstick,
    "soak": Generator.op_soak,
    "close": Generator.op_close,
    "exit": Generator.op_exit,
}


def _client_socket(stuck: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if stuck:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
    return sock


def _abort(client: Client, sock: socket.socket) -> None:
    """Give up on a client that never became ready; its socket is closed either way."""
    if client.transport is not None:
        client.transport.abort()
    else:
        sock.close()
    client.gen.clients.pop(client.spec.cid, None)


def _inq_bytes(transport: asyncio.Transport | None) -> int | None:
    """Bytes waiting unread in a socket's receive queue (SIOCINQ)."""
    import fcntl
    import termios
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return None
    raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, struct.pack("i", 0))
    return int(struct.unpack("i", raw)[0])


def client_tls_context() -> ssl.SSLContext:
    """--tls: the clients' context.  The certificate is the run's own,
    self-signed: it is not checked (the handshake's cost is the same)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def generator_main(conn: Any, index: int, port: int, tls: bool = False) -> None:
    """Entry point of a generator process (spawned)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the parent decides about Ctrl+C
    _die_with_parent(signal.SIGKILL)()
    raise_nofile()
    asyncio.run(Generator(conn, index, port, tls).serve())


def raise_nofile() -> int:
    """Every client is a descriptor: take the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
    return hard


# ---------------------------------------------------------------------------
# Soak (issue 6): clients join, leave, talk and change nicks for --duration
# while churners' workers and the broker are killed
# ---------------------------------------------------------------------------

SOAK_ROOMS = ("#soak0", "#soak1", "#soak2", "#soak3")
SOAK_ACTION_S = 0.5             # each client acts about twice a second: modest CPU
SOAK_QUIET_S = 2.0              # drain: stop once nothing arrived for this long ...
SOAK_DRAIN_S = 8.0              # ... or after this (a broker holds talk up to 3 s)
SOAK_RECONNECT_S = 0.2          # a churner that left comes back as a new client after this
SOAK_CONNECT_S = 15.0           # one churner's connect, registration and JOIN
SOAK_KILL_WINDOW_NS = 1_000_000_000    # loss within ±1 s of a broker kill is excused
SOAK_START_NS = 500_000_000     # every generator has the request before anyone talks
SOAK_HARD_CAP_S = 600.0         # --duration is cut to this, whatever is asked
BROKER_KILLS_PER_WINDOW = 5     # the supervisor gives up after more than 5 deaths ...
BROKER_KILL_WINDOW_S = 61.0     # ... within 60 s: the bench stays below that
FD_TOLERANCE = 3
# What a client does per tick, by kind: stayers never leave their rooms.
STAYER_ACTIONS = ("talk", "talk", "talk", "nick")
CHURNER_ACTIONS = ("talk", "talk", "talk", "join", "part", "nick", "quit")


@dataclass
class SoakState:
    """One generator process's soak bookkeeping, returned to the parent at the end."""
    rng: Any
    end: float
    seq: collections.Counter[int] = field(default_factory=collections.Counter)
    sent: list[tuple[int, int, str, int]] = field(default_factory=list)  # sid, seq, room, ns
    actions: collections.Counter[str] = field(default_factory=collections.Counter)
    kills: list[tuple[int, int]] = field(default_factory=list)           # victim sid, ns
    kill_misses: int = 0
    churner_connects: int = 0
    churner_connect_failures: collections.Counter[str] = field(
        default_factory=collections.Counter)
    left: dict[int, int] = field(default_factory=dict)    # churner sid -> when it was gone
    failure_log: list[dict[str, Any]] = field(default_factory=list)
    rooms: dict[int, set[str]] = field(default_factory=dict)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)


def soak_talk(client: Client, state: SoakState) -> None:
    """Send one numbered message to one of the client's rooms and log it as sent."""
    rooms = state.rooms.get(client.spec.cid)
    if not rooms:
        return
    room = state.rng.choice(sorted(rooms))
    sid = client.spec.cid
    seq = state.seq[sid]
    state.seq[sid] = seq + 1
    now = time.monotonic_ns()
    client.send(SOAK_PAYLOAD % (room.encode(), sid, seq, now))
    state.sent.append((sid, seq, room, now))


def soak_action(client: Client, action: str, state: SoakState, gen_index: int) -> None:
    """One random action that a well-behaved client may take: no error reply is expected.

    Talk and PART go to rooms the client is in, JOIN to one it is not in,
    so any error numeric in the report is the server's doing.
    """
    rooms = state.rooms.setdefault(client.spec.cid, set())
    rng = state.rng
    number = state.actions.total()
    if action == "talk":
        soak_talk(client, state)
    elif action == "part" and len(rooms) > 1:
        room = rng.choice(sorted(rooms))
        rooms.discard(room)
        client.send(f"PART {room} :bye\r\n".encode())
    elif action == "join" and len(rooms) < len(SOAK_ROOMS):
        room = rng.choice(sorted(set(SOAK_ROOMS) - rooms))
        rooms.add(room)
        client.send(f"JOIN {room}\r\n".encode())
    elif action == "nick":
        client.send(f"NICK s{gen_index}n{number}c{client.spec.cid}\r\n".encode())
    elif action == "quit":
        client.quit()
    state.actions[action] += 1


def soak_rooms_for(rng: Any) -> list[str]:
    """One to three soak rooms, chosen at random."""
    return rng.sample(SOAK_ROOMS, rng.randint(1, 3))


async def soak_stayers(gen: Generator, state: SoakState, stayers: list[Client]) -> None:
    """Stayers talk and change nicks until the end; they never leave."""
    while time.monotonic() < state.end:
        for client in stayers:
            if not client.closed.done() and state.rng.random() < 0.5:
                soak_action(client, state.rng.choice(STAYER_ACTIONS), state, gen.index)
        await asyncio.sleep(SOAK_ACTION_S / 2)


async def soak_churner(gen: Generator, state: SoakState, slot: int) -> None:
    """One churner slot: connect, act at random, leave (QUIT or SIGKILL), come back anew."""
    serial = 0
    limit = asyncio.Semaphore(1)
    while time.monotonic() < state.end:
        serial += 1
        cid = 1_000_000 * (gen.index + 1) + 1000 * slot + serial % 1000
        rooms = soak_rooms_for(state.rng)
        spec = Spec(cid, f"c{gen.index}s{slot}x{serial}", ",".join(rooms), cid)
        began = time.monotonic_ns()
        _, error = await gen._open(spec, limit, SOAK_CONNECT_S)
        if error is not None:
            state.churner_connect_failures[error[:60]] += 1
            if len(state.failure_log) < 5:
                state.failure_log.append({"nick": spec.nick, "rooms": spec.room,
                                          "began_ns": began, "error": error[:120]})
            await asyncio.sleep(SOAK_RECONNECT_S)
            continue
        state.churner_connects += 1
        state.rooms[cid] = set(rooms)
        client = gen.clients[cid]
        while not client.closed.done() and time.monotonic() < state.end:
            await asyncio.sleep(state.rng.uniform(0.5, 1.5) * SOAK_ACTION_S)
            if client.closed.done() or time.monotonic() >= state.end:
                break
            action = state.rng.choice(CHURNER_ACTIONS)
            soak_action(client, action, state, gen.index)
            if action == "quit":
                await asyncio.wait([client.closed], timeout=5)
        if client.closed.done():
            state.left[cid] = time.monotonic_ns()
            state.errors.update(client.errors)
            gen.clients.pop(cid, None)
        await asyncio.sleep(SOAK_RECONNECT_S)


def worker_of(server_pid: int, server_port: int, local_port: int) -> psutil.Process | None:
    """The server's worker process that holds the server side of our connection.

    The socket's inode comes from one read of /proc/net/tcp, then the
    workers' fd links are searched for it: much cheaper than psutil's
    net_connections per worker, which parses the whole TCP table each time.
    """
    inode = server_socket_inode(server_port, local_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for kid in server_children(server_pid, "forkchat-worker"):
        try:
            fds = os.listdir(f"/proc/{kid.pid}/fd")
            if any(_readlink(f"/proc/{kid.pid}/fd/{fd}") == target for fd in fds):
                return kid
        except OSError:
            continue
    return None


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def server_socket_inode(server_port: int, client_port: int) -> str | None:
    """Inode of the server side of the 127.0.0.1 connection from `client_port`."""
    parts = server_tcp_row(server_port, client_port)
    return parts[9] if parts is not None and parts[9] != "0" else None


def soak_kill_one(gen: Generator, state: SoakState, server_pid: int) -> None:
    """SIGKILL the worker of one random ready churner of this generator process."""
    victims = [c for c in gen.clients.values()
               if c.spec.cid >= 1_000_000 and c.ready.done() and not c.closed.done()
               and c.transport is not None]
    if not victims:
        return
    victim = state.rng.choice(victims)
    sock = victim.transport.get_extra_info("socket") if victim.transport else None
    worker = worker_of(server_pid, gen.port, sock.getsockname()[1]) if sock is not None \
        else None
    if worker is None:
        state.kill_misses += 1
        return
    try:
        worker.send_signal(signal.SIGKILL)
    except psutil.Error:
        state.kill_misses += 1
        return
    state.kills.append((victim.spec.cid, time.monotonic_ns()))


async def soak_killer(gen: Generator, state: SoakState, server_pid: int, rate: float) -> None:
    """Kill churners' workers at `rate` per second (this process's share)."""
    if rate <= 0:
        return
    while time.monotonic() < state.end:
        pause = state.rng.expovariate(rate)
        await asyncio.sleep(min(pause, max(0.0, state.end - time.monotonic())))
        if time.monotonic() < state.end:
            soak_kill_one(gen, state, server_pid)


async def soak_drain(stayers: list[Client]) -> None:
    """Wait until the stayers received nothing for SOAK_QUIET_S (at most SOAK_DRAIN_S)."""
    deadline = time.monotonic() + SOAK_DRAIN_S
    counts = [-1]
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        now_counts = [len(c.soak_rx or ()) for c in stayers]
        if now_counts != counts:
            counts, quiet_since = now_counts, time.monotonic()
        elif time.monotonic() - quiet_since >= SOAK_QUIET_S:
            return
        await asyncio.sleep(0.1)


async def soak_run(gen: Generator, request: dict[str, Any]) -> dict[str, Any]:
    """Stayers talk, churners come and go and get killed; report what each stayer got."""
    import random
    stayers = [c for c in gen.clients.values() if not c.closed.done()]
    for client in stayers:          # every process records before any process sends
        client.soak_rx = []
    await asyncio.sleep(max(0.0, (int(request["start_ns"]) - time.monotonic_ns()) / 1e9))
    state = SoakState(random.Random(int(request.get("seed", 1)) + gen.index),
                      time.monotonic() + float(request["duration"]))
    for client in stayers:
        state.rooms[client.spec.cid] = set((client.spec.room or "").split(",")) - {""}
    tasks = [asyncio.create_task(soak_stayers(gen, state, stayers)),
             asyncio.create_task(soak_killer(gen, state, int(request["server_pid"]),
                                             float(request["kill_rate"])))]
    tasks += [asyncio.create_task(soak_churner(gen, state, slot))
              for slot in range(int(request["churners"]))]
    await asyncio.wait(tasks, timeout=float(request["duration"]) + SOAK_CONNECT_S + 5)
    for task in tasks:
        task.cancel()
    await soak_drain(stayers)
    await soak_churners_leave(gen, stayers)
    return soak_report(state, stayers)


async def soak_churners_leave(gen: Generator, stayers: list[Client]) -> None:
    """Every churner still connected QUITs; the stayers stay."""
    keep = {c.spec.cid for c in stayers}
    churners = [c for cid, c in gen.clients.items() if cid not in keep]
    for client in churners:
        client.quit()
    waits = [c.closed for c in churners if not c.closed.done()]
    if waits:
        await asyncio.wait(waits, timeout=10)
    for client in churners:
        if client.transport is not None:
            client.transport.abort()
        gen.clients.pop(client.spec.cid, None)


def soak_report(state: SoakState, stayers: list[Client]) -> dict[str, Any]:
    for client in stayers:
        state.errors.update(client.errors)
    return {"sent": state.sent, "kills": state.kills, "kill_misses": state.kill_misses,
            "left": state.left, "failure_log": state.failure_log,
            "actions": dict(state.actions), "errors": dict(state.errors),
            "churner_connects": state.churner_connects,
            "churner_connect_failures": dict(state.churner_connect_failures),
            "stayers": [{"cid": c.spec.cid, "rooms": sorted(state.rooms[c.spec.cid]),
                         "ready_ns": c.ready_ns, "alive": not c.closed.done(),
                         "why": c.error_text, "rx": c.soak_rx or []} for c in stayers]}


# ---------------------------------------------------------------------------
# The parent: a pool of generator processes
# ---------------------------------------------------------------------------

class Pool:
    """The generator processes of one scenario, driven in lock step."""

    def __init__(self, processes: int, port: int, tls: bool = False) -> None:
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        self.next_cid = 0
        for index in range(processes):
            parent_end, child_end = MP.Pipe()
            proc = MP.Process(target=generator_main, args=(child_end, index, port, tls),
                              name=f"bench-gen-{index}", daemon=True)
            proc.start()
            child_end.close()
            self.procs.append(proc)
            self.conns.append(parent_end)
        self.all({"op": "status"}, SERVER_START_S)    # imported and ready: measure from here

    @property
    def size(self) -> int:
        return len(self.procs)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def call(self, requests: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        """Send one request to each process (None: skip it) and wait for every answer.

        Raises:
            BenchError: a process failed, died, or did not answer in time.
        """
        return self.collect(self.send(requests), requests, timeout)

    def send(self, requests: list[dict[str, Any]]) -> list[int]:
        """Send without waiting (soak: the parent kills the broker meanwhile)."""
        asked = []
        for index, request in enumerate(requests):
            if request is not None:
                self.conns[index].send(request)
                asked.append(index)
        return asked

    def collect(self, asked: list[int], requests: list[dict[str, Any]],
                timeout: float) -> list[dict[str, Any]]:
        """The answers to what send() asked, in process order."""
        deadline = time.monotonic() + timeout
        answers: list[dict[str, Any]] = [{} for _ in requests]
        for index in asked:
            conn = self.conns[index]
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise BenchError(f"generator process {index} did not answer "
                                 f"{requests[index]['op']!r} within {timeout:.0f} s")
            try:
                answers[index] = conn.recv()
            except (EOFError, OSError):
                raise BenchError(f"generator process {index} died") from None
            if "error" in answers[index]:
                raise BenchError(f"generator process {index}: {answers[index]['error']}")
        return answers

    def all(self, request: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        return self.call([dict(request) for _ in self.procs], timeout)

    def connect(self, specs: list[Spec], in_flight: int, timeout: float = CONNECT_TIMEOUT_S
                ) -> dict[str, Any]:
        """Spread the clients round robin; returns merged times and failures."""
        share = max(1, math.ceil(in_flight / self.size))
        per = [[] for _ in self.procs]   # type: list[list[dict[str, Any]]]
        for spec in specs:
            per[spec.cid % self.size].append(spec.__dict__)
        requests = [{"op": "connect", "specs": chunk, "in_flight": share, "timeout": timeout}
                    if chunk else None for chunk in per]
        began = time.monotonic()
        answers = self.call(requests, timeout * (1 + len(specs) / max(1, in_flight))
                            + REPLY_GRACE_S)
        wall = time.monotonic() - began
        times = [t for a in answers for t in a.get("times", [])]
        errors: collections.Counter[str] = collections.Counter()
        for answer in answers:
            errors.update(answer.get("errors", {}))
        return {"wall_s": wall, "times": times, "ok": len(times),
                "failed": sum(a.get("failed", 0) for a in answers), "errors": dict(errors),
                "joins_resent": sum(a.get("joins_resent", 0) for a in answers)}

    def make_specs(self, count: int, prefix: str, room: str | None = ROOM,
                   senders: int = 0) -> list[Spec]:
        specs = []
        for index in range(count):
            cid = self.next_cid
            self.next_cid += 1
            specs.append(Spec(cid, f"{prefix}{cid}", room, index if index < senders else None))
        return specs

    def close(self) -> None:
        """Ask politely, then terminate and kill: no generator process survives."""
        for conn in self.conns:
            try:
                conn.send({"op": "exit", "timeout": 5})
            except OSError:
                pass
        deadline = time.monotonic() + 15
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(2)
            if proc.is_alive():
                proc.kill()
                proc.join(2)
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []


def generator_cpu(pool: Pool) -> CpuSample:
    """CPU of this script and its generator processes (not what this script
    reaps: the server it started is one of its children)."""
    sample: CpuSample = {}
    for pid in [os.getpid(), *pool.pids()]:
        sample_one(sample, pid, "coordinator" if pid == os.getpid() else "generator",
                   reaped=False)
    return sample


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------

@dataclass
class Bench:
    args: argparse.Namespace
    server: Server
    run_index: int = 0
    notes: list[str] = field(default_factory=list)

    def pool(self) -> Pool:
        return Pool(self.args.processes, self.server.port, self.args.tls)

    def prefix(self, letter: str) -> str:
        self.run_index += 1
        return f"{letter}{self.run_index}x"

    def n(self, default: int) -> int:
        return self.args.clients if self.args.clients is not None else default

    def settle(self) -> int:
        """Wait (bounded) until the server has no workers (forkchat) and no
        connections (any server) left from earlier clients; how many are left.
        Clients the server had before we attached are not ours to wait for."""
        deadline = time.monotonic() + SETTLE_LIMIT_S
        left = self.leftovers()
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = self.leftovers()
        return left

    def leftovers(self) -> int:
        server = self.server
        connections = server_connections(server.port) - server.other_connections
        return max(0, worker_count(server.pid) - server.other_workers, connections)

    def check_server(self) -> None:
        if not self.server.alive():
            raise BenchError("the server is not running any more")


def measured(bench: Bench, pool: Pool, action: Callable[[], dict[str, Any]]
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run `action` and return (its result, CPU figures of server and generator)."""
    server_before = bench.server.cpu()
    gen_before = generator_cpu(pool)
    machine_before = psutil.cpu_times()
    began = time.monotonic()
    result = action()
    wall = time.monotonic() - began
    machine_after = psutil.cpu_times()
    figures = {"wall_s": round(wall, 3),
               "server_cpu": cpu_delta(server_before, bench.server.cpu(), wall),
               "generator_cpu": cpu_delta(gen_before, generator_cpu(pool), wall)}
    figures["machine"] = machine_load(machine_before, machine_after, wall, figures)
    return result, figures


def machine_load(before: Any, after: Any, wall: float, figures: dict[str, Any]) -> dict[str, Any]:
    """Busy cores of the whole machine, and what neither server nor generator used.

    On a shared machine other processes (test suites, editors) steal CPU: a
    large `other_cores` says the figures of that run are pessimistic.
    """
    idle = (after.idle - before.idle) + (getattr(after, "iowait", 0) - getattr(before, "iowait", 0))
    total = sum(after) - sum(before)
    busy = (total - idle) / wall if wall > 0 else 0.0
    ours = figures["server_cpu"]["total_s"] + figures["generator_cpu"]["total_s"]
    return {"busy_cores": round(busy, 3),
            "other_cores": round(max(0.0, busy - ours / wall), 3) if wall > 0 else None}


def connect_summary(outcome: dict[str, Any], count: int) -> dict[str, Any]:
    return {"connected": outcome["ok"], "failures": outcome["failed"],
            "errors": outcome["errors"], "total_s": round(outcome["wall_s"], 3),
            "connections_per_s": round(outcome["ok"] / outcome["wall_s"], 1)
            if outcome["wall_s"] else None,
            "per_client": list_percentiles(outcome["times"]), "requested": count,
            "joins_resent_after_welcome": outcome.get("joins_resent", 0)}


def scenario_connect(bench: Bench, pool: Pool) -> dict[str, Any]:
    """N clients connect, register and join, C in flight at once."""
    count = bench.n(1000)
    room = None if bench.args.connect_room == "none" else ROOM
    specs = pool.make_specs(count, bench.prefix("c"), room)
    if bench.args.connect_room == "own":
        for spec in specs:
            spec.room = f"#c{spec.cid}"
    outcome, figures = measured(bench, pool, lambda: pool.connect(specs, bench.args.in_flight))
    return {"clients": count, "in_flight": bench.args.in_flight,
            "room": bench.args.connect_room, **connect_summary(outcome, count), **figures,
            "server_memory": bench.server.memory()}


def fanout_setup(bench: Bench, pool: Pool, count: int, senders: int) -> dict[str, Any]:
    specs = pool.make_specs(count, bench.prefix("f"), ROOM, senders)
    outcome = pool.connect(specs, bench.args.in_flight)
    if outcome["failed"]:
        raise BenchError(f"{outcome['failed']} of {count} clients failed to join: "
                         f"{outcome['errors']}")
    return connect_summary(outcome, count)


def fanout_run(bench: Bench, pool: Pool, senders: int, rate: float | None, messages: int,
               ping_every: float | None = None, pad: int = 0) -> dict[str, Any]:
    """One measured burst of messages; merged counts, latency and CPU per delivery."""
    t0 = time.monotonic_ns() + 300_000_000
    request = {"op": "run", "t0_ns": t0, "rate": rate, "messages": messages,
               "senders_total": senders, "ping_every": ping_every, "pad": pad,
               "drain": DRAIN_S}
    send_time = messages / rate if rate else UNPACED_SEND_LIMIT_S
    answers, figures = measured(bench, pool, lambda: pool.all(
        request, send_time + DRAIN_S + REPLY_GRACE_S + 1))
    return merge_run(answers, figures, senders, rate, t0)


def merge_run(answers: list[dict[str, Any]], figures: dict[str, Any], senders: int,
              rate: float | None, t0: int) -> dict[str, Any]:
    sent: dict[int, int] = {}
    hist: dict[int, int] = {}
    for answer in answers:
        sent.update({int(k): v for k, v in answer["sent"].items()})
        merge_hist(hist, answer["hist"])
    receivers = sum(a["receivers"] for a in answers)
    total_sent = sum(sent.values())
    # every member receives every message but its own, and every sender is a member
    expected = total_sent * (receivers - 1)
    unique = sum(a["unique"] for a in answers)
    last = max((a["last_ns"] for a in answers), default=0)
    window = (last - t0) / 1e9 if last > t0 else 0.0
    deliveries_per_s = unique / window if window else 0.0
    server_cpu = figures["server_cpu"]["total_s"]
    result = {
        "senders": senders, "messages_sent": total_sent, "receivers": receivers,
        "deliveries": unique, "expected_deliveries": expected,
        "lost": expected - unique,
        "reordered": sum(a["reordered"] for a in answers),
        "duplicated": sum(a["dup"] for a in answers),
        "deliveries_per_s": round(deliveries_per_s),
        "offered_deliveries_per_s": round(rate * senders * (receivers - 1)) if rate else None,
        "latency": hist_percentiles(hist),
        "server_cpu_us_per_delivery": round(server_cpu / unique * 1e6, 3) if unique else None,
        "bytes_per_delivery": round(sum(a["rx_bytes"] for a in answers) / unique, 1)
        if unique else None,
        "send_lag_max_ms": round(max(a["send_lag_s"] for a in answers) * 1000, 3),
        "clients_disconnected": sum(a["disconnected"] for a in answers),
        "lost_clients": [x for a in answers for x in a["lost_clients"]][:5],
        **figures}
    if rate:
        result["sustained"] = bool(unique and result["lost"] == 0 and deliveries_per_s
                                   >= 0.97 * result["offered_deliveries_per_s"])
    rtts = [r for a in answers for r in a["rtts"]]
    if rtts:
        result["ping_rtt"] = list_percentiles(rtts)
    return result


def paced_plan(bench: Bench, count: int, senders: int, load: float | None,
               default_messages: int) -> tuple[float | None, int]:
    """(messages/s per sender or None, messages per sender) from the options."""
    if not load:
        return None, bench.args.messages or default_messages
    per_sender = load / (senders * max(1, count - 1))
    messages = bench.args.messages or max(1, round(per_sender * (bench.args.duration or 10.0)))
    return per_sender, messages


def scenario_fanout(bench: Bench, pool: Pool) -> dict[str, Any]:
    """N clients in one room, S senders, paced (--offered-load) or unpaced."""
    count = bench.n(100)
    senders = min(bench.args.senders, count)
    rate, messages = paced_plan(bench, count, senders, bench.args.offered_load, 500)
    setup = fanout_setup(bench, pool, count, senders)
    result = fanout_run(bench, pool, senders, rate, messages, pad=bench.args.pad)
    return {"clients": count, "mode": "paced" if rate else "unpaced",
            "messages_per_sender": messages, "pad_bytes": bench.args.pad, **result,
            "setup": setup, "server_memory": bench.server.memory()}


def scenario_latency(bench: Bench, pool: Pool) -> dict[str, Any]:
    """1 sender, N receivers, one message every 10 ms."""
    receivers = bench.n(100)
    messages = bench.args.messages or 1000
    fanout_setup(bench, pool, receivers + 1, 1)
    result = fanout_run(bench, pool, 1, 1 / LATENCY_INTERVAL_S, messages)
    return {"clients": receivers + 1, "interval_ms": LATENCY_INTERVAL_S * 1000,
            "messages": messages, **result}


def scenario_idle_memory(bench: Bench, pool: Pool) -> dict[str, Any]:
    """N idle clients: the server tree's memory before and after."""
    count = bench.n(1000)
    before = bench.server.memory()
    available = psutil.virtual_memory().available
    setup = fanout_setup(bench, pool, count, 0)
    time.sleep(1.0)    # let the last joins' output drain before reading smaps
    merging = ksm_settle(bench.args.merge_wait) if bench.args.memory_merge else None
    after = bench.server.memory()
    # a cross-check of PSS that includes what smaps does not show (page tables,
    # kernel socket buffers) and the generator's own clients: an upper bound
    taken = available - psutil.virtual_memory().available
    result: dict[str, Any] = {"clients": count, "setup": setup, "before": before, "after": after,
                              "machine_available_drop_per_client_bytes": round(taken / count)}
    if merging is not None:
        result["memory_merge"] = merging
    if before and after:
        for key in ("pss", "uss", "rss"):
            grown = after[f"{key}_bytes"] - before[f"{key}_bytes"]
            result[f"{key}_per_client_bytes"] = round(grown / count)
        result["pss_per_client_kib"] = round(result["pss_per_client_bytes"] / 1024, 1)
        result["uss_per_client_kib"] = round(result["uss_per_client_bytes"] / 1024, 1)
    return result


def scenario_slowreader(bench: Bench, pool: Pool) -> dict[str, Any]:
    """A run without, then with, one client that joins and never reads."""
    count = bench.n(100)
    senders = min(bench.args.senders, count)
    load = bench.args.offered_load or 100_000
    rate, messages = paced_plan(bench, count, senders, load, 0)
    setup = fanout_setup(bench, pool, count, senders)
    baseline = fanout_run(bench, pool, senders, rate, messages, ping_every=0.1, pad=bench.args.pad)
    stuck_spec = pool.make_specs(1, bench.prefix("stuck"), ROOM)[0]
    stuck_spec.stuck = True
    joined = pool.connect([stuck_spec], 1)
    if joined["failed"]:
        raise BenchError(f"the stuck client could not join: {joined['errors']}")
    owner = stuck_spec.cid % pool.size
    ports = pool.call([{"op": "stuck_port"} if i == owner else None
                       for i in range(pool.size)], REPLY_GRACE_S)
    client_port = ports[owner]["stuck"]["local_port"]
    watch = DropWatch(bench.server.port, client_port)
    mark = bench.server.log_mark()
    watch.start()
    began_wall = time.time()
    began = time.monotonic()
    try:
        with_stuck = fanout_run(bench, pool, senders, rate, messages, ping_every=0.1,
                                pad=bench.args.pad)
    finally:
        watch.stop()
    unstick = pool.call([{"op": "unstick", "wait": 5} if i == owner else None
                         for i in range(pool.size)], REPLY_GRACE_S)[owner]["stuck"]
    drop = watch.report(began + 0.3)
    drop.update(unstick or {})
    drop["logged"] = _drop_log(bench.server.log_since(mark), began_wall + 0.3)
    error_line = drop.get("error_line") or ""
    drop["error_names_sendq"] = "sendq" in error_line.lower()
    drop.update(fill_estimate(bench, drop, with_stuck, rate * senders))
    unknown = []
    if not bench.server.started:
        unknown.append("logged: the server's log is read only when bench.py starts the server")
    if bench.server.sendq_bytes is None:
        unknown.append("estimated_full_after_start_s: the server's send queue bound is not "
                       "known (--server-sendq)")
    return {**({"not_measured": unknown} if unknown else {}),
            "clients": count, "senders": senders, "offered_deliveries_per_s": load,
            "messages_per_sender": messages, "setup": setup, "baseline": baseline,
            "with_stuck_reader": with_stuck, "stuck_reader": drop,
            "throughput_change_pct": _pct(baseline["deliveries_per_s"],
                                          with_stuck["deliveries_per_s"]),
            "p99_change_ms": _diff(baseline["latency"]["p99_ms"],
                                   with_stuck["latency"]["p99_ms"]),
            "sendq_bytes": bench.server.sendq_bytes}


def fill_estimate(bench: Bench, drop: dict[str, Any], run: dict[str, Any],
                  messages_per_s: float) -> dict[str, Any]:
    """When the stuck reader's buffers were full, from the bytes the room carried.

    Full means: the server's sendq bound, plus what sat in the server's
    kernel send queue (/proc/net/tcp) and in the stuck client's receive
    queue.  The room's byte rate is the paced message rate times the bytes
    a normal receiver got per message.  An estimate, good to ~0.1 s.
    """
    per_line = run.get("bytes_per_delivery")
    sendq = bench.server.sendq_bytes
    if not per_line or sendq is None or not messages_per_s:
        return {"estimated_full_after_start_s": None}
    held = sendq + drop.get("server_kernel_sendq_max_bytes", 0) + (drop.get("inq_bytes") or 0)
    full = held / (per_line * messages_per_s)
    logged = drop.get("logged") or {}
    after = logged.get("after_start_s")
    return {"estimated_full_after_start_s": round(full, 3),
            "dropped_after_full_s": round(after - full, 3) if after is not None else None}


def _pct(before: float, after: float) -> float | None:
    return round((after - before) / before * 100, 2) if before else None


def _diff(before: float | None, after: float | None) -> float | None:
    return round(after - before, 3) if before is not None and after is not None else None


LOG_TIME_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*closing: (.*SendQ.*)$",
                         re.IGNORECASE)


def _drop_log(lines: list[str], t0_wall: float) -> dict[str, Any] | None:
    """The server's own log line about the drop, and when it came (from its timestamp)."""
    for line in lines:
        match = LOG_TIME_RE.match(line)
        if match:
            stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            after = stamp.timestamp() - t0_wall
            return {"reason": match.group(2), "after_start_s": round(after, 3)}
    return None


class DropWatch(threading.Thread):
    """Polls /proc/net/tcp: when does the server side of the stuck connection close?"""

    def __init__(self, server_port: int, client_port: int) -> None:
        super().__init__(daemon=True)
        self.ports = (server_port, client_port)
        self.halt = threading.Event()
        self.max_tx_queue = 0
        self.closed_at: float | None = None
        self.state_after = ""

    def run(self) -> None:
        deadline = time.monotonic() + 600
        while not self.halt.is_set() and time.monotonic() < deadline:
            seen = tcp_socket_state(*self.ports)
            if seen is None or seen[0] != "ESTABLISHED":
                self.closed_at = time.monotonic()
                self.state_after = seen[0] if seen else "gone"
                return
            self.max_tx_queue = max(self.max_tx_queue, seen[1])
            self.halt.wait(0.005)

    def stop(self) -> None:
        self.halt.set()
        self.join(5)

    def report(self, start: float) -> dict[str, Any]:
        return {"server_side_closed_after_start_s":
                round(self.closed_at - start, 3) if self.closed_at else None,
                "server_side_state": self.state_after or "ESTABLISHED",
                "server_kernel_sendq_max_bytes": self.max_tx_queue}


def scenario_capacity(bench: Bench, pool: Pool) -> dict[str, Any]:
    """Add --step clients at a time up to -n; each step: all registered, all PONG < 1 s."""
    bound = bench.n(5000)
    step = max(1, min(bench.args.step, bound))
    prefix = bench.prefix("k")
    steps: list[dict[str, Any]] = []
    passed = 0
    total = 0
    stopped = "bound"
    start_available = psutil.virtual_memory().available
    for round_number in range(math.ceil(bound / step)):
        bench.check_server()
        add = min(step, bound - total)
        if total and not memory_allows(start_available, total, add):
            stopped = "memory"        # the next step would wake the OOM killer
            break
        outcome = pool.connect(pool.make_specs(add, prefix, None), bench.args.in_flight)
        total += add
        answers = pool.all({"op": "ping", "round": round_number,
                            "deadline": PING_DEADLINE_S}, PING_DEADLINE_S + REPLY_GRACE_S)
        rtts = [r for a in answers for r in a["rtts"]]
        asked = sum(a["asked"] for a in answers)
        ok = outcome["failed"] == 0 and asked == total and len(rtts) == total
        memory = bench.server.memory()
        steps.append({"clients": total, "ok": ok, "connect": connect_summary(outcome, add),
                      "ping_answered": len(rtts),
                      "ping_late": sum(a.get("late", 0) for a in answers),
                      "ping": list_percentiles(rtts),
                      "server_pss_bytes": memory["pss_bytes"] if memory else None,
                      "server_processes": memory["processes"] if memory else None})
        if not ok:
            stopped = "failed step"
            break
        passed = total
    return {"bound": bound, "step": step, "capacity": passed, "stopped_by": stopped,
            "steps": steps, "ping_deadline_s": PING_DEADLINE_S}


def memory_allows(start_available: int, clients: int, more: int) -> bool:
    """Would `more` clients, at the cost per client seen so far, leave a safe margin?

    On a shared machine the kernel's OOM killer picks any large process;
    the benchmark stops itself first.
    """
    now = psutil.virtual_memory()
    per_client = max(0, start_available - now.available) / clients
    margin = max(MEMORY_MARGIN_BYTES, now.total // 20)
    return now.available - per_client * more * 1.2 > margin


def scenario_soak(bench: Bench, pool: Pool) -> dict[str, Any]:
    """Stayers and churners for --duration while workers and the broker are killed.

    The parent connects the stayers, takes the server's baseline, starts
    every generator's soak (they kill their own churners' workers), kills
    the broker on schedule meanwhile, then checks delivery and leaks.
    Half the clients (at least one) are stayers: they keep the one to
    three rooms they joined at setup and only talk and change nicks, so
    what each must receive is exact.  The churners join, part, talk,
    change nicks, QUIT and are killed, and come back as new clients.
    """
    server_pid = bench.server.pid
    if server_pid is None:
        raise BenchError("soak kills server processes: with --attach it needs --pid")
    args = bench.args
    foreign = bench.server.foreign
    kill_workers, kill_broker_every = (0.0, 0.0) if foreign else \
        (args.kill_workers_per_s, args.kill_broker_every)
    duration = min(args.duration or 30.0, SOAK_HARD_CAP_S)
    count = bench.n(50)
    stayers = max(1, count // 2)
    churners = max(0, count - stayers)
    setup = soak_setup(bench, pool, stayers)
    baseline = soak_server_figures(server_pid)
    request = {"op": "soak", "duration": duration, "server_pid": server_pid,
               "kill_rate": kill_workers / pool.size, "seed": args.seed}
    requests = [dict(request, churners=churners // pool.size
                     + (1 if index < churners % pool.size else 0))
                for index in range(pool.size)]
    t0_ns = time.monotonic_ns() + SOAK_START_NS
    for one in requests:
        one["start_ns"] = t0_ns

    def run() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        asked = pool.send(requests)
        brokers = kill_brokers(server_pid, duration, kill_broker_every, t0_ns)
        return pool.collect(asked, requests, duration + SOAK_CONNECT_S + SOAK_DRAIN_S
                            + 15 + REPLY_GRACE_S), brokers
    (answers, brokers), figures = measured(bench, pool, run)
    log = bench.server.log_since(0)
    for answer in answers:          # what the server said about churners that never got in
        for failure in answer["failure_log"]:
            failure["server_log"] = [line[-200:] for line in log if failure["nick"] in line][:6]
    gone = sum(1 for a in answers for s in a["stayers"] if not s["alive"])
    leaks = soak_leaks(server_pid, baseline, baseline["workers"] - gone) if not foreign \
        else foreign_soak_leaks(server_pid, baseline)
    unknown = {"not_measured": FOREIGN_SOAK_UNKNOWN} if foreign else {}
    return {**unknown, "clients": count, "stayers": stayers, "churners": churners,
            "duration_s": duration, "kill_workers_per_s": kill_workers,
            "kill_broker_every_s": kill_broker_every, "seed": args.seed,
            "setup": setup, **soak_summary(answers, brokers, t0_ns), "leaks": leaks,
            "server_alive": bench.server.alive(), **figures}


# What soak cannot do to a server that is not forkchat: it has no worker per
# client and no broker to kill, and its own process is the whole server.
FOREIGN_SOAK_UNKNOWN = [
    "worker kills: the server has no process per client (kill_workers_per_s is 0)",
    "broker kills: the server has no broker (kill_broker_every_s is 0)",
    "leaks.process_leak, broker figures: only the server process's fds and USS are compared"]


def foreign_soak_leaks(server_pid: int, baseline: dict[str, Any]) -> dict[str, Any]:
    """After the churners left: the server's fds and USS against the baseline."""
    time.sleep(0.5)     # the server closes what the churners' QUITs left
    after = soak_server_figures(server_pid)
    fd_growth = after["supervisor_fds"] - baseline["supervisor_fds"]
    return {"server_fds_before": baseline["supervisor_fds"],
            "server_fds_after": after["supervisor_fds"], "fd_tolerance": FD_TOLERANCE,
            "fd_leak": fd_growth > FD_TOLERANCE,
            "server_uss_growth_bytes": _diff(baseline["supervisor_uss_bytes"],
                                             after["supervisor_uss_bytes"])}


def soak_setup(bench: Bench, pool: Pool, stayers: int) -> dict[str, Any]:
    """Connect the stayers, each in one to three soak rooms (every room has one)."""
    import random
    rng = random.Random(bench.args.seed)
    specs = pool.make_specs(stayers, bench.prefix("s"), None)
    for index, spec in enumerate(specs):
        first = SOAK_ROOMS[index % len(SOAK_ROOMS)]
        others = rng.sample([r for r in SOAK_ROOMS if r != first], rng.randint(0, 2))
        spec.room = ",".join([first, *others])
    outcome = pool.connect(specs, bench.args.in_flight)
    if outcome["failed"]:
        raise BenchError(f"{outcome['failed']} of {stayers} stayers failed to join: "
                         f"{outcome['errors']}")
    return connect_summary(outcome, stayers)


def server_children(server_pid: int, name: str) -> list[psutil.Process]:
    """The server's processes whose comm (prctl name) is `name`, at any
    depth (workers are the children of a spawner)."""
    found = []
    try:
        kids = psutil.Process(server_pid).children(recursive=True)
    except psutil.Error:
        return []
    for kid in kids:
        try:
            if kid.name() == name:
                found.append(kid)
        except psutil.Error:
            continue
    return found


def uss_of(process: psutil.Process | None) -> int | None:
    try:
        return process.memory_full_info().uss if process is not None else None
    except psutil.Error:
        return None


def soak_server_figures(server_pid: int) -> dict[str, Any]:
    """Supervisor fds and USS, broker pid and USS: the baseline and the after."""
    try:
        supervisor = psutil.Process(server_pid)
        fds = supervisor.num_fds()
    except psutil.Error:
        raise BenchError("the server is not running any more") from None
    brokers = server_children(server_pid, "forkchat-broker")
    return {"supervisor_fds": fds, "supervisor_uss_bytes": uss_of(supervisor),
            "workers": len(server_children(server_pid, "forkchat-worker")),
            "broker_pid": brokers[0].pid if brokers else None,
            "broker_uss_bytes": uss_of(brokers[0] if brokers else None),
            "broker_fds": _fds(brokers[0]) if brokers else None}


def _fds(process: psutil.Process) -> int | None:
    try:
        return process.num_fds()
    except psutil.Error:
        return None


def kill_brokers(server_pid: int, duration: float, every: float,
                 t0_ns: int) -> list[dict[str, Any]]:
    """SIGKILL the broker every `every` s until 3 s before the end; time each recovery.

    Never more than BROKER_KILLS_PER_WINDOW kills in BROKER_KILL_WINDOW_S:
    past that the supervisor stops on purpose, which is not what we test.
    """
    kills: list[dict[str, Any]] = []
    if every <= 0:
        time.sleep(max(0.0, duration - (time.monotonic_ns() - t0_ns) / 1e9))
        return kills
    at = every
    while at <= duration - 3.0:      # the new broker may hold talk for up to 3 s
        time.sleep(max(0.0, at - (time.monotonic_ns() - t0_ns) / 1e9))
        recent = [k for k in kills if k["at_s"] > at - BROKER_KILL_WINDOW_S]
        if len(recent) < BROKER_KILLS_PER_WINDOW:
            kills.append(kill_broker(server_pid, t0_ns))
        at += every
    time.sleep(max(0.0, duration - (time.monotonic_ns() - t0_ns) / 1e9))
    return kills


def kill_broker(server_pid: int, t0_ns: int) -> dict[str, Any]:
    """Kill the one forkchat-broker child; wait (bounded) for its successor."""
    brokers = server_children(server_pid, "forkchat-broker")
    if len(brokers) != 1:
        return {"at_s": (time.monotonic_ns() - t0_ns) / 1e9, "ns": time.monotonic_ns(),
                "error": f"{len(brokers)} broker processes"}
    old = brokers[0]
    now = time.monotonic_ns()
    try:
        old.send_signal(signal.SIGKILL)
    except psutil.Error as error:
        return {"at_s": (now - t0_ns) / 1e9, "ns": now, "error": str(error)}
    deadline = time.monotonic() + 10
    successor = None
    while time.monotonic() < deadline and successor is None:
        time.sleep(0.02)
        successor = next((b for b in server_children(server_pid, "forkchat-broker")
                          if b.pid != old.pid), None)
    return {"at_s": round((now - t0_ns) / 1e9, 3), "ns": now, "pid": old.pid,
            "new_pid": successor.pid if successor else None,
            "respawn_s": round((time.monotonic_ns() - now) / 1e9, 3) if successor else None}


def soak_leaks(server_pid: int, baseline: dict[str, Any], expected: int) -> dict[str, Any]:
    """After the churners left: 1 broker, the baseline's workers, fds and memory near baseline.

    The baseline is taken with the stayers connected (and, attached, any
    other clients of the server), so `expected_workers` counts those too.
    """
    deadline = time.monotonic() + SETTLE_LIMIT_S
    while time.monotonic() < deadline:
        if len(server_children(server_pid, "forkchat-worker")) == expected and \
                len(server_children(server_pid, "forkchat-broker")) == 1:
            break
        time.sleep(0.1)
    time.sleep(0.5)     # the supervisor reaps and closes after the child is gone
    tree = process_tree(server_pid)[1:]
    names = collections.Counter()
    zombies = 0
    for process in tree:
        try:
            names[process.name()] += 1
            zombies += process.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            continue
    after = soak_server_figures(server_pid)
    brokers, workers = names.pop("forkchat-broker", 0), names.pop("forkchat-worker", 0)
    spawners = names.pop("forkchat-spawn", 0)
    fd_growth = after["supervisor_fds"] - baseline["supervisor_fds"]
    leaked = brokers != 1 or spawners > 1 or workers != expected or bool(names) or zombies > 0
    return {"brokers": brokers, "workers": workers, "expected_workers": expected,
            "other_processes": dict(names), "zombies": zombies, "process_leak": leaked,
            "supervisor_fds_before": baseline["supervisor_fds"],
            "supervisor_fds_after": after["supervisor_fds"], "fd_tolerance": FD_TOLERANCE,
            "fd_leak": fd_growth > FD_TOLERANCE,
            "broker_fds_before": baseline["broker_fds"], "broker_fds_after": after["broker_fds"],
            "supervisor_uss_growth_bytes": _diff(baseline["supervisor_uss_bytes"],
                                                 after["supervisor_uss_bytes"]),
            "broker_uss_before_bytes": baseline["broker_uss_bytes"],
            "broker_uss_after_bytes": after["broker_uss_bytes"],
            "broker_uss_growth_bytes": _diff(baseline["broker_uss_bytes"],
                                             after["broker_uss_bytes"])}


def soak_summary(answers: list[dict[str, Any]], brokers: list[dict[str, Any]],
                 t0_ns: int) -> dict[str, Any]:
    """Merge the generators' reports and check every stayer's deliveries."""
    actions: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    failures: collections.Counter[str] = collections.Counter()
    for answer in answers:
        actions.update(answer["actions"])
        errors.update(answer["errors"])
        failures.update(answer["churner_connect_failures"])
    sent = {(sid, seq): (room, ns) for a in answers for sid, seq, room, ns in a["sent"]}
    kills = [(sid, ns) for a in answers for sid, ns in a["kills"]]
    stayers = [s for a in answers for s in a["stayers"]]
    left = {int(sid): ns for a in answers for sid, ns in a["left"].items()}
    delivery = soak_delivery(stayers, sent, kills, [b["ns"] for b in brokers], t0_ns, left)
    return {"actions": dict(actions), "error_numerics": dict(errors),
            "messages_sent": len(sent),
            "worker_kills": len(kills), "worker_kill_misses": sum(a["kill_misses"]
                                                                   for a in answers),
            "churner_connects": sum(a["churner_connects"] for a in answers),
            "churner_connect_failures": dict(failures.most_common(5)),
            "churner_connect_failure_log": [
                {**{k: v for k, v in f.items() if k != "began_ns"},
                 "began_at_s": round((f["began_ns"] - t0_ns) / 1e9, 3)}
                for a in answers for f in a["failure_log"]][:5],
            "broker_kills": len([b for b in brokers if "error" not in b]),
            "broker_kill_log": [{k: v for k, v in b.items() if k != "ns"} for b in brokers],
            "stayers_disconnected": [s["why"] or "closed" for s in stayers if not s["alive"]],
            **delivery}


def soak_delivery(stayers: list[dict[str, Any]], sent: dict[tuple[int, int], tuple[str, int]],
                  kills: list[tuple[int, int]], broker_ns: list[int],
                  t0_ns: int, left: dict[int, int]) -> dict[str, Any]:
    """Expected vs received per stayer, and why each missing message is missing.

    Expected: every message sent, by anyone else, to one of the stayer's
    rooms after its JOIN completed.  A loss is excused when the message was
    sent within ±1 s of a broker kill (the window of forkchat(7)), or within
    1 s before its own sender's worker was killed (bytes the dead worker had
    not yet passed on); anything else is unexplained.
    """
    killed: dict[int, list[int]] = collections.defaultdict(list)
    for sid, ns in kills:
        killed[sid].append(ns)
    totals = collections.Counter()
    examples: dict[str, list[dict[str, Any]]] = {"unexplained": [], "broker": []}
    offsets: list[float] = []       # ms from the nearest broker kill, of excused losses
    victim_offsets: list[float] = []  # ms from the kill of the sender's own worker
    for stayer in stayers:
        if not stayer["alive"]:
            continue
        counts, lost = stayer_delivery(stayer, sent)
        totals.update(counts)
        for sid, seq in lost:
            room, ns = sent[(sid, seq)]
            why = loss_reason(ns, sid, killed, broker_ns)
            totals[f"lost_{why}"] += 1
            if why == "broker":
                offsets.append(min((ns - kill for kill in broker_ns), key=abs) / 1e6)
            elif why == "killed_sender":
                victim_offsets.append(min((ns - kill for kill in killed[sid]), key=abs) / 1e6)
            if why != "killed_sender" and len(examples[why]) < 5:
                examples[why].append({"stayer": stayer["cid"], "sender": sid, "seq": seq,
                                      "sender_kind": "churner" if sid >= 1_000_000
                                      else "stayer", "room": room,
                                      "sent_at_s": round((ns - t0_ns) / 1e9, 3),
                                      "sender_gone_at_s": round((left[sid] - t0_ns) / 1e9, 3)
                                      if sid in left else None,
                                      "sender_killed": sid in killed})
    return {"expected": totals["expected"], "received": totals["received"],
            "lost": totals["lost"], "lost_across_broker_deaths": totals["lost_broker"],
            "broker_loss_sent_ms_from_kill": _span(offsets),
            "lost_from_killed_senders": totals["lost_killed_sender"],
            "killed_sender_loss_sent_ms_from_kill": _span(victim_offsets),
            "unexplained_loss": totals["lost_unexplained"],
            "duplicated": totals["duplicated"], "reordered": totals["reordered"],
            "extra": totals["extra"], "unexplained_examples": examples["unexplained"],
            "broker_loss_examples": examples["broker"],
            "loss_window_s": SOAK_KILL_WINDOW_NS / 1e9}


def _span(values: list[float]) -> list[float] | None:
    """[min, max] rounded, or None when there is nothing."""
    return [round(min(values), 1), round(max(values), 1)] if values else None


def stayer_delivery(stayer: dict[str, Any], sent: dict[tuple[int, int], tuple[str, int]]
                    ) -> tuple[collections.Counter[str], list[tuple[int, int]]]:
    """Counts for one stayer and the (sender, seq) it should have had but did not."""
    rooms = set(stayer["rooms"])
    expected = {key for key, (room, ns) in sent.items()
                if room in rooms and key[0] != stayer["cid"] and ns >= stayer["ready_ns"]}
    seen: set[tuple[int, int]] = set()
    highest: dict[int, int] = {}
    counts: collections.Counter[str] = collections.Counter(expected=len(expected))
    for sid, seq, _room in stayer["rx"]:
        key = (sid, seq)
        if key in seen:
            counts["duplicated"] += 1
            continue
        seen.add(key)
        if seq < highest.get(sid, -1):
            counts["reordered"] += 1
        highest[sid] = max(seq, highest.get(sid, -1))
        counts["received" if key in expected else "extra"] += 1
    lost = sorted(expected - seen)
    counts["lost"] = len(lost)
    return counts, lost


def loss_reason(ns: int, sid: int, killed: dict[int, list[int]], broker_ns: list[int]) -> str:
    """'broker', 'killed_sender' or 'unexplained' for a message sent at `ns` by `sid`."""
    if any(abs(ns - kill) <= SOAK_KILL_WINDOW_NS for kill in broker_ns):
        return "broker"
    if any(kill - SOAK_KILL_WINDOW_NS <= ns <= kill + SOAK_KILL_WINDOW_NS
           for kill in killed.get(sid, ())):
        return "killed_sender"
    return "unexplained"


SCENARIO_RUNNERS: dict[str, Callable[[Bench, Pool], dict[str, Any]]] = {
    "connect": scenario_connect,
    "fanout": scenario_fanout,
    "latency": scenario_latency,
    "idle-memory": scenario_idle_memory,
    "slowreader": scenario_slowreader,
    "capacity": scenario_capacity,
    "soak": scenario_soak,
}


def server_version() -> str:
    """forkchat's version and, in a git checkout, its commit (+dirty)."""
    try:
        import forkchat
        version = forkchat.__version__
        where = os.path.dirname(os.path.dirname(os.path.abspath(forkchat.__file__)))
    except ImportError:
        return "unknown"
    try:
        commit = subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=5).stdout.strip()
        changed = subprocess.run(["git", "-C", where, "status", "--porcelain", "--", "forkchat"],
                                 capture_output=True, text=True, timeout=5).stdout.strip()
        commit += "+uncommitted" if commit and changed else ""
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{version} {commit}".strip()


def run_scenario(bench: Bench, name: str) -> dict[str, Any]:
    """One scenario with its own generator processes; always closes them."""
    bench.check_server()
    left = bench.settle()
    base = {"scenario": name, "time": datetime.datetime.now(datetime.timezone.utc)
            .isoformat(timespec="seconds"), "server_pid": bench.server.pid,
            "attached": not bench.server.started, "cpus": os.cpu_count(),
            # an attached server's own word (RPL_MYINFO): this checkout's
            # commit would be a claim about a server it may not have started
            "server_version": server_version() if bench.server.started
            else bench.server.welcome["software"],
            "generator_processes": bench.args.processes, "tls": bench.args.tls,
            "command": shlex.join([os.path.basename(sys.argv[0]), *sys.argv[1:]])}
    if bench.server.welcome:
        base["server_software"] = bench.server.welcome["software"]
        base["server_nicklen"] = bench.server.welcome["nicklen"]
    if left:
        base["warning"] = (f"{left} workers or connections of earlier clients were still "
                           "there")
    pool = bench.pool()
    try:
        result = SCENARIO_RUNNERS[name](bench, pool)
        status = pool.all({"op": "status"}, REPLY_GRACE_S)
        result["generator_clients_alive"] = sum(s["alive"] for s in status)
    except BenchError as error:
        result = {"error": str(error)}
    finally:
        try:
            pool.all({"op": "close", "timeout": 10}, 10 + REPLY_GRACE_S)
        except BenchError:
            pass
        pool.close()
    return {**base, **result}


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench.py", description="Load generator for forkchat-server "
        "(one JSON line per scenario on stdout).")
    parser.add_argument("--scenario", action="append", metavar="NAME",
                        help=f"one of {', '.join(SCENARIOS)} or 'all' (repeatable; default all "
                             "but soak)")
    parser.add_argument("-n", "--clients", type=positive_int,
                        help="clients (capacity: the upper bound); default per scenario")
    parser.add_argument("--senders", type=positive_int, default=10,
                        help="senders in fanout and slowreader (default 10)")
    parser.add_argument("--messages", type=positive_int,
                        help="messages per sender (default: from --duration when paced, "
                             "500 unpaced, 1000 for latency)")
    parser.add_argument("--duration", type=positive_float,
                        help="seconds of sending when paced (default 10), and of soak "
                             f"(default 30, at most {SOAK_HARD_CAP_S:.0f})")
    parser.add_argument("--kill-workers-per-s", type=nonneg_float, default=1.0,
                        help="soak: SIGKILL this many churners' workers per second "
                             "(default 1; 0 = never)")
    parser.add_argument("--kill-broker-every", type=nonneg_float, default=10.0,
                        help="soak: SIGKILL the broker every this many seconds (default 10; "
                             "0 = never; at most 5 per minute, the supervisor's limit)")
    parser.add_argument("--seed", type=int, default=1, help="soak: random seed (default 1)")
    parser.add_argument("--offered-load", type=positive_float, metavar="DELIVERIES_PER_S",
                        help="pace fanout at this many deliveries/s (default: unpaced); "
                             "slowreader default 100000")
    parser.add_argument("--in-flight", type=positive_int, default=200,
                        help="connections being set up at once (default 200)")
    parser.add_argument("--processes", type=positive_int, default=2,
                        help="generator processes (default 2)")
    parser.add_argument("--step", type=positive_int, default=500,
                        help="capacity: clients added per step (default 500)")
    parser.add_argument("--pad", type=nonneg_int, default=0,
                        help="extra bytes of text in each benchmark message (default 0)")
    parser.add_argument("--connect-room", choices=("own", "shared", "none"), default="own",
                        help="connect: each client joins its own room (default), one shared "
                             "room, or none")
    parser.add_argument("--attach", metavar="HOST:PORT",
                        help="use a running server instead of starting one")
    parser.add_argument("--pid", type=positive_int,
                        help="with --attach: the server's pid (forkchat-server's supervisor), "
                             "for CPU and memory")
    parser.add_argument("--server-sendq", type=positive_int, metavar="BYTES",
                        help="with --attach: the server's send queue bound per client, for "
                             "slowreader's estimate of when the stuck reader was full")
    parser.add_argument("--out", metavar="FILE", help="also append the JSON lines to FILE")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="pass ARG to forkchat-server (repeatable)")
    parser.add_argument("--memory-merge", action="store_true",
                        help="start the server with memory_merge = true; idle-memory then "
                             "waits for the kernel's same-page merging to settle")
    parser.add_argument("--merge-wait", type=positive_float, default=180.0, metavar="SECONDS",
                        help="with --memory-merge: the longest idle-memory waits (default 180)")
    parser.add_argument("--tls", action="store_true",
                        help="clients connect with TLS; a server this script starts gets "
                             "one TLS listener, with a self-signed certificate made for "
                             "the run (openssl)")
    parser.add_argument("--server-log-level", default="info",
                        choices=("debug", "info", "warning", "error"),
                        help="log level of the server this script starts (default info)")
    args = parser.parse_args(argv)
    names = args.scenario or ["all"]
    if "all" in names:
        names = [n for n in SCENARIOS if n != "soak"] + [n for n in names if n == "soak"]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from "
                     f"{', '.join(SCENARIOS)} or all")
    args.scenarios = list(dict.fromkeys(names))
    if args.pid and not args.attach:
        parser.error("--pid goes with --attach")
    if args.server_sendq and not args.attach:
        parser.error("--server-sendq goes with --attach (a started server's is known)")
    if args.attach and not args.pid and "soak" in args.scenarios:
        parser.error("soak kills the server's broker and workers: --attach needs --pid")
    if args.attach and (args.server_arg or args.memory_merge):
        parser.error("--server-arg and --memory-merge make no sense with --attach")
    if args.out:        # before any scenario runs, not after the first one's minutes
        try:
            open(args.out, "a").close()
        except OSError as error:
            parser.error(f"--out {args.out}: {error.strerror or error}")
    return args


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def nonneg_int(text: str) -> int:
    return 0 if text.strip() == "0" else positive_int(text)


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if math.isnan(value) or math.isinf(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def nonneg_float(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def emit(result: dict[str, Any], out: str | None) -> None:
    line = json.dumps(result, separators=(",", ":"))
    print(line, flush=True)
    if out:
        try:
            with open(out, "a") as handle:
                handle.write(line + "\n")
        except OSError as error:
            raise BenchError(f"--out {out}: {error.strerror or error}") from None


def _sigterm_to_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


# The interpreter that runs the server, told (-P) not to put the current
# directory first on its path: run from inside another checkout, `python -m
# forkchat` started that checkout's server, whatever PYTHONPATH said, and two
# trees compared from there were the same code.
SERVER_PYTHON = (sys.executable, "-P")


def prefer_this_checkout(environ: dict[str, str] = os.environ) -> str | None:
    """Run the forkchat beside this script, where there is one.

    `scripts/bench.py` puts scripts/ on sys.path, not the checkout: the
    server it started (`python -m forkchat`) was whatever forkchat was
    installed, often another checkout's, while the figures were read as
    this one's.  Returns the checkout's root, or None outside one."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isfile(os.path.join(root, "forkchat", "__init__.py")):
        return None
    if root not in sys.path:
        sys.path.insert(0, root)
    paths = [root] + [path for path in environ.get("PYTHONPATH", "").split(os.pathsep)
                      if path and path != root]
    environ["PYTHONPATH"] = os.pathsep.join(paths)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    prefer_this_checkout()
    raise_nofile()
    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    server = Server(args.server_log_level, args.server_arg, args.memory_merge, args.tls)
    failed = False
    try:
        if args.attach:
            server.attach(args.attach, args.pid, args.server_sendq)
        else:
            server.start()
        bench = Bench(args, server)
        for name in args.scenarios:
            result = run_scenario(bench, name)
            failed = failed or "error" in result
            emit(result, args.out)
    except BenchError as error:
        print(f"bench.py: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.py: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # a second Ctrl+C must not skip cleanup
        server.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
