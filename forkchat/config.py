"""The configuration: frozen dataclasses loaded from one TOML file.

Defaults live once, as field defaults.  `load()` reads and validates a
file and reports every problem at once, each with its line, so that
`--check-config` and SIGHUP can say everything that is wrong.  Command-line
flags are applied afterwards with `dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from typing import Any

from forkchat import addresses, ipc, passwords, protocol

PROTOCOLS = ("irc", "tutorial")
LOG_LEVELS = ("debug", "info", "warning", "error")
# The longest time limit: one day.  A longer wait before a PING or for
# registration is "never" in practice (ping_interval 0 is the way to say so),
# and a day keeps every deadline far below what a poll timeout can hold
# (epoll takes an int of milliseconds: about 24.8 days).
MAX_SECONDS = 86400.0
SECONDS_LIMITS = ("registration_timeout", "ping_interval", "ping_timeout", "nick_change_window")
ZERO_ALLOWED = ("ping_interval",)      # the only limit where 0 means something: off
# Limits with a floor above 1, and why: a recvq that cannot hold one whole
# line cuts off any client whose line arrives in two pieces ("Excess Flood").
# A broker buffer that cannot hold one whole line in its frame drops every
# client that gets the longest line, though it reads.
AT_LEAST = {"recvq_bytes": (protocol.MAX_LINE_BYTES, "one whole line"),
            "broker_buffer_bytes": (protocol.MAX_LINE_BYTES + ipc.HEADER.size,
                                    "one whole line in its frame to the worker")}
# Lengths with a ceiling, and why: 005 announces them, and a client that
# believes NICKLEN=100000 builds lines no 512-byte limit carries.
AT_MOST = {
    "nicklen": (64, "a nick change carries two nicks and a prefix in one line"),
    "roomlen": (200, "RFC 1459's own bound on room names"),
    "topiclen": (480, "a longer topic never fits in a 512-byte line"),
    "ipv4_prefix": (32, "the length of an IPv4 address"),
    "ipv6_prefix": (128, "the length of an IPv6 address"),
}
# The MOTD is sent to every client as it registers, and a reload hands the
# whole configuration to the broker in one frame (ipc.MAX_FRAME_BYTES, 1 MiB):
# a bigger one was dropped ("the broker is not reading its control socket")
# after which the reload said "configuration reloaded" and changed nothing
# in the broker.  256 KiB is some 3000 lines of 80 characters, and a
# quarter of the frame: the rest of the configuration has room to spare.
MAX_MOTD_BYTES = 262144
# A configuration is a few kilobytes (the MOTD above is its biggest part):
# -c naming a big file by mistake had it read whole into the supervisor's
# memory, at the start and in its loop at every SIGHUP (a 50 MB string
# takes tomllib 4 s, no connection accepted meanwhile), and a file too big
# for memory ended the server.  4 MiB is sixteen times the biggest MOTD, and
# leaves an MOTD written inline past its bound to be named as such.
MAX_CONFIG_BYTES = 4194304
TOO_BIG_CONFIG = (f"bigger than {MAX_CONFIG_BYTES} bytes, the most a configuration file may "
                  f"be: is it the right file?")
# TOML's integers are 64-bit, but tomllib takes any: max_rooms = 10**19
# passed, then every broker crashed in SQLite ("Python int too large to
# convert to SQLite INTEGER") and the server halted after its restarts.
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
PAST_64_BITS = "must fit in 64 bits, as TOML's integers do"
# tomllib refuses it as "Invalid statement (at line 1, column 1)"
BOM = ("starts with a byte order mark (U+FEFF), which TOML does not allow; save it as "
       "UTF-8 without one")
# The man page's example holds "scrypt$16384$8$1$...$...": say how to fill it in.
BAD_HASH = "malformed scrypt hash (make one with forkchat-server --hash-password)"


@dataclass(frozen=True)
class Listener:
    address: str = "127.0.0.1"
    port: int = 6667
    protocol: str = "irc"
    tls_cert: str = ""
    tls_key: str = ""


@dataclass(frozen=True)
class Server:
    name: str = "forkchat.local"
    network: str = "forkchat"
    motd: str = "Welcome to forkchat!"
    motd_file: str = ""
    password: str = ""
    default_room: str = "#lobby"
    state_dir: str = "/var/lib/forkchat"
    user: str = ""
    group: str = ""
    allow_root: bool = False
    memory_merge: bool = False
    admin_name: str = ""
    admin_email: str = ""


@dataclass(frozen=True)
class Limits:
    max_clients: int = 5000
    max_clients_per_ip: int = 50
    ipv4_prefix: int = 32
    ipv6_prefix: int = 64
    connect_burst: int = 100
    connect_rate: float = 20.0
    sendq_bytes: int = 262144
    recvq_bytes: int = 8192
    broker_buffer_bytes: int = 1048576
    flood_burst: int = 10
    flood_rate: float = 2.0
    nick_changes: int = 5
    nick_change_window: float = 20.0
    registration_timeout: float = 30.0
    ping_interval: float = 120.0
    ping_timeout: float = 60.0
    nicklen: int = 30
    roomlen: int = 50
    topiclen: int = 390
    rooms_per_client: int = 50
    members_per_room: int = 5000
    bans_per_room: int = 100
    max_rooms: int = 10000


@dataclass(frozen=True)
class Operator:
    name: str
    password: str


@dataclass(frozen=True)
class Log:
    level: str = "info"


@dataclass(frozen=True)
class Config:
    server: Server = field(default_factory=Server)
    listen: tuple[Listener, ...] = (Listener(),)
    limits: Limits = field(default_factory=Limits)
    operators: tuple[Operator, ...] = ()
    log: Log = field(default_factory=Log)
    path: str = ""

    def motd_lines(self) -> tuple[str, ...]:
        """The MOTD (motd_file's text is read into server.motd at load)."""
        return tuple(self.server.motd.splitlines())


@dataclass(frozen=True)
class ConfigError:
    path: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.key}: {self.message}"


