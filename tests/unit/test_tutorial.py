import socket

import pytest

from forkchat import config, ipc, tutorial, worker


@pytest.mark.parametrize("chunk, nick", [
    (b"alice", "alice"), (b"bob\n", "bob"), (b"two words", "two_words"),
    (b"9lives", "t9lives"), (b"\xff\xfe", "t"), (b"caf\xc3\xa9", "caf"),
])
def test_clean_nick(chunk, nick):
    assert tutorial.clean_nick(chunk, 30) == nick


@pytest.mark.parametrize("chunk, irc", [
    (b"CAP LS 302\r\nNICK irssi\r\nUSER irssi 0 * :Irssi\r\n", True),
    (b"PASS secret\r\nNICK a\r\n", True), (b"NICK bob\n", True), (b"USER b 0 * :B\r\n", True),
    (b"NICK", False), (b"NICK bob", False), (b"tina", False), (b"tom\r\nhi all\r\n", False),
    (b"Nicky\r\n", False), (b"nick bob\r\n", False), (b"USER\r\nhi\r\n", False),
])
def test_an_irc_clients_registration_is_told_from_a_name(chunk, irc):
    """A first chunk that is a whole IRC registration line is an IRC client;
    a tutorial client's name has no line end, a telnet user's no command."""
    assert tutorial.speaks_irc(chunk) is irc


@pytest.mark.parametrize("chunk, http", [
    (b"GET / HTTP/1.1\r\nHost: chat\r\nCookie: s=1\r\n\r\n", True),
    (b"GET / HTTP/1.0\r\n\r\n", True), (b"OPTIONS * HTTP/1.1\r\n", True),
    (b"GET / HTTP/1.1", False), (b"tina", False), (b"get / http/1.1\r\n", False),
])
def test_an_http_request_is_told_from_a_name(chunk, http):
    assert tutorial.speaks_http(chunk) is http


def test_suffixes_stay_within_nicklen():
    assert tutorial.suffixed("alice", 0, 9) == "alice"
    assert tutorial.suffixed("alice", 2, 9) == "alice_2"
    assert tutorial.suffixed("abcdefghi", 12, 9) == "abcdef_12"


def test_chunk_strips_own_prefix_only():
    assert tutorial.chunk_to_lines(b"alice: hi there", "alice", "#lobby") == \
        [b"PRIVMSG #lobby :hi there"]
    assert tutorial.chunk_to_lines(b"bob: hi", "alice", "#lobby") == [b"PRIVMSG #lobby :bob: hi"]
    assert tutorial.chunk_to_lines(b"alice: ", "alice", "#lobby") == []


def test_long_chunk_splits_into_several_messages():
    lines = tutorial.chunk_to_lines(b"x" * 1000, "a", "#lobby")
    assert len(lines) == 3 and all(len(line) < 450 for line in lines)


@pytest.mark.parametrize("line, out", [
    (b":bob!b@h PRIVMSG #lobby :hello", b"bob: hello"),
    (b":bob!b@h PRIVMSG #lobby :caf\xc3\xa9", b"bob: caf?"),
    (b":bob!b@h JOIN #lobby", b"bob joined!"),
    (b":bob!b@h PART #lobby :bye", b"bob left!"),
    (b":bob!b@h QUIT :Connection closed", b"bob left!"),
    (b":bob!b@h PRIVMSG #lobby :\x01ACTION waves\x01", b"* bob waves"),
    (b":bob!b@h PRIVMSG alice :psst", b"bob (private): psst"),
    (b":bob!b@h PRIVMSG Alice :\x01ACTION winks\x01", b"* bob (private) winks"),
    # a notice stays a notice (a bot's or a service's), to the room or to us
    (b":bob!b@h NOTICE #lobby :heads up", b"-bob- heads up"),
    (b":bob!b@h NOTICE alice :just you", b"-bob- (private) just you"),
    (b":srv 001 alice :Welcome", None),
    (b":srv 404 alice #lobby :Cannot send to channel", b"Not sent: you cannot talk in #lobby now"),
    (b":srv 482 alice #lobby :You're not channel operator", None),
])
def test_render(line, out):
    assert tutorial.render(line, "alice") == out


def test_escape_sequences_never_reach_a_tutorial_terminal():
    assert tutorial.render(b":bob!b@h PRIVMSG #lobby :\x1b[2Jboo\x07", "alice") == b"bob: ?[2Jboo?"


