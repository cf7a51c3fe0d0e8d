"""forkchat-client: command line, nickname question, and the choice of mode.

On a terminal the full-screen curses interface runs (`tui`); when stdin or
stdout is not a terminal, or with --line, line mode runs (`linemode`).  Usage
errors exit 2, runtime failures 1 (standard output that cannot be written
too), both with one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import re
import ssl
import sys
from typing import TextIO

from forkchat import stdio
from forkchat.client import connection, ircmsg, transport

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 6667
DEFAULT_TLS_PORT = 6697
DEFAULT_ROOM = "#lobby"
NICK_PROMPT = "Choose your nickname: "
# RFC 2812 2.3.1: a letter or special first, then letters, digits, specials, '-'.
NICK_RE = re.compile(r"[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]*\Z")
# NICK_RE in words, for every message that refuses a nickname.
NICK_RULE = "an ASCII letter or one of [ ] \\ ` _ ^ { | } first, then only those, digits and -"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EPILOG = """\
modes:
  On a terminal: a full-screen interface. Type to talk in the current room;
  /help lists the commands (/join /part /msg /query /me /notice /nick /topic
  /names /who /whois /list /kick /invite /mode /away /switch /oper /kill /raw
  /help /quit). Alt+1..9 or Ctrl+N/Ctrl+P switch rooms, PageUp/PageDown
  scroll, Tab completes nicks and commands.
  When the server goes away the client reconnects and rejoins its rooms.

  Not on a terminal (or with --line): line mode. Each stdin line is sent to
  the current room (the first -r room) or run as a /command (a line starting
  with // is sent as text, less its first /); what arrives is printed one
  event per line on stdout:
    HH:MM <nick> text            HH:MM * nick joined #room
    HH:MM <nick> [private] text  HH:MM * nick left #room (reason)
    HH:MM #room <nick> text      (talk in a room other than the current one)
    HH:MM -nick- notice          HH:MM * nick is now known as new
  Without -n the first stdin line is the nickname. At end of input the
  client makes sure the server has every line, then quits; SIGTERM, SIGHUP
  and Ctrl+C do the same within a few seconds (a second one ends at once).

exit status:
  0    every line was sent (line mode), or the interface was left
  1    could not connect or register, or lost the server for good; in line
       mode also a line the server rejected, an invalid /command, lines
       a signal left unsent, or stdout that could not be written (the
       lines are still sent); TERM names a terminal type unknown here (set
       another or use --line)
  2    usage error (option, nickname, room, address, password or CA file)
  130  Ctrl+C in line mode (every line sent), or at the nickname question

example (from cron: stdout to /dev/null, so only a failure is mailed):
  echo "backup done" | forkchat-client -n cron -r '#ops' chat.example.org >/dev/null
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forkchat-client", description="Terminal chat client for forkchat and any IRC server.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    # answered by main() with write_out: argparse's help action drops a
    # write error (--help > /dev/full lost the text and exited 0)
    parser.add_argument("-h", "--help", action="store_true",
                        help="show this help message and exit")
    parser.add_argument("address", nargs="?", metavar="HOST[:PORT]",
                        help=f"server (default {DEFAULT_HOST}:{DEFAULT_PORT}, "
                             f"{DEFAULT_TLS_PORT} with --tls)")
    parser.add_argument("-n", "--nick", help="nickname (asked for when missing)")
    parser.add_argument("-r", "--room", action="append", dest="rooms", metavar="ROOM",
                        help=f"room to join, repeatable (default {DEFAULT_ROOM})")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--ca-file", metavar="FILE",
                        help="trust the CA certificates in FILE (PEM) for --tls")
    parser.add_argument("--insecure", action="store_true",
                        help="with --tls, do not verify the server certificate")
    parser.add_argument("--password-file", metavar="FILE",
                        help="send the first line of FILE as the server password (PASS)")
    parser.add_argument("--line", action="store_true",
                        help="line mode even on a terminal")
    return parser


def parse_address(text: str | None, tls: bool) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 address.

    Raises:
        ValueError: the port is not a number in 1..65535, or the brackets
            are not closed or are followed by more than a port ('[::1]x'
            went to [::1]:6667 as if the rest were not there).
    """
    port = DEFAULT_TLS_PORT if tls else DEFAULT_PORT
    if not text:
        return DEFAULT_HOST, port
    host, port_text = text, ""
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError(f"bad address {text!r}: write [IPV6]:PORT, as in [::1]:6667")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    if port_text:
        # ASCII digits: isdigit() alone passes '\u00b2', which int() refuses
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad port {port_text!r}")
        port = int(port_text)
    if not host:
        raise ValueError("empty host name")
    return host, port


def valid_nick(nick: str) -> bool:
    return bool(NICK_RE.match(nick))


def nick_problem(nick: str) -> str:
    """Why `nick` is refused: the same sentence at the question and for -n."""
    return f"invalid nickname {nick!r}: {NICK_RULE}"


def room_name(name: str) -> str:
    """`ops` -> `#ops`, as /join does.

    Raises:
        ValueError: empty, or has a space, comma or control character.
    """
    room = name if ircmsg.is_room(name) else "#" + name
    if len(room) < 2 or any(char in room for char in " ,\x07") or not room.isprintable():
        raise ValueError(f"invalid room name {name!r}")
    return room


def read_password(path: str) -> str:
    """First line of the file, without its newline.

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, encoding="utf-8") as handle:
        return handle.readline().rstrip("\r\n")


