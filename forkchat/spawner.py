"""The spawner: a quiet child of the supervisor that forks the workers.

Forking from the supervisor made every worker pay for the supervisor's
own activity: each page the parent writes after a fork stops being shared
with the child forked before it, so every worker ends up owning a copy of
its parent's working set between forks.  The spawner's is small (it reads
one request, forks and reports: about 170 pages a fork, measured), the
supervisor's (accepting, its child table, timers, logging) is not.  It also
takes the fork off the supervisor's accept path: the supervisor accepts and
passes the socket on, the spawner forks, on the other core.

Protocol (one SOCK_SEQPACKET pair per spawner, ASCII fields):
  supervisor -> spawner  ``W cid proto listener peer`` + the client fd
                         ``R``: retire (no more requests; exit now: the
                         workers, each reported as it started, become the
                         supervisor's children, as a dead spawner's do);
                         ``R wait``: retire, and exit after the last worker
                         (a supervisor that is no subreaper would not learn
                         how adopted workers end)
  spawner -> supervisor  ``S cid pid`` started, ``F cid reason`` failed (the
                         supervisor refuses the client with its copy),
                         ``L cid`` the client fd did not arrive (the kernel
                         drops it when the spawner is out of descriptors:
                         the supervisor refuses with its copy),
                         ``X pid code`` a worker exited (code as in
                         multiprocessing: negative for a signal)

Each spawner keeps the configuration and TLS contexts it was forked with;
a reload starts a new spawner and retires the old one, so new connections
get the new settings and old workers keep theirs.  A retired spawner exits
at once rather than after its last worker: with long-lived clients, each
reload (a daily certificate renewal, say) left one more spawner of ~3 MiB
waiting for clients that may stay for weeks.
"""

from __future__ import annotations

import collections
import errno
import gc
import logging
import os
import selectors
import signal
import socket
import ssl
import sys
from dataclasses import dataclass
from typing import Any, Callable

from forkchat import children, log as logsetup, signals

log = logging.getLogger("forkchat.spawner")

MESSAGE_BYTES = 512
# A send that fails so means the spawner is gone; its exit settles the rest.
PEER_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ECONNREFUSED, errno.ENOTCONN)


def request_message(cid: int, proto: str, listener: int, peer: str) -> bytes:
    return f"W {cid} {proto} {listener} {peer}".encode()


def parse_message(data: bytes) -> tuple[str, list[str]]:
    """('W', [cid, proto, listener, peer]) and the like; ('', []) if empty."""
    fields = data.decode("ascii", "replace").split(" ")
    return fields[0], fields[1:]


def main(control: socket.socket, cfg: Any, broker_address: str | bytes,
         tls_contexts: list[ssl.SSLContext | None],
         worker_main: Callable[..., None]) -> None:
    """Process entry point (the multiprocessing target)."""
    def serve() -> int:
        logsetup.setup("spawner", cfg.log.level)
        return Spawner(control, cfg, broker_address, tls_contexts, worker_main).run()
    children.run_child("forkchat-spawn", {control.fileno()}, serve)


def offer_memory_for_merging() -> None:
    """memory_merge = true: opt in, and say in the log what that does here."""
    problem = children.merge_memory()
    if problem is not None:
        log.warning("memory_merge: cannot offer memory to same-page merging: %s "
                    "(it needs Linux 6.4 or later)", problem)
    elif children.ksm_running():
        log.info("memory_merge: workers' memory is offered to same-page merging (KSM)")
    else:
        log.warning("memory_merge: same-page merging is not running (%s is not 1): "
                    "nothing will be merged", children.KSM_RUN)


