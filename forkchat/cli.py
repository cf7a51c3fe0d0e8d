"""forkchat-server's command line: options, config checks, exit codes.

Exit status: 0 after a clean stop, 1 when the server cannot start (a port
in use) or a command's output cannot be written, 2 for a bad command line
or configuration, 3 when the broker keeps dying.  User-facing failures are
one sentence on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import getpass
import ipaddress
import logging
import os
import signal
import sys
from typing import Callable, Iterator

from forkchat import __version__, config, listeners, log as logsetup, passwords, privileges
from forkchat import addresses, stdio, systemd


EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130      # Ctrl+C in an answer (--hash-password...), as a shell has it


class HelpFormatter(argparse.HelpFormatter):
    """argparse's own, given the terminal's width.

    Left to find the width itself, argparse imports shutil, which loads
    zlib, bz2 and lzma with two of their C libraries: five shared objects and
    some 300 KiB of heap that the supervisor passed on to the spawner, whose
    every fork of a worker copied their mappings and page tables for
    nothing (argparse makes a formatter at each add_argument, so the
    server's start imported them even without --help).
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=terminal_columns() - 2)


def terminal_columns(fallback: int = 80) -> int:
    """The width shutil.get_terminal_size() gives: $COLUMNS, else standard
    output's terminal, else `fallback`."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or fallback


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forkchat-server", formatter_class=HelpFormatter, add_help=False,
        description="A process-per-client IRC chat server. With no arguments it serves "
                    "IRC on 127.0.0.1:6667 with built-in defaults.")
    # -h and --version are flags that main() answers with write_out, not
    # argparse's actions, which drop a write error: their text lost on a full
    # disk, and status 0 all the same.
    parser.add_argument("-h", "--help", action="store_true",
                        help="show this help message and exit")
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="read the TOML configuration FILE (see forkchat.toml(5))")
    parser.add_argument("-l", "--listen", metavar="HOST:PORT", action="append", default=[],
                        help="serve IRC on HOST:PORT (repeatable; port 0 picks a free port); "
                             "replaces the configured listeners")
    parser.add_argument("--tutorial-listen", metavar="HOST:PORT", action="append", default=[],
                        help="serve the tutorial chat-room protocol on HOST:PORT (repeatable)")
    parser.add_argument("--name", help="server name shown to clients")
    parser.add_argument("--password", help="connection password clients must send with PASS")
    parser.add_argument("--log-level", choices=config.LOG_LEVELS,
                        help=f"log verbosity (default: {config.Log.level})")
    parser.add_argument("--user", help="user to run as after binding, when started as root")
    parser.add_argument("--state-dir", metavar="DIR",
                        help=f"directory for the room store (default {config.Server.state_dir})")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the configuration, print every error, and exit")
    parser.add_argument("--hash-password", action="store_true",
                        help="read a password from the terminal or stdin and print its "
                             "scrypt hash for the configuration")
    parser.add_argument("--version", action="store_true",
                        help="show program's version number and exit")
    return parser


def apply_flags(cfg: config.Config, args: argparse.Namespace) -> config.Config:
    """Command-line flags override the file.

    Raises:
        ValueError: a malformed HOST:PORT.
    """
    server = cfg.server
    if args.name is not None:      # --name "" is refused as name = "" is, not ignored
        if (problem := config.name_problem(args.name)) is not None:
            raise ValueError(f"--name {args.name!r}: {problem}")
        server = dataclasses.replace(server, name=args.name)
    for key, problem in NOT_EMPTY.items():
        value = getattr(args, key)
        if value == "":
            raise ValueError(f"--{key.replace('_', '-')} '': {problem}")
        if value is not None:
            server = dataclasses.replace(server, **{key: value})
    if args.password and (problem := config.server_password_problem(args.password)):
        raise ValueError(f"--password: {problem}")     # not echoed: it is a secret
    cfg = dataclasses.replace(cfg, server=server)
    if args.log_level:
        cfg = dataclasses.replace(cfg, log=config.Log(level=args.log_level))
    return config.with_listeners(cfg, args.listen, args.tutorial_listen)


# Options that may not be given empty, and why: "" is most often a variable
# left unset in a unit's command line, and was ignored, so the file's user
# (or none: root switched to nobody) and state_dir served without a word.
# An empty --password removed the file's password: an unset variable opened
# the server to everyone.
NOT_EMPTY = {"user": "must name a user or user ID (leave the option out for the file's user)",
             "state_dir": config.EMPTY_STATE_DIR,
             "password": "would let every client in (to serve without a password, "
                         "remove it from the configuration file)"}


def loader(args: argparse.Namespace) -> Callable[[], config.Config]:
    """Loads the file (if any) and applies the flags; used again on SIGHUP."""
    def load() -> config.Config:
        if args.config == "":      # an unset variable: it served the built-in defaults
            raise ValueError("-c '': names no file (leave the option out for the built-in "
                             "defaults)")
        cfg = config.load(args.config) if args.config else config.Config()
        return apply_flags(cfg, args)
    return load


def hash_password_command() -> int:
    """Ctrl+D at the question ends it with a line, not getpass's EOFError
    traceback: it gives no password.  (Ctrl+C: see main.)"""
    try:
        first = read_password()
    except EOFError:
        print(file=sys.stderr)
        first = ""
    if first is None:
        print("forkchat-server: the passwords do not match", file=sys.stderr)
        return EXIT_USAGE
    if not first:
        print("forkchat-server: empty password", file=sys.stderr)
        return EXIT_USAGE
    return write_out(passwords.hash_password(first) + "\n")


def write_out(text: str) -> int:
    return stdio.write_out("forkchat-server", text)


def read_password() -> str | None:
    """Asked twice without echo on a terminal (None: the answers differ),
    else the first line of standard input.

    Raises:
        KeyboardInterrupt, EOFError: Ctrl+C or Ctrl+D at the question.
    """
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    return first if first == getpass.getpass("Again: ") else None


def open_standard_descriptors() -> None:
    """Put the null device on whichever of descriptors 0, 1 and 2 the
    server was started without (`forkchat-server 2>&-`).

    Left closed, the first socket the server made took its number: log
    lines went to a listening socket (or any other), and every child
    inherited that socket as its standard error.
    """
    streams = (("stdin", "r"), ("stdout", "w"), ("stderr", "w"))
    for fd, (name, mode) in enumerate(streams):     # in order: an open takes the lowest free
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)
            if getattr(sys, name) is None:      # (Python found it closed too)
                setattr(sys, name, open(fd, mode, closefd=False))


def main(argv: list[str] | None = None) -> int:
    """forkchat-server: serve, or answer (--help, --version, --hash-password,
    --check-config) and exit.

    Ctrl+C ends an answer with an empty line and status 130, as a shell
    has it, wherever it comes: at --hash-password's question, while it
    hashes, or held from the start (__main__) until the release that
    answers take, where it raised KeyboardInterrupt with a traceback.  A
    start holds it until the supervisor's handler (SIGNAL_ACTIONS) takes
    it as a stop.
    """
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str] | None) -> int:
    open_standard_descriptors()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.help or args.version or args.hash_password or args.check_config:
        release_signals()       # (held by __main__ for a start: these only answer)
    if args.help:
        return write_out(parser.format_help())
    if args.version:
        return write_out(f"forkchat-server {__version__}\n")
    if args.hash_password:
        return hash_password_command()
    load = loader(args)
    try:
        cfg = load()
    except config.ConfigInvalid as error:
        for problem in error.errors:
            print(f"forkchat-server: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as error:
        print(f"forkchat-server: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.check_config:
        for warning in relative_paths(cfg, state_dir_given=bool(args.state_dir)):
            print(f"forkchat-server: warning: {warning}", file=sys.stderr)
        return check_config(cfg, args.config)
    hold_signals()
    logsetup.setup("supervisor", cfg.log.level)
    private_files()
    # Everything the processes will run is imported now, while the files
    # are surely readable: after the switch to an unprivileged user an
    # interpreter installed in a private home could not load them.
    from forkchat import broker, supervisor, warmup, worker
    try:
        bound = open_listeners(cfg)
        become_unprivileged(cfg, args.config)
    except listeners.NoListener as error:       # (the file's value: a restart cures nothing)
        print(f"forkchat-server: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (listeners.BindError, privileges.PrivilegeError, ValueError) as error:
        print(f"forkchat-server: {error}", file=sys.stderr)
        return EXIT_FAILURE
    # in the supervisor, so that workers share what it writes
    listeners.warn_refused(bound, warmup.warm_up(
        tls=[each.tls for each in bound if each.tls is not None]))
    targets = supervisor.Targets(broker=broker.main, worker=worker.main,
                                 warm_tls=warmup.warm_reloaded)
    try:
        server = supervisor.Supervisor(cfg, targets, load if args.config else None, bound)
    except OSError as error:        # (a descriptor limit of a few: EMFILE)
        print(f"forkchat-server: cannot start: {error.strerror or error}", file=sys.stderr)
        return EXIT_FAILURE
    return server.run()


# The signals the supervisor acts on (supervisor.SIGNAL_ACTIONS), held from
# here (started as forkchat-server or `python -m forkchat`, from before this
# module's imports: __main__) until it has its handlers: in between (the
# imports of the roles, the binds, the warm-up, some 0.1 s) Ctrl+C printed a
# KeyboardInterrupt traceback, and SIGTERM, SIGHUP or SIGUSR1 ended the
# server by their default action.  Held, they are acted on as soon as the
# loop runs.
HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)


def hold_signals() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)


def release_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)


def check_config(cfg: config.Config, path: str | None) -> int:
    """--check-config once the file has loaded: what the start would do
    before serving, short of binding and switching user.

    Each TLS listener's certificate and key are loaded by the start's own
    listeners.load_tls: a key that does not match, an unreadable file or
    a chain in the wrong order passed this check and then stopped the start.
    """
    for clash in listeners.clashes(cfg.listen):
        print(f"forkchat-server: warning: {clash} (the start fails on this, "
              f"unless systemd passes the sockets)", file=sys.stderr)
    if not cfg.listen:
        print(f"forkchat-server: warning: {listeners.EMPTY_LISTEN}", file=sys.stderr)
    failures, loaded = [], []
    with _warnings_to_stderr():
        for index, spec in enumerate(cfg.listen):
            if failure := _check_tls(index, spec, loaded):
                failures.append(failure)
    for failure in failures:
        print(f"forkchat-server: {failure}", file=sys.stderr)
    if failures:
        write_out("".join(loaded))
        return EXIT_USAGE
    loaded.append(f"forkchat-server: configuration OK ({path or 'built-in defaults'})\n")
    return write_out("".join(loaded))


def relative_paths(cfg: config.Config, state_dir_given: bool = False) -> list[str]:
    """A warning for each path of the file that is relative: the server
    opens it from the directory it was started in, not the file's.

    `motd_file = "motd.txt"` next to /etc/forkchat/forkchat.toml passed a
    check run in /etc/forkchat, and the service, started in /, then failed
    on it; a relative state_dir put the room store wherever the server
    was started ("" is an error of the file).  A --state-dir given on the command line is meant
    from there, and is not warned of.
    """
    optional = [("server.motd_file", cfg.server.motd_file)]      # "": none
    for index, spec in enumerate(cfg.listen):
        optional += [(f"listen[{index}].tls_cert", spec.tls_cert),
                     (f"listen[{index}].tls_key", spec.tls_key)]
    relative = [(key, path) for key, path in optional if path and not os.path.isabs(path)]
    if not state_dir_given and not os.path.isabs(cfg.server.state_dir):
        relative.append(("server.state_dir", cfg.server.state_dir))
    return [f"{key} = {path!r} is relative: the server opens it from the directory it is "
            f"started in ({os.getcwd()} now; / under systemd), not from the configuration "
            f"file's" for key, path in relative]


def _check_tls(index: int, spec: config.Listener, loaded: list[str]) -> str | None:
    """Load one listener's TLS files as the start does, and run its test
    handshake; the start's error text if they do not load, else None
    after adding a line naming what loaded to `loaded`."""
    if not spec.tls_cert:
        return None
    try:
        context, chain = listeners.load_tls(spec)
    except listeners.BindError as error:
        return str(error)
    loaded.append(f"forkchat-server: listen[{index}]: TLS certificate {spec.tls_cert} and "
                  f"key {spec.tls_key} load ({listeners.chain_summary(chain)})\n")
    # The start's own test handshake (its warm-up): a pair that loads and
    # that no client can use (DSA) is a warning, as at start.
    from forkchat import warmup     # (a worker's code: only this answer runs it)
    for _context, reason in warmup.warm_up(rounds=0, tls=[context]):
        listeners.warn_no_handshake(f"listen[{index}]", spec.tls_cert, reason)
    return None


@contextlib.contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """The warnings the start logs (an expired certificate), said as this
    command's own `forkchat-server: warning:` lines."""
    logger = logging.getLogger("forkchat.supervisor")
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("forkchat-server: warning: %(message)s"))
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def private_files() -> None:
    """Keep group and others out of every file the server makes.

    The room store holds room keys and the names and topics of secret
    rooms; with a shell's umask of 022 it was made readable by every local
    user whenever state_dir already existed with mode 0755 (as systemd's
    StateDirectory= or `install -d` makes it).  The shipped unit's UMask=0077
    did this only under that unit.  A stricter umask is kept as it is.
    """
    os.umask(os.umask(0o077) | 0o077)