class ConfigInvalid(Exception):
    """Raised by load(); `errors` lists every problem found."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("\n".join(str(error) for error in errors))
        self.errors = errors


_TABLES = {"server": Server, "limits": Limits, "log": Log}
_ARRAYS = {"listen": Listener, "operators": Operator}


def load(path: str) -> Config:
    """Read and validate a TOML file.

    Raises:
        ConfigInvalid: the file is unreadable, not TOML, or has bad values.
    """
    try:
        data = _read_regular(path, MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigInvalid([ConfigError(path, 0, "file",
                                         f"cannot read: {error.strerror or error}")]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigInvalid([ConfigError(path, 0, "file", TOO_BIG_CONFIG)])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigInvalid([ConfigError(
            path, line, "file", f"not UTF-8 text (byte 0x{data[error.start]:02x}); TOML "
                                f"files are UTF-8")]) from None
    if text.startswith("\ufeff"):
        raise ConfigInvalid([ConfigError(path, 1, "file", BOM)])
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        line = int(m.group(1)) if (m := re.search(r"line (\d+)", str(error))) else 0
        raise ConfigInvalid([ConfigError(path, line, "syntax", str(error))]) from None
    errors: list[ConfigError] = []
    where = _Locator(path, text)
    config = build(raw, where, errors)
    try:
        # read even when other keys are wrong, so that one --check-config
        # names a missing motd_file along with them, not on the next run
        config = _load_motd(config, where)
    except ConfigInvalid as invalid:
        errors.extend(invalid.errors)
    if errors:
        # in the file's order, as a reader goes through it (found table by table)
        raise ConfigInvalid(sorted(errors, key=lambda error: error.line))
    return dataclasses.replace(config, path=path)


def _load_motd(config: Config, where: _Locator) -> Config:
    """Read motd_file into server.motd, so the MOTD travels with the config.

    Raises:
        ConfigInvalid: the file cannot be read.
    """
    if not config.server.motd_file:
        return config
    path = config.server.motd_file
    try:
        data = _read_regular(path, MAX_MOTD_BYTES + 1)
    except OSError as error:
        raise ConfigInvalid([where.error(
            "server", "motd_file", f"cannot read {path}: {error.strerror or error}")]) from None
    if len(data) > MAX_MOTD_BYTES:
        raise ConfigInvalid([where.error("server", "motd_file", f"{path}: {TOO_LONG_MOTD}")])
    motd = data.decode("utf-8", errors="replace")
    return dataclasses.replace(config, server=dataclasses.replace(config.server, motd=motd))


TOO_LONG_MOTD = f"the message of the day must be at most {MAX_MOTD_BYTES} bytes"


def _read_regular(path: str, limit: int = -1) -> bytes:
    """At most `limit` bytes of a regular file (all of it by default).

    The supervisor reads the configuration and MOTD files at every reload,
    in its one loop: a named pipe with no writer would block it there (no
    connection taken until someone wrote to the pipe), and a device has no
    end.

    Raises:
        OSError: it cannot be opened, or is not a regular file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return handle.read(limit)