@pytest.mark.parametrize("text, shown", [
    ("\x034red text\x03 plain", "red text plain"),      # irssi's Ctrl+C 4
    ("\x0312,01blue on black\x0f", "blue on black"),
    ("\x02bold\x02 \x1ditalic\x1d \x1funder\x1f \x16rev\x16 \x1estrike\x1e \x11mono\x11",
     "bold italic under rev strike mono"),
    ("\x04ff0000hex red\x04", "hex red"),
    ("\x03,5 comma stays", ",5 comma stays"),            # no colour: only the code goes
    ("99\x03 bottles", "99 bottles"),
    # a colour's numbers are ASCII digits: another script's digit is text
    ("\x034\u0665 red five", "? red five"),
    ("\x03\u0663,\u0661 three", "?,? three"),
])
def test_irc_formatting_is_dropped_not_shown_as_question_marks(text, shown):
    """irssi's and WeeChat's colours and bold read '?4red text? plain' in a
    tutorial terminal: the codes are IRC's markup, not text."""
    line = f":bob!b@h PRIVMSG #lobby :{text}".encode()
    assert tutorial.render(line, "alice") == f"bob: {shown}".encode()
    topic = f":bob!b@h TOPIC #lobby :{text}".encode()
    assert tutorial.render(topic, "alice") == f"bob set the topic: {shown}".encode()


@pytest.mark.parametrize("line, joined, out", [
    (b":alice!a@h KICK #lobby tk :out", True, b"You were kicked from #lobby by alice: out"),
    (b":alice!a@h KICK #Lobby TK :caf\xc3\xa9", True,
     b"You were kicked from #Lobby by alice: caf?"),
    (b":alice!a@h KICK #lobby bob :out", True, None),
    (b":alice!a@h KICK #other tk :out", True, None),
    (b":srv 475 tk #lobby :Cannot join channel (+k)", False,
     b"Cannot join #lobby: the room needs a key"),
    (b":srv 474 tk #lobby :Cannot join channel (+b)", False,
     b"Cannot join #lobby: you are banned from the room"),
    (b":srv 405 tk #lobby :Too many rooms on this server", False,
     b"Cannot join #lobby: Too many rooms on this server"),
    (b":srv 475 tk #other :Cannot join channel (+k)", False, None),
    (b":srv 404 tk #lobby :Cannot send to channel", True, None),
    (b":srv 001 tk :Welcome", False, None),
])
def test_farewell_when_out_of_the_room(line, joined, out):
    assert tutorial.farewell(line, "tk", "#lobby", joined) == out


@pytest.fixture
def tutorial_worker():
    """A tutorial Worker on socket pairs, registered as tk: no processes, no broker."""
    client_end, server_end = socket.socketpair()
    broker_end, link_end = socket.socketpair()
    w = worker.Worker(server_end, "127.0.0.1", "tutorial", 1, config.Config(), "unused")
    w.link.sock = link_end
    w.session.nick, w.session.registered = "tk", True
    yield w
    w.selector.close()
    for sock in (client_end, server_end, broker_end, link_end):
        sock.close()


def test_worker_relays_and_echoes_in_the_room(tutorial_worker):
    tutorial_worker.session.rooms = {"#Lobby": ""}
    tutorial_worker.tutorial_chunks.append(b"tk: hi")
    tutorial_worker._tutorial_flush()
    assert bytes(tutorial_worker.sendq) == b"tk: hi"
    assert tutorial_worker.link.count(ipc.Kind.REQUEST) == 1


def test_worker_renders_each_line_of_a_deliver(tutorial_worker):
    """The broker sends the lines that gathered for a worker as one DELIVER."""
    tutorial_worker.session.rooms = {"#lobby": ""}
    tutorial_worker._on_frame(ipc.Kind.DELIVER, b":bob!b@h PRIVMSG #lobby :hello\r\n"
                                                b":eve!e@h JOIN #lobby\r\n")
    assert bytes(tutorial_worker.sendq) == b"bob: helloeve joined!"


def test_worker_never_echoes_outside_the_room(tutorial_worker):
    """A line that would reach nobody is not shown as sent: the client is told and closed."""
    tutorial_worker.session.rooms = {"#elsewhere": ""}
    tutorial_worker.tutorial_chunks.append(b"tk: hi")
    tutorial_worker._tutorial_flush()
    assert bytes(tutorial_worker.sendq) == b"You are not in #lobby"
    assert tutorial_worker.closing
    assert tutorial_worker.link.count(ipc.Kind.REQUEST) == 0


