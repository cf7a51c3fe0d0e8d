"""Registration: NICK/USER, CAP, PASS, the welcome burst, timeouts."""

import socket

from tests.conftest import TEST_LIMITS
from tests.support.ircclient import IrcTestClient


def test_welcome_burst(registered):
    """RFC 2812 5.1: 001-004 on registration; 005 ISUPPORT; LUSERS; MOTD."""
    alice = registered("alice")
    codes = [m.command for m in alice.history]
    for code in ("001", "002", "003", "004", "005", "251", "375", "372", "376"):
        assert code in codes
    assert codes.index("001") < codes.index("005") < codes.index("251") < codes.index("376")
    isupport = " ".join(" ".join(m.params) for m in alice.history if m.command == "005")
    for token in ("NETWORK=", "CHANTYPES=", "CASEMAPPING=rfc1459", "NICKLEN=", "CHANNELLEN=",
                  "TOPICLEN=", "PREFIX=(ov)@+", "CHANMODES=", "MODES=", "UTF8ONLY"):
        assert token in isupport
    welcome = alice.history[codes.index("001")]
    assert welcome.params[0] == "alice" and "alice!alice@127.0.0.1" in welcome.params[-1]


def test_nick_in_use_is_case_insensitive(registered, clients):
    """RFC 2812 3.1.2: 433 ERR_NICKNAMEINUSE; rfc1459 case mapping."""
    registered("Alice[1]")
    other = clients()
    other.send("NICK alice{1}")
    other.expect("433", None, "*", "alice{1}")
    other.send("NICK alice2")
    other.send("USER a 0 * :A")
    other.expect("001")


def test_erroneous_and_missing_nick(clients):
    client = clients()
    client.send("NICK 1abc")
    client.expect("432")
    client.send("NICK")
    client.expect("431")


def test_commands_before_registration_get_451(clients):
    client = clients()
    client.send("JOIN #a")
    client.expect("451")
    client.send("PRIVMSG #a :hi")
    client.expect("451")


def test_cap_negotiation_holds_registration_until_cap_end(clients):
    """IRCv3: registration waits for CAP END once CAP LS was sent."""
    client = clients()
    client.send("CAP LS 302")
    client.send("NICK capper")
    client.send("USER c 0 * :C")
    ls = client.expect("CAP")
    assert ls.params[:2] == ["*", "LS"]
    client.send("CAP REQ :multi-prefix")
    assert client.expect("CAP").params[1] == "NAK"
    client.sync("before-end")
    assert not any(m.command == "001" for m in client.history)
    client.send("CAP END")
    client.expect("001")


def test_user_twice_and_pass_after_registration_get_462(registered):
    alice = registered("alice")
    alice.send("USER again 0 * :x")
    alice.expect("462")
    alice.send("PASS late")
    alice.expect("462")


def test_ping_pong_and_quit(registered):
    alice = registered("alice")
    alice.send("PING :token123")
    pong = alice.expect("PONG")
    assert pong.params[-1] == "token123"
    alice.send("PING")
    alice.expect("409")
    alice.send("QUIT :see you")
    closing = alice.expect_closed()
    assert closing[-1].command == "ERROR" and "Quit: see you" in closing[-1].params[0]


def test_password_required(make_server):
    server = make_server(extra_args=["--password", "letmein"])
    wrong = IrcTestClient(server.port)
    wrong.send("PASS nope")
    wrong.send("NICK bad")
    wrong.send("USER b 0 * :B")
    wrong.expect("464")
    assert wrong.expect_closed()[-1].command == "ERROR"
    right = IrcTestClient(server.port)
    right.register("good", password="letmein")
    missing = IrcTestClient(server.port)
    missing.send("NICK nopass")
    missing.send("USER n 0 * :N")
    missing.expect("464")
    for client in (wrong, right, missing):
        client.close()


def test_registration_timeout(make_server):
    server = make_server(config_text="[limits]\nregistration_timeout = 1\n")
    client = IrcTestClient(server.port)
    client.send("NICK slowpoke")
    closing = client.expect_closed(timeout=5)
    assert closing[-1].command == "ERROR" and "Registration timed out" in closing[-1].params[0]
    client.close()


def test_ping_timeout(make_server):
    server = make_server(config_text="[limits]\nping_interval = 1\nping_timeout = 1\n")
    client = IrcTestClient(server.port)
    client.register("sleepy")
    assert client.expect("PING", 4).params
    closing = client.expect_closed(timeout=5)
    assert "Ping timeout" in closing[-1].params[0]
    client.close()


def test_motd_from_config_and_motd_command(make_server):
    server = make_server(config_text='[server]\nmotd = "line one\\nline two"\n')
    client = IrcTestClient(server.port)
    burst = client.register("reader")
    motd = [m.params[-1] for m in burst if m.command == "372"]
    assert motd == ["- line one", "- line two"]
    client.send("MOTD")
    client.expect("375")
    client.expect("376")
    client.close()