def open_listeners(cfg: config.Config) -> list[listeners.Bound]:
    """Adopt the sockets systemd passed, or bind the configured ones.

    Each passed socket takes its settings (protocol, TLS files) from the
    [[listen]] entry it is matched with by passed_specs.  Its address is
    whatever systemd bound.

    Raises:
        NoListener: listen = [] and no socket was passed.
        BindError: a listener could not be bound.
        ValueError: the socket-activation environment is broken.
    """
    passed = systemd.listen_fds()
    if not passed:
        return listeners.bind_all(cfg.listen)
    specs = passed_specs(cfg, [(name, systemd.bound_address(fd)) for fd, name in passed])
    return [listeners.adopt(fd, spec) for (fd, _), spec in zip(passed, specs)]


def passed_specs(cfg: config.Config,
                 sockets: list[tuple[str, tuple[str, int]]]) -> list[config.Listener]:
    """The [[listen]] entry for each passed socket, given as (name, address).

    systemd names every ListenStream= of one unit alike (FileDescriptorName=),
    so a unit with ports 6667 and 6697 passes two sockets named "irc": by
    name alone both took the first irc entry, and the TLS port spoke plain
    text or the plain port TLS.  So a socket is matched by its address first
    (entry_for_address), among the entries of its protocol when it is named
    irc or tutorial; one that matches none falls back to passed_spec, among
    the entries no other socket matched by address.
    """
    found = [entry_for_address(cfg.listen, name, address) for name, address in sockets]
    taken = frozenset(index for index in found if index is not None)
    chosen = [cfg.listen[index] if index is not None
              else passed_spec(cfg, position, name, taken, address[1])
              for position, ((name, address), index) in enumerate(zip(sockets, found))]
    ports = {address[1] for _name, address in sockets}
    for index, spec in enumerate(cfg.listen):
        if spec.tls_cert and spec.port and spec.port not in ports \
                and not any(got is spec for got in chosen):
            logging.getLogger("forkchat.supervisor").warning(
                "listen[%d] (port %d, with TLS) serves none of the sockets systemd passed: "
                "add ListenStream=%d to the socket unit, then stop the service and restart "
                "the socket unit",
                index, spec.port, spec.port)
    return chosen


