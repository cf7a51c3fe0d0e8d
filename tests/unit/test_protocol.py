import pytest

from forkchat import protocol
from forkchat.protocol import Message


@pytest.mark.parametrize("raw, expected", [
    (b"PING :x\r\n", Message("", "PING", ["x"])),
    (b"privmsg #a :hello world", Message("", "PRIVMSG", ["#a", "hello world"])),
    (b":nick!u@h PRIVMSG #a :hi", Message("nick!u@h", "PRIVMSG", ["#a", "hi"])),
    (b"USER u 0 * :Real Name", Message("", "USER", ["u", "0", "*", "Real Name"])),
    (b"MODE #a +o  bob", Message("", "MODE", ["#a", "+o", "bob"])),
    (b"PRIVMSG #a ::-)", Message("", "PRIVMSG", ["#a", ":-)"])),
    (b"PRIVMSG #a :", Message("", "PRIVMSG", ["#a", ""])),
    (b"@time=x :p CMD a", Message("p", "CMD", ["a"])),
    (b"TOPIC #a :caf\xc3\xa9", Message("", "TOPIC", ["#a", "café"])),
])
def test_parse(raw, expected):
    assert protocol.parse_line(raw) == expected


@pytest.mark.parametrize("raw, reason", [
    (b"", "No command given"),
    (b"   ", "No command given"),
    (b":prefix-only", "No command given"),
    (b"PRIVMSG #a :a\x00b", "NUL byte in line"),
    (b"PRIVMSG #a :\xff\xfe", "Line is not valid UTF-8"),
])
def test_parse_rejects(raw, reason):
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.parse_line(raw)
    assert info.value.reason == reason


def test_a_line_cut_at_the_limit_inside_a_character_loses_only_that_character():
    """irssi cuts a TOPIC (or AWAY) longer than 510 bytes at byte 510
    itself, often inside a multi-byte character: the rest is taken."""
    whole = b"TOPIC #a :" + "\u20ac".encode() * 166            # 508 bytes
    msg = protocol.parse_line(whole + "\U0001f389".encode()[:2] + b"\r\n")
    assert msg == Message("", "TOPIC", ["#a", "\u20ac" * 166])
    one_byte_more = b"TOPIC #ab :" + "\u20ac".encode() * 166                # 509 bytes
    assert protocol.parse_line(one_byte_more + b"\xf0").params == ["#ab", "\u20ac" * 166]


@pytest.mark.parametrize("raw", [
    b"TOPIC #a :" + "\u20ac".encode() * 165 + b"\xe2\x82",           # cut short of the limit
    b"TOPIC #a :\xff" + "\u20ac".encode() * 166 + b"\xe2",            # also invalid before the cut
    b"TOPIC #a :" + "\u20ac".encode() * 166 + b"\xe2\x28",            # not a cut: a bad byte
])
def test_other_invalid_utf8_at_the_end_is_still_refused(raw):
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_line(raw)


def test_too_many_params_are_folded_into_the_last():
    msg = protocol.parse_line(b"CMD " + b" ".join(b"p%d" % i for i in range(20)))
    assert len(msg.params) == protocol.MAX_PARAMS
    assert msg.params[-1] == " ".join(f"p{i}" for i in range(14, 20))


@pytest.mark.parametrize("args, wire", [
    (("srv", "001", "bob", "Welcome"), b":srv 001 bob Welcome\r\n"),
    (("srv", "001", "bob", "Welcome home"), b":srv 001 bob :Welcome home\r\n"),
    (("", "PRIVMSG", "#a", ""), b"PRIVMSG #a :\r\n"),
    (("", "PRIVMSG", "#a", ":)"), b"PRIVMSG #a ::)\r\n"),
    (("n!u@h", "QUIT", "bye\r\nPRIVMSG #x :evil"), b":n!u@h QUIT :bye  PRIVMSG #x :evil\r\n"),
    (("", "X", "a b", "c"), b"X a_b c\r\n"),
])
def test_format(args, wire):
    assert protocol.format_line(*args) == wire


def test_format_never_exceeds_512_bytes_nor_splits_utf8():
    line = protocol.format_line("n!u@h", "PRIVMSG", "#a", "é" * 600)
    assert len(line) <= protocol.MAX_LINE_BYTES
    assert line.endswith(b"\r\n")
    line.decode("utf-8")


@pytest.mark.parametrize("params", [["#a", "hello there"], ["x"], ["a", "b", ":c d"], ["#a", ""]])
def test_round_trip(params):
    assert protocol.parse_line(protocol.format_line("p", "CMD", *params)).params == params


