"""The /command table: typed line -> IRC lines + local actions."""

import pytest

from forkchat.client import ircmsg, slash

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


# ---- free text cut to fit one line ------------------------------------------

LONG = "\U0001f389" + "\u20ac" * 200      # 604 bytes: no line holds it
PREFIX = f":bob!{'u' * 10}@{'h' * 63} "   # the longest prefix the server may add


def relayed_bytes(line: str, before: str = "") -> int:
    """Bytes of `line` as the server relays it: our prefix, `before` the text."""
    msg = ircmsg.parse(line)
    return len(f"{PREFIX}{' '.join((msg.command,) + msg.params[:-1])} :{before}"
               f"{msg.params[-1]}\r\n".encode())


def notes(result: slash.Result) -> list[str]:
    return [action[1] for action in result.local if action[0] == "note"]


@pytest.mark.parametrize("typed, head", [
    (f"/part {LONG}", "PART #lobby"),
    (f"/part #ops {LONG}", "PART #ops"),
    (f"/topic {LONG}", "TOPIC #lobby"),
    (f"/topic #ops {LONG}", "TOPIC #ops"),
    (f"/kick alice {LONG}", "KICK #lobby alice"),
    (f"/kick #ops alice {LONG}", "KICK #ops alice"),
    (f"/kill mallory {LONG}", "KILL mallory"),
    (f"/away {LONG}", "AWAY"),
], ids=["part", "part-room", "topic", "topic-room", "kick", "kick-room", "kill", "away"])
def test_a_long_last_parameter_is_cut_to_fit_the_line_and_the_user_told(typed, head):
    """These went out whole: the server answered 417 and discarded the
    line, so a long /part reason left the user in the room and a long
    /topic or /kick did nothing.  The text is cut, at a character, to what
    fits once the server adds our longest prefix, as talk is split."""
    result = slash.interpret(typed, ROOM)
    (line,) = result.lines
    assert line.startswith(head + " ")
    text = ircmsg.parse(line).params[-1]
    assert LONG.startswith(text) and len(text) > 100
    assert relayed_bytes(line) <= 512
    (note,) = notes(result)
    assert f"cut to its first {len(text)} of {len(LONG)} characters to fit an IRC line" in note


def test_the_notes_name_what_was_cut():
    said = {typed: notes(slash.interpret(f"{typed} {LONG}", ROOM))[0].split(" cut ")[0]
            for typed in ("/part", "/topic", "/kick alice", "/kill mallory", "/away", "/quit")}
    assert said == {"/part": "part reason", "/topic": "topic", "/kick alice": "kick reason",
                    "/kill mallory": "kill reason", "/away": "away message",
                    "/quit": "quit reason"}


def test_a_long_quit_reason_is_cut_to_fit_after_the_servers_quit_prefix():
    """The QUIT went out whole: the server refused it (417), the client
    closed, and the rooms saw "Connection closed" instead of the reason."""
    result = slash.interpret(f"/quit {LONG}", ROOM)
    (note, (action, reason)) = result.local
    assert action == "quit" and note[0] == "note"
    assert LONG.startswith(reason) and len(reason) > 100
    assert relayed_bytes(f"QUIT :{reason}", before=slash.QUIT_PREFIX) <= 512


@pytest.mark.parametrize("typed, sent", [
    ("/part so long", "PART #lobby :so long"), ("/topic a topic", "TOPIC #lobby :a topic"),
    ("/kick alice go out", "KICK #lobby alice :go out"),
    ("/kill mallory spam bot", "KILL mallory :spam bot"), ("/away at lunch", "AWAY :at lunch"),
])
def test_text_that_fits_goes_whole_without_a_note(typed, sent):
    result = slash.interpret(typed, ROOM)
    assert result.lines == (sent,) and not notes(result)


def test_text_of_the_longest_size_that_fits_goes_whole():
    """The cut starts one byte past the budget, not before it."""
    budget = slash.text_budget("bob", "PART", "#lobby")
    assert slash.interpret("/part " + "x" * budget, ROOM).lines == ("PART #lobby " + "x" * budget,)
    result = slash.interpret("/part " + "x" * (budget + 1), ROOM)
    assert result.lines == ("PART #lobby " + "x" * budget,) and notes(result)