class Spawner:
    def __init__(self, control: socket.socket, cfg: Any, broker_address: str | bytes,
                 tls_contexts: list[ssl.SSLContext | None],
                 worker_main: Callable[..., None]) -> None:
        self.control = control
        self.cfg = cfg
        self.broker_address = broker_address
        self.tls_contexts = tls_contexts
        self.worker_main = worker_main
        # made once, before the heap is frozen: every worker forks from it
        self.worker_process = children.template("forkchat-worker", self.start_worker)
        self.supervisor_pid = os.getppid()     # the server's root, for STATS
        self.workers: set[int] = set()
        self.retired = False
        self.linger = False        # retired, but stay until the last worker ends
        self.done = False

    def run(self) -> int:
        # Nothing here makes cycles worth collecting, and a collection would
        # write to pages the workers share; children.fork_from collects
        # what each fork leaves in the youngest generation, then freezes it.
        gc.disable()
        # No worker reads stdin: with none, multiprocessing's start of each
        # worker skips reopening /dev/null as a new text file object.
        sys.stdin = None
        # Signals are meant for the supervisor; a SIGTERM to the whole process
        # group must not take the spawner away from it (it retires instead).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        children.take_sigterm()
        if self.cfg.server.memory_merge:
            offer_memory_for_merging()
        self.control.setblocking(True)
        signal_r, _signal_w = signals.install([signal.SIGCHLD])    # keep both open
        selector = selectors.DefaultSelector()
        selector.register(self.control, selectors.EVENT_READ, self.on_control)
        selector.register(signal_r, selectors.EVENT_READ,
                          lambda: self.reap() if signals.received(signal_r) else None)
        selector.register(children.lifeline_fd(), selectors.EVENT_READ, self.on_lifeline)
        children.keep_threads_at_fork()      # one thread here, and so in each worker
        gc.freeze()
        while self.still_running():
            for key, _mask in selector.select():
                key.data()
        if self.retired:
            self.reap()      # the exits already here are reported; the rest are the supervisor's
        signals.uninstall()     # the wakeup socket closes as this returns
        return 0

    def still_running(self) -> bool:
        """Until the supervisor is gone, or it retired us (and, if it asked
        us to linger, our last worker has ended)."""
        return not self.done and not (self.retired and not (self.linger and self.workers))

    def on_lifeline(self) -> None:
        self.done = True          # the supervisor is gone; its workers notice it too

    def on_control(self) -> None:
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.control, MESSAGE_BYTES, 1,
                                                       socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds = b"", []
        if not data:
            for fd in fds:
                os.close(fd)
            self.done = True
            return
        kind, fields = parse_message(data)
        if kind == "W" and len(fds) == 1 and len(fields) == 4:
            self.spawn(fds[0], fields)
            return
        for fd in fds:
            os.close(fd)
        if kind == "R":
            # Every request before it was answered (one at a time, in
            # order): the supervisor knows each worker's pid and adopts them.
            self.retired = True
            self.linger = fields == ["wait"]
        elif kind == "W" and fields:
            # Without a report the supervisor would hold the client's
            # socket, and count it, for ever; the client would wait as long.
            self.report(f"L {fields[0]}")

    def spawn(self, fd: int, fields: list[str]) -> None:
        cid_text, proto, index, peer = fields
        try:
            tls = self.tls_contexts[int(index)]
            # The client's socket object is the worker's to make: each page
            # the spawner writes between forks (a socket object, its type's
            # reference count, the allocator's pools) is copied once for the
            # worker forked before, which keeps the old one.
            process = children.fork_from(self.worker_process,
                                         (fd, peer, proto, int(cid_text), tls))
        except (OSError, ValueError, IndexError) as error:
            # The supervisor tells the client why, with its copy: only it
            # knows whether the server is stopping (the spawner told a
            # stop's clients 'busy, try again later').
            self.report(f"F {cid_text} {error}")
            return
        finally:
            os.close(fd)
        assert process.pid is not None
        os.close(process.sentinel)     # exits are learnt from SIGCHLD
        self.workers.add(process.pid)
        self.report(f"S {cid_text} {process.pid}")

    def start_worker(self, fd: int, peer: str, proto: str, cid: int,
                     tls: ssl.SSLContext | None) -> None:
        """The worker's entry point, in the new process: its client socket."""
        self.worker_main(socket.socket(fileno=fd), peer, proto, cid, self.cfg,
                         self.broker_address, tls, self.supervisor_pid)

    def reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.workers.discard(pid)
            self.report(f"X {pid} {os.waitstatus_to_exitcode(status)}")

    def report(self, text: str) -> None:
        try:
            self.control.send(text.encode())
        except OSError:
            self.done = True      # the supervisor is gone