def prompt_stream() -> TextIO:
    """Where the nickname question goes: stdout is for events unless a terminal."""
    return sys.stdout if sys.stdout.isatty() else sys.stderr


def ask_nick_tty() -> str | None:
    """Ask on the terminal until the answer is a valid nick (None on EOF)."""
    while True:
        if prompt_stream() is sys.stderr:
            sys.stderr.write(NICK_PROMPT)
            sys.stderr.flush()
        try:
            answer = input(NICK_PROMPT if prompt_stream() is sys.stdout else "").strip()
        except EOFError:
            return None
        if valid_nick(answer):
            return answer
        sys.stderr.write(f"forkchat-client: {nick_problem(answer)}\n")   # seen with > file too
        sys.stderr.flush()


def read_first_line(fd: int = 0) -> str:
    """The first stdin line, read byte by byte so nothing after it is consumed."""
    data = bytearray()
    while True:
        byte = os.read(fd, 1)
        if not byte or byte == b"\n":
            return data.decode("utf-8", "replace").strip()
        data += byte


def choose_nick(args: argparse.Namespace, interactive: bool) -> str:
    """-n, or the question on a terminal, or the first line of piped input.

    Raises:
        ValueError: no valid nickname could be had.
    """
    if args.nick is not None:
        nick = str(args.nick)
    elif interactive:
        nick = ask_nick_tty() or ""
        if not nick:
            raise ValueError("no nickname given")
    else:
        nick = read_first_line()
        if not nick:
            raise ValueError("no nickname: use -n NICK or send it as the first input line")
    if not valid_nick(nick):
        raise ValueError(nick_problem(nick))
    return nick


def check_tls(ca_file: str | None, insecure: bool) -> None:
    """Load the CA file now, so a bad one is a usage error, not a traceback later.

    Raises:
        ValueError: the file is missing, unreadable or holds no certificate.
    """
    try:
        transport.tls_context(ca_file, insecure)
    except ssl.SSLError as exc:
        raise ValueError(f"cannot use CA file {ca_file}: {exc.reason or exc}") from None
    except OSError as exc:
        raise ValueError(f"cannot read CA file {ca_file}: {exc.strerror or exc}") from None


def use_tui(args: argparse.Namespace) -> bool:
    """The full-screen mode needs a real terminal on both ends."""
    term = os.environ.get("TERM", "")
    return (not args.line and sys.stdin.isatty() and sys.stdout.isatty()
            and term not in ("", "dumb"))


def make_settings(args: argparse.Namespace, interactive: bool) -> connection.Settings:
    """Validate everything the user typed into one Settings.

    Raises:
        ValueError: with the sentence to print.
    """
    if args.insecure and not args.tls or args.ca_file and not args.tls:
        raise ValueError("--insecure and --ca-file need --tls")
    if args.insecure and args.ca_file:      # the CA file was silently not used
        raise ValueError("--insecure checks no certificate, so --ca-file cannot be used "
                         "with it: give one or the other")
    host, port = parse_address(args.address, args.tls)
    password = None
    if args.password_file:
        try:
            password = read_password(args.password_file)
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read password file {args.password_file}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
        if not password:    # else no PASS is sent, and the server's refusal misleads
            raise ValueError(f"password file {args.password_file}: its first line is empty")
    if args.tls:
        check_tls(args.ca_file, args.insecure)
    rooms = tuple(room_name(room) for room in (args.rooms or [DEFAULT_ROOM]))
    nick = choose_nick(args, interactive)
    return connection.Settings(host=host, port=port, nick=nick, rooms=rooms, tls=args.tls,
                               ca_file=args.ca_file, insecure=args.insecure, password=password)


def _reopen_closed_stdio() -> None:
    """Started with stdin, stdout or stderr closed (`<&-`): put /dev/null there.

    Otherwise Python has no sys.stdin to ask isatty(), and the next file the
    client opens (its server socket) would become descriptor 0 and be read
    as input.  Closed stdin then reads as empty input, like `< /dev/null`.
    """
    for fd, flags in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, flags)      # the lowest free descriptor: this one
    if sys.stdin is None:
        sys.stdin = open(0, closefd=False)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)


def write_out(text: str) -> int:
    return stdio.write_out("forkchat-client", text)


def main(argv: list[str] | None = None) -> int:
    _reopen_closed_stdio()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.help:
        return write_out(parser.format_help())
    tui_mode = use_tui(args)
    if tui_mode:
        from forkchat.client import tui  # curses is only needed here
        problem = tui.terminal_problem()    # before the nickname question, not after
        if problem:
            print(f"forkchat-client: {problem}", file=sys.stderr)
            return 1
    try:
        settings = make_settings(args, interactive=tui_mode or sys.stdin.isatty())
    except ValueError as exc:
        print(f"forkchat-client: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:   # Ctrl+C at the nickname question: no traceback
        prompt_stream().write("\n")   # the shell's prompt on a line of its own
        prompt_stream().flush()
        return EXIT_INTERRUPTED
    if tui_mode:
        return tui.run(settings)
    from forkchat.client import linemode
    return linemode.run(settings)


if __name__ == "__main__":
    raise SystemExit(main())
