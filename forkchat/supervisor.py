"""The supervisor: the main process, which listens, spawns and reaps.

    listeners ──accept──▶ Supervisor ──fork──▶ worker (one per client)
                             │    └──fork──▶ broker (one; restarted if it dies)
                             │
    signals ──wakeup fd──────┘      pidfds: one per child, readable at its exit

It never reads client traffic.  It owns the listening sockets, the child
table, the current Config, and the broker's private Unix socket, which it
creates once so that a restarted broker is found at the same address.
Signal handlers only wake the loop; `SIGNAL_ACTIONS` says what each does.
Children are watched through pidfds, so a child that closed its inherited
descriptors (as every child here does) is still seen to exit.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import pickle
import resource
import secrets
import selectors
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable

from forkchat import children, config, flood, ipc, listeners, log as logsetup, procstats
from forkchat import signals, systemd
from forkchat import timers

log = logging.getLogger("forkchat.supervisor")

BROKER_BOOT_ERROR = 3
BROKER_RESTARTS = 5              # more deaths than this ...
BROKER_RESTART_WINDOW_S = 60.0   # ... within this window halts the server
STOP_GRACE_S = 3.0
ACCEPTS_PER_WAKEUP = 64
MAX_CONNECT_BUCKETS = 10000
STATUS_EVERY_S = 5.0       # STATUS= refresh for systemd, when something changed
MEMORY_EVERY_S = 60.0      # PSS over the whole tree costs a /proc read per child
BROKER_SILENT_S = 3 * ipc.HEARTBEAT_S + 1.0


class Shutdown(BaseException):
    """Carries the halt reason and exit code up to run()."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class Targets:
    """The process entry points, handed in by cli so roles never import roles."""

    broker: Callable[..., None]
    worker: Callable[..., None]