@dataclass
class Request:
    """A connection handed to a spawner; ours until it reports on it."""

    cid: int
    conn: socket.socket
    peer: str
    proto: str
    listener_id: int
    sent: bool = False
    encrypted: bool = False       # a TLS listener's: refused without a word
    unsent_because: str = ""      # why the kernel would not pass it (see Handle.flush)


class Handle:
    """The supervisor's end of one spawner: queued requests, parsed reports.

    The supervisor keeps its copy of each connection until the spawner
    reports the worker started (or failed), so that a spawner which dies
    loses nothing: what it never got goes to the next one.  It takes one
    request at a time and reports before the next, so of the requests it
    got, only the oldest unanswered one can have been forked unreported.
    """

    def __init__(self, sock: socket.socket, pid: int, listener_ids: list[int],
                 listeners: tuple[object, ...] = (),
                 flood: tuple[float, int] | None = None) -> None:
        self.sock = sock
        self.pid = pid
        # (flood_rate, flood_burst) of the configuration it starts workers
        # with, which they keep: the broker's flood control of each (None:
        # not known, the broker takes the running configuration's)
        self.flood = flood
        self.listener_ids = listener_ids     # id() of each Bound, in the spawner's order
        # ... and the Bounds themselves, held for as long as this spawner may
        # be asked: one a reload removed could be freed, and a later Bound
        # given its id(), whose connections would get the wrong index (TLS)
        self.listeners = listeners
        self.requests: dict[int, Request] = {}             # by cid, in the order asked
        self.queue: collections.deque[int | None] = collections.deque()  # cids to send; None: retire
        self.retired = False
        self.linger = False                  # retired with ``R wait``
        self.broken = False                  # the spawner end is gone
        self.unsendable: list[Request] = []  # the kernel would not pass these

    def knows(self, listener_id: int) -> bool:
        return listener_id in self.listener_ids

    def request(self, request: Request) -> None:
        request.sent = False
        self.requests[request.cid] = request
        self.queue.append(request.cid)

    def answered(self, cid: int) -> Request | None:
        """The spawner reported on `cid`: our copy of the connection goes."""
        request = self.requests.pop(cid, None)
        if request is not None:
            request.conn.close()
        return request

    def flush(self) -> bool:
        """Send what is queued; True when nothing more can go now.

        If the spawner is gone the handle is marked broken and what is
        queued stays for `leftovers()`.  A request the kernel refuses for
        another reason (too many descriptors in flight, say) moves to
        `unsendable`, for the supervisor to refuse, and the rest go on.
        """
        while self.queue and not self.broken:
            cid = self.queue[0]
            if cid is None:
                message, fds = (b"R wait" if self.linger else b"R"), []
            else:
                request = self.requests[cid]
                index = self.listener_ids.index(request.listener_id)
                message = request_message(cid, request.proto, index, request.peer)
                fds = [request.conn.fileno()]
            try:
                socket.send_fds(self.sock, [message], fds, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as error:
                if error.errno in PEER_GONE:
                    self.broken = True
                    return True
                self.queue.popleft()
                if cid is not None:
                    request = self.requests.pop(cid)
                    request.unsent_because = error.strerror or str(error)
                    self.unsendable.append(request)
                continue
            self.queue.popleft()
            if cid is not None:
                self.requests[cid].sent = True
        return True

    def retire(self, linger: bool = False) -> None:
        """No more requests; with `linger`, the spawner stays until its
        last worker ends (see ``R wait``)."""
        self.retired = True
        self.linger = linger
        self.queue.append(None)

    def reports(self) -> list[tuple[str, list[str]]] | None:
        """Every report waiting; None once the spawner has closed its end."""
        found: list[tuple[str, list[str]]] = []
        while True:
            try:
                data = self.sock.recv(MESSAGE_BYTES, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return found
            except OSError:
                data = b""
            if not data:
                return found or None
            found.append(parse_message(data))

    def leftovers(self) -> tuple[list[Request], Request | None]:
        """The spawner died (its last reports read first): the requests it
        cannot have started, to give to another, and the one it may have."""
        self.sock.close()
        self.queue.clear()
        requests = list(self.requests.values())
        self.requests.clear()
        maybe = next((r for r in requests if r.sent), None)
        return [r for r in requests if r is not maybe], maybe
