"""Which [[listen]] entry serves each socket systemd passes (cli.passed_specs).

systemd's own bindings are written here as getsockname() reports them: a
bare ListenStream=6667 binds "::" (every IPv6 and IPv4 address).  No socket
is bound but for systemd.bound_address, on 127.0.0.1 port 0.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import tempfile

import pytest

from forkchat import cli, config, systemd

TLS = {"tls_cert": "/etc/forkchat/cert.pem", "tls_key": "/etc/forkchat/key.pem"}


def listen(*entries: config.Listener) -> config.Config:
    return dataclasses.replace(config.Config(), listen=entries)


def specs(cfg: config.Config, *sockets: tuple[str, tuple[str, int]]) -> list[int | None]:
    """The index of the entry each socket gets, None for one made up (plain)."""
    chosen = cli.passed_specs(cfg, list(sockets))
    return [next((i for i, spec in enumerate(cfg.listen) if spec is got), None)
            for got in chosen]


PLAIN = config.Listener(port=6667)                    # the default address, 127.0.0.1
SECURE = config.Listener(port=6697, **TLS)


@pytest.mark.parametrize("host", ["::", "0.0.0.0", "127.0.0.1"])
def test_the_plain_and_tls_pair_of_one_unit_get_the_entries_of_their_ports(host):
    """ListenStream=6667 and 6697 in one unit: both named irc, told apart by port."""
    for cfg in (listen(PLAIN, SECURE), listen(SECURE, PLAIN)):
        got = cli.passed_specs(cfg, [("irc", (host, 6667)), ("irc", (host, 6697))])
        assert got == [PLAIN, SECURE]


def test_a_port_no_entry_names_falls_back_to_an_entry_no_other_socket_has():
    """Only the TLS port has an entry: the other irc socket is plain, not TLS."""
    cfg = listen(SECURE)
    got = cli.passed_specs(cfg, [("irc", ("::", 6667)), ("irc", ("::", 6697))])
    assert got == [config.Listener(protocol="irc"), SECURE]
    assert specs(listen(PLAIN, SECURE), ("irc", ("::", 7000))) == [0]     # the first, as before


def test_a_named_socket_is_matched_among_the_entries_of_its_protocol():
    tutorial = config.Listener(port=6667, protocol="tutorial")
    cfg = listen(tutorial, PLAIN)
    assert specs(cfg, ("irc", ("::", 6667)), ("tutorial", ("::", 6667))) == [1, 0]
    # an entry of the other protocol on the port is not taken: the name wins
    assert cli.passed_specs(listen(tutorial), [("irc", ("::", 6667))]) == [
        config.Listener(protocol="irc")]


def test_unnamed_sockets_take_the_protocol_of_the_entry_of_their_port():
    tutorial = config.Listener(port=5555, protocol="tutorial")
    cfg = listen(SECURE, tutorial, PLAIN)
    found = specs(cfg, ("forkchat.socket", ("::", 6667)), ("forkchat.socket", ("::", 5555)),
                  ("forkchat.socket", ("::", 6697)))
    assert found == [2, 1, 0]
    # no entry of the port: the entry at its position, unless another socket has it
    assert specs(cfg, ("unknown", ("::", 6667)), ("unknown", ("::", 7000))) == [2, 1]
    assert specs(cfg, ("unknown", ("::", 6697)), ("unknown", ("::", 7000))) == [0, 1]
    assert specs(cfg, ("unknown", ("::", 7000)), ("unknown", ("::", 6697))) == [None, 0]


def test_the_entry_of_the_sockets_own_address_comes_before_a_wildcard_one():
    """0.0.0.0 and one address on one port: only systemd can bind both (the
    server itself refuses the pair), and each socket gets its own entry."""
    every = config.Listener(address="0.0.0.0", port=6667)
    public = config.Listener(address="192.0.2.10", port=6667, **TLS)
    cfg = listen(every, public)
    assert specs(cfg, ("irc", ("127.0.0.1", 6667)), ("irc", ("192.0.2.10", 6667))) == [0, 1]
    assert specs(cfg, ("irc", ("192.0.2.10", 6667)), ("irc", ("127.0.0.1", 6667))) == [1, 0]


def test_an_entry_of_another_address_is_not_matched():
    """An IPv6 entry and an IPv4-only socket, or two different addresses, do
    not overlap: the fallback by name decides."""
    cfg = listen(config.Listener(address="::1", port=6697, **TLS), PLAIN)
    assert specs(cfg, ("irc", ("0.0.0.0", 6697))) == [0]            # by name: the first
    assert specs(cfg, ("forkchat.socket", ("192.0.2.10", 6697))) == [0]   # by position
    cfg = listen(config.Listener(address="192.0.2.10", port=6697, **TLS))
    assert specs(cfg, ("irc", ("127.0.0.1", 6667)), ("irc", ("192.0.2.10", 6697))) == [None, 0]


def test_a_host_name_entry_is_matched_by_its_port_alone():
    """Host names are not looked up before a bind, and systemd did the bind."""
    named = config.Listener(address="chat.example.org", port=6697, **TLS)
    cfg = listen(PLAIN, named)
    assert specs(cfg, ("irc", ("127.0.0.1", 6667)), ("irc", ("192.0.2.10", 6697))) == [0, 1]
    assert specs(cfg, ("irc", ("::", 6697))) == [1]


def test_one_port_on_two_addresses_and_a_wildcard_socket_takes_the_first_and_says_so(caplog):
    """systemd's socket on every address could be either entry: the first
    in the file serves it, and the log names both when they differ."""
    local = config.Listener(address="127.0.0.1", port=6667)
    public = config.Listener(address="192.0.2.10", port=6667, **TLS)
    with caplog.at_level(logging.WARNING, logger="forkchat.supervisor"):
        assert specs(listen(local, public), ("irc", ("::", 6667))) == [0]
    assert caplog.messages == [
        "the socket systemd passed on [::]:6667 matches listen[0] (127.0.0.1:6667) and "
        "listen[1] (192.0.2.10:6667), which differ: it is served as listen[0] (name each "
        "address in the .socket unit, ListenStream=ADDRESS:PORT, to tell them apart)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="forkchat.supervisor"):
        same = dataclasses.replace(public, **{"tls_cert": "", "tls_key": ""})
        assert specs(listen(local, same), ("irc", ("::", 6667))) == [0]
    assert caplog.messages == []              # alike: nothing to say


def test_bound_address_reads_the_passed_socket_and_leaves_it_open():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        assert systemd.bound_address(sock.fileno()) == sock.getsockname()
        assert sock.getsockname()[1] > 0          # still open, still ours
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        assert systemd.bound_address(sock.fileno()) == ("::1", sock.getsockname()[1])


@pytest.mark.parametrize(("family", "kind", "shown"), [
    (socket.AF_UNIX, socket.SOCK_STREAM, "AF_UNIX SOCK_STREAM"),       # ListenStream=/path
    (socket.AF_INET, socket.SOCK_DGRAM, "AF_INET SOCK_DGRAM"),        # ListenDatagram=
])
def test_bound_address_refuses_a_socket_that_is_not_tcp(family, kind, shown):
    """A Unix socket was served as "listening on /:r (irc)", and its first
    client stopped the server with a traceback (IndexError on its address)."""
    with tempfile.TemporaryDirectory() as directory, socket.socket(family, kind) as sock:
        sock.bind(os.path.join(directory, "sock") if family == socket.AF_UNIX
                  else ("127.0.0.1", 0))
        with pytest.raises(ValueError) as refused:
            systemd.bound_address(sock.fileno())
        assert str(refused.value) == (
            f"fd {sock.fileno()} passed by systemd is not a TCP socket ({shown}): forkchat "
            f"serves TCP only, give the .socket unit ListenStream=PORT or "
            f"ListenStream=ADDRESS:PORT")
        assert sock.getsockname()                 # still open


def test_the_socket_units_tls_example_verifies_and_serves_tls_on_its_port_only(tmp_path):
    """forkchat.socket's comments say one unit serves plain and TLS IRC; the
    unit with their ListenStream=6697 verifies, and their [[listen]] entry
    serves the 6697 socket alone."""
    from tests.unit.test_units import UNITS, install_copies, verify
    lines = (UNITS / "forkchat.socket").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "add ListenStream=6697 here" in line)
    toml = []
    for line in lines[start + 2:]:
        if not line.startswith("#   "):
            break
        toml.append(line[4:])
    install_copies(tmp_path)
    unit = tmp_path / "forkchat.socket"
    unit.write_text(unit.read_text().replace("ListenStream=6667\n",
                                             "ListenStream=6667\nListenStream=6697\n"))
    result = verify(tmp_path, "forkchat.socket", "forkchat.service")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    path = tmp_path / "forkchat.toml"
    path.write_text("\n".join(toml) + "\n")
    cfg = config.load(str(path))
    got = cli.passed_specs(cfg, [("irc", ("::", 6667)), ("irc", ("::", 6697))])
    assert [spec.tls_cert for spec in got] == ["", "/etc/forkchat/fullchain.pem"]


def test_bound_address_of_a_descriptor_that_is_no_socket_is_a_value_error(tmp_path):
    """open_listeners turns ValueError into one line and status 1."""
    with open(tmp_path / "file", "w") as handle:
        with pytest.raises(ValueError, match=rf"^fd {handle.fileno()} passed by systemd is "
                                             r"not a socket \(Socket operation on non-socket\)$"):
            systemd.bound_address(handle.fileno())


def test_a_tls_entry_serves_no_other_port_and_an_unserved_one_is_warned_of(caplog):
    """The TLS entry written before the unit passes its port (ListenStream=
    6697 added, the socket unit not restarted): the one socket, 6667, took
    it by name and spoke TLS to every plain client."""
    caplog.set_level(logging.WARNING, logger="forkchat.supervisor")
    assert cli.passed_specs(listen(SECURE), [("irc", ("::", 6667))]) == [
        config.Listener(protocol="irc")]
    assert specs(listen(SECURE), ("forkchat.socket", ("::", 6667))) == [None]   # by position
    assert [r.getMessage() for r in caplog.records] == [
        "listen[0] (port 6697, with TLS) serves none of the sockets systemd passed: "
        "add ListenStream=6697 to the socket unit, then stop the service and restart the "
        "socket unit"] * 2
    caplog.clear()
    any_port = config.Listener(port=0, **TLS)              # port 0: whatever systemd binds
    assert specs(listen(any_port), ("irc", ("::", 6667))) == [0]
    assert specs(listen(PLAIN, any_port), ("irc", ("::", 6667))) == [0]   # another took it
    assert caplog.records == []                          # no "add ListenStream=0"
