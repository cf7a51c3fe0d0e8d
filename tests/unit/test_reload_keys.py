"""What a SIGHUP does with each configuration key, one row a key.

forkchat.toml(5) marks every key `reload` (applied at once), `new
connections` (workers started after the reload get it) or `restart`.  The
table below says the same, and where the value goes on a reload; the tests
check the page against it, and run a reload (no process started: the
spawner and the broker are stubbed) that changes each key alone.
"""

from __future__ import annotations

import dataclasses
import pickle
import re

import pytest

from forkchat import broker, config, ipc, supervisor
from tests.unit.test_manpages import MAN, plain_text
from tests.unit.test_supervisor_reload import reload_to

RELOAD, NEW, RESTART = "reload", "new connections", "restart"
# (table, key) -> (class, where a reload puts it, a changed value):
#   broker:    the broker's settings or links, for every client at once
#   admission: the supervisor's connection limits, before any worker
#   spawner:   the configuration new workers are started with
#   start:     kept as it runs, with a warning
#   listeners: bound and closed by the supervisor (tests/integration/test_reload_*.py)
KEYS = {
    ("server", "name"): (RELOAD, "broker", "other.example"),
    ("server", "network"): (RELOAD, "broker", "OtherNet"),
    ("server", "motd"): (RELOAD, "broker", "another day"),
    ("server", "motd_file"): (RELOAD, "spawner", "/etc/motd"),   # read into motd at load
    ("server", "password"): (NEW, "spawner", "sesame"),
    ("server", "default_room"): (NEW, "spawner", "#hall"),
    ("server", "state_dir"): (RESTART, "start", "/srv/forkchat"),
    ("server", "user"): (RESTART, "start", "chat"),
    ("server", "group"): (RESTART, "start", "chat"),
    ("server", "allow_root"): (RESTART, "start", True),
    ("server", "memory_merge"): (NEW, "spawner", True),
    ("server", "admin_name"): (NEW, "spawner", "Ada"),
    ("server", "admin_email"): (NEW, "spawner", "ada@example.org"),
    ("listen", "address"): (RELOAD, "listeners", None),
    ("listen", "port"): (RELOAD, "listeners", None),
    ("listen", "protocol"): (RELOAD, "listeners", None),
    ("listen", "tls_cert"): (RELOAD, "listeners", None),
    ("listen", "tls_key"): (RELOAD, "listeners", None),
    ("limits", "max_clients"): (RELOAD, "admission", 10),
    ("limits", "max_clients_per_ip"): (RELOAD, "admission", 3),
    ("limits", "ipv4_prefix"): (RELOAD, "admission", 24),
    ("limits", "ipv6_prefix"): (RELOAD, "admission", 56),
    ("limits", "connect_burst"): (RELOAD, "admission", 5),
    ("limits", "connect_rate"): (RELOAD, "admission", 1.5),
    ("limits", "sendq_bytes"): (NEW, "spawner", 65536),
    ("limits", "recvq_bytes"): (NEW, "spawner", 4096),
    ("limits", "broker_buffer_bytes"): (RELOAD, "broker", 65536),
    ("limits", "flood_burst"): (NEW, "spawner", 3),
    ("limits", "flood_rate"): (NEW, "spawner", 0.5),
    ("limits", "nick_changes"): (NEW, "spawner", 2),
    ("limits", "nick_change_window"): (NEW, "spawner", 60.0),
    ("limits", "registration_timeout"): (NEW, "spawner", 10.0),
    ("limits", "ping_interval"): (NEW, "spawner", 0.0),
    ("limits", "ping_timeout"): (NEW, "spawner", 30.0),
    ("limits", "nicklen"): (RELOAD, "broker", 16),
    ("limits", "roomlen"): (RELOAD, "broker", 32),
    ("limits", "topiclen"): (RELOAD, "broker", 300),
    ("limits", "rooms_per_client"): (RELOAD, "broker", 5),
    ("limits", "members_per_room"): (RELOAD, "broker", 100),
    ("limits", "bans_per_room"): (RELOAD, "broker", 10),
    ("limits", "max_rooms"): (RELOAD, "broker", 20),
    ("operators", "name"): (NEW, "spawner", "root"),
    ("operators", "password"): (NEW, "spawner", "hunter2"),
    ("log", "level"): (RELOAD, "broker", "debug"),     # workers: new connections
}
TABLES = {"server": config.Server, "listen": config.Listener, "limits": config.Limits,
          "operators": config.Operator, "log": config.Log}
