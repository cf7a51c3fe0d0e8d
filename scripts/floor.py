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

One JSON line per measurement on stdout.  Standard library only; every
loop is bounded and every child is waited for.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import selectors
import socket
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


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
    os._exit(0)


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
            got = 0
            deadline = started + 5.0
            while got < children and time.perf_counter() < deadline:
                for key, _mask in selector.select(1.0):
                    got += bool(key.fileobj.recv(65536))
            to_last.append(time.perf_counter() - started)
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
    to_last.sort()
    return {"measure": "wake", "children": children, "frames": frames,
            "interval_ms": interval_s * 1e3,
            "child_cpu_us_per_wake": round(used / (children * frames) * 1e6, 1),
            "to_last_receiver_ms": {"p50": round(to_last[len(to_last) // 2] * 1e3, 3),
                                    "p99": round(to_last[int(len(to_last) * 0.99)] * 1e3, 3)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=100,
                        help="children in the wake measurement (default 100, at most 1000)")
    parser.add_argument("--frames", type=int, default=300,
                        help="frames in the wake measurement (default 300, at most 10000)")
    parser.add_argument("--forks", type=int, default=50, help="rounds of fork (default 50)")
    args = parser.parse_args()
    if not (1 <= args.children <= 1000 and 1 <= args.frames <= 10000
            and 1 <= args.forks <= 1000):
        parser.error("--children 1-1000, --frames 1-10000, --forks 1-1000")
    for result in (measure_fork(args.forks), measure_cow(20000),
                   measure_wake(args.children, args.frames, 0.01)):
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