class _Locator:
    """Finds the line of a key, for error messages (tomllib gives none)."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, table: str, key: str, index: int = 0) -> int:
        header = re.compile(r"^\s*\[\[?\s*" + re.escape(table) + r"\s*\]\]?\s*(#.*)?$")
        key_re = re.compile(r"^\s*" + re.escape(key) + r"\s*[=.]")
        seen = -1
        in_table = table == ""
        for number, line in enumerate(self.lines, 1):
            if line.lstrip().startswith("["):
                in_table = bool(header.match(line))
                if in_table:
                    seen += 1
                    if not key and seen == index:
                        return number
                continue
            if in_table and seen == index and key and key_re.match(line):
                return number
        return 0

    def root_line(self, key: str) -> int:
        """The line of a top-level `key = ...` (before any [table] header),
        where an inline array or table is written; else the first header of
        that name ([[server]] for a table, say)."""
        key_re = re.compile(r"^\s*" + re.escape(key) + r"\s*[=.]")    # key = or key.sub =
        for number, line in enumerate(self.lines, 1):
            if line.lstrip().startswith("["):
                break
            if key_re.match(line):
                return number
        return self.line_of(key, "") or self._subtable_line(key)

    def _subtable_line(self, table: str) -> int:
        """The first [table], [table.sub] or [[table.sub]] header: the line
        of a table that may have no header of its own."""
        header = re.compile(r"^\s*\[\[?\s*" + re.escape(table) + r"\s*[.\]]")
        return next((number for number, line in enumerate(self.lines, 1)
                     if header.match(line)), 0)

    def root_error(self, key: str, shown: str, message: str) -> ConfigError:
        return ConfigError(self.path, self.root_line(key), shown, message)

    def error(self, table: str, key: str, message: str, index: int = 0) -> ConfigError:
        """An error about table.key, on the key's line; a key left out is
        placed on its table's header, and a table written inline (`operators
        = [{...}]`), which has no header, on its own line."""
        shown = f"{table}[{index}].{key}" if table in _ARRAYS else f"{table}.{key}"
        line = (self.line_of(table, key, index) or self._subtable_line(f"{table}.{key}")
                or self.line_of(table, "", index) or self.root_line(table))
        return ConfigError(self.path, line, shown, message)


def build(raw: dict[str, Any], where: _Locator, errors: list[ConfigError]) -> Config:
    """Turn parsed TOML into a Config, appending every problem to `errors`."""
    for name, value in raw.items():
        if name not in _TABLES and name not in _ARRAYS:
            errors.append(where.root_error(name, name, _unknown(name, value)))
    values: dict[str, Any] = {}
    for name, cls in _TABLES.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            errors.append(where.root_error(name, name, "must be a table"))
            continue
        values[name] = _build_one(cls, table, name, 0, where, errors)
    for name, cls in _ARRAYS.items():
        items = raw.get(name)
        if items is None:
            continue
        if not isinstance(items, list):
            errors.append(where.root_error(name, name,
                                           f"must be an array of tables ([[{name}]])"))
            continue
        values[name] = tuple(_build_entry(cls, item, name, index, where, errors)
                             for index, item in enumerate(items))
    config = Config(**{k: v for k, v in values.items() if v is not None})
    errors.extend(_check_values(config, where))
    return config


def _build_entry(cls: type, item: Any, name: str, index: int,
                 where: _Locator, errors: list[ConfigError]) -> Any:
    """One entry of an array of tables.  An inline array may hold anything
    (`listen = [6667]`): an entry that is not a table is an error like any
    other, not a crash, so --check-config and a reload can report it."""
    if not isinstance(item, dict):
        errors.append(where.root_error(name, f"{name}[{index}]", "must be a table"))
        return None
    return _build_one(cls, item, name, index, where, errors)


def _build_one(cls: type, table: dict[str, Any], name: str, index: int,
               where: _Locator, errors: list[ConfigError]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            errors.append(where.error(name, key, _unknown(key, value, name), index))
            continue
        expected = _field_type(cls, key)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            errors.append(where.error(
                name, key, f"must be {TOML_TYPES[expected]}, not {_toml_type(value)}", index))
            continue
        if isinstance(value, float) and not math.isfinite(value):
            errors.append(where.error(name, key, "must be a finite number", index))
            continue
        if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            errors.append(where.error(name, key, PAST_64_BITS, index))
            continue
        kwargs[key] = value
    missing = [f for f, spec in fields.items()
               if spec.default is dataclasses.MISSING and f not in kwargs]
    if missing:
        errors.append(where.error(name, missing[0], "is required", index))
        return None
    return cls(**kwargs)


def _unknown(key: str, value: Any, table: str = "") -> str:
    """Why `key` is refused, and where it belongs when another table has it:
    a key written above every header, or appended at the end of the file
    under the last one, is the usual slip."""
    what = "unknown table" if isinstance(value, dict) and not table else "unknown key"
    if not table and what == "unknown key":
        what = "unknown key outside any table"
    homes = [_HEADERS[other] for other, cls in {**_TABLES, **_ARRAYS}.items()
             if other != table and key in {f.name for f in dataclasses.fields(cls)}]
    return f"{what} (a key of {' or '.join(homes)})" if homes else what


_HEADERS = {"server": "[server]", "limits": "[limits]", "log": "[log]",
            "listen": "[[listen]]", "operators": "[[operators]]"}


# A type named as TOML names it, for people who write TOML, not Python:
# "must be an integer, not a string" rather than "must be int, not str".
TOML_TYPES = {bool: "true or false", int: "an integer", float: "a number",
              str: "a string", list: "an array", dict: "a table"}


def _toml_type(value: Any) -> str:
    """The TOML kind of a parsed value (dates and times are the rest)."""
    return TOML_TYPES.get(type(value), "a date or time")


def _field_type(cls: type, key: str) -> type:
    default = getattr(cls(**_required_dummies(cls)), key)
    return type(default)


def _required_dummies(cls: type) -> dict[str, str]:
    return {f.name: "" for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}


def _check_values(config: Config, where: _Locator) -> list[ConfigError]:
    errors = []
    for index, listener in enumerate(config.listen):
        if listener is None:
            continue
        if listener.protocol not in PROTOCOLS:
            errors.append(where.error("listen", "protocol",
                                      f"must be one of {', '.join(PROTOCOLS)}", index))
        if not 0 <= listener.port <= 65535:
            errors.append(where.error("listen", "port", "must be 0..65535", index))
        if bool(listener.tls_cert) != bool(listener.tls_key):
            given, missing = ("tls_cert", "tls_key") if listener.tls_cert \
                else ("tls_key", "tls_cert")
            errors.append(where.error("listen", given, f"{missing} is missing: tls_cert and "
                                      f"tls_key go together", index))
        if not listener.address:
            errors.append(where.error("listen", "address", EMPTY_ADDRESS, index))
        elif (problem := addresses.problem(listener.address)) is not None:
            errors.append(where.error("listen", "address", problem, index))
    for key, value in dataclasses.asdict(config.limits).items():
        if key in ZERO_ALLOWED and value < 0:
            errors.append(where.error("limits", key, "must be 0 or more (0: off)"))
        elif key not in ZERO_ALLOWED and value <= 0:
            errors.append(where.error("limits", key, "must be positive"))
        elif key in AT_LEAST and value < AT_LEAST[key][0]:
            floor, why = AT_LEAST[key]
            errors.append(where.error("limits", key, f"must be at least {floor} ({why})"))
        elif key in AT_MOST and value > AT_MOST[key][0]:
            ceiling, why = AT_MOST[key]
            errors.append(where.error("limits", key, f"must be at most {ceiling} ({why})"))
        elif key in SECONDS_LIMITS and value > MAX_SECONDS:
            errors.append(where.error("limits", key,
                                      f"must be at most {MAX_SECONDS:.0f} seconds (one day)"))
    if config.log.level not in LOG_LEVELS:
        errors.append(where.error("log", "level", f"must be one of {', '.join(LOG_LEVELS)}"))
    if (problem := server_password_problem(config.server.password)) is not None:
        errors.append(where.error("server", "password", problem))
    for index, operator in enumerate(config.operators):
        if operator is not None:
            errors.extend(where.error("operators", key, problem, index)
                          for key, problem in operator_problems(operator))
    errors.extend(_repeated_operators(config.operators, where))
    roomlen = config.limits.roomlen      # a bad roomlen is reported once, above
    if roomlen > 0 and not protocol.valid_room(config.server.default_room, roomlen):
        errors.append(where.error(
            "server", "default_room",
            f"must be a room name the server accepts, such as #lobby: # or & and at "
            f"least one more character, at most {roomlen} in all "
            f"(limits.roomlen) and {protocol.MAX_ROOM_BYTES} bytes in UTF-8, no space, "
            f"comma, colon, BEL, CR, LF or NUL"))
    if len(config.server.motd.encode()) > MAX_MOTD_BYTES:
        errors.append(where.error("server", "motd", TOO_LONG_MOTD))
    if (problem := name_problem(config.server.name)) is not None:
        errors.append(where.error("server", "name", problem))
    if (problem := network_problem(config.server.network)) is not None:
        errors.append(where.error("server", "network", problem))
    if not config.server.state_dir:
        errors.append(where.error("server", "state_dir", EMPTY_STATE_DIR))
    return errors


BAD_NAME = "must be a host-like name without spaces or control characters"
# address = "" bound every IPv4 address (Python's "" for INADDR_ANY), an
# exposure nothing documented and no one meant: an empty value is a
# template's unset variable, and the wildcard has a name of its own.
EMPTY_ADDRESS = 'must not be empty: "0.0.0.0" is every IPv4 address, "::" every address'

# An OPER line carries the name as a middle parameter and the password after
# it: a name that is empty, holds a space or control character, or starts
# with a colon, and a plain password that is empty or holds CR, LF or NUL,
# never arrive as such, so the block could never be used (and loaded
# without a word).
BAD_OPER_NAME = ("must be a name OPER can carry: not empty, no space or control "
                 "character, not starting with a colon")
EMPTY_OPER_PASSWORD = ("must not be empty: OPER never carries an empty password "
                       "(make a hash with forkchat-server --hash-password)")
BAD_OPER_PASSWORD = "a plain password cannot hold CR, LF or NUL: no OPER line carries them"


def operator_problems(operator: Operator) -> list[tuple[str, str]]:
    """(key, message) for each field of an operator block that no OPER can
    ever match; the name and password must also fit one line together."""
    problems = []
    if not valid_server_name(operator.name) or operator.name.startswith(":"):
        problems.append(("name", BAD_OPER_NAME))
    if not passwords.valid_hash(operator.password):
        problems.append(("password", BAD_HASH))
    elif not operator.password:
        problems.append(("password", EMPTY_OPER_PASSWORD))
    elif not passwords.is_hashed(operator.password) and \
            any(char in operator.password for char in "\r\n\0"):
        problems.append(("password", BAD_OPER_PASSWORD))
    elif not problems and (size := _oper_line_bytes(operator)) > protocol.MAX_LINE_BYTES:
        problems.append(("password", f"OPER with this name and password is a {size}-byte "
                                     f"line, and lines are at most "
                                     f"{protocol.MAX_LINE_BYTES} bytes"))
    return problems


REPEATED_OPERATOR = "an operator has one block (with two, either password is accepted)"


def _repeated_operators(operators: tuple[Operator | None, ...],
                        where: _Locator) -> list[ConfigError]:
    """An error on each block that names an operator named before.

    OPER tries every block of the name, so two blocks were two passwords:
    a block added with a new password, the old one left above it, kept the
    old password valid without a word.
    """
    errors: list[ConfigError] = []
    first: dict[str, int] = {}
    for index, operator in enumerate(operators):
        if operator is None:
            continue
        if operator.name not in first:
            first[operator.name] = index
            continue
        earlier = where.error("operators", "name", "", first[operator.name])
        errors.append(where.error(
            "operators", "name", f"{operator.name!r} is the name of "
                                 f"{earlier.key.split('.')[0]} too (line {earlier.line}): "
                                 f"{REPEATED_OPERATOR}", index))
    return errors


def _oper_line_bytes(operator: Operator) -> int:
    """The length of the shortest OPER line that carries this name and
    password, CRLF included (a hash's password may be one character)."""
    given = "x" if passwords.is_hashed(operator.password) else operator.password
    return _line_bytes(f"OPER {operator.name}", given)


def _line_bytes(start: str, password: str) -> int:
    """The length of `start` and `password` as a line's last parameter."""
    if " " in password or password.startswith(":"):
        password = ":" + password
    return len(f"{start} {password}\r\n".encode())


# As for an operator's: a plain server password that no PASS line can
# carry loaded without a word, and then no client could register.
BAD_PASS_PASSWORD = "a plain password cannot hold CR, LF or NUL: no PASS line carries them"


def server_password_problem(password: str) -> str | None:
    """Why no client could ever give `password` (file or --password), or
    None; an empty one is no password at all."""
    if not passwords.valid_hash(password):
        return BAD_HASH
    if passwords.is_hashed(password) or not password:
        return None
    if any(char in password for char in "\r\n\0"):
        return BAD_PASS_PASSWORD
    if (size := _line_bytes("PASS", password)) > protocol.MAX_LINE_BYTES:
        return (f"PASS with this password is a {size}-byte line, and lines are at most "
                f"{protocol.MAX_LINE_BYTES} bytes")
    return None


# state_dir = "" put the room store in whatever directory the server was
# started in (/ under systemd, where it cannot write): an unset template
# variable, never a choice, since "." says that when it is meant.
EMPTY_STATE_DIR = 'must name a directory, such as "/var/lib/forkchat"'

# The 005 reply announces the network as one token, NETWORK=name, in a line
# with eleven others: a space split it ("Example Net" made a token "Net"),
# and a long name cut the line short, losing NICKLEN, CHANNELLEN and the
# rest of it.  63 bytes is RFC 2812's bound on a host name.
MAX_NAME_BYTES = 63
BAD_NETWORK = ("must be one word without spaces or control characters (005 announces "
               "NETWORK=name)")
TOO_LONG_NETWORK = (f"must be at most {MAX_NAME_BYTES} bytes (005 announces it in one "
                    f"line with eleven other tokens)")
# The server name prefixes every line it sends: one of 320 bytes cut its
# 005 lines short (TOPICLEN, KICKLEN and more lost), and the 63 bytes of a
# host name is what ircds allow.
TOO_LONG_NAME = (f"must be at most {MAX_NAME_BYTES} bytes (RFC 2812's bound on a host name; "
                 f"it prefixes every line the server sends)")


def name_problem(name: str) -> str | None:
    """Why `name` cannot be the server's name (file or --name), or None."""
    if not valid_server_name(name):
        return BAD_NAME
    if len(name.encode()) > MAX_NAME_BYTES:
        return TOO_LONG_NAME
    return None


def network_problem(network: str) -> str | None:
    """Why `network` cannot be announced as it is written, or None."""
    if not valid_server_name(network):
        return BAD_NETWORK
    if len(network.encode()) > MAX_NAME_BYTES:
        return TOO_LONG_NETWORK
    return None


def valid_server_name(name: str) -> bool:
    """The name prefixes every line the server sends: a space, CR or LF in
    it would split or end those lines."""
    return bool(name) and not any(ord(char) <= 32 or ord(char) == 127 for char in name)


def parse_hostport(text: str, default_port: int = 6667) -> tuple[str, int]:
    """'HOST:PORT', '[v6]:PORT', 'HOST' or ':PORT'.

    Raises:
        ValueError: with a message fit for the user.
    """
    if not text:        # an unset variable: it served every IPv4 address on 6667
        raise ValueError("bad address '': write HOST:PORT, as in 127.0.0.1:6667, or :PORT "
                         "for every IPv4 address")
    host, port_text = text, ""
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"bad address {text!r}: write [IPV6]:PORT, as in [::1]:6667")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:
        # '::1:6667' could be an address alone or one with a port: say which
        raise ValueError(f"bad address {text!r}: an IPv6 address goes in brackets, "
                         f"as in [::1]:6667")
    # ASCII digits only: int() also takes ' 7000', '7_000', '+7000' and other
    # scripts' digits, so '127.0.0.1: 0' served a free port without a word
    if port_text and not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"bad port in {text!r}")
    port = int(port_text) if port_text else default_port
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    if host and (problem := addresses.problem(host)) is not None:
        if not port_text and host.isascii() and host.isdigit():
            problem += f"; a port alone is written :{host}"
        raise ValueError(f"bad address in {text!r}: {problem}")
    return host or "0.0.0.0", port


def with_listeners(config: Config, irc: list[str], tutorial: list[str]) -> Config:
    """Command-line listeners replace the file's when any are given.

    Raises:
        ValueError: a malformed HOST:PORT.
    """
    if not irc and not tutorial:
        return config
    listeners = [Listener(*parse_hostport(spec), protocol="irc") for spec in irc]
    listeners += [Listener(*parse_hostport(spec, 5000), protocol="tutorial") for spec in tutorial]
    return dataclasses.replace(config, listen=tuple(listeners))
