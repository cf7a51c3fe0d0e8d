"""config.load: every bad value is one reported error, never a crash.

Each case writes a small file and checks the error lines that
`--check-config` and a SIGHUP reload would show (str(ConfigError)).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from forkchat import config, protocol, timers


def errors_of(tmp_path: Path, text: str) -> list[str]:
    """The error lines of a config file, or [] when it loads."""
    path = tmp_path / "forkchat.toml"
    path.write_text(text)
    try:
        config.load(str(path))
    except config.ConfigInvalid as invalid:
        return [str(error).removeprefix(str(path)) for error in invalid.errors]
    return []


def loads(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "forkchat.toml"
    path.write_text(text)
    return config.load(str(path))


# -- arrays of tables whose entries are not tables -------------------------------------

@pytest.mark.parametrize(("text", "wanted"), [
    ("listen = [1, 2]\n", [":1: listen[0]: must be a table", ":1: listen[1]: must be a table"]),
    ('operators = ["x"]\n', [":1: operators[0]: must be a table"]),
    ('# c\nlisten = [{port = 0}, "6667"]\n', [":2: listen[1]: must be a table"]),
    ('operators = [{name = "a", password = "b"}, []]\n',
     [":1: operators[1]: must be a table"]),
])
def test_an_array_entry_that_is_not_a_table_is_an_error(tmp_path, text, wanted):
    assert errors_of(tmp_path, text) == wanted


def test_an_empty_array_of_listeners_loads_as_none(tmp_path):
    """`listen = []` serves only the sockets systemd passes (see
    listeners.EMPTY_LISTEN: the start without them refuses it); it was an
    error of the file, and a socket-activated server that named no entry
    did not start."""
    assert loads(tmp_path, "listen = []\n").listen == ()


def test_a_good_inline_array_of_tables_still_loads(tmp_path):
    loaded = loads(tmp_path, 'listen = [{port = 0}, {port = 0, protocol = "tutorial"}]\n')
    assert [listener.protocol for listener in loaded.listen] == ["irc", "tutorial"]


@pytest.mark.parametrize(("text", "wanted"), [
    ("listen = 1\n", [":1: listen: must be an array of tables ([[listen]])"]),
    ("server = 1\n", [":1: server: must be a table"]),
])
def test_a_table_or_array_of_the_wrong_kind_is_named_with_its_line(tmp_path, text, wanted):
    assert errors_of(tmp_path, text) == wanted


@pytest.mark.parametrize(("text", "wanted"), [
    ('[[server]]\nname = "x"\n', [":1: server: must be a table"]),
    ('operators = [{name = "a"}]\n', [":1: operators[0].password: is required"]),
    ('[[operators]]\nname = "a"\npassword = "b"\n\n[[operators]]\nname = "b"\n',
     [":5: operators[1].password: is required"]),
])
def test_every_error_has_a_line(tmp_path, text, wanted):
    """A key left out is placed on its table's header, an inline table on its key."""
    assert errors_of(tmp_path, text) == wanted


def test_errors_come_in_the_order_of_their_lines(tmp_path):
    """--check-config and a failed reload list the problems as the file has
    them: unknown tables came first, then each table's keys, then the
    listeners' values before the limits', so line 9 was said before line 2."""
    text = ('[server]\nnmae = "x"\n[bogus]\na = 1\n[limits]\nmax_clients = -5\n'
            'nicklen = 100000\n[[listen]]\nport = 70000\n[log]\nlevel = "loud"\n')
    lines = [int(error.split(":")[1]) for error in errors_of(tmp_path, text)]
    assert lines == [2, 3, 6, 7, 9, 11]


# -- numbers: finite, and time limits bounded -----------------------------------------

@pytest.mark.parametrize("key", ["connect_rate", "flood_rate", "registration_timeout",
                                 "ping_interval", "ping_timeout"])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "+nan"])
def test_non_finite_numbers_are_refused(tmp_path, key, value):
    assert errors_of(tmp_path, f"[limits]\n{key} = {value}\n") == \
        [f":2: limits.{key}: must be a finite number"]


@pytest.mark.parametrize("key", config.SECONDS_LIMITS)
@pytest.mark.parametrize("value", ["2592000", "1e10", "86400.5"])
def test_time_limits_longer_than_a_day_are_refused(tmp_path, key, value):
    assert errors_of(tmp_path, f"[limits]\n{key} = {value}\n") == \
        [f":2: limits.{key}: must be at most 86400 seconds (one day)"]


@pytest.mark.parametrize("key", config.SECONDS_LIMITS)
def test_a_day_itself_is_allowed(tmp_path, key):
    assert getattr(loads(tmp_path, f"[limits]\n{key} = 86400\n").limits, key) == 86400.0


def test_every_seconds_limit_is_bounded():
    """A new limit in seconds must join SECONDS_LIMITS (and so get the bound)."""
    import dataclasses
    seconds = {f.name for f in dataclasses.fields(config.Limits)
               if f.name.endswith(("_timeout", "_interval", "_window"))}
    assert seconds == set(config.SECONDS_LIMITS)