def test_version_time_info_admin(registered):
    alice = registered("alice")
    alice.send("VERSION")
    assert alice.expect("351").params[1].startswith("forkchat-")
    alice.send("TIME")
    alice.expect("391")
    alice.send("INFO")
    alice.expect("371")
    alice.expect("374")
    alice.send("ADMIN")
    for code in ("256", "257", "258", "259"):
        alice.expect(code)


def test_admin_texts_are_trailing_even_as_one_word(make_server):
    """Modern: `257 <client> :<info>`, `258 ...`, `259 <client> :<info>`: the text
    follows ' :' even when it is one word, as in every numeric the broker sends
    (some clients find a numeric's text by ' :' alone)."""
    server = make_server(config_text=TEST_LIMITS + '[server]\nnetwork = "OneWord"\n'
                         'admin_name = "Ops"\nadmin_email = "ops@example.org"\n')
    alice = IrcTestClient(server.port)
    try:
        alice.register("alice")
        alice.send("ADMIN")
        raw = {}
        while len(raw) < 4:
            line = alice.read_line().decode()
            code = line.split()[1]
            if code in ("256", "257", "258", "259"):
                raw[code] = line
        assert raw["257"].endswith(" alice :OneWord")
        assert raw["258"].endswith(" alice :Ops")
        assert raw["259"].endswith(" alice :ops@example.org")
    finally:
        alice.close()


def test_unknown_command_421(registered):
    alice = registered("alice")
    alice.send("FROBNICATE x")
    alice.expect("421", None, "alice", "FROBNICATE")


def test_wrong_server_passwords_make_the_address_wait(make_server):
    """Each guess is a new connection, and each cost a scrypt hash: the
    connect rate alone let an address guess (and burn a core) 20 times a
    second.  Past the free failures the address waits, the password
    unchecked, the right one too."""
    from forkchat import operguard
    server = make_server(extra_args=["--password", "letmein"])
    for index in range(operguard.FREE_FAILURES + 1):
        guess = IrcTestClient(server.port)
        guess.send(f"PASS guess{index}")
        guess.send(f"NICK guess{index}")
        guess.send("USER g 0 * :G")
        assert guess.expect("464").params[-1] == "Password incorrect"
        guess.expect_closed()
        guess.close()
    server.wait_for_text("connections from 127.0.0.1 must wait: "
                         f"{operguard.FREE_FAILURES + 1} failed password or OPER attempts")
    late = IrcTestClient(server.port)
    try:
        late.send("PASS letmein")
        late.send("NICK late")
        late.send("USER l 0 * :L")
        refusal = late.expect("464").params[-1]
        assert refusal.startswith("Too many failed password attempts from your address")
        assert late.expect_closed()[-1].command == "ERROR"
    finally:
        late.close()


def test_clients_that_give_no_password_are_not_counted_as_guessing(make_server):
    """A tutorial client cannot send PASS, and an IRC client that sent none
    guessed nothing: counted, a few of them locked out the address's users."""
    from forkchat import operguard
    server = make_server(extra_args=["--password", "letmein",
                                     "--tutorial-listen", "127.0.0.1:0"])
    for index in range(operguard.FREE_FAILURES + 2):
        bare = IrcTestClient(server.port)
        bare.send(f"NICK bare{index}")
        bare.send("USER b 0 * :B")
        assert bare.expect("464").params[-1] == "Password incorrect"
        bare.expect_closed()
        bare.close()
        tutorial = socket.create_connection(("127.0.0.1", server.port_of("tutorial")), timeout=5)
        tutorial.sendall(f"tutor{index}".encode())
        while tutorial.recv(4096):          # told why, then closed
            pass
        tutorial.close()
    right = IrcTestClient(server.port)
    try:
        assert right.register("right", password="letmein")[0].command == "001"
    finally:
        right.close()
    assert "must wait" not in server.log_text()


def test_hashed_server_password(make_server):
    from forkchat import passwords
    hashed = passwords.hash_password("s3cret")
    server = make_server(config_text=f'[server]\npassword = "{hashed}"\n')
    good = IrcTestClient(server.port)
    good.register("good", password="s3cret")
    bad = IrcTestClient(server.port)
    bad.send("PASS scrypt$guess")
    bad.send("NICK bad")
    bad.send("USER b 0 * :B")
    bad.expect("464")
    good.close()
    bad.close()


def test_lines_end_in_crlf_or_bare_lf_and_a_partial_line_waits(registered):
    """A line ends with CR LF; a bare LF is accepted; the rest waits for its end."""
    alice = registered("alice")
    alice.sock.sendall(b"PING :A\r\nPING :B\nPING :C")     # raw: no line end added
    assert alice.expect("PONG").params[-1] == "A"
    assert alice.expect("PONG").params[-1] == "B"
    alice.send(b"D\r\n")
    assert alice.expect("PONG").params[-1] == "CD"
