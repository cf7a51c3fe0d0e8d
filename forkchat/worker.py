"""A worker: one process that serves exactly one client connection.

    client socket ◀──▶ Worker ◀──frames──▶ broker (private Unix socket)
                         │
                         └── lifeline: EOF when the supervisor dies

The worker frames the client's lines, enforces flood control, the
registration timeout and the ping timeout, answers local commands
(`commands.py`) and forwards everything that touches shared state to the
broker as REQUEST frames.  What the broker DELIVERs is written to the
client as is (or rendered, for the tutorial dialect).  Its send queue is
bounded: a client that stops reading is dropped with "Max SendQ exceeded"
and costs nobody else anything.  The bound does not count the REPLY to the
client's own command (a LIST may be megabytes): instead no further line of
the client's is taken until that reply has been sent, so one reply at most
is in flight, and what else piles up behind it is counted as before.  A
client that takes not one byte of such a reply for ping_timeout seconds is
dropped all the same: it does not read.  One that takes it at a steady pace
is alive, though our PING waits behind the reply and its answer behind
that: at the ping timeout, our output taken at TAKING_RATE counts as
hearing from the client.

If the broker goes away the worker holds the client's input, reconnects,
and sends REREGISTER with its Session so that the new broker can restore
the nick and rooms, then the query (WHO, LIST, NAMES, WHOWAS) whose end
numeric the client still waits for, if any.  A worker that closes
meanwhile does the same before its BYE, so that its client's rooms see it
quit (`_say_bye`).  An unexpected exception ends this process only; the
broker sees the link close and tells the client's rooms.
"""

from __future__ import annotations

import array
import fcntl
import logging
import math
import os
import select
import selectors
import signal
import socket
import ssl
import termios
import time
from typing import Any, Callable

from forkchat import children, commands, config, flood, ipc, link, log as logsetup, numerics
from forkchat import passwords, poller, procstats, protocol, replybytes, signals, state_rooms
from forkchat import timers, tutorial
from forkchat.session import Session, client_host

log = logging.getLogger("forkchat.worker")

READ_BYTES = 65536
# What is kept of an over-long line that waits: one byte over a line with
# its CRLF, so that it stays over-long, and all that protocol.quit_head reads.
LONG_LINE_KEEP = protocol.MAX_LINE_BYTES + 1
RECV_REST_TRIES = 4       # reads of a broken connection's last bytes (a QUIT)
RECONNECT_DELAYS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
BROKER_GIVE_UP_S = 30.0
STABLE_LINK_S = 1.0     # a link lost sooner after a reconnect is the same outage
CLOSE_FLUSH_S = 1.0
# The payload of the SYNC a closing worker sends before its BYE: the
# broker's echo of it says the BYE's link is one the broker took (_say_bye).
BYE_SYNC = b"bye"
RELINK_PAUSE_S = 0.05     # between connects to a broker that is not there yet
# A deadline found passed by more than this when its timer runs: the loop,
# which wakes for a deadline within milliseconds, could not run (the
# process was stopped, or its virtual machine paused), and the wait it
# timed is not the client's.
LATE_TIMER_S = 1.0
# The kernel's own buffer for the client; kept small so that the sendq
# bound, not autotuned megabytes in the kernel, decides about a stuck reader.
CLIENT_SNDBUF_BYTES = 65536
ERROR_ROOM_BYTES = 65536      # added at the end so a stuck client's ERROR line fits
# The first bytes of a TLS ClientHello: a handshake record, protocol major 3.
TLS_RECORD_START = b"\x16\x03"
PLAIN_PORT_TEXT = "This port does not speak TLS: connect without TLS"
TLS_PORT_TEXT = "This port speaks TLS: connect with TLS"
TUTORIAL_PORT_TEXT = "This port speaks the tutorial chat protocol, not IRC: use the IRC port"
NOT_HTTP_TEXT = "This port speaks the tutorial chat protocol, not HTTP"
# OpenSSL's reason when the first bytes are no TLS record: a plain-text client.
PLAIN_TEXT_REASON = "WRONG_VERSION_NUMBER"
HANDSHAKE_UNFINISHED = " (TLS handshake unfinished)"
TLS_WRITE_BYTES = 16384       # one TLS record: the most handed to OpenSSL at once
# Forwarded commands whose reply may be big (a JOIN's is the names of up to
# rooms_per_client rooms): each waits until the broker has answered all
# before it, so that one such reply at most is in flight (see replybytes.py).
# The others' replies are a few lines, and they go without a round trip.
BIG_REPLY_COMMANDS = frozenset({"JOIN", "NAMES", "LIST", "WHO", "WHOWAS", "MOTD"})
# Lines that wait, when something forwarded is unanswered, for the broker's
# answers so far: local commands and NICK (commands.IN_STEP), big replies.
SYNC_FIRST = commands.IN_STEP | BIG_REPLY_COMMANDS
# Read-only queries whose end numeric the client waits for (irssi keeps its
# channel queries pending until it comes, and sends no other for a room it
# joins later): the end's code, and how many ends a line asks for.  A scan
# may wait at the broker for up to 30 s (its turn); if the broker dies
# meanwhile, the next one knows nothing of it, so the worker sends it again
# (see _query_lost).
QUERY_ENDS: dict[str, tuple[bytes, Callable[[protocol.Message], int]]] = {
    "WHO": (numerics.RPL_ENDOFWHO.encode(), lambda _msg: 1),
    "LIST": (numerics.RPL_LISTEND.encode(), lambda _msg: 1),
    "WHOWAS": (numerics.RPL_ENDOFWHOWAS.encode(), lambda _msg: 1),
    "NAMES": (numerics.RPL_ENDOFNAMES.encode(),      # one 366 a room asked, or one for all
              lambda msg: len(state_rooms.names_asked(msg.param(0))) if msg.param(0) else 1),
}
# Bytes a second of our output that a silent client must take, since its
# PING, to count as heard from at the ping timeout (8 kbit/s).  A slow link
# reading a LIST of megabytes is alive (4.5 MB: 75 minutes at most); a
# trickle of a byte a minute does not hold the worker and the reply for days.
TAKING_RATE = 1024
# The kinds of the frames on the delivery path, as plain numbers: a member
# of an IntEnum looked up on its class is a Python call (EnumType's), in
# every wake-up of every worker.
_DELIVER = int(ipc.Kind.DELIVER)
_REPLY = int(ipc.Kind.REPLY)
# The selector's event bits, for the same path: a name here, not an
# attribute of another module, looked up in each wake-up.
_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
# And for _deliver_turns: epoll's bit, the clock, the longest wait.
_EPOLLIN = select.EPOLLIN
_monotonic = time.monotonic
_MAX_WAIT_S = timers.MAX_WAIT_S
# The bytes a socket's kernel queue holds that the peer has not acknowledged
# (SIOCOUTQ; Linux).  None where it cannot be asked.
UNACKED_IOCTL = getattr(termios, "TIOCOUTQ", None)


def main(sock: socket.socket, peer: str, proto: str, cid: int, cfg: config.Config,
         broker_address: str | bytes, tls: ssl.SSLContext | None = None,
         supervisor_pid: int = 0) -> None:
    """Process entry point (the multiprocessing target)."""
    def serve() -> int:
        logsetup.setup("worker", cfg.log.level)
        return Worker(sock, peer, proto, cid, cfg, broker_address, tls, supervisor_pid).run()
    children.run_child("forkchat-worker", {sock.fileno()}, serve)


