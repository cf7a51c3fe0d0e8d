"""Room topics, modes, keys, limits and bans outlive the broker and the server."""

import os
import pwd
import shutil
import signal
import tempfile

import psutil
import pytest

from forkchat import protocol, store
from tests.support.ircclient import IrcTestClient
from tests.support.server import ServerProcess, broker_pid

LIMITS = "[limits]\nflood_burst = 100\nflood_rate = 100.0\n"
# The servers whose store is fixed under them try it again every 0.25 s, not
# every store.RETRY_S (2 s): "written again" comes at the next try.
QUICK_RETRY = "from forkchat import store\nstore.RETRY_S = 0.25"


def set_up_room(client: IrcTestClient) -> None:
    client.join("#kept")
    for line in ("TOPIC #kept :what we keep", "MODE #kept +k sesame", "MODE #kept +l 10",
                 "MODE #kept +b bad!*@*", "MODE #kept +m"):
        client.send(line)
        client.expect(lambda m: m.command in ("TOPIC", "MODE"))


def check_room(client: IrcTestClient) -> None:
    client.send("MODE #kept")
    modes = client.expect("324")
    assert modes.params[2].startswith("+") and set("klmnt") <= set(modes.params[2])
    assert "sesame" in modes.params and "10" in modes.params
    client.send("TOPIC #kept")
    assert client.expect("332").params[-1] == "what we keep"
    client.send("MODE #kept b")
    assert client.expect("367").params[2] == "bad!*@*"


def join_kept_room(client: IrcTestClient) -> None:
    """A newcomer finds #kept as set_up_room left it: refused without its
    key, let in with it, and shown its topic and modes."""
    client.send("JOIN #kept")
    client.expect("475")
    client.send("JOIN #kept sesame")
    assert client.expect("332").params[-1] == "what we keep"
    client.collect_until("366")
    check_room(client)


def seen_after_a_restart(args: list[str], check, config_text: str = LIMITS,
                         state_dir: str | None = None) -> None:
    """The server started again on the same state dir; a newcomer there
    `check`s what it kept.  Stopped after, and `state_dir` removed."""
    again = ServerProcess(config_text=config_text, extra_args=args).start()
    try:
        newcomer = IrcTestClient(again.port)
        newcomer.register("newcomer")
        check(newcomer)
        newcomer.close()
    finally:
        again.stop()
        if state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)


def topic_of_kept(topic: str):
    """A check: joining #kept shows `topic`."""
    def check(client: IrcTestClient) -> None:
        client.send("JOIN #kept")
        assert client.expect("332").params[-1] == topic
    return check


def test_room_survives_a_broker_kill(make_server):
    server = make_server(config_text=LIMITS)
    alice = IrcTestClient(server.port)
    alice.register("alice")
    set_up_room(alice)
    bob = IrcTestClient(server.port)
    bob.register("bob")
    bob.send("JOIN #kept sesame")
    bob.collect_until("366")
    mark = server.log_length()
    os.kill(broker_pid(server), signal.SIGKILL)
    broker_pid(server, after=mark)
    server.wait_for_text("recovery done", start=mark)
    check_room(bob)
    alice.close()
    bob.close()


def test_a_room_emptied_just_before_a_broker_kill_stays_gone(make_server):
    """A topic and a key were written at once, the room's removal when its
    last member left with the next half-second batch: a kill -9 within
    that half second left the next broker the record, and a newcomer
    making the room afresh was refused it (475, the old key) or, with the
    key, shown the old topic, nobody told why.  The removal of a room with
    such a record is written before its PART goes out."""
    server = make_server(config_text=LIMITS)
    alice = IrcTestClient(server.port)
    alice.register("alice")
    alice.join("#warm")     # its batch goes now: the next waits half a second
    for line in ("JOIN #r", "MODE #r +k sekrit", "TOPIC #r :old", "PART #r"):
        alice.send(line)
    alice.expect("PART")
    mark = server.log_length()
    os.kill(broker_pid(server), signal.SIGKILL)
    broker_pid(server, after=mark)
    server.wait_for_text("recovery done", start=mark)
    bob = IrcTestClient(server.port)
    bob.register("bob")
    bob.send("JOIN #r")
    burst: list[protocol.Message] = []
    bob.expect(lambda m: burst.append(m) or m.command in ("366", "475"))
    assert [m.command for m in burst if m.command in ("JOIN", "475", "332")] == ["JOIN"]
    bob.send("MODE #r")
    assert bob.expect("324").params[2:] == ["+nt"]
    alice.close()
    bob.close()


