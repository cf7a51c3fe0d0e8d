"""A SIGHUP as clients see it: each row changes one key and says who gets
the new value, the client connected before the reload or only one
connected after it, as forkchat.toml(5) marks the key (reload or new
connections).  One server, one reload for every row."""

import signal

from tests.conftest import TEST_LIMITS
from tests.support.ircclient import IrcTestClient

BEFORE = TEST_LIMITS + """
[server]
motd = "old motd"
admin_name = "Old Admin"
[[operators]]
name = "old"
password = "oldpass"
"""
AFTER = TEST_LIMITS + """nicklen = 40
rooms_per_client = 1
[server]
network = "NewNet"
motd = "new motd"
admin_name = "New Admin"
password = "letmein"
[[operators]]
name = "new"
password = "newpass"
"""
LONG_NICK = "n" * 35        # over the default nicklen, 30, within 40


def motd(client):
    client.send("MOTD")
    return client.expect("372").params[-1].removeprefix("- ")


def admin(client):
    client.send("ADMIN")
    return client.expect("258").params[-1]


def nick_change(client):
    nick = f"{LONG_NICK}{client.nick[:3]}"
    client.send(f"NICK {nick}")
    answer = client.expect(lambda m: m.command in ("NICK", "432")).command
    if answer == "NICK":
        client.nick = nick
    return answer


def second_join(client):
    client.send("JOIN #one,#two")
    return client.expect(lambda m: m.command == "405" or (
        m.command == "JOIN" and m.params[0] == "#two")).command


def whois_network(client):
    client.send(f"WHOIS {client.nick}")
    return client.expect("312").params[-1]


def links(client):
    client.send("LINKS")
    return client.expect("364").params[-1]


def oper_new(client):
    client.send("OPER new newpass")
    return client.expect(lambda m: m.command in ("381", "464")).command


# (key, probe, what the client connected before the reload gets, what a new one gets)
ROWS = [
    ("motd (reload)", motd, "new motd", "new motd"),
    ("nicklen (reload)", nick_change, "NICK", "NICK"),
    ("rooms_per_client (reload)", second_join, "405", "405"),
    ("network (reload)", whois_network, "NewNet chat server", "NewNet chat server"),
    ("network (LINKS: new connections)", links, "0 forkchat", "0 NewNet"),
    ("admin_name (new connections)", admin, "Old Admin", "New Admin"),
    ("operators (new connections)", oper_new, "464", "381"),
]


def test_each_key_reaches_the_clients_its_class_says(make_server):
    server = make_server(config_text=BEFORE)
    old = IrcTestClient(server.port)
    old.register("old")
    assert motd(old) == "old motd"
    mark = server.log_length()
    server.write_config(AFTER)
    server.signal(signal.SIGHUP)
    server.wait_for_text("configuration reloaded", start=mark)
    server.wait_for_text("broker took the new configuration", start=mark)

    refused = IrcTestClient(server.port)            # password: new connections
    refused.send("NICK nopass")
    refused.send("USER nopass 0 * :x")
    assert refused.expect(lambda m: m.command in ("464", "001")).command == "464"
    refused.close()
    new = IrcTestClient(server.port)
    new.register("new", password="letmein")
    old.sync()                                      # ... and the old one stays

    got = {key: (probe(old), probe(new)) for key, probe, _old, _new in ROWS}
    assert got == {key: (want_old, want_new) for key, _probe, want_old, want_new in ROWS}
    old.close()
    new.close()