def passed_spec(cfg: config.Config, index: int, name: str,
                taken: frozenset[int] = frozenset(), port: int = 0) -> config.Listener:
    """The entry of a passed socket that no entry matched by address: the
    first of the protocol it is named after, else the one at its position,
    else plain irc.  Entries in `taken` belong to other sockets, and one
    with TLS serves only its own port: a unit that does not pass the TLS
    port yet (its ListenStream= added, the socket unit not restarted) had
    the plain port speak TLS, and every plain client fail."""
    def free(position: int, spec: config.Listener) -> bool:
        return position not in taken and (not spec.tls_cert or spec.port in (0, port))

    if name in config.PROTOCOLS:
        named = [spec for position, spec in enumerate(cfg.listen)
                 if spec.protocol == name and free(position, spec)]
        return named[0] if named else config.Listener(protocol=name)
    if index < len(cfg.listen) and free(index, cfg.listen[index]):
        return cfg.listen[index]
    return config.Listener()


def entry_for_address(specs: tuple[config.Listener, ...], name: str,
                      address: tuple[str, int]) -> int | None:
    """The index of the entry a socket bound at `address` serves, or None.

    An entry matches with its port, and with an address that is the
    socket's, else one that overlaps it: either is a wildcard (systemd's
    ListenStream=6667 binds "::"; an entry's 127.0.0.1, the default, is
    then served by it), or the entry's is a host name, which is not looked
    up.  Several entries of the closest kind (one port on two addresses,
    systemd's socket on every address): the first in the file is taken, and
    the log says so when they differ in protocol or TLS files.
    """
    host, port = address
    candidates = [index for index, spec in enumerate(specs) if spec.port == port
                  and (name not in config.PROTOCOLS or spec.protocol == name)]
    exact = [i for i in candidates if addresses.same(_wildcard(specs[i].address), host)]
    matched = exact or [i for i in candidates if _overlaps(_wildcard(specs[i].address), host)]
    if not matched:
        return None
    if len({(specs[i].protocol, specs[i].tls_cert, specs[i].tls_key) for i in matched}) > 1:
        _warn_ambiguous(specs, matched, host, port)
    return matched[0]