def test_room_survives_a_server_restart():
    state_dir = tempfile.mkdtemp(prefix="forkchat-state-")
    os.chmod(state_dir, 0o777)
    args = ["--state-dir", state_dir]
    first = ServerProcess(config_text=LIMITS, extra_args=args).start()
    try:
        alice = IrcTestClient(first.port)
        alice.register("alice")
        set_up_room(alice)
        alice.sync()
    finally:
        assert first.stop() == 0     # alice is still in the room as the server stops
    alice.close()
    seen_after_a_restart(args, join_kept_room, state_dir=state_dir)


def test_a_missing_state_dir_is_made_when_serving_as_ourselves():
    with tempfile.TemporaryDirectory(prefix="forkchat-state-") as parent:
        state_dir = os.path.join(parent, "not", "yet")
        server = ServerProcess(config_text="[server]\nallow_root = true\n" + LIMITS,
                               extra_args=["--state-dir", state_dir]).start()
        try:
            alice = IrcTestClient(server.port)
            alice.register("alice")
            set_up_room(alice)
            assert os.path.isfile(os.path.join(state_dir, "rooms.sqlite3"))
            assert os.stat(state_dir).st_mode & 0o777 == 0o700
            assert "unavailable" not in server.log_text()
            alice.close()
        finally:
            server.stop()


def test_the_room_store_is_private_even_under_a_lax_umask():
    """The store holds room keys and secret rooms: a state_dir that exists
    with mode 0755 and a shell's umask of 022 must still give a store that
    only the server's user may read (its -wal and -shm files too)."""
    state_dir = tempfile.mkdtemp(prefix="forkchat-state-")
    os.chmod(state_dir, 0o777)      # the server may drop from root to nobody
    lax = os.umask(0o022)
    try:
        server = ServerProcess(config_text=LIMITS, extra_args=["--state-dir", state_dir]).start()
    finally:
        os.umask(lax)
    try:
        alice = IrcTestClient(server.port)
        alice.register("alice")
        set_up_room(alice)
        alice.sync()
        made = sorted(os.listdir(state_dir))
        assert "rooms.sqlite3" in made
        assert {name: os.stat(os.path.join(state_dir, name)).st_mode & 0o077
                for name in made} == dict.fromkeys(made, 0)
        alice.close()
    finally:
        server.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


def test_a_second_server_on_the_same_state_dir_keeps_off_its_store(make_server):
    """Two servers on one state_dir (a second instance with the default
    /var/lib/forkchat) each wrote the other's room records over its own and
    restored them on the next join.  The second now runs without the store."""
    first = make_server(config_text=LIMITS)
    # Its broker holds the store once ready (it may start after "listening on").
    first.wait_for_text("broker ready")
    # The second broker waits 0.5 s for the lock, not LOCK_WAIT_S (3 s).
    second = make_server(config_text=LIMITS, extra_args=["--state-dir", first.state_dir],
                         prelude="from forkchat import store\n"
                                 "store.LOCK_WAIT_S = 0.5")
    second.wait_for_text("is in use by another forkchat server (a shared state_dir), "
                         "rooms will not persist")
    assert "in use by another forkchat server" not in first.log_text()
    client = IrcTestClient(second.port)
    try:
        assert client.register("still")[0].command == "001"    # it serves all the same
    finally:
        client.close()


def test_a_full_disk_for_a_while_loses_no_topic():
    """A store whose write failed once (a full disk for a moment) was left
    alone for the rest of the broker's life: the topics set since were gone
    at the next start.  The broker's files may not grow for a while here
    (RLIMIT_FSIZE: each write fails as on a full disk); the failure is said
    once, and the broker writes what waited by itself once it can.  (As
    ourselves, not dropped to nobody: only our own processes' limits may
    be changed.)"""
    state_dir = tempfile.mkdtemp(prefix="forkchat-state-")
    args = ["--state-dir", state_dir]
    config_text = "[server]\nallow_root = true\n" + LIMITS
    first = ServerProcess(config_text=config_text, extra_args=args, prelude=QUICK_RETRY).start()
    try:
        alice = IrcTestClient(first.port)
        alice.register("alice")
        alice.join("#kept")
        broker = psutil.Process(broker_pid(first))
        room_for_files = broker.rlimit(psutil.RLIMIT_FSIZE)
        broker.rlimit(psutil.RLIMIT_FSIZE, (0, room_for_files[1]))
        for topic in ("while full", "still full"):
            alice.send(f"TOPIC #kept :{topic}")
            alice.expect("TOPIC")
        first.wait_for_text("failed, rooms will not persist")
        mark = first.log_length()
        broker.rlimit(psutil.RLIMIT_FSIZE, room_for_files)
        first.wait_for_text("written again, rooms persist", start=mark)
        assert first.log_text().count("rooms will not persist") == 1
    finally:
        first.stop()
    alice.close()
    seen_after_a_restart(args, topic_of_kept("still full"), config_text, state_dir)


