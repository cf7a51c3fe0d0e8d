"""Listening sockets: bind them, or adopt them from systemd.

Each bound listener is logged once as `listening on HOST:PORT (PROTO)`;
tests and people read that line to learn an ephemeral port.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import select
import socket
import ssl
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass

from forkchat import addresses, certdates, config

BACKLOG = 1024
# What a refused client already sent (irssi's CAP, NICK, USER) is read and
# thrown away, at most this much, so that the close is a FIN and no reset.
REFUSE_DRAIN_BYTES = 16384
log = logging.getLogger("forkchat.supervisor")


class BindError(Exception):
    """A listener could not be bound; the message is for the user."""


@dataclass
class Bound:
    sock: socket.socket
    spec: config.Listener
    tls: ssl.SSLContext | None = None
    adopted: bool = False      # passed by systemd: never closed or re-bound on reload
    # the dates of the chain `tls` serves, for the daily look at them: the
    # file may be renewed meanwhile, but not loaded until a reload
    chain: tuple[certdates.Dates, ...] = ()

    @property
    def port(self) -> int:
        """The port bound, which for port 0 is not the one in `spec`."""
        return self.sock.getsockname()[1]

    @property
    def label(self) -> str:
        host, port = self.sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        tls = " with TLS" if self.tls is not None else ""
        return f"{shown}:{port} ({self.spec.protocol}){tls}"


# A client's TCP half-close (FIN without close_notify) is an end of input,
# as on a plain port: OpenSSL 3 otherwise fails the session on it and sends
# a decode_error alert, so the replies to the lines before it (its QUIT's
# ERROR) were never written.  Lines are only taken whole, so a truncated
# stream loses nothing that a plain EOF would keep.  (OpenSSL 3 only.)
TCP_EOF_AS_CLOSE = getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)


# TLS 1.2's suites (1.3 has its own, all AEAD): forward-secret AEAD only.
# No DHE: Python loads no DH parameters, so a DHE suite could never be
# chosen; offering one only told the man page's reader that it could.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!MD5"


def tls_context(spec: config.Listener) -> ssl.SSLContext | None:
    """A server context for a TLS listener (TLS 1.2 or later), or None
    (load_tls, without the dates)."""
    return load_tls(spec)[0]


def load_tls(spec: config.Listener) -> tuple[ssl.SSLContext | None,
                                             tuple[certdates.Dates, ...]]:
    """A server context for a TLS listener, and the dates of the chain it
    serves (read once: warned of now, looked at again once a day), or
    (None, ()) for a plain one.

    The worker does the handshake, so a bad handshake costs one worker.

    Raises:
        BindError: the certificate or key cannot be loaded.
    """
    if not spec.tls_cert:
        return None, ()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= TCP_EOF_AS_CLOSE
    context.set_ciphers(TLS12_CIPHERS)
    for path in (spec.tls_cert, spec.tls_key):
        if _not_regular(path):
            raise BindError(f"cannot load TLS certificate {spec.tls_cert} / key "
                            f"{spec.tls_key}: {path} is {NOT_REGULAR}")
    try:
        context.load_cert_chain(spec.tls_cert, spec.tls_key, password=_no_passphrase)
    except (OSError, ssl.SSLError, _EncryptedKey) as error:
        reason = _tls_reason(error)
        if reason == WRONG_KEY and _certificates_in(spec.tls_cert) > 1:
            reason = WRONG_KEY_IN_CHAIN
        raise BindError(f"cannot load TLS certificate {spec.tls_cert} / key {spec.tls_key}: "
                        f"{reason}") from None
    chain = chain_dates(spec.tls_cert)
    warn_chain(spec.tls_cert, chain, time.time())
    return context, chain


# A certificate is about to expire when less than this is left of it, or
# less than a quarter of its lifetime if that is shorter: a short-lived one
# (Let's Encrypt's six-day certificates), renewed in time, would otherwise
# be warned of at every start and reload, and the warning learnt to be noise.
EXPIRY_WARNING_DAYS = 14
EXPIRY_WARNING_SHARE = 0.25


def chain_dates(path: str) -> tuple[certdates.Dates, ...]:
    """The dates of each certificate of a chain file; () for one whose
    certificates cannot be read (OpenSSL took it all the same)."""
    try:
        return tuple(certdates.read_chain(path))
    except (OSError, ValueError):
        return ()


def warn_out_of_date(path: str, now: float) -> None:
    """Warn of each certificate of the file's chain that is out of date at
    `now`, or about to expire (warn_chain)."""
    warn_chain(path, chain_dates(path), now)


def warn_chain(path: str, chain: Iterable[certdates.Dates], now: float) -> None:
    """Warn of each certificate of the chain that is out of date at `now`,
    or about to expire.

    OpenSSL serves an expired certificate, or an expired intermediate,
    without a word, and every verifying client then fails its handshake:
    the operator should hear it at start, at reload, from --check-config,
    and once a day while it is served, not from the users.
    """
    for position, cert in enumerate(chain):
        name = _named(path, position, cert.subject)
        if now > cert.not_after:
            log.warning("TLS certificate %s expired on %s: clients that check it will "
                        "refuse to connect", name, _utc(cert.not_after))
        elif now < cert.not_before:
            log.warning("TLS certificate %s is not valid before %s: clients that check it "
                        "will refuse to connect", name, _utc(cert.not_before))
        elif expires_soon(cert, now):
            log.warning("TLS certificate %s expires soon, on %s: renew it, then reload",
                        name, _utc(cert.not_after))


def expires_soon(cert: certdates.Dates, now: float) -> bool:
    lifetime = cert.not_after - cert.not_before
    warning = min(EXPIRY_WARNING_DAYS * 86400, lifetime * EXPIRY_WARNING_SHARE)
    return cert.not_after - now < warning


def chain_summary(chain: tuple[certdates.Dates, ...]) -> str:
    """What --check-config says of a chain that loaded: whom the server's
    certificate names, until when, and how many certificates follow it."""
    if not chain:
        return "its dates could not be read"
    first, more = chain[0], len(chain) - 1
    after = f", then {more} more certificate{'s' if more > 1 else ''}" if more else ""
    return f"{first.subject or 'no subject'}, valid until {_utc(first.not_after)}{after}"


def _named(path: str, position: int, subject: str) -> str:
    """The file, which certificate of it unless the first, and its subject."""
    where = f"{path}: chain certificate {position + 1}" if position else path
    return f"{where} ({subject})" if subject else where


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


class _EncryptedKey(Exception):
    """The key file asks for a passphrase, which a daemon has nobody to ask."""


def _no_passphrase() -> str:
    """Refuse a passphrase instead of OpenSSL's own prompt.

    Without a callback OpenSSL asks `Enter PEM pass phrase:` on the
    terminal: a start in a shell, or a SIGHUP reload, would hang there,
    and without a terminal the error read only "Invalid argument".
    """
    raise _EncryptedKey


ENCRYPTED_KEY = ("the private key is encrypted with a passphrase; give the server an "
                 "unencrypted copy (openssl pkey -in KEY -out NEWKEY)")


# OpenSSL's own words ("[SSL] PEM lib (_ssl.c:3905)") tell an operator little.
NOT_PEM = "not a PEM certificate chain and its PEM private key"
WRONG_KEY = "the key does not belong to the certificate"
# The key is matched with the first certificate of the file: a chain put
# together by hand with the intermediate first reads as the wrong key.
WRONG_KEY_IN_CHAIN = ("the key does not belong to the first certificate of the file (a chain "
                      "lists the server's own certificate first, then its intermediates)")
SSL_REASONS = {
    None: NOT_PEM,
    "PEM_LIB": NOT_PEM,
    "KEY_VALUES_MISMATCH": WRONG_KEY,
    # OpenSSL 3's word for a key of another type (an EC key for an RSA certificate).
    "NO_CERTIFICATE_ASSIGNED": WRONG_KEY,
}


def _tls_reason(error: Exception) -> str:
    """Why a certificate or key did not load, in words an operator can act on."""
    if isinstance(error, _EncryptedKey):
        return ENCRYPTED_KEY
    if isinstance(error, ssl.SSLError):
        text = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", error.strerror or str(error))
        return SSL_REASONS.get(error.reason, text)
    assert isinstance(error, OSError)
    return error.strerror or str(error)


NOT_REGULAR = "not a regular file"


def _not_regular(path: str) -> bool:
    """Whether the path names something other than a regular file (one
    that does not exist is left to OpenSSL to report).

    OpenSSL opens the files without O_NONBLOCK: a named pipe with no
    writer blocked the start, --check-config, and a SIGHUP reload held the
    supervisor's loop (no connection taken) until someone wrote to it.
    """
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _certificates_in(path: str) -> int:
    """How many PEM certificates the file holds (0 if it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_CHAIN_BYTES).count(b"-----BEGIN CERTIFICATE-----")
    except OSError:
        return 0