def test_the_man_page_states_the_bound():
    page = (Path(__file__).resolve().parents[2] / "man" / "forkchat.toml.5").read_text()
    assert f"are at most {config.MAX_SECONDS:.0f} (one day)." in page


def test_the_longest_deadline_fits_a_poll_timeout():
    """epoll takes an int of milliseconds; ping_interval plus ping_timeout is
    the longest deadline a worker sets, and the loop waits at most
    timers.MAX_WAIT_S anyway."""
    int_max_ms = 2**31 - 1
    assert 2 * config.MAX_SECONDS * 1000 < int_max_ms
    assert timers.MAX_WAIT_S * 1000 < int_max_ms


# -- timers: the loop's wait is bounded whatever the deadlines --------------------------

@pytest.mark.parametrize("ahead", [1e10, 2592000.0, float("inf")])
def test_next_timeout_is_capped(ahead):
    import time
    assert timers.next_timeout({"far": time.monotonic() + ahead}) == timers.MAX_WAIT_S


def test_next_timeout_keeps_near_deadlines_and_none():
    import time
    assert timers.next_timeout({}) is None
    assert 0.0 < timers.next_timeout({"soon": time.monotonic() + 5.0}) <= 5.0
    assert timers.next_timeout({"past": time.monotonic() - 5.0}) == 0.0


# -- default_room: the server's own rule ----------------------------------------------

@pytest.mark.parametrize("room", ["#a:b", "#", "&", "lobby", "", "#a b", "#a,b", "#a\u0007b",
                                  "#" + "x" * 50])
def test_a_default_room_the_server_would_refuse_is_an_error(tmp_path, room):
    text = f"[server]\ndefault_room = {json.dumps(room)}\n"      # a TOML basic string
    errors = errors_of(tmp_path, text)
    assert len(errors) == 1 and errors[0].startswith(":2: server.default_room: must be a room")
    assert not protocol.valid_room(room, config.Limits().roomlen)


@pytest.mark.parametrize("room", ["#lobby", "&local", "#" + "x" * 49, "#c++"])
def test_a_default_room_the_server_accepts_loads(tmp_path, room):
    assert loads(tmp_path, f'[server]\ndefault_room = "{room}"\n').server.default_room == room


def test_a_bad_roomlen_is_one_error_not_two(tmp_path):
    assert errors_of(tmp_path, "[limits]\nroomlen = 0\n") == \
        [":2: limits.roomlen: must be positive"]


def test_a_broker_buffer_smaller_than_one_line_in_its_frame_is_an_error(tmp_path):
    """broker_buffer_bytes = 500 loaded, and then a room's longest line
    (512 bytes, in a frame of 517) dropped every member it went to with
    'Max SendQ exceeded', though they all read."""
    assert errors_of(tmp_path, "[limits]\nbroker_buffer_bytes = 516\n") == \
        [":2: limits.broker_buffer_bytes: must be at least 517 (one whole line in its frame "
         "to the worker)"]
    assert loads(tmp_path, "[limits]\nbroker_buffer_bytes = 517\n").limits \
        .broker_buffer_bytes == 517


def test_a_recvq_smaller_than_one_line_is_an_error(tmp_path):
    """recvq_bytes = 100 loaded, and then any line that came in two TCP
    segments (its first 100 bytes alone) cut its client off with Excess Flood."""
    assert errors_of(tmp_path, "[limits]\nrecvq_bytes = 511\n") == \
        [":2: limits.recvq_bytes: must be at least 512 (one whole line)"]
    assert loads(tmp_path, "[limits]\nrecvq_bytes = 512\n").limits.recvq_bytes == 512


@pytest.mark.parametrize("key, ceiling", [("nicklen", 64), ("roomlen", 200),
                                          ("topiclen", 480)])
def test_announced_lengths_have_a_ceiling(tmp_path, key, ceiling):
    """005 announces these; nicklen = 100000 was loaded, and clients were
    told they could send nicks no 512-byte line carries."""
    errors = errors_of(tmp_path, f"[limits]\n{key} = {ceiling + 1}\n")
    assert len(errors) == 1 and errors[0].startswith(
        f":2: limits.{key}: must be at most {ceiling} (")
    assert getattr(loads(tmp_path, f"[limits]\n{key} = {ceiling}\n").limits, key) == ceiling


def test_default_room_follows_the_configured_roomlen(tmp_path):
    text = '[server]\ndefault_room = "#abcdef"\n[limits]\nroomlen = {}\n'
    assert loads(tmp_path, text.format(7)).server.default_room == "#abcdef"
    errors = errors_of(tmp_path, text.format(6))
    assert len(errors) == 1 and "at most 6 in all" in errors[0]


# -- forkchat.toml(5) and forkchat-server(8) say what the code does --------------------

MAN = Path(__file__).resolve().parents[2] / "man"