def test_a_cut_keeps_a_character_cluster_whole():
    """An emoji with its skin tone, or a letter with its accent, is not cut
    in two: the bare emoji (or letter) would say something else."""
    thumbs = "\U0001f44d\U0001f3fd"               # 8 bytes, one cluster
    assert slash.cut_text("ab" + thumbs, 6) == "ab"
    assert slash.cut_text("ab" + thumbs, 10) == "ab" + thumbs
    assert slash.cut_text("ae\u0301e", 3) == "a"  # é written e + U+0301 (3 bytes)
    assert slash.cut_text("é" * 10, 5) == "éé"    # never half a UTF-8 character
    assert slash.cut_text(thumbs * 3, 6) == "\U0001f44d"   # one cluster too long: cut in it


def test_a_cut_ends_on_a_whole_flag():
    """A reason of flags cut at a byte budget falling inside a flag (each
    letter 4 bytes, a flag 8) sent half of it, a lone boxed letter."""
    fr, de, it = "\U0001f1eb\U0001f1f7", "\U0001f1e9\U0001f1ea", "\U0001f1ee\U0001f1f9"
    assert slash.cut_text("ab" + fr + de + it, 14) == "ab" + fr
    assert slash.cut_text("ab" + fr + de + it, 21) == "ab" + fr + de
    assert slash.cut_text("ab" + fr + de + it, 26) == "ab" + fr + de + it
    assert slash.cut_text("a" + fr + de, 10, chars=4) == "a" + fr


@pytest.mark.parametrize("typed, expected", [
    (f"/topic {'t' * 400}", "t" * 300),
    ("/topic short", "short"),
])
def test_a_topic_is_cut_to_the_servers_topiclen(typed, expected):
    """The server keeps TOPICLEN characters of a topic: the rest was lost
    without a word to the one who set it."""
    result = slash.interpret(typed, slash.Context("#lobby", "bob", lengths={"TOPICLEN": 300}))
    assert result.lines == (ircmsg.build("TOPIC", "#lobby", expected),)
    assert bool(notes(result)) == (expected != "short")
    assert all("TOPICLEN (300)" in note for note in notes(result))


def test_a_topic_cut_shorter_by_the_line_than_by_topiclen_says_so():
    context = slash.Context("#lobby", "bob", lengths={"TOPICLEN": 300})
    result = slash.interpret(f"/topic {LONG}", context)
    (note,) = notes(result)
    assert note.endswith("to fit an IRC line") and relayed_bytes(result.lines[0]) <= 512


def test_a_raw_line_too_long_for_the_server_is_refused_here_not_cut():
    """`/raw` sends what was typed: a line over 510 bytes the server would
    refuse (417); cut, it could mean something else.  It stays here."""
    with pytest.raises(slash.SlashError, match="not sent: the line is 516 bytes"):
        slash.interpret("/raw PRIVMSG #lobby :" + "x" * 500, ROOM)
    fits = "PRIVMSG #lobby :" + "x" * 494
    assert slash.interpret("/raw " + fits, ROOM).lines == (fits,)
    tagged = "@+draft/reply=" + "a" * 100 + " " + fits     # IRCv3 tags: their own budget
    assert slash.interpret("/raw " + tagged, ROOM).lines == (tagged,)


@pytest.mark.parametrize("typed, token, sent", [
    ("/kick alice " + "r" * 300, "KICKLEN", "KICK #lobby alice " + "r" * 120),
    ("/away " + "a" * 300, "AWAYLEN", "AWAY " + "a" * 120),
    ("/part " + "p" * 300, "KICKLEN", "PART #lobby " + "p" * 300),   # no PARTLEN: sent whole
])
def test_a_kick_reason_and_an_away_message_are_cut_to_the_servers_lengths(typed, token, sent):
    """KICKLEN and AWAYLEN from 005, as TOPICLEN: the server kept that much
    and dropped the rest without a word."""
    result = slash.interpret(typed, slash.Context("#lobby", "bob", lengths={token: 120}))
    assert result.lines == (sent,)
    assert [note.endswith(f"to fit the server's {token} (120)") for note in notes(result)] == (
        [True] if len(sent) < len(typed) else [])
