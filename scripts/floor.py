#!/usr/bin/env python3
"""What process-per-client costs on this machine before forkchat does anything.

bench.py measures forkchat; this measures the floor under it, with the
least Python a forked worker could run, so that a figure in bench.py's
output can be read against what the platform allows:

  fork      the memory a forked CPython child owns at its first line, and
            what one fork costs the parent
  cow       CPU per copy-on-write page fault (every page a worker writes
            that it shares with its parent is copied once)
  wake      N forked children each blocked in epoll on a Unix socket; a
            parent writes one small frame to each, every child reads it and
            sends it on over its own loopback TCP connection (what a worker
            does for a fan-out): the children's CPU per wake-up, and how
            long until the last of the N receivers has the frame
  direct    the same N receivers, but one process writes the frame to each
            of their connections itself, waking nobody in between (the
            other design: the broker writes fan-out bytes to the client
            sockets): its CPU per delivery, and the time to the last receiver

One JSON line per measurement on stdout.  Standard library only; every
loop is bounded and every child is waited for.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import selectors
import socket
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")
CHILD_LINGER_S = 30.0     # wake: a child waits this long at most for its link to close


def private_dirty_kib() -> int:
    with open("/proc/self/smaps_rollup", "rb") as handle:
        for line in handle:
            if line.startswith(b"Private_Dirty:"):
                return int(line.split()[1])
    return 0


def measure_fork(rounds: int) -> dict:
    """Fork a child that only reports its Private_Dirty, `rounds` times."""
    gc.collect()
    gc.freeze()
    owned: list[int] = []
    started = time.perf_counter()
    for _ in range(rounds):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            os.write(write_end, str(private_dirty_kib()).encode())
            os._exit(0)
        os.close(write_end)
        owned.append(int(os.read(read_end, 64) or b"0"))
        os.close(read_end)
        os.waitpid(pid, 0)
    per_fork_ms = (time.perf_counter() - started) / rounds * 1e3
    owned.sort()
    return {"measure": "fork", "rounds": rounds,
            "child_private_dirty_kib_at_first_line": owned[len(owned) // 2],
            "fork_wait_ms": round(per_fork_ms, 3),
            "parent_rss_mib": round(_rss_kib() / 1024, 1)}


def _rss_kib() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def measure_cow(pages: int) -> dict:
    """A child writes one byte into each of `pages` pages it shares."""
    buffer = bytearray(pages * PAGE)
    for offset in range(0, len(buffer), PAGE):
        buffer[offset] = 1
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        started = time.perf_counter()
        for offset in range(0, len(buffer), PAGE):
            buffer[offset] = 2
        faulting = time.perf_counter() - started
        started = time.perf_counter()
        for offset in range(0, len(buffer), PAGE):
            buffer[offset] = 3
        plain = time.perf_counter() - started
        os.write(write_end, f"{faulting} {plain}".encode())
        os._exit(0)
    os.close(write_end)
    faulting, plain = map(float, os.read(read_end, 128).split())
    os.close(read_end)
    os.waitpid(pid, 0)
    return {"measure": "cow", "pages": pages,
            "us_per_fault": round((faulting - plain) / pages * 1e6, 3)}


def _schedstat_s(pid: int) -> float:
    with open(f"/proc/{pid}/schedstat") as handle:
        return int(handle.read().split()[0]) / 1e9


def _minimal_worker(link: socket.socket, client: socket.socket, frames: int) -> None:
    """Pass `frames` frames on, then wait (bounded) for the parent to close the link.

    Exiting at once after the last frame put each child's exit (about 1 ms
    of unmapping on this VM) into the CPU the parent reads right after
    that frame, whenever the child was quicker than the parent's read.
    """
    selector = selectors.DefaultSelector()
    selector.register(link, selectors.EVENT_READ)
    seen = 0
    while seen < frames:
        for _key, _mask in selector.select(5.0):
            data = link.recv(65536)
            if not data:
                os._exit(0)
            client.send(data)
            seen += 1
    link.settimeout(CHILD_LINGER_S)
    try:
        link.recv(1)
    except OSError:
        pass
    os._exit(0)


def _receive_all(selector: selectors.BaseSelector, count: int, started: float) -> float:
    """Waits until `count` receivers have data (5 s at most); seconds since `started`."""
    got = 0
    deadline = started + 5.0
    while got < count and time.perf_counter() < deadline:
        for key, _mask in selector.select(1.0):
            got += bool(key.fileobj.recv(65536))
    return time.perf_counter() - started


def _percentiles_ms(samples: list[float]) -> dict:
    """p50 and p99 by nearest rank (the ceil(n*p)-th smallest), as bench.py has them.

    Indexing at int(n * p) instead took one rank too high: the p99 of 100
    frames was their maximum.
    """
    samples = sorted(samples)

    def at(percent: int) -> float:
        rank = max(1, -(-len(samples) * percent // 100))     # ceil, in whole numbers
        return round(samples[rank - 1] * 1e3, 3)
    return {"p50": at(50), "p99": at(99)}


def measure_direct(receivers: int, frames: int, interval_s: float) -> dict:
    """One process sends each frame on every connection itself."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(receivers)
    ends: list[socket.socket] = []
    served: list[socket.socket] = []
    selector = selectors.DefaultSelector()
    try:
        for _ in range(receivers):
            receiver = socket.create_connection(listener.getsockname())
            ends.append(receiver)
            served.append(listener.accept()[0])
            receiver.setblocking(False)
            selector.register(receiver, selectors.EVENT_READ)
        frame = b"x" * 60
        sending = 0.0
        to_last: list[float] = []
        for _ in range(frames):
            started = time.perf_counter()
            cpu_before = time.process_time()
            for connection in served:
                connection.send(frame)
            sending += time.process_time() - cpu_before
            to_last.append(_receive_all(selector, receivers, started))
            time.sleep(interval_s)
    finally:
        selector.close()
        for sock in ends + served + [listener]:
            sock.close()
    return {"measure": "direct", "receivers": receivers, "frames": frames,
            "interval_ms": interval_s * 1e3,
            "sender_cpu_us_per_delivery": round(sending / (receivers * frames) * 1e6, 2),
            "to_last_receiver_ms": _percentiles_ms(to_last)}


