"""IRC line -> UiEvent -> the line that line mode prints."""

import time

import pytest

from forkchat.client import events, ircmsg

NOW = time.mktime((2026, 11, 29, 9, 5, 0, 0, 0, -1))


def line_for(raw: str, me: str = "bob", current: str = "#lobby") -> list[str]:
    evs = events.translate(ircmsg.parse(raw), me)
    return [events.line_text(events.UiEvent(**{**e.__dict__, "time": NOW}), current)
            for e in evs]


@pytest.mark.parametrize("raw, printed", [
    (":alice!a@h PRIVMSG #lobby :hello all", "09:05 <alice> hello all"),
    (":alice!a@h PRIVMSG #ops :elsewhere", "09:05 #ops <alice> elsewhere"),
    # a tab (df or TSV output piped in) separates words; other controls go
    (":alice!a@h PRIVMSG #lobby :/dev/sda1\t42%\x07\x1b[31m", "09:05 <alice> /dev/sda1 42%[31m"),
    (":alice!a@h PRIVMSG bob :psst", "09:05 <alice> [private] psst"),
    (":alice!a@h PRIVMSG #lobby :\x01ACTION waves\x01", "09:05 * alice waves"),
    (":alice!a@h NOTICE #lobby :heads up", "09:05 -alice- heads up"),
    (":alice!a@h NOTICE bob :just you", "09:05 -alice- [private] just you"),
    (":alice!a@h JOIN #lobby", "09:05 * alice joined #lobby"),
    (":alice!a@h JOIN :#lobby", "09:05 * alice joined #lobby"),
    (":alice!a@h PART #lobby :gone home", "09:05 * alice left #lobby (gone home)"),
    (":alice!a@h PART #lobby", "09:05 * alice left #lobby"),
    (":alice!a@h QUIT :Quit: bye", "09:05 * alice quit (Quit: bye)"),
    (":alice!a@h NICK alicia", "09:05 * alice is now known as alicia"),
    (":bob!b@h NICK robert", "09:05 * You are now known as robert"),
    (":BOB!b@h NICK robert", "09:05 * You are now known as robert"),
    (":op!a@h KICK #lobby alice :behave", "09:05 * alice was kicked from #lobby by op (behave)"),
    (":op!a@h KICK #lobby bob :behave", "09:05 * You were kicked from #lobby by op (behave)"),
    (":op!a@h KICK #lobby BOB", "09:05 * You were kicked from #lobby by op"),
    (":op!a@h TOPIC #lobby :new topic", "09:05 * op changed the topic of #lobby to: new topic"),
    # irssi's /topic -delete, weechat's /topic -delete: the topic is removed
    (":op!a@h TOPIC #lobby :", "09:05 * op removed the topic of #lobby"),
    (":srv 332 bob #lobby :the topic", "09:05 * Topic for #lobby: the topic"),
    (":srv 353 bob = #lobby :@op bob", "09:05 * Members of #lobby: @op bob"),
    # a nick list is remote text too: no escape sequence or backspace in it
    (":srv 353 bob = #lobby :@op ev\x1b[7mil b\x08ob",
     "09:05 * Members of #lobby: @op ev[7mil bob"),
    (":srv 404 bob #x :Cannot send to channel", "09:05 * #x: Cannot send to channel"),
    (":srv 464 bob :Password incorrect", "09:05 * OPER refused: Password incorrect"),
    (":srv 464 bob :Too soon after a failed OPER attempt, try again in 4 s",
     "09:05 * OPER refused: Too soon after a failed OPER attempt, try again in 4 s"),
    (":srv 491 bob :No O-lines for your host", "09:05 * OPER refused: No O-lines for your host"),
    (":srv 311 bob alice a h * :Alice A", "09:05 * alice is a@h (Alice A)"),
    (":srv 322 bob #ops 3 :ops room", "09:05 * #ops (3 users): ops room"),
    (":srv 322 bob #dev 3 :", "09:05 * #dev (3 users)"),
    (":srv 322 bob #dev 1 :", "09:05 * #dev (1 user)"),
    (":op!a@h MODE #lobby +o bob", "09:05 * op sets mode +o bob on #lobby"),
])
def test_line_mode_format(raw, printed):
    assert line_for(raw) == [printed]