@pytest.mark.parametrize("readable", [True, False])
def test_a_store_the_broker_may_not_write_is_named_and_written_once_fixed(readable):
    """A store left owned by root (a run as root) or read-only: a readable
    one was opened read-only by SQLite, failed every 2 s with "attempt to
    write a readonly database" and stayed read-only after a chown, until the
    broker restarted; an unreadable one was given up at the broker's start.
    Now the file, its owner and mode and the broker's user are named, and
    the chown is all it takes."""
    state_dir = tempfile.mkdtemp(prefix="forkchat-state-")
    os.chmod(state_dir, 0o777)      # the server may drop from root to nobody
    args = ["--state-dir", state_dir]
    path = os.path.join(state_dir, "rooms.sqlite3")
    server = ServerProcess(config_text=LIMITS, extra_args=args, prelude=QUICK_RETRY).start()
    try:
        alice = broken_then_fixed(server, path, readable)
    finally:
        assert server.stop() == 0     # alice is still in the room as the server stops
    alice.close()
    seen_after_a_restart(args, topic_of_kept("kept after the chown"), state_dir=state_dir)


def broken_then_fixed(server: ServerProcess, path: str, readable: bool) -> IrcTestClient:
    """alice's topic set while the broker may not write the store, then the
    permission fixed; returns alice, still in the room."""
    alice = IrcTestClient(server.port)
    alice.register("alice")
    alice.join("#kept")
    alice.send("TOPIC #kept :before")
    alice.expect("TOPIC")
    alice.sync()
    owner = psutil.Process(broker_pid(server)).uids().effective
    if os.geteuid() == 0:       # the server runs as nobody: give the store to root
        os.chown(path, 0, 0)
        os.chmod(path, 0o644 if readable else 0o600)
    else:
        os.chmod(path, 0o444 if readable else 0o000)
    mode = os.stat(path).st_mode & 0o777
    mark = server.log_length()
    os.kill(broker_pid(server), signal.SIGKILL)
    broker_pid(server, after=mark)
    server.wait_for_text("recovery done", start=mark)
    alice.send("TOPIC #kept :kept after the chown")
    alice.expect("TOPIC")
    said = server.wait_for_text("cannot be written", start=mark)
    assert f"room store {path} cannot be written: {path} (owner " \
           f"{pwd.getpwuid(os.stat(path).st_uid).pw_name}, mode {mode:04o}) is not writable " \
           f"by user {pwd.getpwuid(owner).pw_name}; give it to that user (chown)" in said, said
    mark = server.log_length()
    os.chown(path, owner, -1)
    os.chmod(path, 0o600)
    server.wait_for_text("written again, rooms persist", start=mark)
    assert server.log_text().count("cannot be written") == 1
    assert "rooms will not persist" not in server.log_text()
    return alice