class Worker:
    def __init__(self, sock: socket.socket, peer: str, proto: str, cid: int,
                 cfg: config.Config, broker_address: str | bytes,
                 tls: ssl.SSLContext | None = None, supervisor_pid: int = 0) -> None:
        self.sock = sock
        # Whether each read of the client's lines is acknowledged at once (_recv).
        self.ack_at_once = _over_tcp(sock)
        # STATS u and p describe the server, whose root is the supervisor: our
        # parent is a spawner (or the supervisor, once our spawner retired or died)
        self.supervisor_pid = supervisor_pid or os.getppid()
        self.tls = tls
        self.handshaking = tls is not None
        self.cfg = cfg
        self.session = Session(cid, host=client_host(peer), proto=proto)
        self.selector = poller.Poller()
        self.sendq = bytearray()
        self.replies = replybytes.ReplyBytes()   # which of sendq answer the client
        self.sendq_moved_at = time.monotonic()   # when the client last took bytes of it
        self.stall_unacked: int | None = None    # the kernel's unacknowledged bytes then
        # The head of sendq that OpenSSL was given and has not finished: it
        # must be given exactly these bytes again (see _send_head).
        self.tls_pending = b""
        self.recvq = bytearray()
        self.discarding = False
        # The head of an over-long QUIT being discarded, run when its line
        # ends (protocol.quit_head); at most 510 bytes.
        self.long_quit = b""
        self.bucket = flood.TokenBucket(cfg.limits.flood_burst, cfg.limits.flood_rate)
        # Joins and parts, charged per room: the connect-time JOIN of every
        # room a client may be in goes at once, then rooms at the flood rate.
        self.room_bucket = flood.TokenBucket(cfg.limits.rooms_per_client, cfg.limits.flood_rate)
        self.nick_limit = flood.WindowLimit(cfg.limits.nick_changes,
                                            cfg.limits.nick_change_window)
        self.link = link.BrokerLink(broker_address)
        self.timers: dict[str, float] = {}
        self.register_deadline = 0.0
        self.register_extended = False   # a late registration timer gave more time
        self.closing = False
        self.done = False
        self.stopping = False          # the server stops: nobody to tell of the quit
        self.bye = b""                 # the BYE frame, once closing
        self.last_input = time.monotonic()    # when the client was last heard from
        self.ping_sent = False
        # What the client took of our output since the last look (its PING):
        # bytes sent while a reply was pending (counted off the delivery
        # path), and the kernel's unacknowledged bytes, which fall as it
        # reads what the kernel holds.
        self.reply_taken = 0
        self.unacked_seen: int | None = None
        self.taken_since = self.last_input
        self.broker_lost_at = 0.0      # when the current outage began (0.0: none)
        self.link_opened_at = 0.0
        self.reconnects = 0
        self.tutorial = proto == "tutorial"
        self.tutorial_nick = ""
        self.tutorial_typed = ""          # the name as sent, before cleaning and suffixes
        self.tutorial_answer_due = False  # its name came after its first message
        self.tutorial_attempt = 0
        self.tutorial_connected = False
        self.tutorial_chunks: list[bytes] = []
        self.tutorial_lines: list[bytes] = []     # the rest of a chunk being relayed
        self.tutorial_partial = b""       # the start of a character the next read ends
        self.client_watch = selectors.EVENT_READ
        self.syncs_pending = 0
        self.unsynced = False
        self.client_eof = False
        self.stuck = False
        self.reply_dropped = False     # by close(): the kernel buffer may be full
        self.nick_asked = b""
        # The last query of QUERY_ENDS forwarded and not known answered (the
        # broker's SYNC echo after it, or its end numerics, say it was): its
        # REQUEST frame, its end's code, and the ends it has, and still lacks.
        self.query_frame = b""
        self.query_end = b""
        self.query_ends = 0
        self.query_ends_due = 0
        self.heard_client = False      # the first bytes are checked for a TLS hello

    # -- lifecycle ---------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        if not self.start(children.lifeline_fd()):
            return 0
        while not self.done:
            self._step()
        self._finish()
        return 0

    def start(self, lifeline: int) -> bool:
        """run()'s steps before its loop; False if the client is gone
        already (its TLS wrap failed).  `lifeline` reads EOF when the
        supervisor dies."""
        tune_client_socket(self.sock)
        if self.tls is not None:
            if not self._wrap_tls(self.tls):
                return False
            self.selector.register(self.sock, selectors.EVENT_READ, self.on_handshake)
        else:
            self.selector.register(self.sock, selectors.EVENT_READ, self.on_client)
        self.selector.register(lifeline, selectors.EVENT_READ, self.on_lifeline)
        if not self._connect_broker():
            self._broker_lost("broker not reachable yet")    # retried like a restart
        self.register_deadline = time.monotonic() + self.cfg.limits.registration_timeout
        self.timers["register"] = self.register_deadline
        self._schedule_ping()
        log.info("conn %d from %s (%s)", self.session.cid, self.session.host, self.session.proto)
        if self.tutorial and not self.handshaking:
            self.sendq += tutorial.HANDSHAKE
        return True

    def _wrap_tls(self, tls: ssl.SSLContext) -> bool:
        """Wrap the client socket for TLS; False (and it is closed) if it failed.

        A client that reset the connection before the worker started makes
        the wrap itself fail: that is a failed handshake like any other, and
        no broker has heard of this client yet.
        """
        try:
            self.sock = tls.wrap_socket(self.sock, server_side=True,
                                        do_handshake_on_connect=False)
        except (ssl.SSLError, OSError) as error:
            log.info("conn %d from %s: TLS handshake failed: %s", self.session.cid,
                     self.session.host, getattr(error, "reason", None) or error)
            self.sock.close()
            return False
        return True

    def _turn(self) -> None:
        if self.link.out or self.link.write_watched:
            self._flush_link()
        self._flush_client()
        if self.done:
            return
        timeout = timers.next_timeout(self.timers)
        ready = self.selector.select(timeout)
        for callback, mask in ready:
            callback(mask)
            if self.done:
                return
        # A wake for I/O before the earliest deadline leaves timers alone;
        # one that is due made the timeout 0, so it runs even under load.
        if (not ready or timeout == 0.0) and timers.any_due(self.timers):
            self._run_timers()

    def _step(self) -> None:
        """The loop's next turns: those that only deliver, while they do,
        then one full turn."""
        if self._only_deliveries():
            self._deliver_turns()
            if self.done:
                return
        self._turn()

    def _only_deliveries(self) -> bool:
        """Whether _deliver_turns can take the next turns: a plain IRC
        client (no TLS, not tutorial) watched for READ alone, before its
        EOF and with no reply to its command being sent, and an open
        broker link with nothing to send."""
        link_ = self.link
        return (self.tls is None and not self.tutorial and self.client_watch == _READ
                and not self.client_eof and not self.replies.pending
                and link_.sock is not None and not link_.out and not link_.write_watched)

    def _deliver_turns(self) -> None:
        """The loop's turns while all that comes is DELIVER frames, for a
        client _only_deliveries approved: what _turn does in them, written
        out flat.

        One line to a room of N wakes N workers (README, Performance), and
        a worker's wake-up costs mostly cold caches after the context
        switch: each call or attribute lookup left out saved 1-2 us of some
        50.  So the names are looked up once, here, and held across
        wake-ups, and so is the earliest deadline, since nothing here sets
        a timer.  Anything else returns to _turn, which does it as usual:
        another descriptor ready (epoll is level-triggered, so its select()
        sees it again), a deadline, a frame of another kind, a send that
        leaves bytes queued (_flush_client bounds and watches them), an
        error.
        """
        sendq = self.sendq          # (one object for the worker's life)
        send = self.sock.send
        read = self.link.read
        poll = self.selector.raw_poll()
        only_link = [(self.link.sock.fileno(), _EPOLLIN)]
        due = min(self.timers.values(), default=math.inf)
        while True:
            if sendq:                   # _flush_client, when all of it goes
                try:
                    sent = send(sendq)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as error:
                    self._write_failed(error)
                    return
                if sent < len(sendq):
                    del sendq[:sent]
                    return
                del sendq[:]
            wait = due - _monotonic()
            if wait <= 0.0:
                return                  # _turn runs the timer
            # (epoll.poll rounds the wait up to whole milliseconds itself; two
            # events at most, since a second one ends these turns anyway)
            if poll(wait if wait < _MAX_WAIT_S else _MAX_WAIT_S, 2) != only_link:
                return
            try:                        # on_link, the link watched for READ alone
                frames = read(sendq)
            except link.LinkLost as error:
                self._broker_lost(str(error))
                return
            if frames:
                self._take_frames(frames)
                return

    def _install_signals(self) -> None:
        self._signal_r, self._signal_w = signals.install([signal.SIGTERM])
        self.selector.register(self._signal_r, selectors.EVENT_READ, self.on_signal)
        children.take_sigterm()

    def on_signal(self, mask: int) -> None:
        if signal.SIGTERM in signals.received(self._signal_r):
            self.stopping = True
            self.close("Server shutting down", error_text="Server shutting down")

    def on_lifeline(self, mask: int) -> None:
        self.stopping = True
        self.close("Server shutting down", error_text="Server shutting down")

    def close(self, reason: str, error_text: str | None = None) -> None:
        """Say goodbye to the client and the broker, then stop the loop.

        `error_text` is what the client is told instead of the usual
        "Closing Link"; a tutorial client gets one plain line, not ERROR.
        """
        if self.closing:
            return
        self.closing = True
        log.info("conn %d %s closing: %s", self.session.cid, self.session.nick or "*", reason)
        self.bye = ipc.encode(ipc.Kind.BYE, reason.encode())
        if self._quit_told():
            self._queue_frame(ipc.encode(ipc.Kind.SYNC, BYE_SYNC))
        self._queue_frame(self.bye)
        if self.replies.pending:
            self._drop_reply()
        if self.tutorial:
            self.sendq += tutorial.goodbye(reason, error_text) or b""
        else:
            text = error_text or f"Closing Link: {self.session.host} ({reason})"
            self.sendq += protocol.format_line("", "ERROR", text)
        self.done = True

    def _finish(self) -> None:
        """Flush the last bytes to both ends, briefly, then close them.

        A client dropped for not reading gets its ERROR line all the same:
        the kernel buffer is full, so it is enlarged by a little and the line
        goes in without waiting for a client that will not read.  So does
        one whose reply was dropped (it reads, slowly, what the full buffer
        holds first).
        """
        deadline = time.monotonic() + CLOSE_FLUSH_S
        self._say_bye(deadline)
        if self.stuck or self.reply_dropped:
            if self.stuck:
                deadline = time.monotonic()
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                     CLIENT_SNDBUF_BYTES + ERROR_ROOM_BYTES)
            except OSError:
                pass
        try:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            if self.sendq and self._bounded_sendq() <= self.cfg.limits.sendq_bytes \
                    and not self.handshaking:
                pending = self.tls_pending
                if pending:
                    self.sock.sendall(pending)
                self.sock.sendall(self.sendq[len(pending):])
            self._close_notify()
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.link.close()

    def _quit_told(self) -> bool:
        """Whether the client's quit is news to others: it registered (so
        it may share rooms), and the server is not stopping."""
        return self.session.registered and not self.stopping

    def _say_bye(self, deadline: float) -> None:
        """Get the BYE to a broker that knows the client, by `deadline`.

        The members of the client's rooms learn of its quit from the
        broker alone.  When the broker had died, a worker that closed
        before it re-registered its client with the next one (its link
        lost, or reconnected but not yet taken: the supervisor's listener
        queues a connect until the next broker accepts it) exited, and
        that broker never knew the client: its rooms' members kept its
        nickname, no QUIT.  So did one whose BYE went into a broker that
        died before reading it.  The worker now waits for the broker's
        echo of the SYNC it sends before the BYE: a live broker sends it
        once the BYE's QUIT is written to the members (Broker._on_bye), or
        at once in a restart's recovery, which holds the BYE till it ends.
        A link that ends without it, reset or closed, was a broker that
        died: the link is opened again, the client re-registered, and the
        goodbye said to the next broker.  What else a dead broker was sent
        is lost with it, as forkchat(7) says.
        """
        self.link.flush(deadline)
        if not self._quit_told():
            return
        tries = 0
        greeting: list[bytes] = []
        while True:
            if self.link.sock is not None and not self.link.out:
                if self.link.await_answer(BYE_SYNC, deadline) is not False:
                    return          # answered, or no time left
            self._drop_link()
            if tries:               # (no broker yet, or one that refused the link)
                time.sleep(max(0.0, min(RELINK_PAUSE_S, deadline - time.monotonic())))
            tries += 1
            if time.monotonic() >= deadline:
                return
            if not self.link.out:       # written to a broker that died unread
                self.link.queue(ipc.encode(ipc.Kind.SYNC, BYE_SYNC))
                self.link.queue(self.bye)
            if self.link.connect(deadline - time.monotonic()):
                self.link.discard(greeting)     # a failed try's, never sent
                greeting = self._greeting()
                self.link.queue_first(greeting)
                self.link.flush(deadline)

    def _drop_link(self) -> None:
        """Close the broker link, out of the selector first (a link opened
        while closing was never in it)."""
        if self.link.sock is not None:
            try:
                self.selector.unregister(self.link.sock)
            except KeyError:
                pass
        self.link.close()

    def _close_notify(self) -> None:
        """End a TLS session with its close_notify alert, as TLS asks.

        Without it the client cannot tell our close from a cut connection:
        OpenSSL reports 'unexpected eof', GnuTLS (WeeChat) 'The TLS
        connection was non-properly terminated'.  The alert is sent, the
        peer's own is not waited for (non-blocking: that is the WantRead).
        """
        if not isinstance(self.sock, ssl.SSLSocket) or self.handshaking:
            return
        try:
            self.sock.setblocking(False)
            self.sock.unwrap()
        except (ssl.SSLError, OSError, ValueError):
            pass

    # -- the client side ---------------------------------------------------

    def on_handshake(self, mask: int) -> None:
        """Drive the TLS handshake; a failure costs this worker only."""
        assert isinstance(self.sock, ssl.SSLSocket)
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.selector.modify(self.sock, selectors.EVENT_READ, self.on_handshake)
            return
        except ssl.SSLWantWriteError:
            self.selector.modify(self.sock, selectors.EVENT_WRITE, self.on_handshake)
            return
        except (ssl.SSLError, OSError) as error:
            log.info("conn %d from %s: TLS handshake failed: %s", self.session.cid,
                     self.session.host, getattr(error, "reason", None) or error)
            if getattr(error, "reason", None) == PLAIN_TEXT_REASON and not self.tutorial:
                self._tell_plain_client()
            self.sendq.clear()
            self.closing = self.done = True
            self._queue_frame(ipc.encode(ipc.Kind.BYE, b"TLS handshake failed"))
            return
        self.handshaking = False
        log.debug("conn %d: TLS %s", self.session.cid, self.sock.version())
        self.client_watch = selectors.EVENT_READ
        self.selector.modify(self.sock, selectors.EVENT_READ, self.on_client)
        if self.tutorial:
            self.sendq += tutorial.HANDSHAKE

    def _tell_plain_client(self) -> None:
        """Say in plain text that this port speaks TLS, to a client that
        spoke plain text to it.

        Its user (irssi without -tls, forkchat-client without --tls) would
        otherwise read only "connection lost" and never learn why.  The
        bytes go under OpenSSL, straight to the socket; the close follows.
        """
        text = f"Closing Link: {self.session.host} ({TLS_PORT_TEXT})"
        try:
            socket.socket.send(self.sock, protocol.format_line("", "ERROR", text))
        except OSError:
            pass

    def _recv(self) -> bytes | None:
        """What the client sent (b"" at EOF), or None when nothing is ready.

        A TLS socket may hold decrypted bytes that select() cannot see, so
        it is read until its buffer is empty.
        """
        chunks = []
        while True:
            try:
                data = self.sock.recv(READ_BYTES)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                    ssl.SSLWantWriteError):
                break
            except ssl.SSLError as error:
                self.close(f"TLS error: {error.reason or error}")
                return None
            except OSError as error:
                self._client_broke(f"Read error: {error.strerror or error}")
                return None
            chunks.append(data)
            if not data or not isinstance(self.sock, ssl.SSLSocket) or not self.sock.pending():
                break
        if not chunks:
            return None
        received = b"".join(chunks)
        if received and self.ack_at_once:
            self._acknowledge()
        return received

    def _acknowledge(self) -> None:
        """Acknowledge what the client sent now, not when a reply carries it.

        A client that leaves Nagle's algorithm on (TCP_NODELAY off: the
        tutorial's client, many scripts) holds each line it writes until the
        one before is acknowledged, and the kernel, seeing us answer most
        lines, delays its acknowledgement (some 40 ms) to carry it on the
        answer: a line that has none, a message to a room, held the
        client's next line that long.  TCP_QUICKACK acknowledges at once,
        and holds only until the kernel takes us for a talker again.
        """
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:          # the client has gone: its next read says so
            pass

    def on_client(self, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush_client()
        if not mask & selectors.EVENT_READ:
            return
        data = self._recv()
        if data is None:
            return
        if not data:
            self._client_eof()
            return
        if not self.heard_client:
            self.heard_client = True
            if self.tls is None and data.startswith(TLS_RECORD_START):
                self._refuse_tls_hello()
                return
        self.last_input = time.monotonic()
        self.ping_sent = False
        self.recvq += data
        if self.tutorial:
            self._tutorial_input(data)
        else:
            self._process_lines()

    def _refuse_tls_hello(self) -> None:
        """A TLS client on a plain port: say so, and close now.

        Read as text, its ClientHello drew 'NUL byte' notices (on a
        tutorial port it became a garbled nickname that joined the room),
        and the worker waited out the registration timeout with nothing
        in the log but that.  The plain line reaches the client's TLS
        layer as a bad record, which it reports at once.
        """
        self.close("TLS handshake on a plain-text port",
                   error_text=f"Closing Link: {self.session.host} ({PLAIN_PORT_TEXT})")

    def _client_eof(self) -> None:
        """The client closed: run the lines it sent first (its QUIT), then close.

        A tutorial client's chunks held by flood control are relayed the
        same way, at the flood pace, before its QUIT: nothing the server
        has read is lost.  An IRC client's commands are answered first too
        (see _leave_after_eof).
        """
        held = self._tutorial_held() if self.tutorial \
            else b"\n" in self.recvq or self.unsynced or self.replies.pending > 0
        if not held:
            self.close("Connection closed")
            return
        self.client_eof = True
        self._watch_client()
        self._process_input()

    def _client_broke(self, reason: str) -> None:
        """The connection failed: close with `reason`, or with the client's
        own, if a QUIT is among the lines it sent that wait.

        Lines wait behind a reply being sent (LIST): a client that sends
        QUIT then and closes, with the reply unread, resets the connection,
        and its rooms read 'Read error' or 'Write error' instead of its
        words.  Its QUIT runs now; what it sent before that is lost with
        the connection, as it would be with any reset.  A tutorial client's
        lines are chat, none a command: its "quit now" is not its QUIT.
        """
        self._read_rest()
        lines = [] if self.tutorial else bytes(self.recvq).split(b"\n")[:-1]   # whole only
        if self.discarding and lines:
            lines[0] = self.long_quit       # an over-long line's end: its QUIT's head, or none
        for raw in lines:
            line = protocol.quit_head(raw.rstrip(b"\r"))     # a QUIT, cut to a line
            if not line:
                continue
            try:
                msg = protocol.parse_line(line)
            except protocol.ProtocolError:
                msg = self._quit_anyway(line, "")      # its reason is not UTF-8
            commands.dispatch(self, msg, line)
            break
        self.close(reason)          # (nothing if the QUIT closed already)

    def _read_rest(self) -> None:
        """Take what the client sent before its connection broke and is
        still there to read: a write fails first when its QUIT and its
        reset come in one turn (the turn writes before it reads)."""
        for _ in range(RECV_REST_TRIES):
            try:
                data = self.sock.recv(READ_BYTES)
            except (OSError, ValueError):     # ssl.SSLError is an OSError
                return
            if not data:
                return
            self.recvq += data

    def _paused(self) -> bool:
        """Input waits while registration or a broker reconnect is pending,
        and while a reply to the client's own command is still being sent."""
        session = self.session
        return (not self.link.connected or self.closing or self.syncs_pending > 0
                or self.replies.pending > 0
                or (session.register_sent and not session.registered))

    def _process_lines(self) -> None:
        while not self._paused():
            end = self.recvq.find(b"\n")
            if end < 0:
                self._check_long_line()
                break
            if self.discarding and not self.long_quit:
                del self.recvq[:end + 1]
                self.discarding = False
                continue
            if self.bucket.wait_time() > 0:
                self.timers["flood"] = time.monotonic() + self.bucket.wait_time()
                break
            line = self.long_quit if self.discarding else bytes(self.recvq[:end]).rstrip(b"\r")
            msg, line = self._parse(line)     # a bad line is answered here, once
            in_step = msg is not None and msg.command in SYNC_FIRST
            if in_step and self.unsynced:
                self._sync()    # answer in order: the broker's replies first
                break
            rooms = self._rooms_named(msg)
            if rooms:           # (most lines name none: no second bucket to refill)
                wait = self.room_bucket.wait_time(rooms)
                if wait > 0:
                    self.timers["flood"] = time.monotonic() + wait
                    break
                self.room_bucket.take(rooms)
            self.bucket.take()
            del self.recvq[:end + 1]
            self.discarding, self.long_quit = False, b""
            if msg is not None:
                commands.dispatch(self, msg, line)
                if in_step and self.unsynced:       # forwarded (talk is not in step)
                    self._note_query(msg, line)
        self._trim_long_lines()
        if len(self.recvq) > self.cfg.limits.recvq_bytes:
            self.close("Excess Flood")
        elif self.client_eof and b"\n" not in self.recvq:
            self._leave_after_eof()

    def _leave_after_eof(self) -> None:
        """The client closed its end and all it sent has run: leave once the
        broker has answered it and the answer has been sent.  A script that
        sends 'LIST' or 'JOIN #room' and half-closes (nc -N) read the
        welcome and then 'Connection closed': the BYE went at once behind
        its command, and the broker dropped the answer with the link."""
        if self._paused():       # a sync, a reply being sent, a reconnect
            return
        if self.unsynced:
            self._sync()
            return
        self.close("Connection closed")

    def _rooms_named(self, msg: protocol.Message | None) -> int:
        """Room memberships a registered client's line may change (a JOIN
        before registration is refused without reaching the broker)."""
        if msg is None or not self.session.registered:
            return 0
        return commands.rooms_named(msg, self.cfg.limits.rooms_per_client)

    def _trim_long_lines(self) -> None:
        """Cut each line left waiting in recvq (behind a sync, a reply being
        sent, flood control) to LONG_LINE_KEEP bytes, still too long.

        Waiting whole, one line over 8 KiB ended the client with "Excess
        Flood" where it would have drawn a 417 a moment later, and a long
        QUIT (weechat sends its reason whole) lost its reason so.  Cut,
        it is refused with 417, or run as a QUIT (protocol.quit_head),
        when its turn comes, and recvq holds less than before.
        """
        if len(self.recvq) <= LONG_LINE_KEEP:
            return
        lines = bytes(self.recvq).split(b"\n")
        if any(len(line) > LONG_LINE_KEEP for line in lines):
            self.recvq[:] = b"\n".join(line[:LONG_LINE_KEEP] for line in lines)

    def _check_long_line(self) -> None:
        """A line that has not ended within 512 bytes is discarded as it
        comes, so that recvq stays small: 417 once, or, for a QUIT, its
        head kept to run when the line ends (protocol.quit_head)."""
        if len(self.recvq) > protocol.MAX_LINE_BYTES:
            head = bytes(self.recvq[:protocol.MAX_LINE_BYTES])
            starts = not self.discarding
            del self.recvq[:]
            self.discarding = True
            if not starts:
                return
            self.long_quit = protocol.quit_head(head)
            if not self.long_quit and _may_answer(head):
                self.reply(numerics.ERR_INPUTTOOLONG)

    def _parse(self, line: bytes) -> tuple[protocol.Message | None, bytes]:
        """The line as a Message, or None (after an error reply) if unusable,
        and the line to forward for it: an unusable line that is run all
        the same (see _UNUSABLE) is forwarded as rebuilt from its Message,
        since the broker drops what it cannot parse.

        A NOTICE that cannot be used is dropped without a word: RFC 2812
        3.3.2 forbids any error reply to a NOTICE, too long, invalid UTF-8
        or NUL included.
        """
        if not line.strip():
            return None, line
        if len(line) > protocol.MAX_BODY_BYTES:
            head = protocol.quit_head(line)         # a QUIT is cut and run
            if not head:
                if _may_answer(line):
                    self.reply(numerics.ERR_INPUTTOOLONG)
                return None, line
            line = head
        try:
            return protocol.parse_line(line), line
        except protocol.ProtocolError as error:
            msg = _UNUSABLE.get(protocol.command_word(line), Worker._refuse_line)(
                self, line, error.reason)
        if msg is None:
            return None, line
        return msg, protocol.format_line("", msg.command, *msg.params).rstrip(b"\r\n")

    def _refuse_line(self, line: bytes, reason: str) -> protocol.Message | None:
        """An unusable line is answered with a NOTICE saying why, and dropped."""
        self.write(protocol.format_line(self.cfg.server.name, "NOTICE", self.session.target,
                                        f"{reason}; line ignored"))
        return None

    def _drop_quietly(self, line: bytes, reason: str) -> protocol.Message | None:
        """A NOTICE never draws an error reply (RFC 2812 3.3.2)."""
        return None

    def _refuse_nick(self, line: bytes, reason: str) -> protocol.Message | None:
        """A NICK that is not UTF-8 (a latin-1 'Jörg') is an erroneous
        nickname: 432, which clients answer with another nick.  The NOTICE
        alone left a registering client waiting for the registration
        timeout, its NICK neither refused nor taken."""
        nick = protocol.parse_text(line.decode("utf-8", "replace")).param(0)
        self.reply(numerics.ERR_ERRONEUSNICKNAME, nick or "*",
                   text=f"Erroneous nickname: {reason}")
        return None

    def _quit_anyway(self, line: bytes, reason: str) -> protocol.Message:
        """A QUIT whose reason is not UTF-8 (a latin-1 'Tschüß') still ends
        the connection, as 'Client Quit': the reason cannot be relayed, but
        ignoring the QUIT left a client that had said goodbye connected."""
        return protocol.Message("", "QUIT", [])

    def _part_anyway(self, line: bytes, reason: str) -> protocol.Message | None:
        """A PART whose reason is not UTF-8 (a latin-1 'Tschüß') still leaves
        its rooms, without the reason, as such a QUIT still ends the
        connection: the client was told only 'line ignored' and stayed in
        a room it had said goodbye to.  Rooms named in bytes that are not
        UTF-8 are refused as before (no room has such a name)."""
        msg = protocol.parse_loose(line)
        rooms = msg.param(0)
        if not rooms or not protocol.usable(rooms):
            return self._refuse_line(line, reason)
        return protocol.Message("", "PART", [rooms])

    def _user_anyway(self, line: bytes, reason: str) -> protocol.Message | None:
        """A USER whose real name is not UTF-8 (a latin-1 'José' from an old
        client or script) is taken, each such byte read as Windows-1252
        (latin-1 with printable characters at 0x80-0x9F), so that the
        client registers: the NOTICE alone left it waiting out the
        registration timeout, and the real name it gave is shown as meant.
        (The user name keeps ASCII only anyway: clean_user.)  One with NUL
        cannot be read at all: before registration that ends the attempt
        with an ERROR saying why, instead of the same silent wait."""
        if b"\0" not in line:
            msg = protocol.parse_loose(line)
            return msg._replace(params=[protocol.legacy_fallback(p) for p in msg.params])
        session = self.session
        if session.registered or session.register_sent or session.user:
            return self._refuse_line(line, reason)      # a second USER: nothing waits for it
        self.close("NUL byte in USER line")
        return None

    def _tutorial_input(self, chunk: bytes) -> None:
        """A tutorial client's chunk: its nickname first, then messages."""
        del self.recvq[:]
        if not self.tutorial_nick:
            chunk = self._tutorial_name(chunk)
            if not chunk:
                return
        elif self.tutorial_answer_due:
            self.tutorial_answer_due = False
            chunk = tutorial.drop_answer(chunk, self.tutorial_typed)
        chunk = tutorial.rejoin(self.tutorial_partial, chunk)
        whole = len(chunk) - tutorial.partial_char(chunk)
        chunk, self.tutorial_partial = chunk[:whole], chunk[whole:]
        if chunk:
            self.tutorial_chunks.append(chunk)
        self._tutorial_flush()

    def _tutorial_name(self, chunk: bytes) -> bytes:
        """Take the client's name from its first chunk; what follows it is
        a message (see tutorial.split_name)."""
        if tutorial.speaks_irc(chunk):
            self._refuse_irc_client()
            return b""
        if tutorial.speaks_http(chunk):
            self.close("HTTP request on the tutorial port", error_text=NOT_HTTP_TEXT)
            return b""
        first = tutorial.split_name(chunk)
        self.tutorial_nick = tutorial.clean_nick(first.name, self.cfg.limits.nicklen)
        self.tutorial_typed = tutorial.typed_name(first.name)
        self.tutorial_answer_due = first.answer_due
        self.session.user = self.tutorial_nick[:10]
        self.session.realname = "tutorial client"
        self._tutorial_try_nick()
        return first.rest

    def _refuse_irc_client(self) -> None:
        """An IRC client on the tutorial port: tell it in its own protocol,
        and close before anything it sent reaches the room.

        The line break first ends the handshake's 'NICK', so the ERROR
        line is a line of its own, which the IRC client shows its user;
        the worker speaks IRC for these last words.
        """
        self.tutorial = False
        self.sendq += b"\r\n"
        self.close("IRC client on the tutorial port",
                   error_text=f"Closing Link: {self.session.host} ({TUTORIAL_PORT_TEXT})")

    def _tutorial_flush(self) -> None:
        """Relay held chunks as the flood bucket allows; too many is a flood.

        A chunk may become many PRIVMSGs, and each takes a flood token as
        an IRC client's line does: the rest of the chunk waits for later.
        Each one is echoed as sent, so none may go while the client is
        outside its room: there it would reach nobody.
        """
        room = self.cfg.server.default_room
        while self._tutorial_held() and self.session.registered and not self._paused():
            if not self._in_default_room():
                self._tutorial_farewell(tutorial.outside(room))
                return
            if not self.tutorial_lines:
                chunk = self.tutorial_chunks.pop(0)
                self.tutorial_lines = tutorial.chunk_to_lines(
                    chunk, self.session.nick, room, self.tutorial_typed,
                    protocol.user_prefix(self.session.nick, self.session.user, self.session.host))
                continue
            if not self.bucket.take():
                self.timers["flood"] = time.monotonic() + self.bucket.wait_time()
                break
            line = self.tutorial_lines.pop(0)
            self.forward(line)
            text = tutorial.line_text(line).decode("utf-8", "replace")
            self.sendq += tutorial.to_ascii(f"{self.session.nick}: {text}")
        if self._tutorial_held_bytes() > self.cfg.limits.recvq_bytes:
            self.close("Excess Flood")
        elif self.client_eof and not self._tutorial_held():
            self.close("Connection closed")

    def _tutorial_held_bytes(self) -> int:
        """What the client sent and waits, counted as its recvq would be."""
        texts = sum(len(tutorial.line_text(line)) for line in self.tutorial_lines)
        return sum(map(len, self.tutorial_chunks)) + texts

    def _tutorial_held(self) -> bool:
        """Whether the client has said anything not relayed yet."""
        return bool(self.tutorial_chunks or self.tutorial_lines)

    def _process_input(self) -> None:
        if self.tutorial:
            self._tutorial_flush()
        else:
            self._process_lines()

    def _tutorial_try_nick(self) -> None:
        nick = tutorial.suffixed(self.tutorial_nick, self.tutorial_attempt,
                                 self.cfg.limits.nicklen)
        self.forward(f"NICK {nick}".encode())

    def write(self, line: bytes) -> None:
        """Queue a line for the client; the bound is checked after each send."""
        if self.tutorial:
            self._tutorial_output(line)
            return
        self.sendq += line

    def _in_default_room(self) -> bool:
        """Whether the broker last said this client is in the default room."""
        room = protocol.casefold(self.cfg.server.default_room)
        return any(protocol.casefold(name) == room for name in self.session.rooms)

    def _tutorial_farewell(self, last: bytes) -> None:
        """One plain line, then EOF: all a tutorial client can be told."""
        text = last.decode("ascii")
        self.close(text, error_text=text)

    def _tutorial_output(self, line: bytes) -> None:
        if self.closing:
            return          # the farewell stays the last thing the client reads
        last = tutorial.farewell(line, self.session.nick, self.cfg.server.default_room,
                                 self.tutorial_connected)
        if last is not None:
            self._tutorial_farewell(last)
            return
        rendered = tutorial.render(line, self.session.nick)
        if rendered is None:
            return
        self.sendq += rendered
        if not self.tutorial_connected and rendered.endswith(b" joined!") \
                and rendered.startswith(self.session.nick.encode()):
            self.tutorial_connected = True
            self.sendq += tutorial.CONNECTED

    def reply(self, code: str, *params: str, text: str | None = None) -> None:
        self.write(numerics.reply(self.cfg.server.name, code, self.session.target,
                                  *params, text=text))

    def _flush_client(self) -> None:
        if self.handshaking:
            return
        sendq = self.sendq
        if sendq:
            try:
                sent = self.sock.send(sendq) if self.tls is None else self._send_head()
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                    ssl.SSLWantWriteError):
                sent = 0
            except OSError as error:
                self._write_failed(error)
                return
            if sent:
                del sendq[:sent]
            replies = self.replies
            replying = replies.pending
            if replying:        # (never on the delivery path: no reply pending)
                replies.sent(sent)
                self.reply_taken += sent
            if sendq or replying:       # (the delivery path: all went, nothing to bound)
                limit = self.cfg.limits.sendq_bytes
                if len(sendq) - replies.pending > limit:    # (_bounded_sendq)
                    self._cut_sendq()
                    self.stuck = True
                    self.close("Max SendQ exceeded")
                    return
                if replying and not replies.pending:
                    self._resume_after_reply()
                    if self.done:
                        return
                if len(sendq) > limit:
                    self._watch_stall(sent)
        if sendq or self.client_eof or self.client_watch != _READ:
            self._watch_client()        # (on the delivery path: nothing to change)

    def _write_failed(self, error: OSError) -> None:
        """The client's socket refused a send: it is gone."""
        del self.sendq[:]
        self.replies.cut()
        self.tls_pending = b""
        self._client_broke(f"Write error: {error.strerror or error}")

    def _watch_stall(self, sent: int) -> None:
        """A reply beyond sendq_bytes is queued: note when the client takes
        bytes of it, from the moment it is.  (Off the delivery path, which
        never gets here: a clock read per send cost every wake-up.)"""
        watched = "stall" in self.timers
        if sent or not watched:
            self.sendq_moved_at = time.monotonic()
            self.stall_unacked = _unacked_bytes(self.sock)
        if not watched:
            self.timers["stall"] = self.sendq_moved_at + self.cfg.limits.ping_timeout

    def _on_stall_timer(self) -> None:
        """A reply beyond sendq_bytes that the client takes nothing of for
        ping_timeout seconds: it does not read, and the reply is not kept
        for it (nor is it kept alive by lines it sends and we hold).

        Taking bytes the kernel holds counts: the kernel wakes us to send
        more only once a third of its buffer is free (some 40 KB), and a
        client reading steadily but slower than that a ping_timeout was
        dropped with "Max SendQ exceeded" (at the default 60 s, below
        700 bytes a second; at 10 s, below 4 KB a second).
        """
        if len(self.sendq) <= self.cfg.limits.sendq_bytes:
            return
        now = time.monotonic()
        due = self.sendq_moved_at + self.cfg.limits.ping_timeout
        if now < due:
            self.timers["stall"] = due
            return
        unacked = _unacked_bytes(self.sock)
        if unacked is not None and self.stall_unacked is not None \
                and unacked < self.stall_unacked:
            self.sendq_moved_at, self.stall_unacked = now, unacked
            self.timers["stall"] = now + self.cfg.limits.ping_timeout
            return
        self._cut_sendq()
        self.stuck = True
        self.close("Max SendQ exceeded")

    def _resume_after_reply(self) -> None:
        """The reply has gone: take the client's next command, and send it
        on now (the turn's link flush may be behind us, and select() would
        sleep on a request nobody sent)."""
        self._process_input()
        if not self.done and self.link.out:
            self._flush_link()

    def _bounded_sendq(self) -> int:
        """The bytes queued for the client that count against sendq_bytes:
        all but the reply to its own command."""
        return len(self.sendq) - self.replies.pending

    def _send_head(self) -> int:
        """Send from the head of the send queue; how many bytes went.

        OpenSSL may take part of a buffer and then ask to be called again
        (SSLWantWriteError): the retry must pass the same bytes, never
        fewer, or it fails with BAD_LENGTH and the stream is cut mid-line.
        So with TLS one piece of the queue is fixed until it has gone whole.
        """
        if not isinstance(self.sock, ssl.SSLSocket):
            return self.sock.send(self.sendq)
        if not self.tls_pending:
            size = max(1, min(TLS_WRITE_BYTES, self.cfg.limits.sendq_bytes // 4))
            self.tls_pending = bytes(self.sendq[:size])
        sent = self.sock.send(self.tls_pending)
        self.tls_pending = b""
        return sent

    def _cut_sendq(self) -> None:
        """Drop a stuck client's queue, but keep whole the line the kernel,
        or OpenSSL, already has the start of: the ERROR line follows it."""
        start = max(len(self.tls_pending) - 1, 0)
        end = self.sendq.find(b"\n", start)
        del self.sendq[end + 1 if end >= 0 else len(self.tls_pending):]
        self.replies.cut()

    def _drop_reply(self) -> None:
        """The client is leaving: the rest of the reply to its command goes,
        but the line it has the start of; what else was queued stays.

        The last second left to send (CLOSE_FLUSH_S) went on the rest of a
        LIST of megabytes, and a client reading it over a slow link, killed
        or caught by a server shutdown, found the list cut short and no
        ERROR line saying why.
        """
        start = max(len(self.tls_pending) - 1, 0)
        end = self.sendq.find(b"\n", start)
        self.replies.drop(self.sendq, end + 1 if end >= 0 else len(self.sendq))
        self.reply_dropped = True

    def _watch_client(self) -> None:
        """Watch the client socket for what is needed now, and nothing else.

        After the client's EOF there is nothing to read, and a half-closed
        socket is always writable: watching it then would make select()
        return at once every turn while flood control or a broker sync
        holds input.  With nothing to wait for, it is left out of the
        selector and the loop sleeps until a timer or the broker.
        """
        if self.done:
            return
        want = 0 if self.client_eof else selectors.EVENT_READ
        want |= selectors.EVENT_WRITE if self.sendq else 0
        if want == self.client_watch:
            return
        if not want:
            self.selector.unregister(self.sock)
        elif not self.client_watch:
            self.selector.register(self.sock, want, self.on_client)
        else:
            self.selector.modify(self.sock, want, self.on_client)
        self.client_watch = want

    # -- commands.Context ----------------------------------------------------

    def forward(self, raw: bytes) -> None:
        self._queue_frame(ipc.encode(ipc.Kind.REQUEST, raw))
        self.unsynced = True
        if not self.session.registered:
            if protocol.command_word(raw) == "NICK":    # (after a tag or a prefix too)
                self.nick_asked = raw     # resent if it dies with a broker
            self._sync()

    def _note_query(self, msg: protocol.Message, line: bytes) -> None:
        """Remember a query the client waits for the end of, until the
        broker is known to have answered it (or forget the last one: a
        command in step is forwarded only once all before it is answered)."""
        ends = QUERY_ENDS.get(msg.command)
        if ends is None:
            self.query_ends_due = 0
            return
        self.query_frame = ipc.encode(ipc.Kind.REQUEST, line)
        self.query_end = ends[0]
        self.query_ends = self.query_ends_due = ends[1](msg)

    def _query_reply(self, payload: bytes) -> None:
        """A reply line while a query's end is due: count it if it is one.
        (Only talk passes a scan waiting at the broker, and no answer to
        talk has the code of a query's end.)"""
        code = payload.find(b" ") + 1
        if payload.startswith(self.query_end, code) and payload[code + 3:code + 4] == b" ":
            self.query_ends_due -= 1

    def _query_lost(self) -> list[bytes]:
        """The query to send the next broker again: it went to the dead one,
        which never answered it (or not to the end).

        A scan may wait at the broker for its turn up to 30 s, the client's
        later commands held behind it; a broker killed or crashed meanwhile
        took it along, and the client waited for the end numeric for ever
        (irssi then asks nothing more of a room it joins).  A frame still
        queued here goes in its turn, not twice.  A reply the broker had
        written only in part comes whole again: its first lines twice.
        """
        if not self.query_ends_due or self.query_frame in self.link.out:
            return []
        self.query_ends_due = self.query_ends
        self.unsynced = True        # what comes in step waits for its answer
        return [self.query_frame]

    def _sync(self) -> None:
        """Hold the client's input until the broker has answered so far.

        Before registration the next command depends on the answer (was the
        nick accepted?), so the worker waits for the broker's echo.
        """
        self.syncs_pending += 1
        self.unsynced = False
        self._queue_frame(ipc.encode(ipc.Kind.SYNC, b""))

    def frame(self, frame: bytes) -> None:
        """A control frame (OPER): later local commands wait for its effect."""
        self._queue_frame(frame)
        self.unsynced = True

    def try_register(self) -> None:
        session = self.session
        if not session.ready_to_register():
            return
        password = self.cfg.server.password
        if password and not self._password_accepted(password):
            self.close("Bad password")
            return
        session.register_sent = True
        self._queue_frame(ipc.encode_json(ipc.Kind.REGISTER,
                                          {"user": session.user, "realname": session.realname}))
        if self.tutorial:
            self.forward(f"JOIN {self.cfg.server.default_room}".encode())

    def _password_accepted(self, password: str) -> bool:
        """Check the server password, unless the client's address must wait.

        Each guess is a new connection, and each cost a scrypt hash: the
        connect rate alone let one address guess (and burn a core) at 20 a
        second.  Failures are counted per address block by the broker with
        the OPER failures (operguard), whose wait then applies here too:
        the password is not even hashed.
        """
        session = self.session
        if not session.password:
            # No guess (a tutorial client cannot send PASS at all): nothing
            # to hash, and nothing to count against the address.
            self.reply(numerics.ERR_PASSWDMISMATCH)
            return False
        wait = session.oper_address_not_before - time.monotonic()
        if wait > 0:
            self.reply(numerics.ERR_PASSWDMISMATCH, text=commands.PASS_ADDRESS_WAIT_TEXT.format(
                seconds=math.ceil(wait)))
            return False
        if passwords.verify(password, session.password):
            return True
        self.frame(ipc.encode_json(ipc.Kind.OPER_FAILED, {"pass": True}))
        self.reply(numerics.ERR_PASSWDMISMATCH)
        return False

    def stats(self, letter: str) -> list[tuple[str, tuple[str, ...]]]:
        supervisor = self.supervisor_pid
        if letter == "u":
            up = int(procstats.uptime(supervisor, time.time()))
            text = f"Server Up {up // 86400} days {up % 86400 // 3600}:" \
                   f"{up % 3600 // 60:02d}:{up % 60:02d}"
            return [(numerics.RPL_STATSUPTIME, (text,))]
        if letter == "p":
            return [(numerics.RPL_STATSDEBUG, ("p", line))
                    for line in procstats.report_lines(procstats.summary(supervisor))]
        return []

    # -- the broker side ---------------------------------------------------

    def _connect_broker(self) -> bool:
        """(Re)connect; the first frames say who we are, and who we were."""
        if not self.link.connect():
            return False
        assert self.link.sock is not None
        self.selector.register(self.link.sock, selectors.EVENT_READ, self.on_link)
        first = self._greeting()
        if self.session.nick:
            first += self._query_lost()
        self.link.queue_first(first)
        # SYNCs, a NICK, a REGISTER and a query sent to a dead broker died with it.
        self.syncs_pending = self.link.count(ipc.Kind.SYNC)
        if self.nick_asked and not self.session.nick and not self.syncs_pending:
            self.forward(self.nick_asked)
        if self.session.register_sent and not self.session.registered \
                and not self.link.count(ipc.Kind.REGISTER):
            self.session.register_sent = False
            self.try_register()
        return True

    def _greeting(self) -> list[bytes]:
        """A new link's first frames: HELLO, and REREGISTER if the client
        has a nick (the broker may be a new one, that never knew it)."""
        hello = ipc.encode_json(ipc.Kind.HELLO, {"cid": self.session.cid,
                                                 "host": self.session.host,
                                                 "proto": self.session.proto,
                                                 "reregister": bool(self.session.nick)})
        if not self.session.nick:
            return [hello]
        return [hello, ipc.encode_json(ipc.Kind.REREGISTER, self.session.identity())]

    def on_link(self, mask: int) -> None:
        if mask & _WRITE:
            self._flush_link()
        if not mask & _READ or self.link.sock is None:
            return
        try:       # (an IRC client's DELIVERs go straight to its send queue)
            frames = self.link.read(None if self.tutorial else self.sendq)
        except link.LinkLost as error:
            self._broker_lost(str(error))
            return
        self._take_frames(frames)

    def _take_frames(self, frames: list[tuple[int, bytes]]) -> None:
        deliver = None if self.tutorial else _DELIVER
        reply = None if self.tutorial else _REPLY
        sendq = self.sendq        # (one object for the worker's life: grown in place)
        for kind, payload in frames:
            if kind == deliver:      # most frames: written as they are
                sendq += payload
            elif kind == reply:      # not held against sendq_bytes
                self.replies.add(len(sendq), len(payload))
                sendq += payload
                if self.query_ends_due:
                    self._query_reply(payload)
            else:
                self._on_frame(kind, payload)

    def _on_frame(self, kind: int, payload: bytes) -> None:
        handler = _FRAME_HANDLERS.get(kind)
        if handler is None:
            log.error("conn %d: unexpected frame kind %d from broker", self.session.cid, kind)
            return
        handler(self, payload)

    def _on_deliver(self, payload: bytes) -> None:
        """(A tutorial client's: an IRC client's DELIVERs go straight to its
        send queue, _take_frames.)  One DELIVER may carry several lines."""
        for line in payload.splitlines(keepends=True):
            self.write(line)

    def _on_update(self, payload: bytes) -> None:
        changes: dict[str, Any] = ipc.decode_json(payload)
        was_registered = self.session.registered
        old_nick = self.session.nick
        self.session.apply(changes)
        if was_registered and self.session.nick != old_nick:
            self.nick_limit.record()      # a change everyone in its rooms was told of
        if "nick" in changes and not self.session.registered:
            self.try_register()
        if self.session.registered and not was_registered:
            self.timers.pop("register", None)
            log.info("conn %d registered as %s!%s@%s", self.session.cid, self.session.nick,
                     self.session.user, self.session.host)
            self._process_input()

    def _on_sync(self, payload: bytes) -> None:
        self.syncs_pending = max(0, self.syncs_pending - 1)
        self.nick_asked = b""        # the broker has answered the NICK, if any
        self.query_ends_due = 0      # ... and the query, if any
        if self.tutorial and not self.session.nick and not self.session.register_sent:
            self.tutorial_attempt += 1
            if self.tutorial_attempt > 3:
                self.tutorial_nick = "guest"
            self._tutorial_try_nick()
            return
        if not self.syncs_pending:
            self._process_input()

    def _on_serve(self, payload: bytes) -> None:
        """A server query sent back by the broker, its <target> (a nickname)
        found to be this server and taken out: answered here, as usual."""
        try:
            msg = protocol.parse_line(payload)
        except protocol.ProtocolError:
            return
        if self.session.registered and msg.command in commands.COMMANDS:
            commands.dispatch(self, msg, payload)

    def _on_drop(self, payload: bytes) -> None:
        reason = payload.decode("utf-8", "replace")
        self.close(reason)

    def _broker_lost(self, why: str) -> None:
        """Reconnect later; first take what the dead broker had written.

        A write to the dead link can fail before its last output was read:
        those lines (and UPDATEs) are the client's, as forkchat(7) says.
        """
        if self.link.sock is not None:
            self._take_frames(self.link.read_rest())
            self.selector.unregister(self.link.sock)
            self.link.close()
        if self.closing:
            return
        now = time.monotonic()
        if self.broker_lost_at and now - self.link_opened_at < STABLE_LINK_S:
            # Closed again just after a reconnect (a broker that refuses the
            # link, or dies as it starts): the same outage goes on, with its
            # back-off and its give-up.  Each loss restarted both, and the
            # worker reconnected every 20 ms, two log lines each, for ever.
            self._reconnect_later(now)
            return
        log.warning("conn %d: broker link lost (%s), reconnecting", self.session.cid, why)
        self.broker_lost_at = now
        self.reconnects = 0
        self.timers["reconnect"] = now + RECONNECT_DELAYS[0]

    def _try_reconnect(self) -> None:
        if self._connect_broker():
            if self.link_opened_at < self.broker_lost_at:     # the outage's first
                log.info("conn %d: reconnected to the broker", self.session.cid)
            self.link_opened_at = time.monotonic()
            self._process_input()
            return
        self._reconnect_later(time.monotonic())

    def _reconnect_later(self, now: float) -> None:
        """The next try of this outage, later each time; or give up."""
        if now - self.broker_lost_at > BROKER_GIVE_UP_S:
            self.close("Server error: chat service unavailable")
            return
        self.reconnects += 1
        delay = RECONNECT_DELAYS[min(self.reconnects, len(RECONNECT_DELAYS) - 1)]
        self.timers["reconnect"] = now + delay

    def _queue_frame(self, frame: bytes) -> None:
        self.link.queue(frame)
        if self.link.overfull():
            self.link.clear()
            self.close("Server error: chat service unavailable")

    def _flush_link(self, deadline: float | None = None) -> None:
        """Send queued frames; keep the selector's write interest in step."""
        try:
            self.link.flush(deadline)
        except link.LinkLost as error:
            self._broker_lost(str(error))
            return
        wants_write = bool(self.link.out)
        if deadline is None and self.link.sock is not None \
                and wants_write != self.link.write_watched:
            self.link.write_watched = wants_write
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if wants_write else 0)
            self.selector.modify(self.link.sock, want, self.on_link)

    # -- timers --------------------------------------------------------------

    def _schedule_ping(self) -> None:
        """ping_interval 0 turns pinging off; tutorial clients cannot answer
        a PING, so TCP keepalive alone watches them."""
        if self.cfg.limits.ping_interval > 0 and not self.tutorial:
            self.timers["ping"] = self.last_input + self.cfg.limits.ping_interval

    def _run_timers(self) -> None:
        for name in timers.pop_due(self.timers):
            if not self.done:
                _TIMERS[name](self)

    def _on_register_timeout(self) -> None:
        """The log tells a handshake that never finished (a client silent on a
        TLS port, one that stalled mid-handshake, a plain tutorial client
        waiting for NICK) from a registration that did not.

        A deadline passed long ago is this process's delay, not the
        client's (see LATE_TIMER_S): once, the client has
        registration_timeout again from now.  Stopped past the deadline,
        the worker dropped a client at once on resuming, even one whose
        NICK and USER waited, read in the same wake, for the broker.
        """
        now = time.monotonic()
        if not self.session.registered and not self.register_extended \
                and now - self.register_deadline > LATE_TIMER_S:
            self.register_extended = True
            self.register_deadline = now + self.cfg.limits.registration_timeout
            self.timers["register"] = self.register_deadline
            return
        if not self.session.registered:
            self.close("Registration timed out" + (HANDSHAKE_UNFINISHED if self.handshaking
                                                   else ""))

    def _on_ping_timer(self) -> None:
        limits = self.cfg.limits
        now = time.monotonic()
        idle = now - self.last_input
        if idle >= limits.ping_interval + limits.ping_timeout and not self.ping_sent:
            # Due long ago, with no PING sent: this process was stopped
            # (SIGSTOP, a paused VM) past both deadlines.  The client was
            # never asked; it is now, and has ping_timeout to answer.
            self.last_input, idle = now - limits.ping_interval, limits.ping_interval
        if idle >= limits.ping_interval + limits.ping_timeout:
            if not self._took_output(now) and not self._flood_holds_lines():
                self.close(f"Ping timeout: {int(idle)} seconds")
                return
            self.last_input, idle = now, 0.0     # heard from; its PING still waits
        elif idle >= limits.ping_interval and not self.ping_sent:
            self.ping_sent = True
            self.sendq += protocol.format_line("", "PING", self.cfg.server.name)
            self._took_output(now)               # what it takes from now on counts
        if self.ping_sent:
            self.timers["ping"] = self.last_input + limits.ping_interval + limits.ping_timeout
        else:
            self._schedule_ping()

    def _took_output(self, now: float) -> bool:
        """Whether the client took TAKING_RATE bytes a second of our output
        since the last look; each look starts the next span.

        A client that reads a reply of megabytes (LIST, WHO of a big room)
        over a slow link is silent: its lines wait until the reply has gone
        and our PING waits behind it.  Without this it was dropped after
        ping_interval plus ping_timeout, however steadily it read.  A
        client that takes nothing of a reply beyond sendq_bytes is dropped
        by the stall watch, one that takes a trickle here.  Nothing is
        timed as it is sent: the clock is read by this timer only.
        """
        unacked = _unacked_bytes(self.sock)
        taken = self.reply_taken
        if unacked is not None and self.unacked_seen is not None:
            taken += max(0, self.unacked_seen - unacked)
        span = now - self.taken_since
        self.reply_taken, self.unacked_seen, self.taken_since = 0, unacked, now
        return taken > 0 and taken >= TAKING_RATE * span

    def _flood_holds_lines(self) -> bool:
        """Whether whole lines of the client's wait on flood control alone.

        The wait is ours, not the client's silence: a script that sent a
        batch of lines and closed its end (nc -N) cannot answer a PING, and
        the lines still held were lost to 'Ping timeout' (with pings every
        60 s and 30 s to answer, a batch of 200 short lines).  The held
        lines are bounded by recvq_bytes, and run at the flood rate.
        """
        return b"\n" in self.recvq and not self._paused()

    def _on_flood_timer(self) -> None:
        self._process_input()



def tune_client_socket(sock: socket.socket) -> None:
    """Make the client's socket one the worker's loop can write as it does.

    The worker gathers what a wake-up brought and sends it in one call, so
    Nagle's algorithm (TCP_NODELAY off) has nothing left to gather: it only
    held a send back until the client acknowledged the one before, and a
    client that delays its acknowledgements (Linux: 40 ms) got every
    other batch that much later.  Clients come over TCP only (a Unix
    socket passed by systemd is refused at start); a Unix socket given
    here, a test's socket pair, has no TCP option to set.
    """
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CLIENT_SNDBUF_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if _over_tcp(sock):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _over_tcp(sock: socket.socket) -> bool:
    """Whether the client's socket has TCP's options (not a test's socket pair).

    Its family is asked of the kernel, as a number: socket.family makes
    an enum member of it, a lookup whose objects' pages (some 20) every
    worker wrote to, and so copied from its spawner."""
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) in _TCP_FAMILIES