def measure_wake(children: int, frames: int, interval_s: float) -> dict:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(children)
    links, receivers, pids = [], [], []
    try:
        for _ in range(children):
            ours, theirs = socket.socketpair()
            receiver = socket.create_connection(listener.getsockname())
            served, _addr = listener.accept()
            pid = os.fork()
            if pid == 0:
                ours.close()
                _minimal_worker(theirs, served, frames)
            theirs.close()
            served.close()
            receiver.setblocking(False)
            links.append(ours)
            receivers.append(receiver)
            pids.append(pid)
        selector = selectors.DefaultSelector()
        for receiver in receivers:
            selector.register(receiver, selectors.EVENT_READ)
        before = sum(_schedstat_s(pid) for pid in pids)
        to_last: list[float] = []
        for _ in range(frames):
            started = time.perf_counter()
            for link in links:
                link.send(b"x" * 60)
            to_last.append(_receive_all(selector, children, started))
            time.sleep(interval_s)    # pacing the load, as bench.py's latency scenario does
        used = sum(_schedstat_s(pid) for pid in pids) - before
    finally:
        for link in links:
            link.close()
        for pid in pids:
            os.waitpid(pid, 0)
        for receiver in receivers:
            receiver.close()
        listener.close()
    return {"measure": "wake", "children": children, "frames": frames,
            "interval_ms": interval_s * 1e3,
            "child_cpu_us_per_wake": round(used / (children * frames) * 1e6, 1),
            "to_last_receiver_ms": _percentiles_ms(to_last)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=100,
                        help="children in the wake measurement, receivers in both"
                        " (default 100, at most 1000)")
    parser.add_argument("--frames", type=int, default=300,
                        help="frames in the wake and direct measurements (default 300, at most 10000)")
    parser.add_argument("--forks", type=int, default=50, help="rounds of fork (default 50)")
    args = parser.parse_args()
    if not (1 <= args.children <= 1000 and 1 <= args.frames <= 10000
            and 1 <= args.forks <= 1000):
        parser.error("--children 1-1000, --frames 1-10000, --forks 1-1000")
    raise_nofile()
    measures = (lambda: measure_fork(args.forks), lambda: measure_cow(20000),
                lambda: measure_wake(args.children, args.frames, 0.01),
                lambda: measure_direct(args.children, args.frames, 0.01))
    for measure in measures:
        try:
            result = measure()
        except OSError as error:    # EMFILE with --children 1000 under ulimit -n 1024
            print(f"floor.py: {error.strerror or error} (with --children {args.children}: "
                  f"{2 * args.children + 10} descriptors are needed; see ulimit -n)",
                  file=sys.stderr)
            return 1
        print(json.dumps(result), flush=True)
    return 0


def raise_nofile() -> None:
    """Each child costs the parent two descriptors: take the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


if __name__ == "__main__":
    sys.exit(main())
