"""The tutorial dialect: the classic "Python socket chat room" protocol.

Its server sent the 4 bytes `NICK`, took the client's first chunk as the
nickname, broadcast `nick joined!`, sent `Connected to server!`, and then
relayed every chunk as it came; clients prefix their own text with
`nick: `.  There are no line ends and no framing: one chunk, one message.
Tutorial clients decode ASCII, so anything else is replaced with '?'.

Here a tutorial client is an ordinary member of the default room: its
chunks become PRIVMSGs, and the IRC lines the broker delivers are rendered
back into the tutorial's phrases.  It has no command to join a room, so
outside the default room it could only talk to nobody: a refused JOIN or a
KICK is told in one plain line (`farewell`) and ends the connection.  Any
other cut the server makes (a KILL, a flood, the server stopping) is told
the same way (`goodbye`), where an IRC client reads its ERROR line.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from forkchat import numerics, protocol

HANDSHAKE = b"NICK"
CONNECTED = b"Connected to server!"
MAX_TEXT_BYTES = 400
_NICK_JUNK = re.compile(r"[^A-Za-z0-9\[\]\\`_^{|}\-]")


_CONTROLS = {code: "?" for code in [*range(32), 127]}
# IRC's formatting codes (bold, colour with its numbers, hex colour, reset,
# monospace, reverse, italics, strike-through, underline): an IRC client
# draws them, and a tutorial terminal would read '?4red? bold'.
_FORMATTING = re.compile(r"\x03(?:[0-9]{1,2}(?:,[0-9]{1,2})?)?"
                         r"|\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?"
                         r"|[\x02\x0f\x11\x16\x1d\x1e\x1f]")

# Why the default room refused the client, in the words of a chat-room user;
# any other refusal is given in the server's own text.
_REFUSALS = {
    numerics.ERR_BADCHANNELKEY: "the room needs a key",
    numerics.ERR_INVITEONLYCHAN: "the room is invite-only",
    numerics.ERR_BANNEDFROMCHAN: "you are banned from the room",
    numerics.ERR_CHANNELISFULL: "the room is full",
}

# The worker's reasons for closing that mean the client left, or can no
# longer be reached: there is nobody to tell.
_UNTOLD = ("Connection closed", "Client Quit", "Quit:", "Read error:", "Write error:",
           "TLS error:")

# The IRC reasons a chat-room user may not understand, explained.
_EXPLAINED = {
    "Excess Flood": "you sent too much, too fast",
    "Max SendQ exceeded": "too much was waiting to be sent to you",
    "Registration timed out": "no nickname came in time",
    "Bad password": "the server needs a password, which this client cannot send",
}


def to_ascii(text: str) -> bytes:
    """ASCII for the tutorial's decoder: IRC formatting codes dropped, other
    control characters (ESC!) made '?'."""
    return _FORMATTING.sub("", text).translate(_CONTROLS).encode("ascii", "replace")


def clean_nick(chunk: bytes, nicklen: int) -> str:
    """A valid IRC nick made from whatever the client sent as its name."""
    text = chunk.decode("utf-8", "replace").strip()
    nick = _NICK_JUNK.sub("", text.replace(" ", "_"))
    if not nick or nick[0].isdigit() or nick[0] == "-":
        nick = "t" + nick
    return nick[:nicklen]


def suffixed(nick: str, attempt: int, nicklen: int) -> str:
    """The nick to try after `attempt` collisions: alice, alice_1, alice_2 ..."""
    if attempt == 0:
        return nick[:nicklen]
    suffix = f"_{attempt}"
    return nick[:nicklen - len(suffix)] + suffix


class FirstChunk(NamedTuple):
    name: bytes              # the client's name, as it sent it
    rest: bytes              # the message read with it, if any
    answer_due: bool = False     # its answer to NICK is still to come


def split_name(chunk: bytes) -> FirstChunk:
    """The name in a client's first chunk, and the message read with it.

    The name is the whole chunk, except where its end is plain:
    - a line end with text after it: a telnet or netcat user's name and
      first line (`tina` and `hi` made one nick, `tinahi`);
    - `tina` + `tina: hello`: the classic client's answer to NICK and its
      first message, sent close together (a script) and read as one;
    - `tina: hello`: a message typed ahead, before its answer to NICK (the
      classic client fed from a pipe sends its first line at once), the
      answer following, or read with it at its end; a nick made of a
      message was its name.
    A name never holds ': '.
    """
    text = chunk.lstrip()
    line_end = _LINE_END.search(text)
    if line_end is not None and text[line_end.end():].strip():
        return FirstChunk(text[:line_end.start()], text[line_end.end():])
    colon = chunk.find(b": ")
    if colon <= 0 or not chunk[colon + 2:].strip():
        return FirstChunk(chunk, b"")
    half = colon // 2
    if colon % 2 == 0 and chunk[:half] == chunk[half:colon]:
        return FirstChunk(chunk[:half], chunk[half:])
    name = chunk[:colon]
    if chunk.endswith(name) and len(chunk) > colon + 2 + len(name):
        return FirstChunk(name, chunk[:-len(name)])      # the answer read with it
    return FirstChunk(name, chunk, answer_due=True)


def drop_answer(chunk: bytes, typed: str) -> bytes:
    """`chunk` without the client's late answer to NICK (its `typed` name)
    in front, which is not a message: its messages begin `typed: `."""
    name = typed.encode()
    after = chunk[len(name):]
    if name and chunk.startswith(name) and not after.lstrip().startswith(b":"):
        return after
    return chunk


_LINE_END = re.compile(rb"[\r\n]+")
# The lines an IRC client opens with (RFC 2812 3.1, IRCv3 CAP), whole.
_IRC_OPENING = re.compile(rb"(CAP|NICK|PASS|USER) [^\r\n]+\r?\n")


def speaks_irc(chunk: bytes) -> bool:
    """Whether a first chunk is an IRC client's registration: a whole line
    (IRC clients end every line) that is CAP, NICK, PASS or USER with
    its parameters.

    Read as a name and messages, an IRC client pointed at this port
    became 'CAP_LS_302' and said its NICK, USER and later lines to the
    room, a PASS or a 'PRIVMSG NickServ :identify' included.  A tutorial
    client sends its name without a line end; a telnet user who typed
    'NICK bob' and Enter meant IRC too.
    """
    return _IRC_OPENING.match(chunk) is not None


# An HTTP request line (RFC 9112 3): method, target, version, line end.
_HTTP_REQUEST = re.compile(rb"[A-Z]+ [^ \r\n]+ HTTP/\d(\.\d)?\r?\n")


def speaks_http(chunk: bytes) -> bool:
    """Whether a first chunk opens with an HTTP request line: a browser,
    or a scanner probing every port.  Read as a name and messages, each
    made a user 'GET__HTTP11' join the room, and a browser's headers
    (its cookies among them) were said there."""
    return _HTTP_REQUEST.match(chunk) is not None


def typed_name(chunk: bytes) -> str:
    """The name as the client typed it, which it puts before its own text."""
    return chunk.decode("utf-8", "replace").strip()


def chunk_to_lines(chunk: bytes, nick: str, room: str, typed: str = "",
                   prefix: str = "") -> list[bytes]:
    """One chunk from the client as PRIVMSG lines to `room` (no CRLF).

    The client's own `nick: ` prefix is dropped when it names the real
    nick, since IRC clients see the sender in the prefix anyway.  The
    client only knows the name it `typed`: when that was taken (`sam`
    served as `sam_1`) or cleaned (`John Smith` as `John_Smith`), its
    prefix names the typed one, and left in place it would read as the
    sender addressing someone else (and highlight the real `sam`).

    Each piece must fit the line the room is sent, behind the sender's
    `prefix` (nick!user@host): the broker cuts a longer one at 512 bytes,
    and the text between two pieces was lost (a long nick, an IPv6
    address, a long default room).
    """
    text = chunk.decode("utf-8", "replace")
    text = " ".join(part for part in re.split(r"[\r\n\0]+", text) if part).strip()
    for name in filter(None, (nick, typed)):
        if text.startswith(f"{name}:"):
            text = text[len(name) + 1:].lstrip()
            break
    if not text:
        return []
    head = f"PRIVMSG {room} :".encode()
    room_left = protocol.MAX_BODY_BYTES - len(f":{prefix} ".encode()) - len(head)
    size = max(1, min(MAX_TEXT_BYTES, room_left))
    return [head + piece for piece in _split_utf8(text.encode(), size)]


def partial_char(chunk: bytes) -> int:
    """How many bytes at the end of `chunk` may begin a UTF-8 character
    that its next chunk finishes (0 if none).

    A read ends where TCP's segments did, not where the client's text did:
    a long message from a client that encodes UTF-8 can be read with an
    'e' acute split in two, and each half became a '?'.  A read shorter
    than a segment ends where the client's send did: there an unfinished
    character is the client's own (a latin-1 'caf\\xe9'), not held back.
    """
    if len(chunk) < SEGMENT_BYTES:
        return 0
    for back in range(1, min(3, len(chunk)) + 1):
        byte = chunk[-back]
        if byte & 0xC0 != 0x80:              # not a continuation byte
            needs = _UTF8_LENGTHS.get(byte >> 4, 1)
            return back if needs > back else 0
    return 0


def rejoin(partial: bytes, chunk: bytes) -> bytes:
    """`chunk` behind the `partial` character the previous read ended in,
    if it finishes that character; else `chunk` alone, since a message
    must begin it (its `nick: `), and the stray bytes are dropped."""
    needs = _UTF8_LENGTHS.get(partial[0] >> 4, 1) if partial else 0
    joined = partial + chunk
    try:
        joined[:needs].decode("utf-8")
    except UnicodeDecodeError:
        return chunk
    return joined


# The least a TCP segment carries unless the sender asked for less: RFC 1122's
# default MSS (576-byte datagrams).  A shorter read holds whole sends (unless
# the client's window was full: then the character stays cut, as before).
SEGMENT_BYTES = 536
_UTF8_LENGTHS = {0xC: 2, 0xD: 2, 0xE: 3, 0xF: 4}    # lead byte's high nibble: length


def line_text(line: bytes) -> bytes:
    """The text of a line `chunk_to_lines` made (what follows ' :')."""
    return line.split(b" :", 1)[1]


def _split_utf8(data: bytes, size: int) -> list[bytes]:
    pieces = []
    while data:
        piece = protocol.truncate_utf8(data, size) or data[:size]
        pieces.append(piece)
        data = data[len(piece):]
    return pieces


def _nick_of(prefix: str) -> str:
    return prefix.split("!", 1)[0]


def _render_message(msg: protocol.Message, own_nick: str) -> str | None:
    if len(msg.params) < 2:
        return None
    sender, text = _nick_of(msg.prefix), msg.params[1]
    private = protocol.casefold(msg.params[0]) == protocol.casefold(own_nick)
    if text.startswith("\x01ACTION ") and text.endswith("\x01"):
        return f"* {sender}{' (private)' if private else ''} {text[8:-1]}"
    if text.startswith("\x01"):
        return None
    if msg.command == "NOTICE":
        return f"-{sender}-{' (private)' if private else ''} {text}"
    if private:
        return f"{sender} (private): {text}"
    return f"{sender}: {text}"


def render(line: bytes, own_nick: str) -> bytes | None:
    """What a tutorial client is sent for one delivered IRC line, if anything."""
    try:
        msg = protocol.parse_line(line)
    except protocol.ProtocolError:
        return None
    nick = _nick_of(msg.prefix)
    text: str | None
    if msg.command in ("PRIVMSG", "NOTICE"):
        text = _render_message(msg, own_nick)
    elif msg.command == "JOIN":
        text = f"{nick} joined!"
    elif msg.command in ("PART", "QUIT"):
        text = f"{nick} left!"
    elif msg.command == "KICK" and len(msg.params) > 1:
        text = f"{msg.params[1]} left!"
    elif msg.command == "NICK" and msg.params:
        text = f"{nick} is now known as {msg.params[0]}"
    elif msg.command == "TOPIC" and len(msg.params) > 1:
        text = f"{nick} set the topic: {msg.params[1]}"
    elif msg.command == numerics.ERR_CANNOTSENDTOCHAN and len(msg.params) > 1:
        text = f"Not sent: you cannot talk in {msg.params[1]} now"   # +m, or a ban
    else:
        text = None
    return None if text is None else to_ascii(text)


def _is_error(command: str) -> bool:
    return len(command) == 3 and command.isdigit() and command[0] in "45"


def _kicked(msg: protocol.Message, own_nick: str, room: str) -> str | None:
    params = msg.params
    if msg.command != "KICK" or len(params) < 2 or protocol.casefold(params[0]) != room \
            or protocol.casefold(params[1]) != protocol.casefold(own_nick):
        return None
    reason = f": {params[2]}" if len(params) > 2 and params[2] else ""
    return f"You were kicked from {params[0]} by {_nick_of(msg.prefix)}{reason}"


def _refused(msg: protocol.Message, room: str) -> str | None:
    params = msg.params
    if not _is_error(msg.command) or len(params) < 3 or protocol.casefold(params[1]) != room:
        return None
    return f"Cannot join {params[1]}: {_REFUSALS.get(msg.command, params[-1])}"


def farewell(line: bytes, own_nick: str, room: str, joined: bool) -> bytes | None:
    """The last words for a tutorial client that `line` leaves outside `room`.

    Before the client has `joined`, an error numeric naming the room is the
    broker refusing its JOIN; afterwards a KICK of it takes it out.  Either
    way the caller sends this one line and closes the connection.
    """
    if joined and b" KICK " not in line:
        return None              # the common case, without a second parse
    try:
        msg = protocol.parse_line(line)
    except protocol.ProtocolError:
        return None
    folded = protocol.casefold(room)
    text = _kicked(msg, own_nick, folded) if joined else _refused(msg, folded)
    return None if text is None else to_ascii(text)


def outside(room: str) -> bytes:
    """The last words for a client found outside `room` some other way."""
    return to_ascii(f"You are not in {room}")


def goodbye(reason: str, said: str | None = None) -> bytes | None:
    """The last words for a tutorial client the server cuts off for `reason`.

    `said` is what an IRC client would read in its ERROR line instead of
    the usual "Closing Link", and is then the whole line here too.  None
    when the client ended the connection itself, or it broke.  At most one
    IRC line's length, as the ERROR line is: a stuck client is given no more.
    """
    if said is None and reason.startswith(_UNTOLD):
        return None
    if said is None:
        why = _EXPLAINED.get(reason)
        said = f"Disconnected by the server: {reason}" + (f" ({why})" if why else "")
    return protocol.truncate_utf8(to_ascii(said), protocol.MAX_BODY_BYTES)