SECTIONS = {"server": "[server]", "listen": "[[listen]]", "limits": "[limits]",
            "operators": "[[operators]]", "log": "[log]"}
CLASS = re.compile(r"[;.] (reload|new connections|restart)\b")


def test_the_table_has_every_key():
    keys = {(table, f.name) for table, cls in TABLES.items() for f in dataclasses.fields(cls)}
    assert sorted(keys ^ set(KEYS)) == []


def items(section: str) -> dict[str, str]:
    """key -> the plain text of its .TP item in one section of forkchat.toml(5)."""
    found: dict[str, list[str]] = {}
    current, key = "", ""
    lines = (MAN / "forkchat.toml.5").read_text().splitlines()
    for previous, line in zip(lines, lines[1:]):
        if line.startswith(".SH "):
            current, key = line[4:].strip('"'), ""
        elif previous == ".TP":
            key = plain_text(line) if current == section else ""
            found.setdefault(key, [])
        elif current == section and key and not line.startswith((".TP", ".PP", ".TQ")):
            found[key].append(plain_text(line))
    return {k: " ".join(" ".join(v).split()) for k, v in found.items() if k}


@pytest.mark.parametrize(("table", "key"), sorted(KEYS))
def test_the_man_page_gives_the_key_its_class(table, key):
    """The first class word after the type and default is the key's class;
    an operator's is said once for the table."""
    if table == "operators":
        section = (MAN / "forkchat.toml.5").read_text().split(".SH [[operators]]")[1]
        assert "applies to connections accepted after the\nreload (new connections)" \
            in section or "reload (new connections)" in " ".join(section.split())
        return
    text = items(SECTIONS[table])[key]
    found = CLASS.search(text[text.index("default"):] if "default" in text else text)
    assert found, text
    assert found.group(1) == KEYS[(table, key)][0], text


def test_the_restart_keys_are_the_ones_the_supervisor_keeps():
    restart = {key for (table, key), (kind, _w, _v) in KEYS.items() if kind == RESTART}
    assert restart == set(supervisor.RESTART_ONLY_KEYS)


# No listener (none bound by these tests), and an operator to change.
RUNNING = config.Config(listen=(), operators=(config.Operator("admin", "secret"),))


def changed(table: str, key: str, value) -> config.Config:
    """RUNNING, with one key of one table changed."""
    base = RUNNING
    if table == "operators":
        operator = dataclasses.replace(base.operators[0], **{key: value})
        return dataclasses.replace(base, operators=(operator,))
    return dataclasses.replace(
        base, **{table: dataclasses.replace(getattr(base, table), **{key: value})})


def value_in(cfg: config.Config, table: str, key: str):
    entry = cfg.operators[0] if table == "operators" else getattr(cfg, table)
    return getattr(entry, key)


@pytest.mark.parametrize(("table", "key"), sorted(k for k, row in KEYS.items()
                                                  if row[1] != "listeners"))
def test_a_reload_that_changes_one_key(caplog, table, key):
    kind, where, value = KEYS[(table, key)]
    assert value != value_in(RUNNING, table, key)
    new = changed(table, key, value)
    running = RUNNING
    spawned = []
    boss, frames, warnings = reload_to(caplog, new, running=running, spawned=spawned)
    if kind == RESTART:
        assert value_in(boss.cfg, table, key) == value_in(running, table, key)
        assert warnings == [f"{key} changed in the file: takes effect at the next start"]
        return
    assert warnings == []
    assert spawned and value_in(spawned[-1], table, key) == value   # new workers get it
    decoded = [ipc.FrameReader().feed(frame)[0] for frame in frames]
    # the configuration alone: each worker's flood limits go with its bind
    assert [kind_sent for kind_sent, _ in decoded] == [ipc.Kind.CONFIG]
    sent = pickle.loads(decoded[0][1])
    assert value_in(sent, table, key) == value
    if where == "admission":
        assert getattr(boss.admission.limits, key) == value
    elif where == "broker" and table != "log" and key != "broker_buffer_bytes":
        assert broker.settings_from(sent, "") != broker.settings_from(running, "")