@dataclass
class Child:
    kind: str
    pid: int
    process: Any
    pidfd: int
    peer: str = ""
    cid: int = 0


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
        self.per_ip: dict[str, int] = {}
        self.connect_buckets: dict[str, flood.TokenBucket] = {}
        self.workers = 0
        self.next_cid = 1
        self.broker_pid = 0
        self.broker_control: socket.socket | None = None
        self.broker_out: ipc.FrameWriter | None = None
        self.broker_deaths: list[float] = []
        self.stopping = False
        self.created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self.broker_address = f"\0forkchat-{os.getpid()}-{secrets.token_hex(8)}"
        self.broker_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control_reader = ipc.FrameReader()
        self.counts = {"clients": 0, "rooms": 0}
        self.broker_heard = time.monotonic()
        self.memory_mib = 0.0
        self.status_sent = ""
        self.timers: dict[str, float] = {}
        self.broker_frozen = False

    # -- main loop -------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        _raise_fd_limit()
        gc.disable()
        children.make_lifeline()
        self._install_signals()
        self.broker_listener.bind(self.broker_address)
        self.broker_listener.listen(listeners.BACKLOG)
        for bound in self.bound:
            self._watch_listener(bound)
        try:
            self.spawn_broker()
            for bound in self.bound:
                listeners.announce(bound)
            self._start_timers()
            systemd.notify("READY=1", self._status())
            while not self.stopping:
                self._turn(timers.next_timeout(self.timers))
                self._run_timers()
            self.stop()
        except Shutdown as halt:
            log.error("%s", halt.reason)
            self.stop()
            return halt.code
        return 0

    def _turn(self, timeout: float | None) -> None:
        for key, mask in self.selector.select(timeout):
            key.data(mask)

    # -- timers: status, memory, watchdog ------------------------------------------

    def _start_timers(self) -> None:
        now = time.monotonic()
        self.timers["status"] = now + STATUS_EVERY_S
        self.timers["memory"] = now
        if systemd.watchdog_interval():
            self.timers["watchdog"] = now

    def _run_timers(self) -> None:
        for name in timers.pop_due(self.timers):
            if not self.stopping:
                TIMER_ACTIONS[name](self)

    def on_status_timer(self) -> None:
        self.timers["status"] = time.monotonic() + STATUS_EVERY_S
        status = self._status()
        if status != self.status_sent:
            self.status_sent = status
            systemd.notify(status)

    def on_memory_timer(self) -> None:
        self.timers["memory"] = time.monotonic() + MEMORY_EVERY_S
        total = procstats.summary(os.getpid())["total"]
        self.memory_mib = total["pss"] / (1 << 20)

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
        return (f"STATUS={self.counts['clients']} clients, "
                f"{self.counts['rooms']} rooms, {self.memory_mib:.0f} MiB")

    def on_control(self, mask: int) -> None:
        """Heartbeats from the broker: counts for STATUS, and proof of life."""
        assert self.broker_control is not None
        if mask & selectors.EVENT_WRITE:
            self._flush_broker()
        if not mask & selectors.EVENT_READ:
            return
        try:
            data = self.broker_control.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(self.broker_control)
            return
        try:
            frames = self.control_reader.feed(data)
        except ipc.FrameError as error:
            log.error("broker control: %s", error)
            return
        for _kind, payload in frames:
            message = ipc.decode_json(payload)
            if message.get("op") == "frozen":
                self.broker_frozen = True
            elif message.get("op") == "counts":
                self.broker_heard = time.monotonic()
                self.counts = {"clients": int(message.get("clients", 0)),
                               "rooms": int(message.get("rooms", 0))}

    def _install_signals(self) -> None:
        self._signal_r, self._signal_w = signals.install(SIGNAL_ACTIONS)
        self.selector.register(self._signal_r, selectors.EVENT_READ, self.on_signal)

    def on_signal(self, mask: int) -> None:
        for signum in signals.received(self._signal_r):
            action = SIGNAL_ACTIONS.get(signum)
            if action is not None:
                action(self)

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
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept failed: %s", error.strerror)
                    return
                raise
            self._admit(conn, addr[0], bound)

    def _admit(self, conn: socket.socket, peer: str, bound: listeners.Bound) -> None:
        limits = self.cfg.limits
        if peer.startswith("::ffff:"):
            peer = peer[7:]
        if self.workers >= limits.max_clients:
            _refuse(conn, peer, "Server is full, try again later")
        elif self.per_ip.get(peer, 0) >= limits.max_clients_per_ip:
            _refuse(conn, peer, "Too many connections from your address")
        elif not self._connect_allowed(peer):
            _refuse(conn, peer, "Connecting too fast, try again later")
        else:
            self.spawn_worker(conn, peer, bound.spec.protocol, bound.tls)
            return
        log.warning("refused connection from %s: limit reached", peer)

    def _connect_allowed(self, peer: str) -> bool:
        """Per-address connection rate: a token bucket per IP, pruned when idle."""
        limits = self.cfg.limits
        bucket = self.connect_buckets.get(peer)
        if bucket is None:
            if len(self.connect_buckets) >= MAX_CONNECT_BUCKETS:
                self.connect_buckets = {ip: b for ip, b in self.connect_buckets.items()
                                        if not b.full()}
            bucket = flood.TokenBucket(limits.connect_burst, limits.connect_rate)
            self.connect_buckets[peer] = bucket
        return bucket.take()

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

    def spawn_worker(self, conn: socket.socket, peer: str, proto: str,
                     tls: Any = None) -> None:
        cid = self.next_cid
        self.next_cid += 1
        try:
            self._start("worker", self.targets.worker,
                        (conn, peer, proto, cid, self.cfg, self.broker_address, tls), peer, cid)
        except OSError as error:
            log.error("cannot start a worker for %s: %s", peer, error)
            _refuse(conn, peer, "Server is busy, try again later")
            return
        finally:
            conn.close()
        self.workers += 1
        self.per_ip[peer] = self.per_ip.get(peer, 0) + 1

    def spawn_broker(self) -> None:
        control, broker_end = socket.socketpair()
        expected = tuple(c.cid for c in self.children.values() if c.kind == "worker")
        try:
            child = self._start("broker", self.targets.broker,
                                (self.broker_listener, broker_end, self.cfg, self.created,
                                 expected))
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
        log.info("broker started (pid %d)", self.broker_pid)

    def on_child_exit(self, child: Child) -> None:
        code = child.process.exitcode
        if code is None:
            return
        self.selector.unregister(child.pidfd)
        os.close(child.pidfd)
        child.process.close()
        del self.children[child.pid]
        if child.kind == "worker":
            self._worker_gone(child, code)
        else:
            self._broker_gone(code)

    def _worker_gone(self, child: Child, code: int) -> None:
        if not self.stopping:    # a broker recovering from a restart may wait for it
            self._send_broker(ipc.encode_json(ipc.Kind.CONTROL, {"op": "gone",
                                                                 "cid": child.cid}))
        self.workers -= 1
        left = self.per_ip.get(child.peer, 1) - 1
        if left:
            self.per_ip[child.peer] = left
        else:
            self.per_ip.pop(child.peer, None)
        _log_exit(f"worker for conn {child.cid}", code, quiet_ok=True)

    def _broker_gone(self, code: int) -> None:
        if self.stopping:
            return
        _log_exit("broker", code, quiet_ok=False)
        now = time.monotonic()
        self.broker_deaths = [t for t in self.broker_deaths
                              if now - t < BROKER_RESTART_WINDOW_S] + [now]
        if len(self.broker_deaths) > BROKER_RESTARTS:
            raise Shutdown(f"broker died {len(self.broker_deaths)} times in "
                           f"{BROKER_RESTART_WINDOW_S:.0f} s; giving up", BROKER_BOOT_ERROR)
        log.warning("restarting the broker")
        self.spawn_broker()

    # -- signals -------------------------------------------------------------------

    def handle_sigterm(self) -> None:
        log.info("shutting down")
        self.stopping = True

    def handle_sighup(self) -> None:
        if self.reload_config is None:
            log.warning("SIGHUP: no configuration file to reload")
            return
        systemd.notify(*systemd.reloading())
        try:
            new = self.reload_config()
        except config.ConfigInvalid as error:
            log.error("reload failed, keeping the running configuration:\n%s", error)
            systemd.notify("READY=1", "STATUS=reload failed, running configuration kept")
            return
        self._apply_listeners(new)
        self.cfg = new
        self.connect_buckets.clear()
        logsetup.set_level(new.log.level)
        self._send_broker(ipc.encode(ipc.Kind.CONFIG, pickle.dumps(new)))
        log.info("configuration reloaded")
        systemd.notify("READY=1", self._status())

    def _apply_listeners(self, new: config.Config) -> None:
        """Bind listeners added to the file, close those removed from it.

        Sockets passed by systemd belong to the .socket unit: a reload only
        renews their certificates.
        """
        if any(bound.adopted for bound in self.bound):
            for bound in self.bound:
                self._reload_tls(bound, bound.spec)
            return
        wanted = {_listener_key(s): s for s in new.listen}
        current = {_listener_key(b.spec): b for b in self.bound}
        for key, bound in current.items():
            if key not in wanted and bound.spec.port != 0:
                label = bound.label
                self.selector.unregister(bound.sock)
                bound.sock.close()
                self.bound.remove(bound)
                log.info("stopped listening on %s", label)
        for key, spec in wanted.items():
            if key in current:
                self._reload_tls(current[key], spec)
                continue
            try:
                bound = listeners.bind(spec)
            except listeners.BindError as error:
                log.error("%s", error)
                continue
            self.bound.append(bound)
            self._watch_listener(bound)
            listeners.announce(bound)

    def _reload_tls(self, bound: listeners.Bound, spec: config.Listener) -> None:
        """New certificates serve new connections; a bad one keeps the old."""
        try:
            context = listeners.tls_context(spec)
        except listeners.BindError as error:
            log.error("%s; keeping the current certificate", error)
            return
        bound.spec, bound.tls = spec, context

    def handle_sigusr1(self) -> None:
        """A status report in the log: clients, rooms, memory per process."""
        summary = procstats.summary(os.getpid())
        log.info("status: %d clients (%d workers), %d rooms, broker pid %d",
                 self.counts["clients"], self.workers, self.counts["rooms"], self.broker_pid)
        for line in procstats.report_lines(summary):
            log.info("status: %s", line)

    def _send_broker(self, frame: bytes) -> None:
        """Queue a control frame; what the socket does not take now goes later,
        whole, so the broker never reads half a frame."""
        if self.broker_out is None:
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
            log.warning("cannot reach the broker: %s", error)
            return
        want = selectors.EVENT_READ | (0 if done else selectors.EVENT_WRITE)
        try:
            if self.selector.get_key(self.broker_control).events != want:
                self.selector.modify(self.broker_control, want, self.on_control)
        except (KeyError, ValueError):
            pass

    # -- stopping ------------------------------------------------------------------

    def stop(self) -> None:
        """Stop accepting, let every worker say goodbye, then end the broker."""
        self.stopping = True
        systemd.notify("STOPPING=1", "STATUS=stopping")
        for bound in self.bound:
            try:
                self.selector.unregister(bound.sock)
            except (KeyError, ValueError):
                pass
            bound.sock.close()
        self._freeze_broker()
        self._signal_children("worker", signal.SIGTERM)
        self._wait_children("worker", time.monotonic() + STOP_GRACE_S)
        self._signal_children("worker", signal.SIGKILL)
        self._send_broker(ipc.encode_json(ipc.Kind.CONTROL, {"op": "shutdown"}))
        self._signal_children("broker", signal.SIGTERM)
        self._wait_children("broker", time.monotonic() + 1.0)
        self._signal_children("broker", signal.SIGKILL)
        self._wait_children("", time.monotonic() + 1.0)
        log.info("stopped")

    def _freeze_broker(self) -> None:
        """Ask the broker to keep its room records as they are before clients go."""
        if self.broker_pid not in self.children:
            return
        self._send_broker(ipc.encode_json(ipc.Kind.CONTROL, {"op": "freeze"}))
        deadline = time.monotonic() + 1.0
        while not self.broker_frozen and time.monotonic() < deadline:
            self._turn(deadline - time.monotonic())

    def _signal_children(self, kind: str, signum: int) -> None:
        for pid, child in list(self.children.items()):
            if child.kind == kind:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass

    def _wait_children(self, kind: str, deadline: float) -> None:
        while any(c.kind == kind or not kind for c in self.children.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._turn(left)


def _listener_key(spec: config.Listener) -> tuple[str, int, str, bool]:
    """What makes a listener the same one across a reload (certificates may change)."""
    return (spec.address, spec.port, spec.protocol, bool(spec.tls_cert))


TIMER_ACTIONS: dict[str, Callable[[Supervisor], None]] = {
    "status": Supervisor.on_status_timer,
    "memory": Supervisor.on_memory_timer,
    "watchdog": Supervisor.on_watchdog_timer,
}


SIGNAL_ACTIONS: dict[int, Callable[[Supervisor], None]] = {
    signal.SIGTERM: Supervisor.handle_sigterm,
    signal.SIGINT: Supervisor.handle_sigterm,
    signal.SIGHUP: Supervisor.handle_sighup,
    signal.SIGUSR1: Supervisor.handle_sigusr1,
}


def _refuse(conn: socket.socket, peer: str, reason: str) -> None:
    """Tell a client we will not serve it, without forking for it."""
    try:
        conn.setblocking(False)
        conn.send(f"ERROR :Closing Link: {peer} ({reason})\r\n".encode())
    except OSError:
        pass
    conn.close()


def _log_exit(what: str, code: int, quiet_ok: bool) -> None:
    if code == 0:
        (log.debug if quiet_ok else log.info)("%s exited", what)
    elif code == -signal.SIGKILL:
        log.error("%s was killed by SIGKILL (perhaps out of memory?)", what)
    elif code < 0:
        log.warning("%s was killed by signal %d", what, -code)
    else:
        log.error("%s exited with status %d", what, code)


def _raise_fd_limit() -> None:
    """One process per client still costs the supervisor fds: use the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
