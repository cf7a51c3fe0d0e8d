"""The wire protocol's edge cases as raw sockets send them: lines that
cannot be parsed, and what a client that sent one expects back.

Docstrings quote RFC 2812 or the modern client protocol document; the
module shares one server (see chat_helpers).
"""

from tests.integration.chat_helpers import drain, joined
from tests.integration.chat_helpers import clients, server, shared_server  # noqa: F401 (one server per module)


def test_quit_whose_reason_is_not_utf8_still_closes(registered):
    """RFC 2812 3.1.7: "A client session is terminated with a quit message";
    a latin-1 reason cannot be relayed (design section 2), but the QUIT was
    ignored and the client stayed connected after saying goodbye."""
    alice, bob = registered("alice"), registered("bob")
    joined(alice, bob, room="#chan")
    alice.send(b"QUIT :Tsch\xfc\xdf\r\n")
    error = alice.expect("ERROR")
    assert "Client Quit" in error.params[-1]
    assert alice.read_line() is None
    quits = [m for m in drain(bob) if m.command == "QUIT"]
    assert [(m.prefix.split("!")[0], m.params) for m in quits] == [("alice", ["Client Quit"])]


def test_nick_that_is_not_utf8_is_an_erroneous_nickname(clients):
    """RFC 2812 3.1.2: a NICK that cannot be used is answered 432, which a
    registering client answers with another nick; a latin-1 nick drew only a
    'line ignored' NOTICE, and the client waited out the registration timeout."""
    client = clients()
    client.send(b"NICK J\xf6rg\r\n")
    client.send("USER jorg 0 * :J")
    refused = client.expect("432")
    assert refused.params[:2] == ["*", "J\ufffdrg"]
    assert "UTF-8" in refused.params[-1]
    client.send("NICK jorg")
    client.expect("001")
    client.nick = "jorg"
    client.send(b"NICK J\x00rg\r\n")
    assert client.expect("432").params[:2] == ["jorg", "J_rg"]


def test_user_whose_real_name_is_not_utf8_registers(clients):
    """irctest's testNonutf8Realname: a server answers 'USER u * * :i\\xe8rc\\xe9'
    with 001 or with an ERROR, never with silence.  The latin-1 real name
    of an old client or script drew a 'line ignored' NOTICE, and the client
    waited out the registration timeout; it is read as Windows-1252 (a
    superset of latin-1's printable characters) now, UTF-8
    beside it kept, and shown so in WHOIS."""
    client = clients()
    client.send("NICK jose")
    client.send(b"USER jos\xe9 0 * :Jos\xe9 J\xc3\xb6rg\r\n")
    client.expect("001")
    client.nick = "jose"
    client.send("WHOIS jose")
    whois = client.expect("311")
    assert whois.params[2] == "jos"             # the user name keeps ASCII (clean_user)
    assert whois.params[-1] == "Jos\u00e9 J\u00f6rg"


def test_user_with_nul_ends_the_attempt_with_an_error(clients):
    """A USER holding NUL cannot be read at all; before registration the
    client is told why and the connection ends, instead of a NOTICE and a
    silent wait for the registration timeout."""
    client = clients()
    client.send("NICK nully")
    client.send(b"USER nully 0 * :Nu\x00lly\r\n")
    error = client.expect("ERROR")
    assert "NUL byte in USER line" in error.params[-1]
    assert client.read_line() is None


def test_part_whose_reason_is_not_utf8_still_leaves(registered):
    """RFC 2812 3.2.2: PART removes the client from the rooms it names; a
    latin-1 reason cannot be relayed, but the PART was ignored (a NOTICE)
    and the client stayed in a room it had said goodbye to.  It leaves
    now without the reason; a room name that is not UTF-8 is refused."""
    alice, bob = registered("alice"), registered("bob")
    joined(alice, bob, room="#chan")
    alice.send(b"PART #chan :Tsch\xfc\xdf\r\n")
    parted = alice.expect("PART")
    assert parted.params == ["#chan"]
    parts = [m for m in drain(bob) if m.command == "PART"]
    assert [(m.prefix.split("!")[0], m.params) for m in parts] == [("alice", ["#chan"])]
    alice.send(b"PART #caf\xe9 :bye\r\n")
    assert "not valid UTF-8" in alice.expect("NOTICE").params[-1]


def test_an_http_post_to_the_irc_port_runs_none_of_its_body(clients):
    """A web page can make its visitor's browser POST to an IRC port; the
    headers drew 451s, and the body's lines then registered the browser and
    said what the page wanted in a room (the 2004 Firefox attack, which
    ircds answer by closing).  The request line closes the connection."""
    watcher = clients()
    watcher.register("watcher")
    watcher.join("#lobby")
    body = b"NICK spammer\r\nUSER s 0 * :s\r\nJOIN #lobby\r\nPRIVMSG #lobby :spam\r\n"
    browser = clients()
    browser.send(b"POST / HTTP/1.1\r\nHost: chat\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    error = browser.expect_closed()[-1]
    assert error.command == "ERROR" and "HTTP request on an IRC port" in error.params[-1]
    assert drain(watcher) == []