@pytest.mark.parametrize("reason, said, out", [
    ("Killed (ircop (spam))", None, b"Disconnected by the server: Killed (ircop (spam))"),
    ("Excess Flood", None, b"Disconnected by the server: Excess Flood (you sent too much, too fast)"),
    ("Max SendQ exceeded", None,
     b"Disconnected by the server: Max SendQ exceeded (too much was waiting to be sent to you)"),
    ("Server error: chat service unavailable", None,
     b"Disconnected by the server: Server error: chat service unavailable"),
    ("Server shutting down", "Server shutting down", b"Server shutting down"),
    ("Killed (ircop (caf\u00e9\x1b))", None, b"Disconnected by the server: Killed (ircop (caf??))"),
    ("Connection closed", None, None),
    ("Quit: bye", None, None),
    ("Read error: Connection reset by peer", None, None),
    ("Write error: Broken pipe", None, None),
])
def test_goodbye_says_why_the_server_cut_the_client_off(reason, said, out):
    assert tutorial.goodbye(reason, said) == out


def test_goodbye_is_no_longer_than_an_error_line():
    assert len(tutorial.goodbye("Killed (ircop (" + "x" * 2000 + "))")) == 510


@pytest.mark.parametrize("reason, error_text, out", [
    ("Excess Flood", None, b"Disconnected by the server: Excess Flood (you sent too much, too fast)"),
    ("Server shutting down", "Server shutting down", b"Server shutting down"),
    ("Connection closed", None, b""),
])
def test_worker_close_tells_a_tutorial_client_once(tutorial_worker, reason, error_text, out):
    tutorial_worker.close(reason, error_text=error_text)
    tutorial_worker.close("Max SendQ exceeded")          # a second close says nothing more
    assert bytes(tutorial_worker.sendq) == out
    assert tutorial_worker.done and tutorial_worker.link.count(ipc.Kind.BYE) == 1


def test_worker_tells_a_killed_tutorial_client_and_then_nothing(tutorial_worker):
    """The KILL line itself renders to nothing; the DROP that follows is told."""
    tutorial_worker.session.rooms = {"#lobby": ""}
    tutorial_worker.tutorial_connected = True
    tutorial_worker._on_deliver(b":ircop!i@h KILL tk :Killed (ircop (spam))")
    tutorial_worker._on_drop(b"Killed (ircop (spam))")
    tutorial_worker._on_deliver(b":bob!b@h PRIVMSG #lobby :too late")
    assert bytes(tutorial_worker.sendq) == b"Disconnected by the server: Killed (ircop (spam))"


def test_worker_tells_a_stuck_tutorial_client_within_the_error_room(tutorial_worker):
    """Its queue is cut as an IRC client's is; only the short plain line follows."""
    tutorial_worker.sock.setblocking(False)           # as run() makes it
    tutorial_worker.sendq += b"x" * (8 * 1024 * 1024)
    tutorial_worker._flush_client()
    assert tutorial_worker.stuck
    assert bytes(tutorial_worker.sendq) == \
        b"Disconnected by the server: Max SendQ exceeded (too much was waiting to be sent to you)"
    assert len(tutorial_worker.sendq) <= worker.ERROR_ROOM_BYTES


def test_chunk_strips_the_typed_name_of_a_renamed_client():
    """`sam` served as `sam_1` still writes `sam: `; it is its own prefix, not an address."""
    assert tutorial.chunk_to_lines(b"sam: hi", "sam_1", "#lobby", "sam") == \
        [b"PRIVMSG #lobby :hi"]
    assert tutorial.chunk_to_lines(b"John Smith: hi", "John_Smith", "#lobby", "John Smith") == \
        [b"PRIVMSG #lobby :hi"]
    assert tutorial.chunk_to_lines(b"sam_1: hi", "sam_1", "#lobby", "sam") == \
        [b"PRIVMSG #lobby :hi"]
    assert tutorial.chunk_to_lines(b"bob: hi", "sam_1", "#lobby", "sam") == \
        [b"PRIVMSG #lobby :bob: hi"]


SEGMENT = b"x" * tutorial.SEGMENT_BYTES          # a read TCP may have cut short