def rendered(page: str) -> str:
    """A page as the reader sees it (mandoc, plain ASCII), whitespace collapsed."""
    result = subprocess.run(["mandoc", "-T", "ascii", "-O", "width=1000", str(MAN / page)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return " ".join(re.sub(r".\x08", "", result.stdout).split())


def item(key: str) -> str:
    """The rendered text of one key's item in forkchat.toml(5), up to the next key."""
    text = rendered("forkchat.toml.5")
    found = re.search(rf" {re.escape(key)} (.*?) (?:new connections|reload|restart|required)\.",
                      text)
    assert found, key
    return found.group(1)


def test_ping_timeout_does_not_close_silent_tutorial_clients():
    """The worker arms no ping timer for a tutorial client (forkchat(7) agrees)."""
    text = item("ping_timeout")
    assert "closed alike" not in text
    assert "does not apply to tutorial clients" in text


def test_tutorial_messages_beyond_flood_rate_are_held_not_dropped():
    text = item("flood_rate")
    assert "dropped" not in text
    assert "held and relayed at the rate" in text and "Excess Flood" in text


def test_a_malformed_operator_hash_is_documented_as_reported(tmp_path):
    assert errors_of(tmp_path, '[[operators]]\nname = "op"\npassword = "scrypt$nope"\n') == \
        [":3: operators[0].password: malformed scrypt hash "
         "(make one with forkchat-server --hash-password)"]
    operators = rendered("forkchat.toml.5").split("[[operators]]", 2)[2].split("[log]")[0]
    assert "not reported" not in operators
    assert "is an error: reported by --check-config" in operators


def test_every_section_the_pages_point_to_exists():
    """'see BUGS in forkchat-server(8)' named a section that was never written."""
    pointers = [found for page in sorted(p.name for p in MAN.iterdir())
                for found in re.findall(r"see ([A-Z][A-Z ]*[A-Z]) in (forkchat[\w.-]*)\((\d)\)",
                                        rendered(page))]
    missing = [(section, f"{name}({number})") for section, name, number in pointers
               if not re.search(rf'^\.SH "?{section}"?$',
                                (MAN / f"{name}.{number}").read_text(), re.MULTILINE)]
    assert pointers and missing == []


def test_listeners_text_has_no_reload_bug_warning():
    text = rendered("forkchat.toml.5").split("[[listen]]", 2)[2].split(" address ")[0]
    assert "currently stops the server" not in text
    assert "listeners removed from it are closed" in text


@pytest.fixture
def cert(tmp_path):
    """A throwaway certificate (an EC key: quick to make)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


def test_a_passed_socket_gets_the_tls_of_its_entry(tmp_path, cert):
    """forkchat-server(8) once said passed sockets are never TLS; they take the
    TLS of the [[listen]] entry cli.passed_spec matches them with."""
    from forkchat import cli, listeners
    cfg = loads(tmp_path, f'[[listen]]\nport = 0\nprotocol = "tutorial"\n'
                          f'[[listen]]\nport = 0\ntls_cert = "{cert[0]}"\n'
                          f'tls_key = "{cert[1]}"\n')
    assert cli.passed_spec(cfg, 0, "irc").tls_cert == cert[0]        # by name
    assert cli.passed_spec(cfg, 1, "unknown").tls_cert == cert[0]    # by position
    assert cli.passed_spec(cfg, 0, "unknown").tls_cert == ""
    assert cli.passed_spec(cfg, 2, "unknown") == config.Listener()   # no entry: plain irc
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    bound = listeners.adopt(sock.detach(), cli.passed_spec(cfg, 0, "irc"))
    try:
        assert bound.tls is not None and bound.label.endswith("(irc) with TLS")
    finally:
        bound.sock.close()
    text = rendered("forkchat-server.8")
    assert "served without TLS." not in text.split("socket activation are")[-1][:40]
    assert "A socket passed by systemd socket activation is served with the TLS of the " \
           "[[listen]] entry it is matched with" in text


@pytest.mark.parametrize("text, wanted", [
    ("127.0.0.1:7000", ("127.0.0.1", 7000)),
    ("[::1]:7000", ("::1", 7000)),
    ("[::]", ("::", 6667)),
    (":7000", ("0.0.0.0", 7000)),
    ("host", ("host", 6667)),
])
def test_hostport_forms_of_the_man_page(text, wanted):
    assert config.parse_hostport(text) == wanted


@pytest.mark.parametrize("text", ["a..b:0", "300.1.1.1:7000", "[1::2::3]:7000", "-x-:7000"])
def test_a_command_line_address_that_can_never_be_bound_is_a_usage_error(text):
    """-l and --tutorial-listen are checked as [[listen]] addresses are:
    'a..b:0' passed --check-config ("configuration OK"), and the start then
    failed with 'Name or service not known'."""
    with pytest.raises(ValueError, match="bad address in"):
        config.parse_hostport(text)


@pytest.mark.parametrize("text", ["[::1", "[::1]7000", "::1:7000", "::", "1:2:3", "[]", "[]:7000"])
def test_an_unclosed_or_unbracketed_ipv6_address_is_a_usage_error(text):
    """Taken as a host before, '[::1' served [::1]:6667 and '::1:0' failed at
    bind as 'cannot listen on ::1:0:6667'; now --check-config says why.  Empty
    brackets name no address: they served every IPv4 address (0.0.0.0)."""
    with pytest.raises(ValueError, match="bad address.*\\[::1\\]:6667"):
        config.parse_hostport(text)


@pytest.mark.parametrize("text", ["127.0.0.1: 7000", "127.0.0.1:7000 ", ":7_000", ":+7000",
                                  ":\u0667\u0660\u0660\u0660", ":\u00b2", "[::1]: 7000"])
def test_a_port_that_is_not_ascii_digits_is_a_usage_error(text):
    """int() took ' 7000', '7_000', '+7000' and Arabic-Indic digits: -l
    '127.0.0.1: 0' served an ephemeral port without a word; '\u00b2' passed
    isdigit() and then failed int() with Python's own message."""
    with pytest.raises(ValueError, match="bad port in"):
        config.parse_hostport(text)


@pytest.mark.parametrize("text, wanted", [
    ('[limits]\nmax_clients = "ten"\n', ':2: limits.max_clients: must be an integer, not a string'),
    ('[limits]\nflood_rate = true\n', ':2: limits.flood_rate: must be a number, not true or false'),
    ('[server]\nname = 5\n', ':2: server.name: must be a string, not an integer'),
    ('[server]\nallow_root = "yes"\n', ':2: server.allow_root: must be true or false, not a string'),
    ('[server]\nname = 1979-05-27\n', ':2: server.name: must be a string, not a date or time'),
    ('[limits]\nping_interval = -1\n', ':2: limits.ping_interval: must be 0 or more (0: off)'),
])
def test_type_errors_name_toml_types_and_zero_is_offered_where_allowed(tmp_path, text, wanted):
    """'must be int, not str' spoke Python; ping_interval = -1 said 'must be
    positive', though 0 is allowed."""
    path = tmp_path / "f.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigInvalid) as caught:
        config.load(str(path))
    assert [str(e).removeprefix(str(path)) for e in caught.value.errors] == [wanted]


# -- [[listen]] entries that bind() would refuse -----------------------------------------

DOTTED_QUAD = "in dotted-quad form (four decimal numbers from 0 to 255, as in 127.0.0.1)"


@pytest.mark.parametrize(("address", "wanted"), [
    ("not an address", "'not an address': must be an IP address or a host name, such as "
                       "0.0.0.0, :: or chat.example.org"),
    ("300.1.1.1", f"'300.1.1.1' is not an IPv4 address {DOTTED_QUAD}"),
    ("1.2.3", f"'1.2.3' is not an IPv4 address {DOTTED_QUAD}"),
    ("::g", "'::g' is not an IPv6 address"),
    ("[::1]", 'an IPv6 address is written without brackets here, as in "::1"'),
    ("127.0.0.1:6667", "'127.0.0.1:6667': the port goes in the port key, the address alone here"),
    ("-chat.example.org", "'-chat.example.org': must be an IP address or a host name, such as "
                          "0.0.0.0, :: or chat.example.org"),
    # it bound every IPv4 address, undocumented, and showed as ":7000" in warnings
    ("", 'must not be empty: "0.0.0.0" is every IPv4 address, "::" every address'),
])
def test_an_address_that_cannot_be_bound_is_an_error(tmp_path, address, wanted):
    """They passed --check-config and stopped the server at start (exit 1)."""
    assert errors_of(tmp_path, f'[[listen]]\naddress = "{address}"\nport = 7000\n') == \
        [f":2: listen[0].address: {wanted}"]


# The forms inet_aton(3) reads, as bind()'s name lookup does: "0x7f.1" was
# taken for a host name and bound 127.0.0.1, while "127.1" was refused.
INET_ATON_FORMS = ["0x7f.1", "0x7f.0.0.1", "0X7F.0.0.1", "0x7f000001", "0x7f", "127.1",
                   "2130706433", "017.0.0.1", "127.0.0.01", "0177.1", "127.0.0.1."]


@pytest.mark.parametrize("address", INET_ATON_FORMS)
def test_an_ipv4_address_not_in_dotted_quad_form_is_an_error(tmp_path, address):
    assert errors_of(tmp_path, f'[[listen]]\naddress = "{address}"\nport = 7000\n') == \
        [f":2: listen[0].address: '{address}' is not an IPv4 address {DOTTED_QUAD}"]


@pytest.mark.parametrize("address", INET_ATON_FORMS)
def test_listen_option_takes_ipv4_in_dotted_quad_form_only(address):
    """-l follows the file's rule."""
    with pytest.raises(ValueError) as caught:
        config.parse_hostport(f"{address}:7000")
    assert str(caught.value) == (f"bad address in '{address}:7000': '{address}' is not an "
                                 f"IPv4 address {DOTTED_QUAD}")


@pytest.mark.parametrize("address", ["0x7f.example.org", "a.0x1", "deadbeef", "1e3",
                                     # "0x" with no digit is no number to inet_aton(3)
                                     "0x", "1.0x", "0X.1",
                                     "1password.example", "0day.lan", "123.example.com"])
def test_host_names_with_hexadecimal_looks_load(tmp_path, address):
    """Not numbers to inet_aton(3): names, looked up when bound."""
    assert loads(tmp_path, f'[[listen]]\naddress = "{address}"\nport = 0\n').listen[0].address \
        == address


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "127.0.0.1", "::1", "fe80::1%lo",
                                     "localhost", "chat.example.org", "chat.example.org."])