_TCP_FAMILIES = (int(socket.AF_INET), int(socket.AF_INET6))


def _unacked_bytes(sock: socket.socket) -> int | None:
    """Bytes of ours in the kernel that the peer has not acknowledged yet
    (for a TLS socket, of its records); None where that cannot be learnt.
    They fall as the client reads what the kernel holds: how a client that
    takes our output shows it while we send nothing."""
    if UNACKED_IOCTL is None:
        return None
    answer = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), UNACKED_IOCTL, answer)
    except (OSError, ValueError):
        return None
    return answer[0]


def _may_answer(line: bytes) -> bool:
    """Whether an unusable line may draw an error reply: a NOTICE never may
    (RFC 2812 3.3.2), however it came to be unusable."""
    return protocol.command_word(line) != "NOTICE"

# What a line that cannot be parsed (not UTF-8, NUL) is answered with, by
# its command: a NOTICE by default; a Message returned is run instead.
_UNUSABLE: dict[str, Callable[[Worker, bytes, str], protocol.Message | None]] = {
    "NOTICE": Worker._drop_quietly,
    "QUIT": Worker._quit_anyway,
    "NICK": Worker._refuse_nick,
    "PART": Worker._part_anyway,
    "USER": Worker._user_anyway,
}

_FRAME_HANDLERS: dict[int, Callable[[Worker, bytes], None]] = {
    ipc.Kind.DELIVER: Worker._on_deliver,
    ipc.Kind.REPLY: Worker._on_deliver,      # a tutorial client's: small, rendered
    ipc.Kind.UPDATE: Worker._on_update,
    ipc.Kind.DROP: Worker._on_drop,
    ipc.Kind.SERVE: Worker._on_serve,
    ipc.Kind.SYNC: Worker._on_sync,
}

_TIMERS: dict[str, Callable[[Worker], None]] = {
    "register": Worker._on_register_timeout,
    "ping": Worker._on_ping_timer,
    "flood": Worker._on_flood_timer,
    "stall": Worker._on_stall_timer,
    "reconnect": Worker._try_reconnect,
}