@pytest.mark.parametrize("a, b", [("Nick[1]", "nick{1}"), ("A\\B~", "a|b^"), ("ABC", "abc")])
def test_casefold_rfc1459(a, b):
    assert protocol.casefold(a) == protocol.casefold(b)


@pytest.mark.parametrize("nick, ok", [
    ("alice", True), ("[bot]", True), ("a-1", True), ("1abc", False), ("-a", False),
    ("", False), ("a b", False), ("x" * 31, False), ("x" * 30, True), ("é", False),
])
def test_valid_nick(nick, ok):
    assert protocol.valid_nick(nick, 30) is ok


@pytest.mark.parametrize("name, ok", [
    ("#lobby", True), ("&local", True), ("lobby", False), ("#", False), ("#a b", False),
    ("#a,b", False), ("#a\x07", False), ("#" + "x" * 49, True), ("#" + "x" * 50, False),
])
def test_valid_room(name, ok):
    assert protocol.valid_room(name, 50) is ok


@pytest.mark.parametrize("name, ok", [
    ("#" + "x" * 199, True), ("#" + "\u00e9" * 99, True), ("#" + "\u20ac" * 66, True),
    ("#" + "\U0001f600" * 49, True), ("#" + "\u00e9" * 100, False), ("#" + "\u20ac" * 67, False),
    ("#" + "\U0001f600" * 50, False), ("#" + "\U0001f600" * 120, False),
])
def test_a_room_name_is_bounded_in_bytes_too(name, ok):
    """roomlen counts characters, up to 200: 120 emoji (481 bytes) were a
    room, whose JOIN line was cut (members saw another room's name) and
    whose 353 and 352 lines lost the nicks.  RFC 1459's 200 bounds bytes."""
    assert protocol.valid_room(name, 200) is ok


@pytest.mark.parametrize("raw, word", [
    (b"NOTICE bob :x", "NOTICE"), (b"@t=1 :me notice bob :\xff", "NOTICE"),
    (b"  :me   PRIVMSG", "PRIVMSG"), (b"NOTICE\r\n", "NOTICE"), (b"", ""), (b"@t=1 :me", ""),
])
def test_command_word_of_an_unusable_line(raw, word):
    """The command is found without decoding the rest (bad UTF-8, NUL, length)."""
    assert protocol.command_word(raw) == word


def test_loose_parse_marks_what_was_not_utf8_and_reads_it_as_windows_1252():
    """A line parse_line refuses can still be read for the commands that
    must run anyway: clean parameters are usable, and legacy_fallback reads
    each byte that was not UTF-8 as Windows-1252 (latin-1 where it has no
    character), keeping the UTF-8 beside it."""
    msg = protocol.parse_loose(b"USER jos 0 * :Jos\xe9 J\xc3\xb6rg\r\n")
    assert msg.command == "USER"
    assert [protocol.usable(param) for param in msg.params] == [True, True, True, False]
    assert protocol.legacy_fallback(msg.params[3]) == "Jos\u00e9 J\u00f6rg"
    assert not protocol.usable(protocol.parse_loose(b"PART #a\x00b").params[0])
    quoted = protocol.parse_loose(b"USER q 0 * :\x93q\x94 \x80 \x81").params[3]
    assert protocol.legacy_fallback(quoted) == "\u201cq\u201d \u20ac \x81"


@pytest.mark.parametrize("raw, head", [
    (b"QUIT :" + b"x" * 600, b"QUIT :" + b"x" * 504),
    (b"quit :" + b"x" * 600, b"quit :" + b"x" * 504),
    (b"@label=1 :me QUIT :" + b"x" * 600, (b"@label=1 :me QUIT :" + b"x" * 600)[:510]),
    (b"QUIT :short", b"QUIT :short"),
    (b"PRIVMSG #a :" + b"x" * 600, b""),
    (b"@" + b"t" * 504 + b" QUITX :bye", b""),     # 'QUIT' fits the head, 'QUITX' is the word
    (b"@" + b"t" * 504 + b" QUIT :bye", b"@" + b"t" * 504 + b" QUIT"),
    (b"@" + b"t" * 600 + b" QUIT :bye", b""),     # the command is beyond the head
], ids=range(8))
def test_quit_head_keeps_a_quit_to_a_line_and_nothing_else(raw, head):
    """An over-long QUIT is cut to 510 bytes and run (weechat sends a long
    /quit reason whole); any other over-long line is refused whole."""
    assert protocol.quit_head(raw) == head


def test_a_quit_head_cut_inside_a_character_keeps_the_whole_ones():
    head = protocol.quit_head(b"QUIT :a" + "\u20ac".encode() * 300)
    assert len(head) == 510
    assert protocol.parse_line(head).params == ["a" + "\u20ac" * 167]
