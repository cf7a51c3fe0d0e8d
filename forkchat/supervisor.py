"""The supervisor: the main process, which listens, spawns and reaps.

    listeners ──accept──▶ Supervisor ──fork──▶ broker (one; restarted if it dies)
                             │    └──fork──▶ spawner ──fork──▶ worker (one per client)
                             │                  (accepted sockets go to it over SCM_RIGHTS)
    signals ──wakeup fd──────┘      pidfds: one per child, readable at its exit

It never reads client traffic.  It owns the listening sockets, the child
table, the current Config, and the broker's private Unix socket, which it
creates once so that a restarted broker is found at the same address.
Signal handlers only wake the loop; `SIGNAL_ACTIONS` says what each does.
Children are watched through pidfds, so a child that closed its inherited
descriptors (as every child here does) is still seen to exit.  Workers are
the spawner's children: it reports their start and exit.  When a spawner
retires (at a reload it exits at once) or dies, its workers become ours (we
are a child subreaper) and are watched through pidfds too.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import logging
import os
import pickle
import resource
import selectors
import signal
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from forkchat import addresses, admission, children, config, ipc, listeners, log as logsetup, procstats
from forkchat import signals, spawner, systemd
from forkchat import timers

log = logging.getLogger("forkchat.supervisor")

BROKER_BOOT_ERROR = 3
BROKER_RESTARTS = 5              # more deaths of a broker or spawner than this ...
BROKER_RESTART_WINDOW_S = 60.0   # ... within this window halts the server
STOP_GRACE_S = 3.0
UNWATCHED_POLL_S = 0.05    # while stopping: how often to look at workers without a pidfd
ACCEPTS_PER_WAKEUP = 64
# At a stop, the connections still in the listen queues are told the server
# stops, at most this many in all and for at most this long, so that a stop
# in a flood stays quick; the rest are reset as the listeners close.
STOP_REFUSALS = listeners.BACKLOG
STOP_REFUSALS_S = 0.5
# The certificates served are looked at once a day for their dates too: a
# renewal that failed, or a renewed file never reloaded, leaves the served
# one to expire while the server runs for weeks.
CERTIFICATES_EVERY_S = 86400.0
STATUS_EVERY_S = 5.0       # STATUS= refresh for systemd, when something changed
MEMORY_EVERY_S = 60.0      # PSS over the whole tree costs a /proc read per child ...
MEMORY_STEP_S = 0.02       # ... so a pass reads a slice of them this often
SPAWNER_RETRY_S = 1.0      # after a failed fork of the spawner itself
BROKER_RETRY_S = 1.0       # after a failed fork of a broker to replace a dead one
BROKER_SILENT_S = 3 * ipc.HEARTBEAT_S + 1.0
# reads of a dead broker's control socket (64 kB each) before the next starts
LAST_CONTROL_READS = 16
BROKER_OWN_FDS = 16        # the broker's descriptors besides one per client (store, sockets)
# The supervisor's besides one per listener and one per worker it adopted
# (stdio, its epoll, signal and lifeline pipes, the broker's and spawners'
# sockets and pidfds: 13 measured with no reload, and a lingering retired
# spawner's two)
SUPERVISOR_OWN_FDS = 15
SERVER_OWN_PROCESSES = 3   # supervisor, broker, spawner
# [server] keys forkchat.toml(5) marks "restart": a reload keeps the running value
RESTART_ONLY_KEYS = ("state_dir", "user", "group", "allow_root")
# ... and what a reload keeps of the listeners when systemd passed the sockets
PASSED_SOCKETS_KEY = "[[listen]] (sockets passed by systemd)"


class Shutdown(BaseException):
    """Carries the halt reason and exit code up to run(), which logs the
    reason ("" for one logged already)."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):       # not glibc (musl has none)
        return None


_malloc_trim = _find_malloc_trim()


def trim_heap() -> None:
    """Give the C heap's free pages back to the kernel before forking the
    spawner.

    The spawner starts with a copy of our address space, and every fork
    of a worker copies the page table of all of it that is present: a
    heap left with free pages by the imports and the configuration (2.6
    MiB of 19, measured) made each fork copy them too, for nothing.
    """
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)


@dataclass(frozen=True)
class Targets:
    """The process entry points, handed in by cli so roles never import roles."""

    broker: Callable[..., None]
    worker: Callable[..., None]
    # runs TLS rounds through a reload's new contexts (warmup.warm_reloaded)
    # (returning those whose handshake the server's side refused, with why)
    warm_tls: Callable[[list[ssl.SSLContext]], list[tuple[ssl.SSLContext, str]]] = \
        lambda contexts: []


@dataclass
class Child:
    kind: str
    pid: int
    process: Any          # None for a worker: its parent is a spawner
    pidfd: int            # -1 for a worker, until its spawner exits and leaves it to us
    peer: str = ""
    cid: int = 0
    spawner: int = 0      # a worker's spawner pid
    # a worker's (flood_rate, flood_burst), those of its spawner's
    # configuration, for the broker's flood control of it (None: not known)
    flood: tuple[float, int] | None = None