def test_a_store_unreadable_at_the_start_is_restored_once_given_back():
    """A store left root's 0600 (a run as root) could not be read when the
    broker started.  Given back, it was written again, but the rooms in it
    were never restored: a room created meanwhile came back without its
    key and topic, and its fresh record was written over the stored one.
    Now the store, once readable, restores them as a start does: a room
    that is live keeps its live state, the others come back when created,
    and a record not loaded is never lost."""
    state_dir = tempfile.mkdtemp(prefix="forkchat-state-")
    os.chmod(state_dir, 0o777)      # the server may drop from root to nobody
    args = ["--state-dir", state_dir]
    path = os.path.join(state_dir, "rooms.sqlite3")
    made = store.RoomStore(state_dir)
    made.apply({protocol.casefold(name): {"name": name, "topic": f"stored {name}", "key": key,
                                          "flags": "knt" if key else "nt"}
                for name, key in (("#live", ""), ("#other", "other-key"), ("#passing", ""))})
    made.release()
    # root's 0600 (the server runs as nobody), or not even ours to read
    os.chmod(path, 0o600 if os.geteuid() == 0 else 0o000)
    server = ServerProcess(config_text=LIMITS, extra_args=args, prelude=QUICK_RETRY).start()
    try:
        server.wait_for_text("cannot be written")
        alice = IrcTestClient(server.port)
        alice.register("alice")
        alice.join("#live")                         # live before the store is back
        alice.send("TOPIC #live :set while unreadable")
        alice.expect("TOPIC")
        alice.join("#passing")                      # created and emptied meanwhile
        alice.send("PART #passing")
        alice.expect("PART")
        alice.sync()
        mark = server.log_length()
        owner = psutil.Process(broker_pid(server)).uids().effective
        for name in os.listdir(state_dir):
            os.chown(os.path.join(state_dir, name), owner, -1)
        os.chmod(path, 0o600)
        server.wait_for_text("written again, rooms persist", start=mark)
        bob = IrcTestClient(server.port)
        bob.register("bob")
        bob.send("JOIN #other")
        bob.expect("475")                           # its key came back with it
        bob.send("JOIN #other other-key")
        assert bob.expect("332").params[-1] == "stored #other"
        bob.collect_until("366")
        bob.send("JOIN #live")
        assert bob.expect("332").params[-1] == "set while unreadable"
        bob.collect_until("366")
        bob.sync()
    finally:
        assert server.stop() == 0
    alice.close()
    bob.close()
    def each_room_kept(carol: IrcTestClient) -> None:
        for room, topic in (("#passing", "stored #passing"), ("#live", "set while unreadable"),
                            ("#other other-key", "stored #other")):
            carol.send(f"JOIN {room}")
            assert carol.expect("332").params[-1] == topic
            carol.collect_until("366")
    seen_after_a_restart(args, each_room_kept, state_dir=state_dir)


@pytest.mark.parametrize("unreadable", ["store", "state_dir"])
def test_rooms_back_from_a_broker_crash_take_their_records_once_the_store_is_read(unreadable):
    """The broker killed while its store (or its directory) was left root's
    0600 (0700): the new one
    could not read it, and the rooms came back by REREGISTER with no topic,
    key, modes or bans; once the store was given back their empty state was
    written over the records, lost for good.  Now a room back by
    REREGISTER and unchanged since takes its record when the store is
    read, as at a recovery with the store readable; its members who came
    back with it are told nothing (their clients still show that topic), one
    who joined meanwhile (told there was none) gets a TOPIC from the server.
    A room a client changed meanwhile keeps what was set."""
    state_dir = tempfile.mkdtemp(prefix="forkchat-state-")
    os.chmod(state_dir, 0o777)      # the server may drop from root to nobody
    args = ["--state-dir", state_dir]
    path = os.path.join(state_dir, "rooms.sqlite3")
    taken, mode = (path, 0o600) if unreadable == "store" else (state_dir, 0o700)
    server = ServerProcess(config_text=LIMITS, extra_args=args, prelude=QUICK_RETRY).start()
    try:
        alice = IrcTestClient(server.port)
        server_name = alice.register("alice")[0].prefix
        set_up_room(alice)
        alice.join("#touched")
        for line in ("TOPIC #touched :stored touched", "MODE #touched +k touchkey"):
            alice.send(line)
            alice.expect(lambda m: m.command in ("TOPIC", "MODE"))
        bob = IrcTestClient(server.port)
        bob.register("bob")
        bob.send("JOIN #kept sesame")
        bob.collect_until("366")
        alice.sync()
        owner = psutil.Process(broker_pid(server)).uids().effective
        if os.geteuid() == 0:       # the server runs as nobody: give it to root
            os.chown(taken, 0, 0)
        os.chmod(taken, mode if os.geteuid() == 0 else 0o000)    # or not even ours
        mark = server.log_length()
        os.kill(broker_pid(server), signal.SIGKILL)
        broker_pid(server, after=mark)
        server.wait_for_text("recovery done", start=mark)
        server.wait_for_text("cannot be written", start=mark)
        carol = IrcTestClient(server.port)
        carol.register("carol")
        carol.send("JOIN #kept")                    # no key known: let in
        assert "332" not in [m.command for m in carol.collect_until("366")]
        alice.send("TOPIC #touched :changed meanwhile")
        alice.expect("TOPIC")
        mark = server.log_length()
        os.chown(taken, owner, -1)
        os.chmod(taken, mode)
        server.wait_for_text("1 rooms made while it could not be read, and unchanged, "
                             "take their stored records",
                             start=mark)
        check_room(bob)
        told = carol.expect("TOPIC")
        assert (told.prefix, told.params) == (server_name, ["#kept", "what we keep"])
        told = carol.expect("MODE")         # its client showed +nt, and knew no key
        assert (told.prefix, told.params) == (server_name, ["#kept", "+mklb", "sesame", "10",
                                                            "bad!*@*"])
        assert "TOPIC" not in [m.command for m in bob.history]
        assert server_name not in [m.prefix for m in bob.history if m.command == "MODE"]
        check_room(carol)
        alice.send("MODE #touched")
        assert alice.expect("324").params[2] == "+nt"
        alice.send("TOPIC #touched")
        assert alice.expect("332").params[-1] == "changed meanwhile"
        server.wait_for_text("written again, rooms persist", start=mark)
        alice.sync()
    finally:
        assert server.stop() == 0     # alice is still in the rooms as the server stops
    for client in (alice, bob, carol):
        client.close()
    def both_rooms_kept(dave: IrcTestClient) -> None:
        join_kept_room(dave)
        dave.send("JOIN #touched")
        assert dave.expect("332").params[-1] == "changed meanwhile"
    seen_after_a_restart(args, both_rooms_kept, state_dir=state_dir)


