"""IRC lines: parsing, formatting, case mapping and name validation.

Everything here is pure: bytes or strings in, values out.  A line is at most
512 bytes including its CRLF (RFC 1459 2.3); text is UTF-8.  Parsing rejects
what must never be relayed (NUL, invalid UTF-8) by raising `ProtocolError`,
and formatting can never emit CR, LF or NUL, so no client can inject a line
into another client's stream.
"""

from __future__ import annotations

from typing import NamedTuple

MAX_LINE_BYTES = 512          # including the CRLF
MAX_BODY_BYTES = MAX_LINE_BYTES - 2
MAX_PARAMS = 15
CASEMAPPING = "rfc1459"
ROOM_PREFIXES = "#&"
# RFC 1459's bound on a room name, in bytes whatever roomlen counts in
# characters: 200 of them took up to 800, a name of 120 emoji (481 bytes)
# was a room whose JOIN line was cut (its members saw another name) and
# whose 353 and 352 lines lost the nicks.
MAX_ROOM_BYTES = 200
QUIT_PREFIX = "Quit: "        # in front of a client's own QUIT reason (the worker adds it)
PLAIN_QUIT = "Client Quit"    # a QUIT without a reason, or with one not relayed

_FORBIDDEN = str.maketrans({"\r": " ", "\n": " ", "\0": " "})
_RFC1459_LOWER = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\~", "abcdefghijklmnopqrstuvwxyz{}|^")
_NICK_FIRST = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz[]\\`_^{|}")
_NICK_REST = _NICK_FIRST | set("0123456789-")
_ROOM_FORBIDDEN = set(" \x07,:\r\n\0")


def _windows_1252(byte: int) -> str:
    """The character of one byte in Windows-1252, or in latin-1 where
    Windows-1252 has none (0x81, 0x8D, 0x8F, 0x90, 0x9D)."""
    try:
        return bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:
        return chr(byte)


# surrogateescape's stand-in for each byte 0x80-0xff, back to that byte's character
_ESCAPED_BYTES = {0xDC00 + byte: _windows_1252(byte) for byte in range(0x80, 0x100)}


class ProtocolError(ValueError):
    """A line that cannot be accepted; `reason` is safe to show the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Message(NamedTuple):
    prefix: str
    command: str
    params: list[str]

    def param(self, index: int, default: str = "") -> str:
        return self.params[index] if index < len(self.params) else default


def parse_line(raw: bytes) -> Message:
    """Parse one line (without or with its CRLF) into a Message.

    Raises:
        ProtocolError: empty line, NUL byte, invalid UTF-8 or no command.
    """
    raw = raw.rstrip(b"\r\n")
    if b"\0" in raw:
        raise ProtocolError("NUL byte in line")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        if not _cut_at_limit(raw, error):
            raise ProtocolError("Line is not valid UTF-8") from None
        text = raw[:error.start].decode("utf-8")
    return parse_text(text)


def _cut_at_limit(raw: bytes, error: UnicodeDecodeError) -> bool:
    """Whether the only fault of `raw` is its last character cut short at
    the 510-byte limit: the client cut its own overlong line there, as
    irssi does with any line it does not split (a long TOPIC or AWAY).
    That character is dropped and the rest taken; refused, a long topic of
    euro signs or emoji typed in irssi was lost whenever the cut split one,
    the user told only "Line is not valid UTF-8" in the status window."""
    return (len(raw) == MAX_BODY_BYTES and error.end == len(raw)
            and error.reason == "unexpected end of data")


def parse_loose(raw: bytes) -> Message:
    """Parse a line that parse_line refused, for the commands that must not
    be lost for it (QUIT, PART, USER): each byte that is not UTF-8 stands
    in the result as a lone surrogate (Python's surrogateescape), and NUL
    stays; `usable` tells which parameters came out clean."""
    return parse_text(raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape"))


def usable(text: str) -> bool:
    """Whether a parameter of `parse_loose` was valid UTF-8 without NUL."""
    return "\0" not in text and not any("\udc80" <= ch <= "\udcff" for ch in text)


def legacy_fallback(text: str) -> str:
    """A parameter of `parse_loose` with each byte that was not UTF-8 read
    as Windows-1252, the latin-1 of old Windows clients with printable
    characters (quotes, the euro sign) at 0x80-0x9F, as irssi's default
    recode_fallback reads them: the byte 0xE9 from an old client's 'Jose'
    with an acute accent is that e-acute again, and the UTF-8 around it
    stays as it was."""
    return text.translate(_ESCAPED_BYTES)


def command_word(raw: bytes) -> str:
    """The command of a line that may be unusable (too long, not UTF-8, NUL
    inside), upper-cased; '' if there is none.  Tags and prefix are skipped
    as in parse_text; only the command word needs to be ASCII."""
    words = [word for word in raw.split(b" ") if word]
    if words and words[0].startswith(b"@"):
        words = words[1:]
    if words and words[0].startswith(b":"):
        words = words[1:]
    return words[0].rstrip(b"\r\n").decode("ascii", "replace").upper() if words else ""


def quit_head(raw: bytes) -> bytes:
    """The part of an over-long line that is kept and run: its first 510
    bytes if it is a QUIT, else b"" (it is refused with 417).

    A client that sends its /quit reason whole and closes (weechat does)
    had its QUIT refused, and its rooms read "Connection closed" in place
    of its words; most servers cut such a line and run it.  The QUIT
    keeps what fits a line (state cuts its reason to kicklen characters);
    parse_line drops a character the cut splits (_cut_at_limit).  The
    byte after the head must not go on the command word: 'QUITX' cut
    after its 'QUIT' is not a QUIT.
    """
    head = raw[:MAX_BODY_BYTES]
    if command_word(head) == command_word(raw[:MAX_BODY_BYTES + 1]) == "QUIT":
        return head
    return b""


def parse_text(text: str) -> Message:
    """Parse a decoded line; message tags (IRCv3) are accepted and ignored."""
    text = text.lstrip(" ")
    if text.startswith("@"):
        _, _, text = text.partition(" ")
        text = text.lstrip(" ")
    prefix = ""
    if text.startswith(":"):
        prefix, _, text = text[1:].partition(" ")
        text = text.lstrip(" ")
    head, sep, trailing = text.partition(" :")
    words = [word for word in head.split(" ") if word]   # only SPACE separates
    if not words:
        raise ProtocolError("No command given")
    params = words[1:]
    if sep:
        params.append(trailing)
    if len(params) > MAX_PARAMS:
        params[MAX_PARAMS - 1:] = [" ".join(params[MAX_PARAMS - 1:])]
    return Message(prefix, words[0].upper(), params)


def has_params(msg: Message, count: int) -> bool:
    """Whether the first `count` parameters are there and not empty.

    An empty trailing parameter (`TOPIC :`, `ISON :`) names nothing: a
    required one that is empty is missing (461 with the command's name),
    not a name to look up and answer "no such channel *" for.
    """
    return len(msg.params) >= count and all(msg.params[:count])


def format_line(prefix: str, command: str, *params: str, text: bool = False) -> bytes:
    """Build one wire line, CRLF included, cut to 512 bytes on a UTF-8 boundary.

    The last parameter is sent as trailing (with ':') when it needs to be,
    or always when it is a `text` (a numeric's human-readable part).
    """
    prefix = prefix.translate(_FORBIDDEN).replace(" ", "")
    command = command.translate(_FORBIDDEN).replace(" ", "") or "*"
    parts = [":" + prefix, command] if prefix else [command]
    for index, param in enumerate(params):
        param = param.translate(_FORBIDDEN)
        last = index == len(params) - 1
        if last and (text or not param or " " in param or param.startswith(":")):
            param = ":" + param
        elif not param or " " in param or param.startswith(":"):
            param = param.replace(" ", "_").lstrip(":") or "*"
        parts.append(param)
    body = " ".join(parts).encode("utf-8")
    return truncate_utf8(body, MAX_BODY_BYTES) + b"\r\n"


def truncate_utf8(data: bytes, limit: int) -> bytes:
    """Cut `data` to at most `limit` bytes without splitting a character."""
    if len(data) <= limit:
        return data
    cut = data[:limit]
    return cut.decode("utf-8", "ignore").encode("utf-8")


def casefold(name: str) -> str:
    """RFC 1459 case mapping, as announced in 005 CASEMAPPING."""
    return name.translate(_RFC1459_LOWER)


def is_room_name(name: str) -> bool:
    return bool(name) and name[0] in ROOM_PREFIXES


def valid_nick(nick: str, nicklen: int) -> bool:
    """RFC 2812 2.3.1 nickname syntax, bounded by the configured length."""
    if not nick or len(nick) > nicklen or nick[0] not in _NICK_FIRST:
        return False
    return all(ch in _NICK_REST for ch in nick[1:])


def valid_room(name: str, roomlen: int) -> bool:
    """A room name: '#' or '&', then no space, comma, colon, BEL, CR, LF, NUL;
    at most `roomlen` characters, and MAX_ROOM_BYTES bytes in UTF-8."""
    if not is_room_name(name) or len(name) < 2 or len(name) > roomlen \
            or len(name.encode()) > MAX_ROOM_BYTES:
        return False
    return not any(ch in _ROOM_FORBIDDEN for ch in name)


def user_prefix(nick: str, user: str, host: str) -> str:
    return f"{nick}!{user}@{host}"
