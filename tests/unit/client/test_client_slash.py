"""The /command table: typed line -> IRC lines + local actions."""

import pytest

from forkchat.client import slash

ROOM = slash.Context(target="#lobby", nick="bob")
STATUS = slash.Context(target="", nick="bob")
QUERY = slash.Context(target="alice", nick="bob")


@pytest.mark.parametrize("typed, lines", [
    ("hello", ("PRIVMSG #lobby hello",)),
    ("hello there", ("PRIVMSG #lobby :hello there",)),
    ("//etc/passwd is a file", ("PRIVMSG #lobby :/etc/passwd is a file",)),
    ("/join #ops", ("JOIN #ops",)),
    ("/join ops,#dev key", ("JOIN #ops,#dev key",)),
    ("/part", ("PART #lobby",)),
    ("/part #ops bye now", ("PART #ops :bye now",)),
    ("/part see you", ("PART #lobby :see you",)),
    ("/msg alice hi there", ("PRIVMSG alice :hi there",)),
    ("/notice #ops heads up", ("NOTICE #ops :heads up",)),
    ("/me waves", ("PRIVMSG #lobby :\x01ACTION waves\x01",)),
    ("/nick robert", ("NICK robert",)),
    ("/topic", ("TOPIC #lobby",)),
    ("/topic new topic", ("TOPIC #lobby :new topic",)),
    ("/topic #ops ops only", ("TOPIC #ops :ops only",)),
    ("/names", ("NAMES #lobby",)),
    ("/names #ops", ("NAMES #ops",)),
    ("/who", ("WHO #lobby",)),
    ("/whois alice", ("WHOIS alice",)),
    ("/list", ("LIST",)),
    ("/away lunch", ("AWAY lunch",)),
    ("/away", ("AWAY",)),
    ("/raw MODE #lobby +m", ("MODE #lobby +m",)),
    ("/JOIN #caps", ("JOIN #caps",)),
])
def test_lines_sent(typed, lines):
    assert slash.interpret(typed, ROOM).lines == lines


@pytest.mark.parametrize("typed, local", [
    ("hi", (("own", "#lobby", "hi"),)),
    ("/join #ops", (("joining", "#ops"),)),
    ("/query alice", (("query", "alice"),)),
    ("/query alice hey", (("query", "alice"), ("own", "alice", "hey"))),
    ("/me waves", (("ownaction", "#lobby", "waves"),)),
    ("/notice #ops heads up", (("ownnotice", "#ops", "heads up"),)),
    ("/switch 2", (("switch", "2"),)),
    ("/quit gone fishing", (("quit", "gone fishing"),)),
    ("/quit", (("quit", ""),)),
])
def test_local_actions(typed, local):
    assert slash.interpret(typed, ROOM).local == local


@pytest.mark.parametrize("typed, context, message", [
    ("/frobnicate", ROOM, "unknown command /frobnicate"),
    ("/join", ROOM, "usage: /join"),
    ("/msg alice", ROOM, "usage: /msg"),
    ("/whois", ROOM, "usage: /whois"),
    ("hello", STATUS, "no room or conversation here"),
    ("/me waves", STATUS, "no room or conversation here"),
    ("/part", STATUS, "not in a room"),
    ("/topic", QUERY, "not in a room"),
    ("/query #room", ROOM, "/query is for a nick"),
])
def test_errors(typed, context, message):
    with pytest.raises(slash.SlashError, match=message):
        slash.interpret(typed, context)


def test_an_unknown_command_says_how_to_send_a_slash_as_text():
    """`/etc/passwd is world-readable` piped in is refused: say how to send it."""
    with pytest.raises(slash.SlashError, match="starts with // is sent as text"):
        slash.interpret("/etc/passwd is world-readable", ROOM)
    assert slash.interpret("//etc/passwd is world-readable", ROOM).lines == (
        "PRIVMSG #lobby :/etc/passwd is world-readable",)


def test_part_says_which_room_it_leaves():
    """Line mode needs it at once: the server's echo comes after later lines."""
    assert slash.interpret("/part", ROOM).local == (("parting", "#lobby"),)
    assert slash.interpret("/part #ops bye", ROOM).local == (("parting", "#ops"),)


def test_part_in_a_query_closes_it():
    assert slash.interpret("/part", QUERY).local == (("close", "alice"),)


def test_help_lists_every_command():
    text = slash.interpret("/help", ROOM).local[0][1]
    for name in slash.COMMANDS:
        assert f"/{name}" in text
    for name in ("join", "part", "msg", "query", "me", "nick", "topic", "names", "who",
                 "whois", "list", "away", "quit", "help", "raw", "switch"):
        assert name in slash.COMMANDS


def test_help_for_one_command():
    assert slash.interpret("/help join", ROOM).local[0][1].startswith("/join")


def test_no_line_can_smuggle_crlf():
    lines = slash.interpret("hi\r\nQUIT :pwned", ROOM).lines
    assert all("\r" not in line and "\n" not in line for line in lines)