def test_addresses_and_host_names_load(tmp_path, address):
    assert loads(tmp_path, f'[[listen]]\naddress = "{address}"\nport = 0\n').listen[0].address \
        == address


# -- unknown keys and tables: their line, and where a misplaced key belongs -------------

@pytest.mark.parametrize(("text", "wanted"), [
    ('motd = "hi"\n[server]\nname = "a"\n',
     ":1: motd: unknown key outside any table (a key of [server])"),
    ('# top\nname = "x"\n', ":2: name: unknown key outside any table (a key of [server] or "
                           "[[operators]])"),
    ("bogus = 1\n", ":1: bogus: unknown key outside any table"),
    ("[bogus]\nx = 1\n", ":1: bogus: unknown table"),
    ('[server]\nname = "a"\n[bogus.deeper]\nx = 1\n', ":3: bogus: unknown table"),
    ("# top\nbogus.x = 1\n", ":2: bogus: unknown table"),
    ("[limits]\nmax_clients = 5\n[limits.sub]\nx = 1\n", ":3: limits.sub: unknown key"),
    ("[server]\nfoo.bar = 1\n", ":2: server.foo: unknown key"),
    ("[server]\nmax_clients = 10\n", ":2: server.max_clients: unknown key (a key of [limits])"),
    ('[limits]\nmotd = "appended at the end"\n',
     ":2: limits.motd: unknown key (a key of [server])"),
    ("[log]\nport = 6697\n", ":2: log.port: unknown key (a key of [[listen]])"),
])
def test_an_unknown_key_or_table_has_its_line_and_its_home(tmp_path, text, wanted):
    """A key above every header was 'motd: unknown table' without a line, and
    a key under the wrong header did not say which table has it."""
    assert errors_of(tmp_path, text) == [wanted]