@pytest.mark.parametrize("chunk, held", [
    (SEGMENT + b"caf\xc3", 1), (SEGMENT + b"\xe2\x82", 2), (SEGMENT + b"\xf0\x9f\x98", 3),
    (SEGMENT + b"caf\xc3\xa9", 0), (SEGMENT + b"\xe2\x82\xac", 0), (SEGMENT, 0), (b"", 0),
    (SEGMENT + b"\xa9\xa9\xa9\xa9", 0),
    (b"caf\xc3", 0), (b"tk: caf\xe9", 0),       # shorter than a segment: sent so (latin-1)
])
def test_partial_char_finds_a_character_cut_at_the_chunk_end(chunk, held):
    assert tutorial.partial_char(chunk) == held


@pytest.mark.parametrize("partial, chunk, out", [
    (b"\xc3", b"\xa9 ok", b"\xc3\xa9 ok"), (b"\xe2\x82", b"\xac", b"\xe2\x82\xac"),
    (b"", b"tk: hi", b"tk: hi"),
    (b"\xe9", b"tk: next", b"tk: next"),           # latin-1, not a cut character: dropped
    (b"\xc3", b"", b""),
])
def test_rejoin_only_finishes_a_character(partial, chunk, out):
    assert tutorial.rejoin(partial, chunk) == out


def test_worker_joins_a_character_split_between_two_reads(tutorial_worker):
    """TCP may cut the client's text mid-character: the halves make one character, not two '?'."""
    tutorial_worker.session.rooms = {"#lobby": ""}
    tutorial_worker.tutorial_nick = "tk"
    tutorial_worker._tutorial_input(b"tk: " + SEGMENT + b"caf\xc3")
    tutorial_worker._tutorial_input(b"\xa9 ok")
    assert bytes(tutorial_worker.sendq).endswith(b"caftk: ? ok")
    frames = b"".join(tutorial_worker.link.out)
    assert "caf\u00e9".encode()[3:] + b" ok" in frames and b"\xef\xbf\xbd" not in frames


def test_worker_relays_a_latin1_message_as_it_came(tutorial_worker):
    """A short read ending in a latin-1 '\xe9' is the client's whole message: relayed at once,
    and the next one still begins with its own `nick: `, which is removed."""
    tutorial_worker.session.rooms = {"#lobby": ""}
    tutorial_worker.tutorial_nick = "tk"
    tutorial_worker._tutorial_input(b"tk: caf\xe9")
    tutorial_worker._tutorial_input(b"tk: next")
    assert bytes(tutorial_worker.sendq) == b"tk: caf?tk: next"


def test_pieces_fit_the_relayed_line_behind_a_long_prefix():
    """The broker cuts relayed lines at 512 bytes: no piece may lose text there."""
    prefix = "n" * 64 + "!" + "u" * 10 + "@2001:db8:85a3:1234:5678:8a2e:370:7334"
    room = "#" + "r" * 40
    text = "caf\u00e9 " * 300
    lines = tutorial.chunk_to_lines(text.encode(), "nick", room, prefix=prefix)
    assert all(len(f":{prefix} ".encode() + line) <= 510 for line in lines)
    assert b"".join(tutorial.line_text(line) for line in lines) == text.strip().encode()


@pytest.mark.parametrize("chunk, name, rest", [
    (b"tina", b"tina", b""),
    (b"tina\r\n", b"tina\r\n", b""),
    (b"tina\r\nhello all\r\n", b"tina", b"hello all\r\n"),         # telnet, netcat
    (b"\ntina\nhi", b"tina", b"hi"),
    (b"tinatina: hello", b"tina", b"tina: hello"),                  # the classic client, scripted
    (b"John SmithJohn Smith: hi", b"John Smith", b"John Smith: hi"),
    (b"tina: ", b"tina: ", b""),
    (b"a" * 5000, b"a" * 5000, b""),
])
def test_split_name_finds_a_message_read_with_the_name(chunk, name, rest):
    assert tutorial.split_name(chunk) == (name, rest, False)


def test_split_name_finds_a_message_typed_ahead_of_the_name():
    """The classic client fed from a pipe sends `tina: hi` before it answers NICK with `tina`."""
    assert tutorial.split_name(b"tina: first words") == (b"tina", b"tina: first words", True)
    assert tutorial.split_name(b"tina: first wordstina") == (b"tina", b"tina: first words", False)


@pytest.mark.parametrize("chunk, out", [
    (b"tina", b""), (b"tinatina: more", b"tina: more"), (b"tina: more", b"tina: more"),
    (b"tina : more", b"tina : more"), (b"other", b"other"),
])
def test_drop_answer_takes_only_the_late_name(chunk, out):
    assert tutorial.drop_answer(chunk, "tina") == out