MAX_CHAIN_BYTES = certdates.MAX_CHAIN_BYTES


# 'Permission denied' alone reads as a file's mode: say what a low port needs.
# Where ports stop needing the privilege is the kernel's setting (for IPv4
# and IPv6 alike); 1024 is its default.
UNPRIVILEGED_PORT_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
PRIVILEGED_PORTS = 1024


def first_unprivileged_port() -> int:
    try:
        with open(UNPRIVILEGED_PORT_START, encoding="ascii") as setting:
            return int(setting.read())
    except (OSError, ValueError):
        return PRIVILEGED_PORTS


def _needed(spec: config.Listener, error: OSError) -> str:
    """The privilege a refused bind lacked, if that is why it was refused."""
    if error.errno != errno.EACCES or spec.port <= 0:
        return ""
    start = first_unprivileged_port()
    if spec.port >= start:
        return ""
    return (f" (a port below {start} needs root, or CAP_NET_BIND_SERVICE: see "
            f"PRIVILEGES in forkchat-server(8))")


def bind(spec: config.Listener) -> Bound:
    """Raises: BindError with a one-sentence reason."""
    family = socket.AF_INET6 if ":" in spec.address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and spec.address == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((spec.address, spec.port))
        sock.listen(BACKLOG)
    except OSError as error:
        sock.close()
        raise BindError(f"cannot listen on {_shown(spec)}: {error.strerror or error}"
                        f"{_needed(spec, error)}") from None
    sock.setblocking(False)
    try:
        context, chain = load_tls(spec)
        return Bound(sock, spec, context, chain=chain)
    except BindError:
        sock.close()
        raise