@pytest.mark.parametrize("raw", [
    ":srv 001 bob :Welcome", ":srv 372 bob :- motd", ":srv NOTICE * :*** Looking up",
])
def test_server_chatter_is_its_own_kind(raw):
    assert [e.kind for e in events.translate(ircmsg.parse(raw), "bob")] == ["server"]


@pytest.mark.parametrize("raw, text", [
    (":srv 265 bob 1 1 :Current local users 1, max 1", "Current local users 1, max 1"),
    (":srv 266 bob 3 7 :Current global users 3, max 7", "Current global users 3, max 7"),
    (":srv 265 bob :Current local users: 1", "Current local users: 1"),
    (":srv 252 bob 2 :operator(s) online", "2 operator(s) online"),   # count not in the text
])
def test_user_count_numerics_show_their_text(raw, text):
    """Buffer 1 read `1 1 Current local users 1, max 1`: the counts come twice."""
    assert [(e.kind, e.text) for e in events.translate(ircmsg.parse(raw), "bob")] == [
        ("server", text)]


@pytest.mark.parametrize("raw", [":srv 366 bob #l :End", ":srv 318 bob a :End", "PING :x"])
def test_silent_or_structural(raw):
    assert all(e.kind in ("names_end",) for e in events.translate(ircmsg.parse(raw), "bob"))


def test_who_rows_and_their_end_are_their_own_kinds():
    """The front ends show the end of an empty WHO list, so they must tell
    rows and end apart."""
    row = events.translate(ircmsg.parse(":srv 352 bob #l u h srv al H :0 Al"), "bob")
    end = events.translate(ircmsg.parse(":srv 315 bob #l :End of /WHO list"), "bob")
    assert [(e.kind, e.text) for e in row] == [("who", "#l al H u@h (Al)")]
    assert [(e.kind, e.buffer, e.text) for e in end] == [("who_end", "#l", "End of /WHO list")]


def test_escape_sequences_from_others_never_reach_the_terminal():
    [event] = events.translate(ircmsg.parse(":evil!e@h PRIVMSG #l :\x1b[2J\x03" "4red\x02 text\x07"), "bob")
    assert event.text == "[2Jred text"


BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e",     # LRE RLE PDF LRO RLO
        "\u2066", "\u2067", "\u2068", "\u2069",                # LRI RLI FSI PDI
        "\u200e", "\u200f", "\u061c"]                          # LRM RLM ALM


@pytest.mark.parametrize("char", BIDI)
def test_sanitize_drops_each_bidirectional_control(char):
    assert events.sanitize(f"a{char}b") == "ab"


@pytest.mark.parametrize("text", ["שלום world", "مرحبا", "a\u200db", "👩\u200d💻", "x\ufe0f"])
def test_sanitize_keeps_right_to_left_text_and_joiners(text):
    """Hebrew or Arabic words are text, not controls; a terminal lays them
    out itself.  Zero-width joiners make emoji and scripts, not reordering."""
    assert events.sanitize(text) == text


def test_a_bidi_override_cannot_make_a_line_read_as_someone_else():
    """"Trojan Source" in a chat: mallory sends RLO + the reversed words of a
    line by alice, so a terminal shows `<mallory> <alice> ...`-like text in
    the wrong order; a nick can carry one too.  Both are dropped, in the
    events both front ends show, so the line reads as sent."""
    raw = ":mal\u202elory!m@h PRIVMSG #lobby :\u202e<ecila> em ot tsrif yap\u2066x\u2069"
    assert line_for(raw) == ["09:05 <mallory> <ecila> em ot tsrif yapx"]
    [names] = events.translate(ircmsg.parse(":srv 353 bob = #lobby :al\u200fice b\u2067ob"), "bob")
    assert names.names == ("alice", "bob")
    [topic] = events.translate(ircmsg.parse(":a!a@h TOPIC #lobby :\u202bnew\u202c topic"), "bob")
    assert topic.text == "new topic"