class Supervisor:
    def __init__(self, cfg: config.Config, targets: Targets,
                 reload: Callable[[], config.Config] | None = None,
                 bound: list[listeners.Bound] | None = None) -> None:
        self.cfg = cfg
        self.targets = targets
        self.reload_config = reload
        self.bound = bound or []
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, Child] = {}
        self.admission = admission.Admission(cfg.limits)
        self.refusals = admission.RefusalLog()
        self.next_cid = 1
        self.broker_pid = 0
        self.broker_control: socket.socket | None = None
        self.broker_out: ipc.FrameWriter | None = None
        self.deaths: dict[str, list[float]] = {"broker": [], "spawner": []}
        self.spawners: dict[int, spawner.Handle] = {}
        self.spawner: spawner.Handle | None = None     # the one new clients go to
        # a reload's spawner could not be forked: the one new clients go to
        # has the previous configuration, and the fork is tried again
        self.spawner_stale = False
        self.spawners_linger = False    # retired spawners wait for their workers (no subreaper)
        self.stopping = False
        self.created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        # os.urandom, not the secrets module: that imports random, whose
        # handler reseeds it in every child forked after (see test_imports)
        self.broker_address = f"\0forkchat-{os.getpid()}-{os.urandom(8).hex()}"
        self.broker_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control_reader = ipc.FrameReader()
        self.counts = {"clients": 0, "rooms": 0}
        self.broker_heard = time.monotonic()
        self.memory_mib: float | None = None    # until the first census is done
        self.census = procstats.PssCensus()
        self.status_sent = ""
        self.timers: dict[str, float] = {}
        self.broker_frozen = False
        self.broker_gone_early = False     # stopping, and the broker no longer listens
        self.killed: dict[int, float] = {}    # pid -> the grace it had, when we SIGKILLed it
        # (signal, grace) the stop last sent every worker, for those reported after it
        self.workers_signalled: tuple[int, float] | None = None
        self.accept_trouble = listeners.AcceptTrouble(log, "accept", "accepting connections again")
        self.paused: list[listeners.Bound] = []   # listeners unwatched until the "accept" timer
        self.worker_forks_failed = 0     # since a worker last started
        self.forks_failed: dict[str, int] = {}   # retried forks of the broker, a spawner
        # (cid, pid, peer[, flood_rate, flood_burst]) of workers started,
        # for the broker (worker_entry)
        self.binds: list[tuple] = []
        # cids the running broker was started awaiting with no worker yet
        # (pid 0): one refused instead must be named to it (`_unadmit`)
        self.awaited_unstarted: set[int] = set()
        # The highest user count the brokers told (LUSERS's max), for the
        # next broker: it restarted with each broker (on_control)
        self.most_users = 0

    # -- main loop -------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        _raise_fd_limit()
        warn_os_limits(self.cfg.limits, len(self.bound))
        gc.disable()
        try:
            self._set_up()
        except OSError as error:
            # (a descriptor limit of a few: EMFILE before any child runs)
            log.error("cannot start: %s", error.strerror or error)
            return 1
        try:
            if not self.spawn_broker() or not self.start_spawner():
                # its line, with why, is logged already (_fork_failed): a
                # second one without the reason said it again
                raise Shutdown("", 1)
            for bound in self.bound:
                listeners.announce(bound)
            self._start_timers()
            systemd.notify("READY=1", self._status())
            while not self.stopping:
                self._turn(timers.next_timeout(self.timers))
                self._run_timers()
            self.stop()
        except Shutdown as halt:
            if halt.reason:
                log.error("%s", halt.reason)
            self.stop()
            return halt.code
        return 0

    def _set_up(self) -> None:
        """What the supervisor holds before it starts any child."""
        children.make_lifeline()
        if not children.become_subreaper():
            # A retired spawner's workers would become init's, and their
            # ends unknown to us: retired spawners stay until their last.
            self.spawners_linger = True
        self._install_signals()
        self.broker_listener.bind(self.broker_address)
        self.broker_listener.listen(listeners.BACKLOG)
        for bound in self.bound:
            self._watch_listener(bound)

    def _turn(self, timeout: float | None) -> None:
        for key, mask in self.selector.select(timeout):
            key.data(mask)

    # -- timers: status, memory, watchdog ------------------------------------------

    def _start_timers(self) -> None:
        now = time.monotonic()
        self.timers["status"] = now + STATUS_EVERY_S
        self.timers["memory"] = now
        self.timers["certificates"] = now + CERTIFICATES_EVERY_S
        if systemd.watchdog_interval():
            self.timers["watchdog"] = now

    def _run_timers(self) -> None:
        for name in timers.pop_due(self.timers):
            if not self.stopping:
                TIMER_ACTIONS[name](self)

    def on_status_timer(self) -> None:
        self.timers["status"] = time.monotonic() + STATUS_EVERY_S
        self._reap_unwatched()
        status = self._status()
        if status != self.status_sent:
            self.status_sent = status
            systemd.notify(status)

    def on_memory_timer(self) -> None:
        census = self.census
        if not census.running:
            census.start([os.getpid(), *self.children])
        if census.step():
            self.memory_mib = None if census.total is None else census.total / (1 << 20)
            self.timers["memory"] = time.monotonic() + MEMORY_EVERY_S
        else:
            self.timers["memory"] = time.monotonic() + MEMORY_STEP_S

    def on_certificates_timer(self) -> None:
        self.timers["certificates"] = time.monotonic() + CERTIFICATES_EVERY_S
        now = time.time()
        for bound in self.bound:
            if bound.tls is not None:
                listeners.warn_chain(bound.spec.tls_cert, bound.chain, now)

    def on_watchdog_timer(self) -> None:
        """Ping systemd only while the supervisor loop and the broker both work."""
        interval = systemd.watchdog_interval() or STATUS_EVERY_S
        self.timers["watchdog"] = time.monotonic() + interval
        if time.monotonic() - self.broker_heard <= BROKER_SILENT_S:
            systemd.notify("WATCHDOG=1")
        else:
            log.warning("broker silent for %.0f s: withholding the watchdog ping",
                        time.monotonic() - self.broker_heard)

    def _status(self) -> str:
        """What `systemctl status` shows; the memory only once measured, as
        the first census ends some seconds after the start, not '0 MiB'."""
        memory = f", {self.memory_mib:.0f} MiB" if self.memory_mib is not None else ""
        return f"STATUS={self.counts['clients']} clients, {self.counts['rooms']} rooms{memory}"

    def on_control(self, mask: int) -> None:
        """Heartbeats from the broker: counts for STATUS, the highest user
        count (for the next broker), and proof of life."""
        assert self.broker_control is not None
        if mask & selectors.EVENT_WRITE:
            self._flush_broker()
        if mask & selectors.EVENT_READ:
            self._read_control()

    def _read_control(self) -> bool:
        """One read of the broker's control socket, its frames handled;
        False once nothing more is there (or the broker is gone)."""
        assert self.broker_control is not None
        try:
            data = self.broker_control.recv(65536)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            try:
                self.selector.unregister(self.broker_control)
            except (KeyError, ValueError):
                pass
            return False
        try:
            frames = self.control_reader.feed(data)
        except ipc.FrameError as error:
            log.error("broker control: %s", error)
            return False
        for _kind, payload in frames:
            self._on_control_message(ipc.decode_json(payload))
        return True

    def _on_control_message(self, message: dict[str, Any]) -> None:
        if message.get("op") == "frozen":
            self.broker_frozen = True
        elif message.get("op") == "counts":
            self.broker_heard = time.monotonic()
            self.counts = {"clients": int(message.get("clients", 0)),
                           "rooms": int(message.get("rooms", 0))}
            self.most_users = max(self.most_users, int(message.get("most", 0)))

    def _install_signals(self) -> None:
        self._signal_r, self._signal_w = signals.install(SIGNAL_ACTIONS)
        self.selector.register(self._signal_r, selectors.EVENT_READ, self.on_signal)
        # held since the start (cli.hold_signals): one sent meanwhile is noted now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNAL_ACTIONS)

    def on_signal(self, mask: int) -> None:
        for signum in signals.received(self._signal_r):
            action = SIGNAL_ACTIONS.get(signum)
            if action is not None:
                action(self)

    def _heed_pending_stop(self) -> None:
        """Act on a SIGTERM or SIGINT already waiting on the wakeup socket.

        A signal to the whole process group can end a child before this
        loop reads its own copy: a child's death must not be taken for a
        crash then.  Other signals waiting are put back, to be handled in
        turn rather than in the middle of settling a dead child.
        """
        pending = signals.received(self._signal_r)
        stop = [s for s in pending if SIGNAL_ACTIONS.get(s) is Supervisor.handle_sigterm]
        later = bytes(s for s in pending if s not in stop)
        if stop:
            self.handle_sigterm()
        if later:
            try:
                self._signal_w.send(later)
            except OSError:
                log.warning("signals %s lost while settling a dead child", list(later))

    # -- accepting ---------------------------------------------------------------

    def _watch_listener(self, bound: listeners.Bound) -> None:
        self.selector.register(bound.sock, selectors.EVENT_READ,
                               lambda mask, bound=bound: self.on_accept(bound))

    def on_accept(self, bound: listeners.Bound) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, addr = bound.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in listeners.ACCEPT_PEER_ERRORS:
                    log.debug("accept: a connection was lost before it was taken: %s",
                              error.strerror or error)
                    continue
                if listeners.nothing_queued(bound.sock):
                    return          # at the limit, but no client waits
                # Out of descriptors, most likely; anything else unforeseen
                # must not end the server either.
                self._pause_accepting(bound, error)
                return
            self.accept_trouble.accepted()
            self._admit(conn, addr[0], bound)

    def _pause_accepting(self, bound: listeners.Bound, error: OSError) -> None:
        """Out of descriptors: stop watching the listener for a while
        (see listeners.AcceptTrouble); its queue waits in the kernel."""
        self.accept_trouble.failed(error)
        self._unwatch_listener(bound)
        self.paused.append(bound)
        self.timers["accept"] = time.monotonic() + listeners.ACCEPT_PAUSE_S

    def on_accept_timer(self) -> None:
        paused, self.paused = self.paused, []
        for bound in paused:
            if bound in self.bound:       # not closed by a reload meanwhile
                self._watch_listener(bound)

    def _unwatch_listener(self, bound: listeners.Bound) -> None:
        try:
            self.selector.unregister(bound.sock)
        except (KeyError, ValueError):    # paused, or closed
            pass

    def _admit(self, conn: socket.socket, address: str, bound: listeners.Bound) -> None:
        peer = admission.peer_address(address)
        reason = self.admission.refusal(peer)
        if reason is None:
            self.spawn_worker(conn, peer, bound)
            return
        listeners.refuse(conn, peer, reason, bound.tls is not None)
        self._log_refusals(self.refusals.refused(peer, reason, time.monotonic(),
                                                 self.admission.block(peer)))

    def _log_refusals(self, lines: list[str]) -> None:
        """Log what RefusalLog says and wake up when its next window ends."""
        for line in lines:
            log.warning("%s", line)
        due = self.refusals.next_due()
        if due is None:
            self.timers.pop("refusals", None)
        else:
            self.timers["refusals"] = due

    def on_refusals_timer(self) -> None:
        self._log_refusals(self.refusals.expire(time.monotonic()))

    # -- children ----------------------------------------------------------------

    def _start(self, kind: str, target: Callable[..., None], args: tuple[Any, ...],
               peer: str = "", cid: int = 0) -> Child:
        """Fork a child (children.start: multiprocessing's fork start method)."""
        process = children.start(f"forkchat-{kind}", target, args)
        assert process.pid is not None
        pidfd = process.sentinel
        child = Child(kind, process.pid, process, pidfd, peer, cid)
        self.children[child.pid] = child
        self.selector.register(pidfd, selectors.EVENT_READ,
                               lambda mask, child=child: self.on_child_exit(child))
        return child

    def spawn_worker(self, conn: socket.socket, peer: str, bound: listeners.Bound) -> None:
        """Hand the socket to the spawner, which forks its worker."""
        handle = self.spawner
        if handle is None or not handle.knows(id(bound)):
            # no spawner (one is being restarted), or a listener added by a
            # reload whose new spawner could not be started
            listeners.refuse(conn, peer, listeners.BUSY, bound.tls is not None)
            return
        cid = self.next_cid
        self.next_cid += 1
        handle.request(spawner.Request(cid, conn, peer, bound.spec.protocol, id(bound),
                                       encrypted=bound.tls is not None))
        self.admission.admitted(peer)
        self._flush_spawner(handle)

    def start_spawner(self) -> bool:
        """A spawner with the current config and certificates; the previous
        one retires, its workers keeping what they were started with.
        False if it could not be forked: the previous one (if any) goes on,
        and without one a timer tries again."""
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError as error:
            return self._no_spawner(error)
        trim_heap()
        try:
            child = self._start("spawner", spawner.main,
                                (theirs, self.cfg, self.broker_address,
                                 [bound.tls for bound in self.bound], self.targets.worker))
        except OSError as error:
            ours.close()
            return self._no_spawner(error)
        finally:
            theirs.close()
        ours.setblocking(False)
        handle = spawner.Handle(ours, child.pid, [id(bound) for bound in self.bound],
                                tuple(self.bound),
                                (self.cfg.limits.flood_rate, self.cfg.limits.flood_burst))
        self.spawners[child.pid] = handle
        self.selector.register(ours, selectors.EVENT_READ,
                               lambda mask, handle=handle: self.on_spawner(handle, mask))
        previous, self.spawner = self.spawner, handle
        self.spawner_stale = False
        if previous is not None:
            previous.retire(self.spawners_linger)
            self._flush_spawner(previous)
        self._started("spawner", child.pid)
        return True

    def _no_spawner(self, error: OSError) -> bool:
        """Tried again every second, logged once: in place of a dead one,
        or of the previous one after a reload, which goes on meanwhile.

        A reload at the process limit (to lower max_clients, say) left the
        previous spawner for good: new clients were served with the
        previous configuration, and those of a listener the reload added
        refused 'busy', until the next reload.
        """
        self.spawner_stale = self.spawner is not None
        self._fork_failed("spawner", f"cannot start a spawner: {error.strerror or error}")
        self.timers["spawner"] = time.monotonic() + SPAWNER_RETRY_S
        return False

    def _fork_failed(self, kind: str, line: str) -> None:
        """A fork retried every second (at a process limit, most often) is
        logged once, not once a second for as long as the limit lasts;
        `_started` says how many tries failed."""
        failed = self.forks_failed.get(kind, 0)
        self.forks_failed[kind] = failed + 1
        log.log(logging.DEBUG if failed else logging.ERROR, "%s", line)

    def _started(self, kind: str, pid: int) -> None:
        failed = self.forks_failed.pop(kind, 0)
        log.info("%s started (pid %d)%s", kind, pid,
                 f" after {failed} failed forks" if failed else "")

    def on_spawner_timer(self) -> None:
        if self.spawner is None or self.spawner_stale:
            self.start_spawner()

    def _flush_spawner(self, handle: spawner.Handle) -> None:
        done = handle.flush()
        while handle.unsendable:
            request = handle.unsendable.pop()
            log.error("cannot pass conn %d from %s to the spawner: %s", request.cid, request.peer,
                      request.unsent_because)
            listeners.refuse(request.conn, request.peer, self._refusal(), request.encrypted)
            self._unadmit(request)
        self._want_writes(handle.sock, not done, lambda mask: self.on_spawner(handle, mask))

    def _want_writes(self, sock: socket.socket, pending: bool,
                     callback: Callable[[int], None]) -> None:
        """Watch `sock` for writability only while something waits to go."""
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if pending else 0)
        try:
            if self.selector.get_key(sock).events != want:
                self.selector.modify(sock, want, callback)
        except (KeyError, ValueError):
            pass

    def on_spawner(self, handle: spawner.Handle, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush_spawner(handle)
        if mask & selectors.EVENT_READ:
            self._read_spawner(handle)

    def _read_spawner(self, handle: spawner.Handle) -> None:
        reports = handle.reports()
        if reports is None:                   # its exit is handled through its pidfd
            try:
                self.selector.unregister(handle.sock)
            except (KeyError, ValueError):
                pass
            return
        for kind, fields in reports:
            action = SPAWNER_REPORTS.get(kind)
            try:
                if action is not None:
                    action(self, handle, fields)
            except (ValueError, IndexError):
                log.error("spawner %d: bad report %r", handle.pid, (kind, fields))
        self._send_binds()

    def _send_binds(self) -> None:
        """Tell the broker which process serves each new connection, the
        address its client connected from and the flood limits its worker
        was started with, in one frame for the reports read together: it
        takes a worker's HELLO only from the process its cid was given to,
        shows the client with that address, whatever the worker states,
        and holds the worker's frames to twice those limits."""
        if self.binds:
            self._send_broker(ipc.encode_json(ipc.Kind.CONTROL, {"op": "bind",
                                                                 "workers": self.binds}))
            self.binds = []

    def on_worker_started(self, handle: spawner.Handle, fields: list[str]) -> None:
        request = handle.answered(int(fields[0]))
        if request is not None:
            pid = int(fields[1])
            known = self.children.get(pid)
            if known is not None and known.kind == "worker" and not known.cid:
                # adopted already as an unreported orphan of another spawner
                # that exited with this one: one entry, one watch
                known.peer, known.cid, known.flood = request.peer, request.cid, handle.flood
            else:
                self.children[pid] = Child("worker", pid, None, -1, request.peer, request.cid,
                                           handle.pid, handle.flood)
            self.binds.append(worker_entry(request.cid, pid, request.peer, handle.flood))
            if self.workers_signalled is not None:    # stopping: it is told as the rest were
                self._signal(pid, *self.workers_signalled)
            if self.worker_forks_failed:
                log.info("workers start again; %d connections were refused meanwhile",
                         self.worker_forks_failed)
                self.worker_forks_failed = 0

    def on_worker_failed(self, handle: spawner.Handle, fields: list[str]) -> None:
        """A fork that failed (EAGAIN at the process limit) fails for every
        client until a worker exits: said once, not once per connection.
        The client is refused here, with our copy, as at a stop it is told
        the server stops."""
        request = handle.requests.pop(int(fields[0]), None)
        if request is None:
            return
        if not self.worker_forks_failed:
            log.error("cannot start a worker for %s: %s; clients are refused 'busy' until "
                      "one starts", request.peer, " ".join(fields[1:]))
        self.worker_forks_failed += 1
        listeners.refuse(request.conn, request.peer, self._refusal(), request.encrypted)
        self._unadmit(request)

    def on_request_lost(self, handle: spawner.Handle, fields: list[str]) -> None:
        """The spawner got the request without its socket (it is out of
        descriptors): the client is refused here, with our copy."""
        request = handle.requests.pop(int(fields[0]), None)
        if request is None:
            return
        log.error("cannot pass conn %d from %s to the spawner: it received no socket "
                  "(out of descriptors?)", request.cid, request.peer)
        listeners.refuse(request.conn, request.peer, self._refusal(), request.encrypted)
        self._unadmit(request)

    def _refusal(self) -> str:
        """What a connection refused before its worker started is told: at
        a stop, what the workers tell theirs (the stop's flush of the
        spawner's queue refused some 'busy, try again later')."""
        return listeners.SHUTTING_DOWN if self.stopping else listeners.BUSY

    def _unadmit(self, request: spawner.Request) -> None:
        """A connection refused or lost before its worker started.

        A broker started while it waited for its worker (pid 0 in its
        list) awaits it too: it is told the connection is gone, else it
        held every client's commands for its whole recovery wait and then
        warned of a worker that did not re-register.
        """
        self.admission.gone(request.peer)
        if request.cid in self.awaited_unstarted:
            self.awaited_unstarted.discard(request.cid)
            self._send_binds()           # in the order the spawner reported
            self._send_broker(ipc.encode_json(ipc.Kind.CONTROL, {"op": "gone",
                                                                 "cid": request.cid,
                                                                 "pid": 0}))

    def on_worker_exited(self, handle: spawner.Handle, fields: list[str]) -> None:
        child = self.children.pop(int(fields[0]), None)
        if child is not None:
            self._worker_gone(child, int(fields[1]))

    def spawn_broker(self) -> bool:
        """Start a broker; False if the kernel would not fork one (EAGAIN at
        the process limit, ENOMEM) or give its socket (EMFILE)."""
        # (cid, pid, peer, flood_rate, flood_burst) of every worker, pid 0
        # for those not reported yet (their "bind" comes later); workers
        # never reported have no cid to wait for
        expected = tuple(worker_entry(c.cid, c.pid, c.peer, c.flood)
                         for c in self.children.values() if c.kind == "worker" and c.cid) + \
            tuple(worker_entry(cid, 0, request.peer, handle.flood)
                  for handle in self.spawners.values()
                  for cid, request in handle.requests.items())
        try:
            control, broker_end = socket.socketpair()
        except OSError as error:
            self._fork_failed("broker", f"cannot start the broker: {error.strerror or error}")
            return False
        self._read_last_control()
        try:
            child = self._start("broker", self.targets.broker,
                                (self.broker_listener, broker_end, self.cfg, self.created,
                                 self.most_users, expected))
        except OSError as error:
            self._fork_failed("broker", f"cannot start the broker: {error.strerror or error}")
            control.close()
            return False
        finally:
            broker_end.close()
        if self.broker_control is not None:
            try:
                self.selector.unregister(self.broker_control)
            except (KeyError, ValueError):
                pass
            self.broker_control.close()
        self.broker_control = control
        self.broker_out = ipc.FrameWriter(control, ipc.CONTROL_QUEUE_BYTES)
        self.control_reader = ipc.FrameReader()
        control.setblocking(False)
        self.selector.register(control, selectors.EVENT_READ, self.on_control)
        self.broker_heard = time.monotonic()
        self.broker_pid = child.pid
        self.awaited_unstarted = {entry[0] for entry in expected if not entry[1]}
        self._started("broker", self.broker_pid)
        return True

    def _read_last_control(self) -> None:
        """Take what a dead broker sent last (its highest user count, told
        as it rose), not yet read when its exit came first in the same turn."""
        if self.broker_control is None:
            return
        self.broker_control.setblocking(False)      # (it is closed next)
        for _ in range(LAST_CONTROL_READS):
            if not self._read_control():
                return

    def on_broker_timer(self) -> None:
        """Try again to replace a dead broker; its workers wait and reconnect."""
        if self.broker_pid not in self.children:
            self._restart_broker()

    def _restart_broker(self) -> None:
        if not self.spawn_broker():
            self.timers["broker"] = time.monotonic() + BROKER_RETRY_S

    def on_child_exit(self, child: Child) -> None:
        code = _exit_code(child)
        if code is None:
            return
        self.selector.unregister(child.pidfd)
        os.close(child.pidfd)
        if child.process is not None:
            child.process.close()
        del self.children[child.pid]
        CHILD_GONE[child.kind](self, child, code)

    def _worker_gone(self, child: Child, code: int) -> None:
        if not child.cid:        # started but never reported: counted out already
            _log_exit(f"unreported worker {child.pid}", code, quiet_ok=True)
            return
        if not self.stopping:    # a broker recovering from a restart may wait for it
            self._send_binds()   # (one read may bring its start and its exit)
            self._send_broker(ipc.encode_json(ipc.Kind.CONTROL, {"op": "gone",
                                                                 "cid": child.cid,
                                                                 "pid": child.pid}))
        self.admission.gone(child.peer)
        _log_exit(f"worker for conn {child.cid}", code, quiet_ok=True,
                  killed_after=self.killed.get(child.pid))

    def _broker_gone(self, child: Child, code: int) -> None:
        self._heed_pending_stop()
        if self.stopping:
            return
        _log_exit("broker", code, quiet_ok=False)
        self._count_death("broker")
        log.warning("restarting the broker")
        self._restart_broker()

    def _spawner_gone(self, child: Child, code: int) -> None:
        """Settle what it left: its last reports, its workers, and the
        connections it had not started, which go to the next spawner."""
        handle = self.spawners.pop(child.pid)
        self._read_spawner(handle)
        try:
            self.selector.unregister(handle.sock)
        except (KeyError, ValueError):
            pass
        retry, maybe_started = handle.leftovers()
        for worker in [c for c in self.children.values() if c.spawner == child.pid]:
            self._adopt(worker)
        # Another spawner that exited too (two reloads close together, each
        # retired one exiting at once) left its workers to us as well: its
        # reports name them, read before any is taken for an orphan of this one.
        for other in list(self.spawners.values()):
            self._read_spawner(other)
        orphans = children.unknown_children(set(self.children))
        if maybe_started is not None:
            holder = self._holder(maybe_started, orphans or [])
            # an orphan holding another spawner's connection is that one's
            # worker, whatever this one's in-flight connection became
            unclaimed = None if orphans is None else self._unclaimed(orphans)
            if holder is not None:            # forked, its report lost
                if orphans and holder in orphans:
                    orphans.remove(holder)
                self._attribute(holder, maybe_started, handle)
            elif unclaimed == []:             # it was not forked: hand it on too
                retry.insert(0, maybe_started)
            elif orphans is not None and unclaimed is not None and len(unclaimed) == 1:
                # forked, its report lost: the orphan is its worker
                orphans.remove(unclaimed[0])
                self._attribute(unclaimed[0], maybe_started, handle)
            else:                             # cannot tell: not ours to hand on
                log.warning("conn %d from %s: its spawner died while starting it",
                            maybe_started.cid, maybe_started.peer)
                maybe_started.conn.close()
                self._unadmit(maybe_started)
        for pid in orphans or []:
            # workers it forked and never reported: ours to stop and reap,
            # not counted (cid 0)
            self.children[pid] = Child("worker", pid, None, -1)
            self._adopt(self.children[pid])
        if handle is self.spawner:
            self.spawner = None
            self._heed_pending_stop()
            if not self.stopping:
                _log_exit("spawner", code, quiet_ok=False)
                self._count_death("spawner")
                log.warning("restarting the spawner")
                self.start_spawner()
        elif code and child.pid not in self.killed:   # killed by the stop: expected
            _log_exit("retired spawner", code, quiet_ok=True)
        self._hand_on(retry)

    def _holder(self, request: spawner.Request, orphans: list[int]) -> int | None:
        """The process, among the orphans and the workers adopted unreported,
        that holds the request's connection: its worker, forked and not
        reported (None: none does, or /proc cannot tell).

        Two spawners dying in one turn (a reload's retired one and the
        current one, killed together) leave both their orphans to the
        first settled, which took the other's in-flight worker for one of
        its own, unreported; the other's connection then looked unstarted
        and went to a new spawner, and two workers read one client.
        """
        inode = _socket_inode(request.conn)
        if inode is None:
            return None
        unreported = [c.pid for c in self.children.values() if c.kind == "worker" and not c.cid]
        return next((pid for pid in [*orphans, *unreported] if _holds_socket(pid, inode)),
                    None)

    def _unclaimed(self, orphans: list[int]) -> list[int]:
        """The orphans that hold no connection a live spawner was asked to
        start: the first of two spawners settled (see _holder), its own
        connection sent and not forked, took the other's unreported worker,
        its only orphan, for that connection's."""
        pending = {inode for handle in self.spawners.values()
                   for request in handle.requests.values()
                   if (inode := _socket_inode(request.conn)) is not None}
        if not pending:
            return list(orphans)
        return [pid for pid in orphans if not pending & _sockets_held(pid)]

    def _attribute(self, pid: int, request: spawner.Request, handle: spawner.Handle) -> None:
        """`pid` is the worker of `request`, whose report its dead spawner
        (`handle`) never sent: the broker is told, and the worker is ours
        to watch."""
        worker = self.children.get(pid)
        if worker is None:
            worker = self.children[pid] = Child("worker", pid, None, -1)
        worker.peer, worker.cid, worker.flood = request.peer, request.cid, handle.flood
        self.binds.append(worker_entry(request.cid, pid, request.peer, handle.flood))
        self._send_binds()
        if worker.pidfd == -1:
            self._adopt(worker)
        request.conn.close()

    def _hand_on(self, requests: list[spawner.Request]) -> None:
        """Give a dead spawner's connections to the current one, or refuse them."""
        handle = self.spawner
        for request in requests:
            if handle is not None and not self.stopping and handle.knows(request.listener_id):
                handle.request(request)
            else:
                listeners.refuse(request.conn, request.peer, self._refusal(), request.encrypted)
                self._unadmit(request)
        if handle is not None and requests:
            self._flush_spawner(handle)

    def _adopt(self, worker: Child) -> None:
        """Watch an orphaned worker ourselves (it is our child now).

        Out of descriptors for its pidfd, it is left to `_reap_unwatched`
        (every STATUS_EVERY_S) and goes on serving its client: the OSError
        used to escape, and the supervisor died with every client.
        """
        worker.spawner = 0
        try:
            worker.pidfd = os.pidfd_open(worker.pid)
        except ProcessLookupError:
            del self.children[worker.pid]
            self._worker_gone(worker, 0)
            return
        except OSError as error:
            if not any(c is not worker for c in self._unwatched()):    # the first
                log.error("cannot watch the workers of a retired or dead spawner: %s; "
                          "their exits are checked every %.0f s", error.strerror or error,
                          STATUS_EVERY_S)
            return
        self.selector.register(worker.pidfd, selectors.EVENT_READ,
                               lambda mask, child=worker: self.on_child_exit(child))

    def _unwatched(self) -> list[Child]:
        """Adopted workers we could not open a pidfd for."""
        return [c for c in self.children.values()
                if c.kind == "worker" and c.pidfd == -1 and c.spawner == 0]

    def _reap_unwatched(self) -> None:
        for worker in self._unwatched():
            code = _exit_code(worker)
            if code is not None:
                del self.children[worker.pid]
                self._worker_gone(worker, code)

    def _count_death(self, kind: str) -> None:
        """Restart at once, but not forever: a crash loop halts the server."""
        now = time.monotonic()
        deaths = [t for t in self.deaths[kind] if now - t < BROKER_RESTART_WINDOW_S] + [now]
        self.deaths[kind] = deaths
        if len(deaths) > BROKER_RESTARTS:
            raise Shutdown(f"{kind} died {len(deaths)} times in "
                           f"{BROKER_RESTART_WINDOW_S:.0f} s; giving up", BROKER_BOOT_ERROR)

    # -- signals -------------------------------------------------------------------

    def handle_sigterm(self) -> None:
        log.info("shutting down")
        self.stopping = True

    def handle_sighup(self) -> None:
        if self.stopping:
            # The stop reads signals while it waits for the workers: a
            # SIGHUP then (a terminal closed after Ctrl+C, a rotation's
            # kill -HUP) forked a spawner no one would use, logged
            # "configuration reloaded" and told systemd RELOADING=1 and
            # READY=1 after STOPPING=1.
            log.info("SIGHUP: the server is stopping, nothing reloaded")
            return
        if self.reload_config is None:
            log.warning("SIGHUP: no configuration file to reload")
            return
        systemd.notify(*systemd.reloading())
        try:
            new = self.reload_config()
        except config.ConfigInvalid as error:
            self._reload_failed([str(each) for each in error.errors] or [str(error)])
            return
        except Exception:    # a loader bug must not take the running server down
            log.exception("reload failed, keeping the running configuration")
            systemd.notify("READY=1", "STATUS=reload failed, running configuration kept")
            return
        if problems := self._listen_problems(new):
            self._reload_failed(problems)
            return
        new = self._keep_restart_only(new)
        previous = [bound.tls for bound in self.bound]
        troubles = self._apply_listeners(new)
        self.cfg = new
        self.admission.reload(new.limits)
        warn_os_limits(new.limits, len(self.bound))
        logsetup.set_level(new.log.level)
        self._warm_new_contexts(previous)
        self.start_spawner()
        if self.spawner_stale:
            troubles.append("new connections get the previous configuration until a "
                            "spawner starts")
        self._send_broker(ipc.encode(ipc.Kind.CONFIG, pickle.dumps(new)))
        if troubles:
            outcome = f"configuration reloaded, but {' and '.join(troubles)}"
            log.warning("%s", outcome)
            systemd.notify("READY=1", f"STATUS={outcome}")
            return
        log.info("configuration reloaded")
        systemd.notify("READY=1", self._status())

    def _warm_new_contexts(self, previous: list[ssl.SSLContext | None]) -> None:
        """The TLS contexts a reload made (renewed certificates, added
        listeners) warmed before the spawner that serves them is forked,
        as the start warms the first ones (warmup.warm_reloaded: some
        10 ms a context).  Only memory is at stake: a failure of it is
        logged, and the reload goes on.  A handshake the server's side
        refused (a certificate OpenSSL loads and no client can use, a DSA
        one) is told, or the reload said only that it was done."""
        fresh = [bound.tls for bound in self.bound if bound.tls is not None
                 and not any(bound.tls is old for old in previous)]
        try:
            refused = self.targets.warm_tls(fresh)
        except Exception:    # a warm-up bug must not fail the reload
            log.exception("the warm-up of the new TLS contexts failed (the reload goes on)")
            return
        listeners.warn_refused(self.bound, refused)

    def _reload_failed(self, problems: list[str]) -> None:
        """One line for each problem, with its prefix; the running
        configuration stays whole."""
        for problem in problems:
            log.error("reload failed, keeping the running configuration: %s", problem)
        systemd.notify("READY=1", "STATUS=reload failed, running configuration kept")

    def _listen_problems(self, new: config.Config) -> list[str]:
        """Why `new`'s [[listen]] entries cannot replace the listeners: two
        that clash, or none at all where there are some (listen = [] closed
        every one, and the server served nobody).  Passed sockets stay
        whatever the file says (_keep_restart_only)."""
        if any(bound.adopted for bound in self.bound):
            return []
        if not new.listen and self.bound:
            return [listeners.EMPTY_LISTEN]
        return listeners.clashes(new.listen)

    def _keep_restart_only(self, new: config.Config) -> config.Config:
        """`new` with the running values of the keys only a start applies.

        A broker restarted after a crash would otherwise open another
        state_dir (losing every room record) or run as another user.
        The [[listen]] entries matched with sockets passed by systemd are
        read at start only, as forkchat-server(8) says: a reload that
        changed them said "configuration reloaded" and nothing else, and
        renewed the certificates from the files the old entries name.
        """
        running = self.cfg.server
        kept = {key: getattr(running, key) for key in RESTART_ONLY_KEYS
                if getattr(new.server, key) != getattr(running, key)}
        for key in kept:
            log.warning("%s changed in the file: takes effect at the next start", key)
        if kept:
            new = dataclasses.replace(new, server=dataclasses.replace(new.server, **kept))
        if any(bound.adopted for bound in self.bound) and new.listen != self.cfg.listen:
            log.warning("%s changed in the file: takes effect at the next start",
                        PASSED_SOCKETS_KEY)
            new = dataclasses.replace(new, listen=self.cfg.listen)
        return new

    def _apply_listeners(self, new: config.Config) -> list[str]:
        """Bind listeners added to the file, close those removed from it,
        renew the certificates of those that stay; returns what failed, for
        the outcome line and systemd's STATUS=.

        Sockets passed by systemd belong to the .socket unit: a reload only
        renews their certificates.
        """
        if any(bound.adopted for bound in self.bound):
            stale = sum(not self._reload_tls(bound, bound.spec) for bound in self.bound)
            return _reload_troubles(0, stale)
        wanted = {_listener_key(s): s for s in new.listen}
        current = {_listener_key(b.spec): b for b in self.bound}
        stale = sum(not self._reload_tls(current[key], spec)
                    for key, spec in wanted.items() if key in current)
        removed = [bound for key, bound in current.items() if key not in wanted]
        # Bind before closing, so that a listener whose replacement fails
        # (same protocol, or same port) serves on; one on the same port is
        # in the way, so it is closed, and opened again if the retry fails.
        failed = self._listen_on([spec for key, spec in wanted.items() if key not in current])
        ports = {id(bound): bound.port for bound in removed}

        def on_port_of(bound: listeners.Bound, specs: Iterable[config.Listener]) -> bool:
            return any(addresses.clash((bound.spec.address, ports[id(bound)]),
                                       (spec.address, spec.port)) for spec in specs)

        in_the_way = [bound for bound in removed if on_port_of(bound, failed)]
        for bound in in_the_way:
            self._stop_listening(bound)
        if in_the_way:
            failed = self._listen_on(list(failed))
        for error in failed.values():
            log.error("%s", error)
        left_without = {spec.protocol for spec in failed}
        for bound in removed:
            if bound in in_the_way:
                if not on_port_of(bound, failed):
                    continue        # its port went to the entry that asked for it
                again = dataclasses.replace(bound.spec, port=ports[id(bound)])
                if lost := self._listen_on([again], announce=False):
                    log.error("%s", lost[again])
                    continue
                bound = self.bound[-1]
            elif bound.spec.protocol not in left_without and not on_port_of(bound, failed):
                self._stop_listening(bound)
                continue
            log.warning("still listening on %s: the listener that replaces it "
                        "could not be bound", bound.label)
        return _reload_troubles(len(failed), stale)

    def _listen_on(self, specs: list[config.Listener],
                   announce: bool = True) -> dict[config.Listener, listeners.BindError]:
        """Bind and watch each of `specs`; returns those that failed, with why."""
        failed = {}
        for spec in specs:
            try:
                bound = listeners.bind(spec)
            except listeners.BindError as error:
                failed[spec] = error
                continue
            self.bound.append(bound)
            self._watch_listener(bound)
            if announce:
                listeners.announce(bound)
        return failed

    def _stop_listening(self, bound: listeners.Bound) -> None:
        """Close a listener for every process that holds it.

        A child forked a moment before (the spawner a reload starts) holds
        a copy until it closes what it inherited: close() alone left the
        port listening there, a new entry on it failed with "Address already
        in use", and connections queued where no one took them.  shutdown()
        stops the socket itself.
        """
        label = bound.label
        self._unwatch_listener(bound)
        try:
            bound.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        bound.sock.close()
        self.bound.remove(bound)
        log.info("stopped listening on %s", label)

    def _reload_tls(self, bound: listeners.Bound, spec: config.Listener) -> bool:
        """New certificates serve new connections; a bad one keeps the old
        (False)."""
        try:
            context, chain = listeners.load_tls(spec)
        except listeners.BindError as error:
            log.error("%s; keeping the current certificate", error)
            return False
        bound.spec, bound.tls, bound.chain = spec, context, chain
        return True

    def handle_sigusr1(self) -> None:
        """A status report in the log: clients, rooms, memory per process."""
        summary = procstats.summary(os.getpid())
        log.info("status: %d clients (%d workers), %d rooms, broker pid %d",
                 self.counts["clients"], self.admission.clients, self.counts["rooms"],
                 self.broker_pid)
        for line in procstats.report_lines(summary):
            log.info("status: %s", line)

    def _send_broker(self, frame: bytes) -> None:
        """Queue a control frame; what the socket does not take now goes later,
        whole, so the broker never reads half a frame.  None while no broker
        runs (its restart is retried): the dead one's socket would only fail,
        a warning each, and the next broker learns the live workers at start."""
        if self.broker_out is None or self.broker_pid not in self.children:
            return
        if not self.broker_out.queue(frame):
            log.warning("the broker is not reading its control socket; frame dropped")
            return
        self._flush_broker()

    def _flush_broker(self) -> None:
        assert self.broker_out is not None and self.broker_control is not None
        try:
            done = self.broker_out.flush()
        except OSError as error:
            # While stopping, a broker already gone (a SIGTERM to the whole
            # process group reaches it too) is expected, not worth a warning;
            # the group's SIGTERM may still wait for this loop to read it (a
            # worker's end, told to the broker, was settled first).
            if not self.stopping:
                self._heed_pending_stop()
            log.log(logging.DEBUG if self.stopping else logging.WARNING,
                    "cannot reach the broker: %s", error)
            self.broker_gone_early = self.stopping
            return
        self._want_writes(self.broker_control, not done, self.on_control)

    # -- stopping ------------------------------------------------------------------

    def stop(self) -> None:
        """Stop accepting, let every worker say goodbye, then end the broker."""
        self.stopping = True
        systemd.notify("STOPPING=1", "STATUS=stopping")
        self._refuse_queued()
        for bound in self.bound:
            self._unwatch_listener(bound)
            bound.sock.close()
        self._freeze_broker()
        self._retire_spawners(time.monotonic() + 1.0)
        self._signal_children("worker", signal.SIGTERM)
        self._wait_children("worker", time.monotonic() + STOP_GRACE_S)
        self._signal_children("worker", signal.SIGKILL, STOP_GRACE_S)
        self._wait_children("worker", time.monotonic() + 1.0)
        if self.broker_pid in self.children and not self.broker_gone_early:
            self._send_broker(ipc.encode_json(ipc.Kind.CONTROL, {"op": "shutdown"}))
        self._signal_children("broker", signal.SIGTERM)
        self._wait_children("broker", time.monotonic() + 1.0)
        self._signal_children("broker", signal.SIGKILL, 1.0)
        self._signal_children("spawner", signal.SIGKILL, 0.0)
        self._wait_children("", time.monotonic() + 1.0)
        for line in self.refusals.flush():
            log.warning("%s", line)
        log.info("stopped")

    def _refuse_queued(self) -> None:
        """Tell the connections waiting in the listen queues of the
        listeners we bound that the server stops, as its other clients
        are told; closing a listener reset them, and their users read a
        bare end of connection.

        A socket systemd passed keeps its queue: systemd holds it, and the
        next start takes those connections.
        """
        deadline = time.monotonic() + STOP_REFUSALS_S
        refused = 0
        for bound in self.bound:
            while not bound.adopted and refused < STOP_REFUSALS and \
                    time.monotonic() < deadline:
                try:
                    conn, addr = bound.sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as error:
                    if error.errno in listeners.ACCEPT_PEER_ERRORS:
                        continue
                    break                 # out of descriptors: the rest are reset
                listeners.refuse(conn, admission.peer_address(addr[0]),
                                 listeners.SHUTTING_DOWN, bound.tls is not None)
                refused += 1
        if refused:
            log.info("%d connections not yet accepted were refused at the stop",
                     refused)

    def _freeze_broker(self) -> None:
        """Ask the broker to keep its room records as they are before clients go."""
        if self.broker_pid not in self.children:
            return
        self._send_broker(ipc.encode_json(ipc.Kind.CONTROL, {"op": "freeze"}))
        deadline = time.monotonic() + 1.0
        while (not self.broker_frozen and not self.broker_gone_early
               and self.broker_pid in self.children and time.monotonic() < deadline):
            self._turn(deadline - time.monotonic())

    def _retire_spawners(self, deadline: float) -> None:
        """No more workers: let the requests already sent become workers
        (so that they are told to stop too), then retire every spawner."""
        for handle in self.spawners.values():
            if not handle.retired:
                handle.retire(self.spawners_linger)
                self._flush_spawner(handle)
        while any(h.requests for h in self.spawners.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._turn(left)

    def _signal_children(self, kind: str, signum: int, grace: float = 0.0) -> None:
        """Signal every child of `kind`; a SIGKILL is remembered with the
        grace the child had, so that its death is not logged as a crash.

        A worker the spawner reports later gets the same signal as it is
        reported: a stop in a burst of connections left those the spawner
        forked after its first second untold, to be killed 3 s later
        without a word to their clients.
        """
        if kind == "worker":
            self.workers_signalled = (signum, grace)
        for pid, child in list(self.children.items()):
            if child.kind == kind:
                self._signal(pid, signum, grace)

    def _signal(self, pid: int, signum: int, grace: float) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return
        if signum == signal.SIGKILL:
            self.killed[pid] = grace

    def _wait_children(self, kind: str, deadline: float) -> None:
        """Until none of `kind` is left (any, for ''); the workers adopted
        without a pidfd, whose exit wakes nothing, are looked at every
        UNWATCHED_POLL_S (else the stop waited its whole grace for them)."""
        while True:
            self._reap_unwatched()
            left = deadline - time.monotonic()
            if left <= 0 or not self._waiting_for(kind):
                return
            self._turn(min(left, UNWATCHED_POLL_S) if self._unwatched() else left)

    def _waiting_for(self, kind: str) -> bool:
        """Whether a child of `kind` is left (any, for '').  A worker a
        spawner was asked for and has not reported counts too: the grace
        ended once the workers known had stopped, and those the spawner
        reported next, forking what it was sent before the stop, were
        killed at once without a word to their clients."""
        if any(c.kind == kind or not kind for c in self.children.values()):
            return True
        return kind == "worker" and any(h.requests for h in self.spawners.values())


def worker_entry(cid: int, pid: int, peer: str, flood: tuple[float, int] | None) -> tuple:
    """A worker as the broker is told of it: (cid, pid, peer, flood_rate,
    flood_burst), with the flood limits its spawner started it with (left
    out when not known: the broker then takes the running configuration's).

    A worker keeps the limits of when its connection was accepted (a
    reload is for the connections after it), and the broker holds its
    frames to twice those.  One ceiling for all, the highest limits since
    the start, gave every worker started after a reload that lowered them
    against abuse twice the old rate until the server restarted; the
    running configuration's held the workers started before such a reload
    below their own pace once a restarted broker made their buckets anew.
    """
    return (cid, pid, peer) if flood is None else (cid, pid, peer, *flood)


def _reload_troubles(unbound: int, stale: int) -> list[str]:
    """What a reload could not do with the listeners, in the outcome's words.

    A renewed certificate that does not load (a key that does not match,
    one the server may not read) was logged, and then the reload said
    "configuration reloaded" and systemd's status showed nothing amiss.
    """
    troubles = []
    if unbound:
        troubles.append(f"{unbound} listener(s) could not be bound")
    if stale:
        troubles.append(f"{stale} listener(s) kept their previous certificate")
    return troubles


def _listener_key(spec: config.Listener) -> tuple[str, int, str, bool]:
    """What makes a listener the same one across a reload (certificates may change)."""
    return (spec.address, spec.port, spec.protocol, bool(spec.tls_cert))


TIMER_ACTIONS: dict[str, Callable[[Supervisor], None]] = {
    "spawner": Supervisor.on_spawner_timer,
    "status": Supervisor.on_status_timer,
    "memory": Supervisor.on_memory_timer,
    "watchdog": Supervisor.on_watchdog_timer,
    "certificates": Supervisor.on_certificates_timer,
    "refusals": Supervisor.on_refusals_timer,
    "accept": Supervisor.on_accept_timer,
    "broker": Supervisor.on_broker_timer,
}


SPAWNER_REPORTS: dict[str, Callable[[Supervisor, spawner.Handle, list[str]], None]] = {
    "S": Supervisor.on_worker_started,
    "F": Supervisor.on_worker_failed,
    "L": Supervisor.on_request_lost,
    "X": Supervisor.on_worker_exited,
}


CHILD_GONE: dict[str, Callable[[Supervisor, Child, int], None]] = {
    "worker": Supervisor._worker_gone,
    "broker": Supervisor._broker_gone,
    "spawner": Supervisor._spawner_gone,
}


SIGNAL_ACTIONS: dict[int, Callable[[Supervisor], None]] = {
    signal.SIGTERM: Supervisor.handle_sigterm,
    signal.SIGINT: Supervisor.handle_sigterm,
    signal.SIGHUP: Supervisor.handle_sighup,
    signal.SIGUSR1: Supervisor.handle_sigusr1,
}


def _exit_code(child: Child) -> int | None:
    """How a child ended; None while it runs.  A worker adopted from a dead
    spawner is reaped here; one that was not reparented to us (no
    subreaper) ended in a way we cannot know, reported as 0."""
    if child.process is not None:
        code: int | None = child.process.exitcode
        return code
    try:
        pid, status = os.waitpid(child.pid, os.WNOHANG)
    except ChildProcessError:
        return 0
    return os.waitstatus_to_exitcode(status) if pid else None


def _socket_inode(sock: socket.socket) -> int | None:
    """The inode that names a socket in /proc/PID/fd (None: closed)."""
    try:
        return os.fstat(sock.fileno()).st_ino
    except (OSError, ValueError):
        return None


def _holds_socket(pid: int, inode: int) -> bool:
    """Whether process `pid` has the socket of `inode` open (a handful of
    descriptors in a worker; False when /proc does not say)."""
    return inode in _sockets_held(pid)


def _sockets_held(pid: int) -> set[int]:
    """The inodes of the sockets process `pid` has open (none when /proc
    does not say)."""
    held: set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return held
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:[") and target.endswith("]"):
            held.add(int(target[8:-1]))
    return held


def _log_exit(what: str, code: int, quiet_ok: bool, killed_after: float | None = None) -> None:
    """`killed_after`: the grace a child had before the supervisor itself
    killed it (None: not killed by us)."""
    if killed_after is not None and code == -signal.SIGKILL:
        log.warning("%s did not stop in %.0f s; killed", what, killed_after)
    elif code == 0:
        (log.debug if quiet_ok else log.info)("%s exited", what)
    elif code == -signal.SIGKILL:
        log.error("%s was killed by SIGKILL (perhaps out of memory?)", what)
    elif code < 0:
        log.warning("%s was killed by signal %d", what, -code)
    else:
        log.error("%s exited with status %d", what, code)


def warn_os_limits(limits: config.Limits, listening: int = 1) -> None:
    """Say when the kernel's limits, not max_clients, will stop clients.

    The broker holds a descriptor for each client, and so does the
    supervisor after a reload (a pidfd for each worker the retired spawner
    left it), besides one for each of its `listening` sockets; each client
    is a process of our user and cgroup.  Past RLIMIT_NOFILE a new client
    waits silently (and then times out) for the broker to take its link; past
    RLIMIT_NPROC or the cgroup's pids.max (TasksMax=) it is refused 'busy'.
    The operator is told at start and at reload, rather than by the users of
    the first busy evening.
    """
    for name, kind, own, fix in OS_LIMITS:
        if kind == resource.RLIMIT_NPROC and os.geteuid() == 0:
            continue                  # not enforced for root (allow_root = true)
        soft, _hard = resource.getrlimit(kind)
        reserved = own(listening)
        if soft != resource.RLIM_INFINITY and soft - reserved < limits.max_clients:
            log.warning("max_clients = %d, but the %s limit (%d) leaves room for about %d "
                        "clients: raise %s or lower max_clients", limits.max_clients, name,
                        soft, max(0, soft - reserved), fix)
    if (tasks := cgroup_pids_max(PROC_CGROUP, CGROUP_ROOT)) is not None:
        limit, path = tasks
        if limit - SERVER_OWN_PROCESSES < limits.max_clients:
            log.warning("max_clients = %d, but the cgroup task limit (%d) leaves room for about "
                        "%d clients: raise TasksMax= (%s) or lower max_clients",
                        limits.max_clients, limit, max(0, limit - SERVER_OWN_PROCESSES), path)


PROC_CGROUP = "/proc/self/cgroup"
CGROUP_ROOT = "/sys/fs/cgroup"


def cgroup_pids_max(proc_cgroup: str, root: str) -> tuple[int, str] | None:
    """The lowest pids.max set on our cgroup or one above it, and its file;
    None when none is set or none can be read (no pids controller).

    systemd's TasksMax= is this limit, for root too: past it a worker's
    fork fails and its client is refused 'busy', whatever max_clients and
    RLIMIT_NPROC say.  A slice above may hold the lower one (a login's
    user-UID.slice).  `proc_cgroup` lists our cgroups: '0::PATH' is cgroup
    v2's, under `root`; 'N:pids:PATH' is the v1 pids hierarchy's, under
    root/pids.
    """
    try:
        with open(proc_cgroup, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    found = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        if fields[1] == "":
            found += _pids_max_upwards(root, fields[2])
        elif "pids" in fields[1].split(","):
            found += _pids_max_upwards(os.path.join(root, "pids"), fields[2])
    return min(found) if found else None


def _pids_max_upwards(base: str, path: str) -> list[tuple[int, str]]:
    """Each pids.max that is a number ('max': none) from base/path up to base."""
    parts = [part for part in path.split("/") if part not in ("", ".", "..")]
    found = []
    while True:
        name = os.path.join(base, *parts, "pids.max")
        try:
            with open(name, encoding="ascii", errors="replace") as handle:
                text = handle.read().strip()
        except OSError:
            text = ""
        if text.isdigit():
            found.append((int(text), name))
        if not parts:
            return found
        parts.pop()


def _own_fds(listening: int) -> int:
    """The descriptors the process that needs most holds beside its
    clients': the broker, or the supervisor with its listeners.

    Only the broker's were counted: a supervisor with many listeners, after
    a reload that left it a pidfd for each worker, ran out first, and
    watched those workers' exits only by polling (_adopt)."""
    return max(BROKER_OWN_FDS, SUPERVISOR_OWN_FDS + listening)


# (name, resource, what the server uses beside its clients given its number
# of listeners, where to raise it)
OS_LIMITS: tuple[tuple[str, int, Callable[[int], int], str], ...] = (
    ("descriptor", resource.RLIMIT_NOFILE, _own_fds, "LimitNOFILE= (ulimit -n)"),
    ("process", resource.RLIMIT_NPROC, lambda _listening: SERVER_OWN_PROCESSES,
     "LimitNPROC= (ulimit -u)"),
)


def _raise_fd_limit() -> None:
    """One process per client still costs the supervisor fds: use the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