def _warn_ambiguous(specs: tuple[config.Listener, ...], matched: list[int],
                    host: str, port: int) -> None:
    """Said at start: the entries the socket could be differ, and one serves."""
    entries = " and ".join(f"listen[{index}] ({_hostport(specs[index].address, port)})"
                           for index in matched)
    logging.getLogger("forkchat.supervisor").warning(
        "the socket systemd passed on %s matches %s, which differ: it is served as "
        "listen[%d] (name each address in the .socket unit, ListenStream=ADDRESS:PORT, "
        "to tell them apart)", _hostport(host, port), entries, matched[0])


def _wildcard(address: str) -> str:
    """Python's "" for every IPv4 address, spelt as getsockname() has it."""
    return address or "0.0.0.0"


def _overlaps(entry: str, host: str) -> bool:
    """Whether a socket bound at `host` may be the one an entry at `entry` meant."""
    if addresses.covers(entry, host) or addresses.covers(host, entry):
        return True
    try:
        ipaddress.ip_address(entry)
    except ValueError:
        return True          # a host name: its port must do
    return False


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def become_unprivileged(cfg: config.Config, config_path: str | None = None) -> None:
    """After binding, never serve clients as root by accident (see
    privileges.user_to_become); the state directory is made first.

    Raises:
        PrivilegeError: the user does not exist or the switch failed.
    """
    user = privileges.user_to_become(cfg.server.user, cfg.server.allow_root,
                                     under_systemd=systemd.under_systemd())
    group = cfg.server.group or None
    if user is None and group is not None:
        # (allow_root, a start by another user than root, or systemd's User=)
        logging.getLogger("forkchat.supervisor").warning(
            "ignoring group = %r: there is no user to switch to", group)
    owner = None
    if user is not None and os.geteuid() == privileges.ROOT_UID:
        owner = privileges.resolve(user, group)
    prepare_state_dir(cfg.server.state_dir, owner)
    if user is not None:
        privileges.drop_privileges(user, group)
        warn_unreadable(files_read_on_reload(cfg, config_path), user)