# -- the message of the day: read whole, and small enough to travel -------------------

def test_an_motd_file_that_cannot_be_read_names_the_file(tmp_path):
    missing = tmp_path / "missing.txt"
    assert errors_of(tmp_path, f'[server]\nmotd_file = "{missing}"\n') == \
        [f":2: server.motd_file: cannot read {missing}: No such file or directory"]


def test_an_motd_file_that_cannot_be_read_is_reported_with_the_other_errors(tmp_path):
    """--check-config said only the other keys' errors, and the missing file
    came up on the next run, once they were fixed: every problem at once."""
    missing = tmp_path / "missing.txt"
    assert errors_of(tmp_path, f'[server]\nmotd_file = "{missing}"\n'
                               f'[limits]\nnicklen = 100\n') == \
        [f":2: server.motd_file: cannot read {missing}: No such file or directory",
         ":4: limits.nicklen: must be at most 64 (a nick change carries two nicks and a "
         "prefix in one line)"]


@pytest.mark.parametrize("size", [262144 + 1, 1 << 20])
def test_an_motd_too_big_for_the_brokers_frame_is_an_error(tmp_path, size):
    """A reload hands the configuration to the broker in one frame of at most
    1 MiB: a bigger one was dropped, and the reload said it was done."""
    motd = tmp_path / "motd.txt"
    motd.write_bytes(b"x" * 79 + b"\n" + b"y" * (size - 80))
    too_long = "the message of the day must be at most 262144 bytes"
    assert errors_of(tmp_path, f'[server]\nmotd_file = "{motd}"\n') == \
        [f":2: server.motd_file: {motd}: {too_long}"]
    assert errors_of(tmp_path, f'[server]\nmotd = "{"z" * size}"\n') == \
        [f":2: server.motd: {too_long}"]