def test_a_room_made_by_join_while_the_store_is_unread_takes_its_record_once_read():
    """A server started with its store left root's 0600 could not read it:
    a room made by a JOIN meanwhile and live when the store was given back
    wrote its empty state over its record, though nobody had changed it, so
    a busy room that never empties lost its topic, key, modes and bans for
    good.  Now it takes its record: its members stay (the key come back
    keeps out only those who join later), and each, told it had no topic,
    gets a TOPIC from the server."""
    state_dir = tempfile.mkdtemp(prefix="forkchat-state-")
    os.chmod(state_dir, 0o777)      # the server may drop from root to nobody
    args = ["--state-dir", state_dir]
    path = os.path.join(state_dir, "rooms.sqlite3")
    first = ServerProcess(config_text=LIMITS, extra_args=args).start()
    try:
        owner = psutil.Process(broker_pid(first)).uids().effective
        alice = IrcTestClient(first.port)
        alice.register("alice")
        set_up_room(alice)
        alice.sync()
    finally:
        assert first.stop() == 0     # alice is still in the room as the server stops
    alice.close()
    # root's 0600 (the server runs as nobody), or not even ours to read
    if os.geteuid() == 0:
        os.chown(path, 0, 0)
    os.chmod(path, 0o600 if os.geteuid() == 0 else 0o000)
    server = ServerProcess(config_text=LIMITS, extra_args=args, prelude=QUICK_RETRY).start()
    try:
        server_name = None
        members = []
        server.wait_for_text("cannot be written")
        for nick in ("alice", "bob"):
            member = IrcTestClient(server.port)
            server_name = member.register(nick)[0].prefix
            member.send("JOIN #kept")                   # no key known: let in
            assert "332" not in [m.command for m in member.collect_until("366")]
            member.send("MODE #kept")                   # asked, not changed
            member.expect("324")
            members.append(member)
        alice, bob = members
        alice.sync()
        mark = server.log_length()
        for name in os.listdir(state_dir):
            os.chown(os.path.join(state_dir, name), owner, -1)
        os.chmod(path, 0o600)
        server.wait_for_text("1 rooms made while it could not be read, and unchanged, "
                             "take their stored records", start=mark)
        for member in members:
            told = member.expect("TOPIC")
            assert (told.prefix, told.params) == (server_name, ["#kept", "what we keep"])
            told = member.expect("MODE")    # its client showed +nt, and knew no key
            assert (told.prefix, told.params) == (
                server_name, ["#kept", "+mklb", "sesame", "10", "bad!*@*"])
        check_room(bob)
        alice.send("NAMES #kept")                       # both still in it
        assert set(alice.expect("353").params[-1].split()) == {"@alice", "bob"}
        carol = IrcTestClient(server.port)
        carol.register("carol")
        carol.send("JOIN #kept")
        carol.expect("475")
        server.wait_for_text("written again, rooms persist", start=mark)
        alice.sync()
    finally:
        assert server.stop() == 0     # alice and bob are still in the room as it stops
    for client in (alice, bob, carol):
        client.close()
    seen_after_a_restart(args, join_kept_room, state_dir=state_dir)