def test_long_text_is_split_to_fit_512_bytes_with_prefix():
    text = " ".join(["wörd"] * 300)
    lines = slash.interpret(text, ROOM).lines
    assert len(lines) > 1
    for line in lines:
        relayed = f":bob!{'u' * 10}@{'h' * 63} {line}\r\n"
        assert len(relayed.encode()) <= 512
    assert " ".join(line.split(" :", 1)[1] for line in lines) == text


def test_split_text_respects_utf8_boundaries():
    pieces = slash.split_text("é" * 100, 21)
    assert all(len(p.encode()) <= 21 for p in pieces)
    assert "".join(pieces) == "é" * 100


@pytest.mark.parametrize("typed, lines", [
    ("/kick alice", ("KICK #lobby alice",)),
    ("/kick alice go away", ("KICK #lobby alice :go away",)),
    ("/kick #hush alice", ("KICK #hush alice",)),
    ("/invite alice", ("INVITE alice #lobby",)),
    ("/invite alice #hush", ("INVITE alice #hush",)),
    ("/mode", ("MODE #lobby",)),
    ("/mode +s", ("MODE #lobby +s",)),
    ("/mode +o alice", ("MODE #lobby +o alice",)),
    ("/mode #hush +k key", ("MODE #hush +k key",)),
    ("/mode bob +w", ("MODE bob +w",)),
    ("/oper admin s3cret", ("OPER admin s3cret",)),
    ("/kill mallory", ("KILL mallory",)),
    ("/kill mallory flooding again", ("KILL mallory :flooding again",)),
])
def test_room_and_operator_commands(typed, lines):
    """An IRC user types /kick and /invite (and an operator /oper and /kill):
    "unknown command /kick" sends them to /raw and the RFC."""
    assert slash.interpret(typed, ROOM).lines == lines


@pytest.mark.parametrize("typed", ["/kick alice", "/invite alice", "/mode +i", "/kick #x",
                                   "/oper admin", "/kill"])
def test_room_and_operator_commands_say_what_is_missing(typed):
    with pytest.raises(slash.SlashError):
        slash.interpret(typed, STATUS)


def test_part_of_a_room_we_were_put_out_of_closes_its_buffer():
    """Kicked from #priv (or its rejoin refused), its buffer stays, "not
    joined"; PART gets "No such channel" or "You're not on that channel",
    so /part there must close the buffer, not send a PART that cannot work."""
    gone = slash.Context(target="#priv", nick="bob", gone=frozenset(["#priv"]))
    assert slash.interpret("/part", gone) == slash.Result((), (("close", "#priv"),))
    elsewhere = slash.Context(target="#lobby", nick="bob", gone=frozenset(["#priv"]))
    assert slash.interpret("/part #PRIV", elsewhere) == slash.Result((), (("close", "#PRIV"),))
    assert slash.interpret("/part #lobby", gone).lines == ("PART #lobby",)


@pytest.mark.parametrize("typed", ["hello?", "/me waves"])
def test_talk_in_a_room_we_were_put_out_of_is_refused_here(typed):
    """Kicked from #priv, a line typed there used to show as said, then the
    server's refusal: the client knows better and says what to do."""
    gone = slash.Context(target="#priv", nick="bob", gone=frozenset(["#priv"]))
    with pytest.raises(slash.SlashError, match="not in #priv.*/join #priv"):
        slash.interpret(typed, gone)


@pytest.mark.parametrize("name", sorted(slash.COMMANDS))
@pytest.mark.parametrize("args", [":alice hi", ": x", "#a : b", "a : b : c", ":#a"])
def test_a_word_starting_with_a_colon_is_a_usage_error_not_a_crash(name, args):
    """`/msg :alice hi` raised ValueError out of the client: a traceback in
    line mode, the full-screen interface gone.  Each command either sends
    lines or says why it cannot; never anything else."""
    try:
        slash.interpret(f"/{name} {args}", slash.Context(target="#lobby", nick="bob"))
    except slash.SlashError:
        pass


def test_the_colon_error_names_the_word_and_the_usage():
    with pytest.raises(slash.SlashError) as caught:
        slash.interpret("/msg :alice hi", slash.Context(target="#lobby", nick="bob"))
    assert str(caught.value) == ("':alice' cannot be a nick, room or other word of PRIVMSG:"
                                 " it starts with ':' (IRC's mark of the last word)"
                                 " (usage: /msg nick|#room text)")


def test_no_conversation_opens_with_a_nick_no_line_could_go_to():
    """`/query :x` opened a buffer `:x`, and the next line typed there
    raised ValueError out of the full-screen interface."""
    with pytest.raises(slash.SlashError):
        slash.interpret("/query :x", slash.Context(target="#lobby", nick="bob"))
    with pytest.raises(slash.SlashError):
        slash.interpret("hello", slash.Context(target=":x", nick="bob"))