def test_a_message_is_one_line_to_any_reader_of_line_modes_output():
    """U+2028 and U+2029 break lines for str.splitlines() and other Unicode
    readers of line mode's output: a message holding one read there as two
    events, the second one made up by its sender."""
    raw = ":mallory!m@h PRIVMSG #lobby :hi\u202809:06 <admin> all is well\u2029\x85\x1c"
    [line] = line_for(raw)
    assert line.splitlines() == [line] == ["09:05 <mallory> hi09:06 <admin> all is well"]


def test_own_flag_and_private_buffer():
    [join] = events.translate(ircmsg.parse(":Bob!b@h JOIN #lobby"), "bob")
    assert join.own
    [msg] = events.translate(ircmsg.parse(":alice!a@h PRIVMSG Bob :hi"), "bob")
    assert msg.private and msg.buffer == "alice"


def test_server_time_tag_is_used():
    [event] = events.translate(ircmsg.parse(
        "@time=2026-01-02T03:04:05.000Z :a!a@h PRIVMSG #l :x"), "bob")
    assert event.time == pytest.approx(1767323045.0)


@pytest.mark.parametrize("raw, tags, prefix, command, params", [
    ("PING :x y", {}, "", "PING", ("x y",)),
    (":n!u@h PRIVMSG #a :hi :there", {}, "n!u@h", "PRIVMSG", ("#a", "hi :there")),
    ("@a=1;b=x\\sy :s 001 me :Welcome\r\n", {"a": "1", "b": "x y"}, "s", "001", ("me", "Welcome")),
    ("join #a", {}, "", "JOIN", ("#a",)),
    (":s 005 me A B :are supported", {}, "s", "005", ("me", "A", "B", "are supported")),
    (":s CMD :", {}, "s", "CMD", ("",)),
])
def test_parse(raw, tags, prefix, command, params):
    msg = ircmsg.parse(raw)
    assert (msg.tags, msg.prefix, msg.command, msg.params) == (tags, prefix, command, params)


def test_parse_rejects_empty():
    with pytest.raises(ValueError):
        ircmsg.parse(":prefix-only")


def test_build_and_casefold():
    assert ircmsg.build("PRIVMSG", "#a", "x") == "PRIVMSG #a x"
    assert ircmsg.build("PRIVMSG", "#a", ":)") == "PRIVMSG #a ::)"
    assert ircmsg.build("AWAY", "") == "AWAY :"
    with pytest.raises(ValueError):
        ircmsg.build("PRIVMSG", "a b", "x")
    assert ircmsg.casefold("Nick[]\\~") == "nick{}|^"


@pytest.mark.parametrize("line", ["NICK", ":a!b@c JOIN", ":a!b@c PART", ":a!b@c KICK #x",
                                  ":a!b@c PRIVMSG #x", ":a!b@c INVITE bob",
                                  ":a!b@c NICK :", ":a!b@c NICK :new nick"])
def test_a_command_without_its_parameters_is_not_well_formed(line):
    assert not events.well_formed(ircmsg.parse(line))


@pytest.mark.parametrize("line", [":a!b@c NICK bob", ":a!b@c JOIN #x", "NOTICE * :hello",
                                  ":srv 001 bob :Welcome", "PING :x", ":a!b@c TOPIC #x :"])
def test_complete_commands_are_well_formed(line):
    assert events.well_formed(ircmsg.parse(line))


@pytest.mark.parametrize("raw, printed", [
    (":ChanServ!s@services NOTICE @#lobby :alice was opped",
     "09:05 -ChanServ- (to @#lobby) alice was opped"),
    (":alice!a@h PRIVMSG @#ops :ops only", "09:05 #ops <alice> (to @#ops) ops only"),
    (":alice!a@h PRIVMSG +#lobby :\x01ACTION waves\x01", "09:05 * alice (to +#lobby) waves"),
    (":alice!a@h PRIVMSG &local :an & room", "09:05 &local <alice> an & room"),
])
def test_a_message_to_a_rooms_operators_belongs_to_the_room(raw, printed):
    """STATUSMSG (`@#room`, as Solanum and InspIRCd send it): read as sent
    to a nick, it was shown as a private message from its sender, and the
    full-screen interface opened a conversation with them."""
    assert line_for(raw) == [printed]
    [event] = events.translate(ircmsg.parse(raw), "bob")
    assert not event.private and event.buffer in ("#lobby", "#ops", "&local")