def adopt(fd: int, spec: config.Listener) -> Bound:
    """Wrap a listening descriptor passed by systemd socket activation."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    context, chain = load_tls(spec)
    return Bound(sock, spec, context, adopted=True, chain=chain)


# No spawner can take the connection now (one is being restarted, or the
# kernel would not pass the socket): the client may simply try again.
BUSY = "Server is busy, try again later"
SHUTTING_DOWN = "Server shutting down"       # what a worker says at a stop, too


def refuse(conn: socket.socket, peer: str, reason: str, encrypted: bool = False) -> None:
    """Tell a client we will not serve it, without a worker for it.

    On a TLS listener nothing is written: only a worker speaks TLS, and a
    plain-text line would reach the client as a broken handshake.
    """
    if not encrypted:
        try:
            conn.setblocking(False)
            conn.send(f"ERROR :Closing Link: {peer} ({reason})\r\n".encode())
        except OSError:
            pass
    _close_without_reset(conn)


def _close_without_reset(conn: socket.socket) -> None:
    """Close after a FIN, having read what the client sent already.

    A socket closed with unread input is reset, not closed: the client
    read 'Connection reset by peer' after the ERROR line, and a stack that
    drops its unread input on a reset (Windows) lost the line itself, so
    the refused user never learnt why.  Only what is there now is read,
    without waiting: the supervisor never blocks on a client.
    """
    try:
        conn.setblocking(False)
        conn.shutdown(socket.SHUT_WR)
        left = REFUSE_DRAIN_BYTES
        while left > 0:
            data = conn.recv(left)
            if not data:
                break
            left -= len(data)
    except OSError:
        pass
    conn.close()


# accept() failing so means that one connection is lost (accept(2): Linux
# passes a pending network error of the new connection on; EPERM: a firewall
# rule); the next one may be fine.  Any other failure (EMFILE, ENFILE,
# ENOBUFS, ENOMEM: no descriptor or memory for one more socket now) leaves
# the connection in the kernel's queue: see AcceptTrouble.
ACCEPT_PEER_ERRORS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM,
                                errno.ENETDOWN, errno.ENOPROTOOPT, errno.EHOSTDOWN,
                                errno.ENONET, errno.EHOSTUNREACH, errno.EOPNOTSUPP,
                                errno.ENETUNREACH})
ACCEPT_PAUSE_S = 0.5


class AcceptTrouble:
    """An accept() that fails until descriptors free up, said once.

    The connection it could not take stays queued, so the listener stays
    readable: a loop that went straight back to select() ran at 100 % CPU
    and logged the failure on every turn (hundreds of thousands of lines a
    second at the descriptor limit).  The owner stops watching the listener
    for ACCEPT_PAUSE_S after each failure; this logs the first failure,
    and the recovery, once.
    """

    def __init__(self, logger: logging.Logger, what: str, resumed: str) -> None:
        self.logger = logger
        self.what = what          # "accept", "accept on broker socket"
        self.resumed = resumed    # the line once it works again
        self.failing = False

    def failed(self, error: OSError) -> None:
        if not self.failing:
            self.failing = True
            self.logger.error("%s failed: %s; paused, retried every %.1f s", self.what,
                              error.strerror or error, ACCEPT_PAUSE_S)

    def accepted(self) -> None:
        if self.failing:
            self.failing = False
            self.logger.info("%s", self.resumed)


def nothing_queued(sock: socket.socket) -> bool:
    """Whether no connection waits on listening socket `sock`.

    accept() takes a descriptor before it looks at the queue: at the limit
    it fails with EMFILE when nothing waits too.  The link that took the
    last descriptor was followed by a 'failed' line at once, and a waiting
    link taken when a descriptor freed by 'accepting ... again' and a
    second 'failed', for a queue then empty.
    """
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


def announce(bound: Bound) -> None:
    log.info("listening on %s", bound.label)


def warn_refused(bound: Iterable[Bound], refused: Iterable[tuple[ssl.SSLContext, str]]) -> None:
    """warn_no_handshake for each listener of `bound` whose context the
    warm-up's handshake was refused through (warmup.warm_up's answer)."""
    listening = list(bound)
    for context, reason in refused:
        for each in listening:
            if each.tls is context:
                warn_no_handshake(each.label, each.spec.tls_cert, reason)


def warn_no_handshake(label: str, cert: str, reason: str) -> None:
    """The warm-up's handshake through the context of listener `label`
    was refused by the server's side: OpenSSL loaded the certificate, and
    no client can use it (a DSA key: TLS 1.2's ECDHE ciphers and TLS 1.3
    sign with RSA or EC keys only, so there is no cipher to share)."""
    log.warning("%s: no TLS handshake completes with its certificate %s (a test handshake "
                "failed: %s); its TLS clients will fail", label, cert, reason)


def clashes(specs: tuple[config.Listener, ...]) -> list[str]:
    """A line for each listener whose port an earlier one takes already.

    The second bind would fail with "Address already in use", which sent
    the operator looking for another program on the port; a reload merged
    two equal entries without a word.  (forkchat.toml cannot refuse them:
    under socket activation the entries' addresses and ports are not used.)
    """
    found = []
    for index, spec in enumerate(specs):
        earlier = next((i for i, other in enumerate(specs[:index]) if addresses.clash(
            (spec.address, spec.port), (other.address, other.port))), None)
        if earlier is not None:
            found.append(f"listen[{index}] ({_shown(spec)}) clashes with listen[{earlier}] "
                         f"({_shown(specs[earlier])}): {CLASH}")
    return found


CLASH = ("a port is listened on once per address, and 0.0.0.0 or :: take it on "
         "every address")


def _shown(spec: config.Listener) -> str:
    host = f"[{spec.address}]" if ":" in spec.address else spec.address
    return f"{host}:{spec.port}"


# listen = [] (a template's empty list) bound nothing and served nobody,
# without a word.  Under socket activation it has a use: the sockets
# systemd passes, each served by its name (irc or tutorial), else as plain
# IRC.  So forkchat.toml takes it, and the start without passed sockets,
# or a reload of a server that binds its own, refuses it.
EMPTY_LISTEN = (f"listen = [] names no listener: the server serves only the sockets systemd "
                f"passes, and without them it does not start (leave listen out for the "
                f"default, {config.Listener.address}:{config.Listener.port})")


class NoListener(Exception):
    """listen = [] and no socket passed by systemd: nothing to serve."""


def bind_all(specs: tuple[config.Listener, ...]) -> list[Bound]:
    """Bind every listener or none.

    Raises:
        NoListener: `specs` is empty (EMPTY_LISTEN).
        BindError: two listeners clash, or the first listener that failed;
            the others are closed.
    """
    if not specs:
        raise NoListener(EMPTY_LISTEN)
    if problems := clashes(specs):
        raise BindError(problems[0])
    done: list[Bound] = []
    try:
        for spec in specs:
            done.append(bind(spec))
    except BindError:
        for bound in done:
            bound.sock.close()
        raise
    return done
