"""A tiny IRC line parser and builder for the client.

The client keeps its own parser instead of importing the server's
`forkchat.protocol`: it must work against any RFC 1459/2812 server, and a
dozen lines of parsing are cheaper than coupling two programs that ship and
evolve separately.  Everything here is pure (no sockets), so the unit tests
feed it strings.
"""

from __future__ import annotations

import dataclasses

MAX_LINE_BYTES = 512          # RFC 1459 2.3, CRLF included
FORBIDDEN_CHARS = "\r\n\0"    # can never appear inside a line we send

_TAG_ESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
# RFC 1459 casemapping: []\~ are the lower case of {}|^.
_RFC1459_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\~",
                              "abcdefghijklmnopqrstuvwxyz{}|^")


@dataclasses.dataclass(frozen=True)
class Message:
    """One parsed line: tags, prefix (may be empty), command, params."""

    tags: dict[str, str]
    prefix: str
    command: str
    params: tuple[str, ...]

    @property
    def nick(self) -> str:
        """The nick part of the prefix (the whole prefix for a server)."""
        return nick_of(self.prefix)

    def param(self, index: int, default: str = "") -> str:
        """params[index] or default, so handlers need no length checks."""
        return self.params[index] if len(self.params) > index else default


def _unescape_tag(value: str) -> str:
    """Undo IRCv3 tag value escaping (backslash sequences)."""
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            out.append(_TAG_ESCAPES.get(nxt, nxt))
        else:
            out.append(char)
    return "".join(out)


def _parse_tags(text: str) -> dict[str, str]:
    """Split `a=1;b` into {'a': '1', 'b': ''}."""
    tags: dict[str, str] = {}
    for item in text.split(";"):
        if item:
            key, _, value = item.partition("=")
            tags[key] = _unescape_tag(value)
    return tags


def parse(line: str) -> Message:
    """Parse one IRC line (CR/LF already stripped or not).

    Raises:
        ValueError: the line holds no command.
    """
    rest = line.rstrip("\r\n").lstrip(" ")
    tags: dict[str, str] = {}
    prefix = ""
    if rest.startswith("@"):
        tag_text, _, rest = rest[1:].partition(" ")
        tags = _parse_tags(tag_text)
        rest = rest.lstrip(" ")
    if rest.startswith(":"):
        prefix, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    trailing: list[str] = []
    if " :" in rest:
        rest, _, last = rest.partition(" :")
        trailing = [last]
    elif rest.startswith(":"):
        rest, trailing = "", [rest[1:]]
    words = [word for word in rest.split(" ") if word]    # spaces only, as servers split
    if not words:
        raise ValueError("no command in IRC line")
    return Message(tags, prefix, words[0].upper(), tuple(words[1:] + trailing))


def decode(raw: bytes) -> str:
    """UTF-8, else Latin-1: what old servers send, and what a legacy log
    piped into line mode holds, keeps its accents instead of U+FFFD marks."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def nick_of(prefix: str) -> str:
    """`nick!user@host` -> `nick`; a server name stays as it is."""
    return prefix.split("!", 1)[0].split("@", 1)[0]


def casefold(name: str) -> str:
    """Fold a nick or room name the RFC 1459 way (a superset of ascii)."""
    return name.translate(_RFC1459_FOLD)


def clean(text: str) -> str:
    """Remove CR, LF and NUL so user text can never split into two lines."""
    for char in FORBIDDEN_CHARS:
        text = text.replace(char, " ")
    return text


def _word_problem(param: str) -> str:
    """Why a word cannot stand before a command's last parameter."""
    if not param:
        return "it is empty"
    return "it has a space" if " " in param else "it starts with ':' (IRC's mark of the last word)"


def build(command: str, *params: str) -> str:
    """Format a line (without CRLF); the last param gets ':' when needed.

    Raises:
        ValueError: a middle param is empty, has a space or starts with ':'.
    """
    parts = [command]
    for index, param in enumerate(params):
        param = clean(param)
        last = index == len(params) - 1
        if last and (not param or " " in param or param.startswith(":")):
            parts.append(":" + param)
        elif not param or " " in param or param.startswith(":"):
            raise ValueError(f"{param!r} cannot be a nick, room or other word of"
                             f" {command}: {_word_problem(param)}")
        else:
            parts.append(param)
    return " ".join(parts)


def can_be_nick(name: str) -> bool:
    """Whether `name` can stand in a line as a nick (a single word, not
    empty, not starting with ':'); says nothing of a server's own rules."""
    return bool(name) and " " not in name and not name.startswith(":")


def is_room(name: str, chantypes: str = "#&+!") -> bool:
    """True when `name` is a room (channel) rather than a nick."""
    return bool(name) and name[0] in chantypes


def names_asked(line: str) -> tuple[str, set[str]] | None:
    """Of a NAMES line the user sends: its query and the rooms it asks for,
    casefolded ({"*"}: every room); None for any other line."""
    try:
        msg = parse(line)
    except ValueError:
        return None
    if msg.command != "NAMES":
        return None
    query = msg.param(0)
    return query, {casefold(room) for room in query.split(",") if room} or {"*"}