def files_read_on_reload(cfg: config.Config, config_path: str | None) -> list[str]:
    """The configuration file and what it names that a SIGHUP reads again."""
    paths = [config_path or "", cfg.server.motd_file]
    for spec in cfg.listen:
        paths += [spec.tls_cert, spec.tls_key]
    return list(dict.fromkeys(path for path in paths if path))


def warn_unreadable(paths: list[str], user: str) -> None:
    """Said at start, where a root-only file would otherwise fail only the
    first reload after the switch, long after whoever started us looked."""
    log = logging.getLogger("forkchat.supervisor")
    for path in paths:
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            log.warning("%s is not readable as %s (%s): a reload will fail",
                        path, user, error.strerror or error)


def prepare_state_dir(path: str, owner: privileges.Identity | None) -> None:
    """Make the state directory if it is missing, for `owner` when root is
    about to become that user (None: for ourselves).

    Only a directory made here is handed over: an existing one (say /var/lib
    by mistake) keeps its owner, and a warning says if it is not theirs.
    Serving as ourselves, a directory we may not make is the broker's to
    report (the room store is unavailable), once.
    """
    log = logging.getLogger("forkchat.supervisor")
    if os.path.islink(path) and not os.path.exists(path):
        # a link to a disk not mounted yet, say: makedirs would say only
        # "File exists", and the broker "No such file or directory"
        log.warning("state_dir %s is a symbolic link to %s, which does not exist: "
                    "rooms will not persist", path, os.readlink(path))
        return
    if os.path.exists(path) and not os.path.isdir(path):
        # makedirs would say only "File exists", and the broker "unable to open"
        log.warning("state_dir %s is not a directory: rooms will not persist", path)
        return
    try:
        if not os.path.isdir(path):
            _make_state_dir(path)
            if owner is not None:
                os.chown(path, owner.uid, owner.gid)
        elif owner is not None and os.stat(path).st_uid != owner.uid:
            log.warning("state_dir %s is not owned by %s: rooms may not persist",
                        path, owner.user)
    except OSError as error:
        if owner is not None:
            log.warning("cannot prepare state_dir %s: %s", path, error.strerror or error)


def _make_state_dir(path: str) -> None:
    """The directory 0700, any parents made for it 0755.

    Under the server's umask (077) makedirs made the parents 0700 too, and
    only the last directory is handed to the user root switches to: that
    user could not reach it (`--state-dir /srv/new/forkchat` as root gave
    "room store ... unavailable")."""
    missing = []
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    os.makedirs(path, mode=0o700)
    for made in missing:
        os.chmod(made, 0o755)


if __name__ == "__main__":
    raise SystemExit(main())
