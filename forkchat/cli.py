"""forkchat-server's command line: options, config checks, exit codes.

Exit status: 0 after a clean stop, 1 when the server cannot start (a port
in use), 2 for a bad command line or configuration, 3 when the broker
keeps dying.  User-facing failures are one sentence on stderr, never a
traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import logging
import os
import sys
from typing import Callable

from forkchat import __version__, config, listeners, log as logsetup, passwords, privileges
from forkchat import systemd


EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130      # Ctrl+C at --hash-password's question, as a shell has it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forkchat-server",
        description="A process-per-client IRC chat server. With no arguments it serves "
                    "IRC on 127.0.0.1:6667 with built-in defaults.")
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
                        help="log verbosity (default: info)")
    parser.add_argument("--user", help="user to run as after binding, when started as root")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="directory for the room store (default /var/lib/forkchat)")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the configuration, print every error, and exit")
    parser.add_argument("--hash-password", action="store_true",
                        help="read a password from the terminal or stdin and print its "
                             "scrypt hash for the configuration")
    parser.add_argument("--version", action="version", version=f"forkchat-server {__version__}")
    return parser


def apply_flags(cfg: config.Config, args: argparse.Namespace) -> config.Config:
    """Command-line flags override the file.

    Raises:
        ValueError: a malformed HOST:PORT.
    """
    server = cfg.server
    if args.name:
        if not config.valid_server_name(args.name):
            raise ValueError(f"--name {args.name!r}: {config.BAD_NAME}")
        server = dataclasses.replace(server, name=args.name)
    if args.password is not None:
        server = dataclasses.replace(server, password=args.password)
    if args.user:
        server = dataclasses.replace(server, user=args.user)
    if args.state_dir:
        server = dataclasses.replace(server, state_dir=args.state_dir)
    cfg = dataclasses.replace(cfg, server=server)
    if args.log_level:
        cfg = dataclasses.replace(cfg, log=config.Log(level=args.log_level))
    return config.with_listeners(cfg, args.listen, args.tutorial_listen)


def loader(args: argparse.Namespace) -> Callable[[], config.Config]:
    """Loads the file (if any) and applies the flags; used again on SIGHUP."""
    def load() -> config.Config:
        cfg = config.load(args.config) if args.config else config.Config()
        return apply_flags(cfg, args)
    return load


def hash_password_command() -> int:
    """Ctrl+C or Ctrl+D at the question ends it with a line, not getpass's
    KeyboardInterrupt or EOFError traceback: Ctrl+D gives no password."""
    try:
        first = read_password()
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except EOFError:
        print(file=sys.stderr)
        first = ""
    if first is None:
        print("forkchat-server: the passwords do not match", file=sys.stderr)
        return EXIT_USAGE
    if not first:
        print("forkchat-server: empty password", file=sys.stderr)
        return EXIT_USAGE
    print(passwords.hash_password(first))
    return 0


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        for clash in listeners.clashes(cfg.listen):
            print(f"forkchat-server: warning: {clash} (the start fails on this, "
                  f"unless systemd passes the sockets)", file=sys.stderr)
        print(f"forkchat-server: configuration OK ({args.config or 'built-in defaults'})")
        return 0
    logsetup.setup("supervisor", cfg.log.level)
    private_files()
    # Everything the processes will run is imported now, while the files
    # are surely readable: after the switch to an unprivileged user an
    # interpreter installed in a private home could not load them.
    from forkchat import broker, supervisor, worker
    try:
        bound = open_listeners(cfg)
        become_unprivileged(cfg, args.config)
    except (listeners.BindError, privileges.PrivilegeError, ValueError) as error:
        print(f"forkchat-server: {error}", file=sys.stderr)
        return EXIT_FAILURE
    targets = supervisor.Targets(broker=broker.main, worker=worker.main)
    return supervisor.Supervisor(cfg, targets, load if args.config else None, bound).run()


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

    A passed socket takes its settings (protocol, TLS files) from the first
    [[listen]] entry of the protocol it is named after (FileDescriptorName=
    irc or tutorial), else from the entry at the same position, else it
    serves plain irc.  Its address is whatever systemd bound.

    Raises:
        BindError: a listener could not be bound.
        ValueError: the socket-activation environment is broken.
    """
    passed = systemd.listen_fds()
    if not passed:
        return listeners.bind_all(cfg.listen)
    return [listeners.adopt(fd, passed_spec(cfg, index, name))
            for index, (fd, name) in enumerate(passed)]


def passed_spec(cfg: config.Config, index: int, name: str) -> config.Listener:
    if name in config.PROTOCOLS:
        named = [spec for spec in cfg.listen if spec.protocol == name]
        return named[0] if named else config.Listener(protocol=name)
    if index < len(cfg.listen):
        return cfg.listen[index]
    return config.Listener()


def become_unprivileged(cfg: config.Config, config_path: str | None = None) -> None:
    """After binding, never serve clients as root by accident (see
    privileges.user_to_become); the state directory is made first.

    Raises:
        PrivilegeError: the user does not exist or the switch failed.
    """
    user = privileges.user_to_become(cfg.server.user, cfg.server.allow_root,
                                     under_systemd=systemd.under_systemd())
    group = cfg.server.group or None
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
