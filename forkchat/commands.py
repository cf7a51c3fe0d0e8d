"""The worker's command table: what a worker answers without the broker.

`dispatch` does the shared checks once (registration, parameter count),
then calls the handler.  Commands not in the table touch shared state and
are forwarded to the broker as they came, once the client is registered
(NICK also before).  Handlers raise `numerics.Reply` for expected errors;
`dispatch` formats it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from forkchat import __version__, config, flood, ipc, numerics, passwords, protocol, rooms
from forkchat.session import REALNAMELEN, Session, clean_user

ERR_INVALIDCAPCMD = "410"
OPER_RETRY_S = 2.0        # wait after a failed OPER, doubled at each failure
OPER_RETRY_MAX_S = 60.0
log = logging.getLogger("forkchat.worker")
VERSION = f"forkchat-{__version__}"


class Context(Protocol):
    """What handlers may do; the worker implements it."""

    cfg: config.Config
    session: Session
    nick_limit: flood.WindowLimit

    def write(self, line: bytes) -> None: ...
    def reply(self, code: str, *params: str, text: str | None = None) -> None: ...
    def forward(self, raw: bytes) -> None: ...
    def frame(self, frame: bytes) -> None: ...
    def close(self, reason: str) -> None: ...
    def try_register(self) -> None: ...
    def stats(self, letter: str) -> list[tuple[str, tuple[str, ...]]]: ...


Handler = Callable[[Context, protocol.Message], None]


@dataclass(frozen=True)
class Command:
    handler: Handler
    min_params: int = 0
    before_registration: bool = False


def cmd_cap(ctx: Context, msg: protocol.Message) -> None:
    """CAP <subcommand> [:<capabilities>]

    No capabilities are offered, but a client that asks is answered, and
    registration waits for its CAP END as IRCv3 requires.
    """
    sub = msg.params[0].upper()
    server, target = ctx.cfg.server.name, ctx.session.target
    if sub == "LS":
        if not ctx.session.registered:
            ctx.session.cap_negotiating = True
        ctx.write(protocol.format_line(server, "CAP", target, "LS", ""))
    elif sub == "LIST":
        ctx.write(protocol.format_line(server, "CAP", target, "LIST", ""))
    elif sub == "REQ":
        if not ctx.session.registered:
            ctx.session.cap_negotiating = True
        ctx.write(protocol.format_line(server, "CAP", target, "NAK", msg.param(1)))
    elif sub == "END":
        ctx.session.cap_negotiating = False
        ctx.try_register()
    else:
        raise numerics.Reply(ERR_INVALIDCAPCMD, sub, text="Invalid CAP command")


def cmd_pass(ctx: Context, msg: protocol.Message) -> None:
    """PASS <password>"""
    if ctx.session.registered or ctx.session.register_sent:
        raise numerics.Reply(numerics.ERR_ALREADYREGISTERED)
    ctx.session.password = msg.params[0]


def cmd_user(ctx: Context, msg: protocol.Message) -> None:
    """USER <user> <mode> <unused> :<realname>"""
    if ctx.session.registered or ctx.session.register_sent or ctx.session.user:
        raise numerics.Reply(numerics.ERR_ALREADYREGISTERED)
    if not msg.params[0] or not msg.params[3]:
        raise numerics.Reply(numerics.ERR_NEEDMOREPARAMS, "USER")
    ctx.session.user = clean_user(msg.params[0])
    ctx.session.realname = msg.params[3][:REALNAMELEN] or ctx.session.user
    ctx.try_register()


def cmd_ping(ctx: Context, msg: protocol.Message) -> None:
    """PING <token>"""
    if not msg.params or not msg.params[0]:
        raise numerics.Reply(numerics.ERR_NOORIGIN)
    server = ctx.cfg.server.name
    ctx.write(protocol.format_line(server, "PONG", server, msg.params[0]))


def cmd_pong(ctx: Context, msg: protocol.Message) -> None:
    """PONG <token>

    Any input already proves liveness; a PONG without its token is still
    answered 409, as RFC 2812 3.7.3 lists for it (ngircd and InspIRCd do).
    """
    if not msg.params or not msg.params[0]:
        raise numerics.Reply(numerics.ERR_NOORIGIN)


def cmd_quit(ctx: Context, msg: protocol.Message) -> None:
    """QUIT [:<reason>]"""
    reason = msg.param(0)
    ctx.close(protocol.QUIT_PREFIX + reason if reason else protocol.PLAIN_QUIT)


# The whole seconds left are filled in: a person who mistyped once should
# not read "too many", and a script can tell how long to wait.
OPER_WAIT_TEXT = "Too soon after a failed OPER attempt, try again in {seconds} s"
OPER_ADDRESS_WAIT_TEXT = "Too many failed OPER attempts from your address, try again in {seconds} s"
PASS_ADDRESS_WAIT_TEXT = ("Too many failed password attempts from your address, "
                          "try again in {seconds} s")


def _refuse_while_waiting(session: Session, now: float) -> None:
    """During a wait, an OPER is refused before its password is hashed.

    Two waits apply: this connection's own, and its address's, which the
    broker sends (operguard) so that reconnecting does not shed it.
    """
    own, address = session.oper_not_before, session.oper_address_not_before
    until = max(own, address)
    if now < until:
        text = OPER_ADDRESS_WAIT_TEXT if address > own else OPER_WAIT_TEXT
        raise numerics.Reply(numerics.ERR_PASSWDMISMATCH,
                             text=text.format(seconds=math.ceil(until - now)))


def cmd_oper(ctx: Context, msg: protocol.Message) -> None:
    """OPER <name> <password>

    The scrypt check runs here, in the client's own worker, so that a slow
    hash never stalls the broker.  After a failure the next attempt must
    wait, twice as long each time, so passwords cannot be guessed quickly;
    the broker hears of each failure and makes the whole address wait too.
    """
    session = ctx.session
    now = time.monotonic()
    _refuse_while_waiting(session, now)
    name, given = msg.params[0], msg.params[1]
    named = [operator for operator in ctx.cfg.operators if operator.name == name]
    for operator in named:
        if passwords.verify(operator.password, given):
            log.info("%s!%s@%s is now operator %s", session.nick, session.user,
                     session.host, name)
            ctx.frame(ipc.encode_json(ipc.Kind.OPER, {"name": name}))
            return
    if not any(passwords.is_hashed(operator.password) for operator in named):
        _check_a_stand_in(ctx.cfg.operators, given, checked=bool(named))
    session.oper_failures += 1
    delay = min(OPER_RETRY_MAX_S, OPER_RETRY_S * 2 ** (session.oper_failures - 1))
    session.oper_not_before = now + delay
    log.warning("failed OPER attempt as %r by %s!%s@%s (%d so far)", name, session.nick,
                session.user, session.host, session.oper_failures)
    ctx.frame(ipc.encode_json(ipc.Kind.OPER_FAILED, {"name": name}))
    raise numerics.Reply(numerics.ERR_PASSWDMISMATCH)


def _check_a_stand_in(operators: tuple[config.Operator, ...], given: str,
                      checked: bool) -> None:
    """Spend on a failure that checked no hashed password what one costs.

    Every failure is the same 464, but a hashed password takes tens of
    milliseconds to check, and an unknown name, or one whose password is
    plain, none: the reply's delay told which operator names exist.  The
    stand-in is a hashed password when one is configured (it is the slow
    case that gave names away), so every failure includes one such check;
    without one, a name no operator has gets a plain check (`checked`: a
    plain password was checked already).
    """
    stored = [operator.password for operator in operators]
    hashed = [password for password in stored if passwords.is_hashed(password)]
    if hashed or (stored and not checked):
        passwords.verify((hashed or stored)[0], given)


def _asked_elsewhere(ctx: Context, msg: protocol.Message, target: str) -> bool:
    """Send a query whose <target> is not this server's name to the broker.

    RFC 2812 3.4: a nickname names the server its user is on (irssi's
    /admin and /time say so), and only the broker knows the nicknames.
    It answers 402 for a target that is no user either, or sends the
    command back without its target (a SERVE frame), answered here as
    usual.  True when the query went to the broker.
    """
    if rooms.names_server(target, ctx.cfg.server.name):
        return False
    ctx.forward(protocol.format_line("", msg.command, *msg.params).rstrip(b"\r\n"))
    return True


def cmd_time(ctx: Context, msg: protocol.Message) -> None:
    """TIME [<target>]"""
    if _asked_elsewhere(ctx, msg, msg.param(0)):
        return
    now = time.strftime("%A %B %d %Y -- %H:%M:%S %z", time.localtime())
    ctx.reply(numerics.RPL_TIME, ctx.cfg.server.name, text=now)


INFO_LINES = (
    f"{VERSION}: a process-per-client IRC chat server.",
    "Every client is served by its own worker process; a broker",
    "process keeps the nicknames and rooms. See forkchat(7).",
)


def cmd_info(ctx: Context, msg: protocol.Message) -> None:
    """INFO [<target>]"""
    if _asked_elsewhere(ctx, msg, msg.param(0)):
        return
    for line in INFO_LINES:
        ctx.reply(numerics.RPL_INFO, text=line)
    ctx.reply(numerics.RPL_ENDOFINFO)


def cmd_admin(ctx: Context, msg: protocol.Message) -> None:
    """ADMIN [<target>]"""
    if _asked_elsewhere(ctx, msg, msg.param(0)):
        return
    server = ctx.cfg.server
    ctx.reply(numerics.RPL_ADMINME, server.name)
    ctx.reply(numerics.RPL_ADMINLOC1, text=server.network)
    ctx.reply(numerics.RPL_ADMINLOC2, text=server.admin_name or "forkchat administrator")
    ctx.reply(numerics.RPL_ADMINEMAIL, text=server.admin_email or "root@localhost")


def cmd_links(ctx: Context, msg: protocol.Message) -> None:
    """LINKS [[<remote server>] <server mask>]: a network of one server."""
    if len(msg.params) > 1 and _asked_elsewhere(ctx, msg, msg.params[0]):
        return
    mask = msg.params[-1] if msg.params else "*"
    name = ctx.cfg.server.name
    if rooms.glob_match(protocol.casefold(mask), protocol.casefold(name)):
        ctx.reply(numerics.RPL_LINKS, name, name, text=f"0 {ctx.cfg.server.network}")
    ctx.reply(numerics.RPL_ENDOFLINKS, mask)


def cmd_summon(ctx: Context, msg: protocol.Message) -> None:
    """SUMMON: RFC 2812 4.5 lets a server without it say so (445)."""
    raise numerics.Reply(numerics.ERR_SUMMONDISABLED)


def cmd_users(ctx: Context, msg: protocol.Message) -> None:
    """USERS: RFC 2812 4.6 lets a server without it say so (446)."""
    raise numerics.Reply(numerics.ERR_USERSDISABLED)


def cmd_stats(ctx: Context, msg: protocol.Message) -> None:
    """STATS [<letter>]: u (uptime) for all; p (processes, memory) and
    m (command counts, kept by the broker) for operators."""
    if _asked_elsewhere(ctx, msg, msg.param(1)):
        return
    letter = msg.param(0, "*")[:1] or "*"
    if not ctx.session.oper and letter in ("p", "m"):
        raise numerics.Reply(numerics.ERR_NOPRIVILEGES)
    if letter == "m":
        ctx.forward(b"STATS m")
        return
    for code, params in ctx.stats(letter):
        ctx.reply(code, *params)
    ctx.reply(numerics.RPL_ENDOFSTATS, letter)


COMMANDS: dict[str, Command] = {
    "CAP": Command(cmd_cap, 1, before_registration=True),
    "PASS": Command(cmd_pass, 1, before_registration=True),
    "USER": Command(cmd_user, 4, before_registration=True),
    "PING": Command(cmd_ping, 0, before_registration=True),
    "PONG": Command(cmd_pong, 0, before_registration=True),
    "QUIT": Command(cmd_quit, 0, before_registration=True),
    "OPER": Command(cmd_oper, 2),
    "TIME": Command(cmd_time),
    "INFO": Command(cmd_info),
    "ADMIN": Command(cmd_admin),
    "STATS": Command(cmd_stats),
    "LINKS": Command(cmd_links),
    "SUMMON": Command(cmd_summon),
    "USERS": Command(cmd_users),
}

def cmd_crash(ctx: Context, msg: protocol.Message) -> None:
    """CRASH: fault injection for the test suite; only with FORKCHAT_TEST_HOOKS=1."""
    raise RuntimeError("crash requested by the test suite")


if os.environ.get("FORKCHAT_TEST_HOOKS") == "1":
    COMMANDS["CRASH"] = Command(cmd_crash)

# Forwarded to the broker even before registration (it reserves the nick).
FORWARD_BEFORE_REGISTRATION = frozenset({"NICK"})
# HTTP methods: as a client's first words, a browser's request, never IRC.
# A web page can make its visitor's browser POST to an IRC port, the body
# lines (NICK, USER, JOIN, PRIVMSG) then run as the browser's own commands;
# ircds have closed such connections since the Firefox attack of 2004.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "OPTIONS", "CONNECT"})
HTTP_REASON = "HTTP request on an IRC port"
# Forwarded, but only once the broker has answered what came before, as a
# local command is: a NICK's check needs the last change counted.
IN_STEP = frozenset(COMMANDS) | {"NICK"}
NICK_WAIT_TEXT = "Nick change too fast. Please wait {seconds} seconds"


# Commands that change room membership: each room they name is told of it.
ROOM_COMMANDS = frozenset({"JOIN", "PART"})


def rooms_named(msg: protocol.Message, rooms_per_client: int) -> int:
    """How many room memberships a JOIN or PART line may change (0: none).

    A JOIN or PART is sent to every member of every room it names, so one
    line naming 50 rooms costs the broker and their members about what 50
    lines do.  JOIN 0 counts as the most rooms a client may be in: the
    worker cannot know how many of its JOINs the broker has answered.
    """
    if msg.command not in ROOM_COMMANDS or not msg.params:
        return 0
    if msg.command == "JOIN" and msg.params[0] == "0":
        return rooms_per_client
    return sum(1 for name in msg.params[0].split(",") if name)


def check_nick_rate(ctx: Context, msg: protocol.Message) -> None:
    """Refuse a nick change beyond limits.nick_changes per nick_change_window
    (438, as ircd-hybrid and ratbox do), here, before the broker is asked.

    Each change is sent to everyone sharing a room with the client: 50
    rooms of 1000 make a change 50,000 deliveries, which flood control's
    two lines a second would let a client repeat all day.  The NICK that
    registers, and an operator's, are not limited.
    """
    session = ctx.session
    if msg.command != "NICK" or not session.registered or session.oper:
        return
    wait = ctx.nick_limit.wait_time()
    if wait > 0:
        raise numerics.Reply(numerics.ERR_NICKTOOFAST, msg.param(0) or "*",
                             text=NICK_WAIT_TEXT.format(seconds=max(1, math.ceil(wait))))


def dispatch(ctx: Context, msg: protocol.Message, raw: bytes) -> None:
    """Run a local command, or forward a shared one to the broker."""
    command = COMMANDS.get(msg.command)
    session = ctx.session
    try:
        if command is None:
            if session.registered or msg.command in FORWARD_BEFORE_REGISTRATION:
                check_nick_rate(ctx, msg)
                ctx.forward(raw)
                return
            if msg.command == "NOTICE":
                return          # RFC 2812 3.3.2: a NOTICE never draws an error reply
            if msg.command in HTTP_METHODS:
                ctx.close(HTTP_REASON)      # before the body's lines can run
                return
            raise numerics.Reply(numerics.ERR_NOTREGISTERED)
        if not session.registered and not command.before_registration:
            raise numerics.Reply(numerics.ERR_NOTREGISTERED)
        if not protocol.has_params(msg, command.min_params):
            raise numerics.Reply(numerics.ERR_NEEDMOREPARAMS, msg.command)
        command.handler(ctx, msg)
    except numerics.Reply as error:
        ctx.write(numerics.from_error(ctx.cfg.server.name, session.target, error))