def test_the_biggest_motd_fits_the_reload_frame(tmp_path):
    from forkchat import ipc
    import pickle
    motd = tmp_path / "motd.txt"
    motd.write_text("\u00e9" * (262144 // 2))     # two bytes each
    loaded = loads(tmp_path, f'[server]\nmotd_file = "{motd}"\n')
    assert len(loaded.server.motd) == 262144 // 2
    # the rest of the configuration (operators, listeners) keeps half the frame
    assert len(ipc.encode(ipc.Kind.CONFIG, pickle.dumps(loaded))) < ipc.MAX_FRAME_BYTES // 2


def test_the_motd_bound_is_documented():
    assert config.MAX_MOTD_BYTES == 262144
    assert "At most 262144 bytes" in item("motd")


def test_a_file_that_cannot_be_read_says_why_in_words(tmp_path):
    """'[Errno 2] No such file or directory: ...' and Python's codec text
    ('can't decode byte 0xe9 in position 28') had no line to look at."""
    missing = tmp_path / "missing.toml"
    with pytest.raises(config.ConfigInvalid) as caught:
        config.load(str(missing))
    assert [str(e) for e in caught.value.errors] == \
        [f"{missing}: file: cannot read: No such file or directory"]
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('# ok\n[server]\nmotd = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(config.ConfigInvalid) as caught:
        config.load(str(latin1))
    assert [str(e) for e in caught.value.errors] == \
        [f"{latin1}:3: file: not UTF-8 text (byte 0xe9); TOML files are UTF-8"]


@pytest.mark.parametrize("value", [2 ** 63, -2 ** 63 - 1, 10 ** 19, 10 ** 40])
def test_an_integer_past_64_bits_is_refused(tmp_path, value):
    """TOML's integers are 64-bit and tomllib takes any: max_rooms =
    10000000000000000000 passed --check-config, then the broker crashed at
    every start on SQLite's 'Python int too large to convert to SQLite
    INTEGER', and the server halted after five restarts."""
    assert errors_of(tmp_path, f"[limits]\nmax_rooms = {value}\n") == [
        ":2: limits.max_rooms: must fit in 64 bits, as TOML's integers do"]


def test_the_largest_64_bit_integer_starts_a_broker_with_its_store(tmp_path):
    from forkchat import store
    most = loads(tmp_path, f"[limits]\nmax_rooms = {2 ** 63 - 1}\n").limits.max_rooms
    kept = store.RoomStore(str(tmp_path))
    try:
        assert kept.load(most) == {}
    finally:
        kept.release()


def test_a_byte_order_mark_is_named(tmp_path):
    """A file saved 'UTF-8 with BOM' (Notepad's way) was 'syntax: Invalid
    statement (at line 1, column 1)', which names nothing to fix."""
    path = tmp_path / "forkchat.toml"
    path.write_bytes(b"\xef\xbb\xbf[server]\nname = 'x'\n")
    with pytest.raises(config.ConfigInvalid) as caught:
        config.load(str(path))
    assert [str(e) for e in caught.value.errors] == \
        [f"{path}:1: file: starts with a byte order mark (U+FEFF), which TOML does not "
         f"allow; save it as UTF-8 without one"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_an_motd_file_that_is_no_regular_file_is_an_error_at_once(tmp_path, kind):
    """A named pipe without a writer blocked the load, and so a reload held
    the supervisor's loop (no connection taken) until someone wrote to it."""
    path = tmp_path / "motd"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    assert errors_of(tmp_path, f'[server]\nmotd_file = "{path}"\n') == \
        [f":2: server.motd_file: cannot read {path}: not a regular file"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_config_file_that_is_no_regular_file_is_an_error_at_once(tmp_path, kind):
    """A named pipe without a writer blocked the start and --check-config
    for ever, and a SIGHUP reload held the supervisor's loop (no connection
    taken) until someone wrote to it.  A device may have no end (/dev/null,
    used here, has one: /dev/zero would fill the memory without the fix)."""
    path = tmp_path / "forkchat.toml"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path = Path("/dev/null")
    with pytest.raises(config.ConfigInvalid) as caught:
        config.load(str(path))
    assert [str(e) for e in caught.value.errors] == \
        [f"{path}: file: cannot read: not a regular file"]


def test_a_config_file_past_the_bound_is_an_error(tmp_path):
    """-c naming a big file by mistake had it read whole, at the start and at
    each SIGHUP, in the supervisor's loop; the bound keeps a file of comments."""
    path = tmp_path / "forkchat.toml"
    line = "# " + "x" * 61 + "\n"
    text = '[server]\nname = "big.example"\n'
    text += line * ((config.MAX_CONFIG_BYTES - len(text)) // len(line))
    path.write_text(text + "#" * (config.MAX_CONFIG_BYTES - len(text) - 1) + "\n")
    assert path.stat().st_size == config.MAX_CONFIG_BYTES
    assert config.load(str(path)).server.name == "big.example"
    with path.open("a") as handle:
        handle.write("\n")
    with pytest.raises(config.ConfigInvalid) as caught:
        config.load(str(path))
    assert [str(e) for e in caught.value.errors] == [
        f"{path}: file: bigger than 4194304 bytes, the most a configuration file may be: "
        f"is it the right file?"]


def test_the_config_file_bound_is_documented():
    assert config.MAX_CONFIG_BYTES == 4194304
    assert "at most 4 MiB (4194304 bytes)" in rendered("forkchat-server.8")
    assert "The file is at most 4 MiB (4194304 bytes)" in rendered("forkchat.toml.5")


@pytest.mark.timeout(10)
def test_a_huge_config_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "disk.img"
    with path.open("wb") as handle:
        handle.truncate(64 << 30)                 # sparse: 64 GiB that take no room
    with pytest.raises(config.ConfigInvalid) as caught:
        config.load(str(path))
    assert "bigger than 4194304 bytes" in str(caught.value)


@pytest.mark.parametrize(("text", "wanted"), [
    ('[[listen]]\nport = 6697\ntls_cert = "/etc/forkchat/cert.pem"\n',
     ":3: listen[0].tls_cert: tls_key is missing: tls_cert and tls_key go together"),
    ('[[listen]]\nport = 6697\ntls_key = "/etc/forkchat/key.pem"\n',
     ":3: listen[0].tls_key: tls_cert is missing: tls_cert and tls_key go together"),
])
def test_a_lone_tls_file_names_the_one_missing_on_the_given_ones_line(tmp_path, text, wanted):
    """A lone tls_key was reported as listen[0].tls_cert, on the [[listen]] line."""
    assert errors_of(tmp_path, text) == [wanted]


# -- empty values that can never be meant ---------------------------------------------

def test_an_empty_state_dir_is_an_error(tmp_path):
    """state_dir = "" loaded, and the room store went to whatever directory the
    server was started in (/ under systemd); --check-config only called it
    relative."""
    assert errors_of(tmp_path, '[server]\nname = "x"\nstate_dir = ""\n') == \
        [':3: server.state_dir: must name a directory, such as "/var/lib/forkchat"']
    assert loads(tmp_path, '[server]\nstate_dir = "."\n').server.state_dir == "."


def operator_errors(tmp_path: Path, name: str, password: str) -> list[str]:
    text = f"[[operators]]\nname = {json.dumps(name)}\npassword = {json.dumps(password)}\n"
    return errors_of(tmp_path, text)


OPER_NAME = (":2: operators[0].name: must be a name OPER can carry: not empty, no space or "
             "control character, not starting with a colon")


@pytest.mark.parametrize("name", ["", "the boss", " op", "op ", "tab\there", "new\nline",
                                  ":op", "nul\0", "del\x7f"])
def test_an_operator_name_oper_can_never_carry_is_an_error(tmp_path, name):
    """An empty name, or one with a space, loaded without a word, and no OPER
    could ever give it: the name is a middle parameter of the line."""
    assert operator_errors(tmp_path, name, "secret") == [OPER_NAME]


@pytest.mark.parametrize("password, wanted", [
    ("", "must not be empty: OPER never carries an empty password (make a hash with "
         "forkchat-server --hash-password)"),
    ("two\nlines", "a plain password cannot hold CR, LF or NUL: no OPER line carries them"),
    ("cr\r", "a plain password cannot hold CR, LF or NUL: no OPER line carries them"),
    ("nul\0", "a plain password cannot hold CR, LF or NUL: no OPER line carries them"),
])
def test_an_operator_password_oper_can_never_carry_is_an_error(tmp_path, password, wanted):
    assert operator_errors(tmp_path, "op", password) == [f":3: operators[0].password: {wanted}"]


def test_both_fields_of_an_operator_are_reported_at_once(tmp_path):
    assert operator_errors(tmp_path, "", "") == [
        OPER_NAME, ":3: operators[0].password: must not be empty: OPER never carries an "
                   "empty password (make a hash with forkchat-server --hash-password)"]


def test_an_operator_name_and_password_must_fit_one_oper_line(tmp_path):
    """'OPER name password' CRLF is one line of at most 512 bytes."""
    fits = "o" * 500                     # OPER, space, 500, space, 4, CRLF: 512
    assert operator_errors(tmp_path, fits, "abcd") == []
    assert operator_errors(tmp_path, fits, "abcde") == [
        ":3: operators[0].password: OPER with this name and password is a 513-byte line, "
        "and lines are at most 512 bytes"]
    # a password with a space goes after a colon, one byte more
    assert operator_errors(tmp_path, fits, "a c") == []
    assert len(operator_errors(tmp_path, fits, "ab d")) == 1
    hashed = "scrypt$16384$8$1$00$00"    # a hash stands for any password, one byte at least
    assert operator_errors(tmp_path, "o" * 503, hashed) == []
    assert len(operator_errors(tmp_path, "o" * 504, hashed)) == 1


REPEATED = "an operator has one block (with two, either password is accepted)"


@pytest.mark.parametrize(("text", "wanted"), [
    ('[[operators]]\nname = "alice"\npassword = "old"\n\n[[operators]]\nname = "bob"\n'
     'password = "b"\n\n[[operators]]\npassword = "new"\nname = "alice"\n',
     [f":11: operators[2].name: 'alice' is the name of operators[0] too (line 2): {REPEATED}"]),
    ('operators = [{name = "op", password = "a"}, {name = "op", password = "b"},\n'
     '             {name = "op", password = "c"}]\n',
     [f":1: operators[1].name: 'op' is the name of operators[0] too (line 1): {REPEATED}",
      f":1: operators[2].name: 'op' is the name of operators[0] too (line 1): {REPEATED}"]),
])
def test_an_operator_named_twice_is_an_error(tmp_path, text, wanted):
    """Two blocks of one name loaded without a word, and OPER tried both: a
    block added with a new password left the old one valid beside it."""
    assert errors_of(tmp_path, text) == wanted


def test_operator_names_differing_in_case_are_two_operators(tmp_path):
    """OPER compares names case-sensitively: Op and op are not one name."""
    loaded = loads(tmp_path, 'operators = [{name = "op", password = "a"}, '
                             '{name = "Op", password = "b"}]\n')
    assert [operator.name for operator in loaded.operators] == ["op", "Op"]


@pytest.mark.parametrize(("password", "wanted"), [
    ("two\nlines", "a plain password cannot hold CR, LF or NUL: no PASS line carries them"),
    ("nul\0", "a plain password cannot hold CR, LF or NUL: no PASS line carries them"),
    ("x" * 506, "PASS with this password is a 513-byte line, and lines are at most 512 bytes"),
    ("a " + "x" * 503, "PASS with this password is a 513-byte line, and lines are at most "
                       "512 bytes"),     # after a colon, one byte more
])
def test_a_server_password_no_pass_line_carries_is_an_error(tmp_path, password, wanted):
    """It loaded, and no client could register: PASS never carries CR, LF
    or NUL, nor a line past 512 bytes."""
    assert errors_of(tmp_path, f"[server]\npassword = {json.dumps(password)}\n") == \
        [f":2: server.password: {wanted}"]


@pytest.mark.parametrize("password", ["x" * 505, "a " + "x" * 502, "tab\tin", "", "scrypt$" +
                                      "16384$8$1$00$00"])
def test_server_passwords_pass_can_carry_load(tmp_path, password):
    assert loads(tmp_path, f"[server]\npassword = {json.dumps(password)}\n").server.password \
        == password


@pytest.mark.parametrize("name, password", [("op", "a b"), ("Élise", ":colon"),
                                            ("a:b", "tab\tin"), ("[ops]", "x")])
def test_operators_oper_can_carry_load(tmp_path, name, password):
    loaded = loads(tmp_path, f"[[operators]]\nname = {json.dumps(name)}\n"
                             f"password = {json.dumps(password)}\n")
    assert loaded.operators == (config.Operator(name, password),)


@pytest.mark.parametrize("network, wanted", [
    ("", "must be one word without spaces or control characters (005 announces NETWORK=name)"),
    ("Example Net", "must be one word without spaces or control characters (005 announces "
                    "NETWORK=name)"),
    ("a\r\nb", "must be one word without spaces or control characters (005 announces "
                "NETWORK=name)"),
    ("N" * 64, "must be at most 63 bytes (005 announces it in one line with eleven other "
               "tokens)"),
    ("\u00e9" * 32, "must be at most 63 bytes (005 announces it in one line with eleven other "
                    "tokens)"),
])
def test_a_network_005_cannot_announce_is_an_error(tmp_path, network, wanted):
    """network = "Example Net" sent NETWORK=Example and a token "Net" in 005,
    and one of 300 bytes cut the first 005 line before NICKLEN."""
    assert errors_of(tmp_path, f"[server]\nnetwork = {json.dumps(network)}\n") == \
        [f":2: server.network: {wanted}"]


@pytest.mark.parametrize("network", ["ExampleNet", "N" * 63, "R\u00e9seau", "a,b"])
def test_a_network_005_can_announce_loads(tmp_path, network):
    assert loads(tmp_path, f"[server]\nnetwork = {json.dumps(network)}\n").server.network == \
        network


TOO_LONG_NAME = ("must be at most 63 bytes (RFC 2812's bound on a host name; it prefixes "
                 "every line the server sends)")


@pytest.mark.parametrize("name", ["s" * 62 + "xy", "\u00e9" * 32 + ".example"])
def test_a_server_name_over_63_bytes_is_an_error(tmp_path, name):
    """A name of 320 bytes cut the 005 lines short: TOPICLEN and the rest lost."""
    assert errors_of(tmp_path, f"[server]\nname = {json.dumps(name)}\n") == \
        [f":2: server.name: {TOO_LONG_NAME}"]
    fits = name.encode()[-63:].decode(errors="ignore")
    assert loads(tmp_path, f'[server]\nname = "{fits}"\n').server.name == fits


def test_a_port_alone_without_its_colon_is_told_how_to_write_it():
    """-l 6667 is read as a host (inet_aton's 0.0.26.11) and refused: say
    that a port alone is written ':6667'.  A number with a port after it
    is no port alone, and gets no such hint."""
    with pytest.raises(ValueError) as caught:
        config.parse_hostport("6667")
    assert str(caught.value) == (f"bad address in '6667': '6667' is not an IPv4 address "
                                 f"{DOTTED_QUAD}; a port alone is written :6667")
    with pytest.raises(ValueError) as caught:
        config.parse_hostport("2130706433:7000")
    assert "port alone" not in str(caught.value)
