"""The room store: one server per state directory, what it writes and
loads, and what it does when the disk fails it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import shutil
import socket
import sqlite3

import pytest

from forkchat import broker, config, ipc, protocol, rooms, store


def stored_rooms(directory) -> dict:
    """What the next broker on `directory` would load."""
    reader = store.RoomStore(str(directory))
    try:
        return reader.load()
    finally:
        reader.release()


@contextlib.contextmanager
def alice_on_a_broker(tmp_path, max_rooms: int | None = None):
    """A Broker on `tmp_path` (in this process, no loop) with alice
    registered on a link of her own: (broker, her link)."""
    limits = config.Limits() if max_rooms is None else config.Limits(max_rooms=max_rooms)
    socks = [*socket.socketpair(), *socket.socketpair(), *socket.socketpair()]
    made = broker.Broker(socks[0], socks[2], config.Config(
        server=config.Server(state_dir=str(tmp_path)), limits=limits), "today")
    link = broker.Link(socks[4], 1 << 20)
    try:
        made._dispatch(link, ipc.Kind.HELLO, b'{"cid": 1, "host": "h", "proto": "irc"}')
        made._dispatch(link, ipc.Kind.REQUEST, b"NICK alice")
        made._dispatch(link, ipc.Kind.REGISTER, json.dumps({"user": "a", "realname": "A"}).encode())
        yield made, link
    finally:
        made.store.release()
        made.selector.close()
        for sock in socks:
            sock.close()


def test_the_store_is_one_servers_at_a_time(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(store, "LOCK_WAIT_S", 0.1)
    first = store.RoomStore(str(tmp_path))
    assert first.available
    first.put("#room", {"topic": "kept"})
    with caplog.at_level(logging.WARNING, logger="forkchat.broker"):
        second = store.RoomStore(str(tmp_path))
    assert not second.available and second.load() == {}
    assert "is in use by another forkchat server" in caplog.text
    first.release()
    third = store.RoomStore(str(tmp_path))
    try:
        assert third.available and third.load() == {"#room": {"topic": "kept"}}
    finally:
        third.release()


def test_load_gives_the_least_recently_written_first(tmp_path):
    """The broker forgets kept records oldest first (state.store_changes):
    the order of the load is the order of the last writes, not of the names."""
    first = store.RoomStore(str(tmp_path))
    try:
        first.apply({"#a": {"topic": "1"}, "#b": {"topic": "1"}, "#c": {"topic": "1"}})
        first.put("#a", {"topic": "2"})
        first.apply({"#a": {"topic": "2"}, "#b": {"topic": "1"}, "#c": {"topic": "3"}})
    finally:
        first.release()
    second = store.RoomStore(str(tmp_path))
    try:
        assert list(second.load()) == ["#b", "#a", "#c"]
    finally:
        second.release()


def test_apply_writes_and_deletes_only_what_differs(tmp_path):
    first = store.RoomStore(str(tmp_path))
    try:
        first.apply({"#a": {"topic": "1"}, "#b": {"topic": "1"}, "#gone": None})
        first.apply({"#a": None, "#b": {"topic": "2"}})
    finally:
        first.release()
    assert stored_rooms(tmp_path) == {"#b": {"topic": "2"}}


def test_a_join_writes_its_room_not_every_rooms_record(tmp_path, monkeypatch):
    """The broker's half-second write after joins and parts encoded every
    room's record: 60 ms at 10000 rooms, seconds with their bans, while
    anyone joined or left.  It encodes the rooms created or removed."""
    with alice_on_a_broker(tmp_path) as (made, link):
        made._dispatch(link, ipc.Kind.REQUEST, b"JOIN " + b",".join(b"#r%d" % i for i in range(40)))
        made._save_rooms()
        encoded = []
        real_meta = rooms.Room.meta
        monkeypatch.setattr(rooms.Room, "meta", lambda room: encoded.append(room.name) or real_meta(room))
        made._dispatch(link, ipc.Kind.REQUEST, b"JOIN #new")
        made._dispatch(link, ipc.Kind.REQUEST, b"PART #r7")
        made._save_rooms()
        assert encoded == ["#new"]
        assert set(made.store.load()) == {f"#r{i}" for i in range(40) if i != 7} | {"#new"}


def _broker_session(tmp_path, max_rooms, lines):
    """A broker on `tmp_path` that registers alice and runs her `lines`,
    writes its rooms and stops as at a shutdown (freeze)."""
    with alice_on_a_broker(tmp_path, max_rooms) as (made, link):
        for line in lines:
            made._dispatch(link, ipc.Kind.REQUEST, line)
        made._save_rooms()
        made._on_control_op({"op": "freeze"})


def test_the_rooms_alive_at_a_shutdown_are_the_last_records_forgotten(tmp_path):
    """A room made long ago and alive at the shutdown kept the place of its
    last write, behind the records of rooms left at earlier shutdowns: the
    first new room of the next start (past max_rooms) made the store forget
    it, and its key came back as no key."""
    _broker_session(tmp_path, 3, [b"JOIN #lobby", b"MODE #lobby +k secret"])
    kept = store.RoomStore(str(tmp_path))
    try:
        kept.apply({"#old1": {"topic": "1"}, "#old2": {"topic": "2"}})   # later shutdowns'
    finally:
        kept.release()
    _broker_session(tmp_path, 3, [b"JOIN #lobby secret"])       # alive at this shutdown
    _broker_session(tmp_path, 3, [b"JOIN #new"])                  # the next start's first room
    after = store.RoomStore(str(tmp_path))
    try:
        records = after.load()
    finally:
        after.release()
    assert set(records) == {"#old2", "#lobby", "#new"}
    assert records["#lobby"]["key"] == "secret"


def _hand_made_store(tmp_path, rows, sql=()) -> None:
    """A store as a hand edit or a damaged disk could leave it."""
    made = store.RoomStore(str(tmp_path))
    made.release()
    db = sqlite3.connect(tmp_path / store.FILENAME)
    try:
        db.executemany("INSERT INTO rooms VALUES (?, ?)", rows)
        for statement in sql:
            db.execute(statement)
        db.commit()
    finally:
        db.close()


def test_unreadable_records_are_skipped_with_one_warning(tmp_path, caplog):
    """A row that was not UTF-8 made the whole store fail (no room kept), and
    a record that was not text stopped the broker with a TypeError."""
    _hand_made_store(tmp_path, [
        ("#good", '{"topic": "kept"}'),
        ("#list", "[1, 2]"),
        ("#broken", "{not json"),
        ("#latin1", b'{"topic": "caf\xe9"}'),
        (b"#\xff", '{"topic": "x"}'),
        ("#blob", b'{"topic": "as a blob"}'),
        ("#number", 5),
    ], ["INSERT INTO rooms VALUES ('#text', CAST(X'7b7dff' AS TEXT))"])
    with caplog.at_level(logging.WARNING, logger="forkchat.broker"):
        loaded = store.RoomStore(str(tmp_path))
        try:
            records = loaded.load()
            assert loaded.available
        finally:
            loaded.release()
    assert records == {"#good": {"topic": "kept"}, "#blob": {"topic": "as a blob"}}
    assert caplog.text.count("room records unreadable") == 1
    assert "6 room records unreadable in whole or part" in caplog.text


def test_a_field_of_the_wrong_type_is_dropped_and_its_room_still_joins(tmp_path, caplog):
    """A hand-edited `"bans": 5` made every JOIN of the room crash the broker
    (the supervisor restarted it, and the record came back from the store);
    the field goes, the rest of the record (the key here) is kept."""
    _hand_made_store(tmp_path, [
        ("#lobby", json.dumps({"name": "#lobby", "key": "secret", "bans": 5,
                               "limit": True, "created": "yesterday", "topic": ["x"]})),
    ])
    with caplog.at_level(logging.WARNING, logger="forkchat.broker"):
        _broker_session(tmp_path, 10, [b"JOIN #lobby secret", b"TOPIC #lobby :new"])
    assert "1 room records unreadable in whole or part" in caplog.text
    after = store.RoomStore(str(tmp_path))
    try:
        records = after.load()
    finally:
        after.release()
    assert records["#lobby"]["key"] == "secret" and records["#lobby"]["topic"] == "new"
    assert records["#lobby"]["bans"] == []


@contextlib.contextmanager
def _no_file_may_grow():
    """Every write to a file fails (EFBIG, as a full disk fails with ENOSPC)
    while this lasts; Python ignores SIGXFSZ.  Nothing may be printed
    meanwhile: pytest's captured output is a file too."""
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)


def test_a_failed_write_is_tried_again_and_said_once(tmp_path, monkeypatch, caplog):
    """A store that failed once (a full disk for a moment) was left alone for
    the rest of the broker's life: nothing written since reached the disk,
    and the next start restored rooms as they were before the failure."""
    monkeypatch.setattr(store, "RETRY_S", 0.0, raising=False)
    first = store.RoomStore(str(tmp_path))
    try:
        first.apply({"#a": {"topic": "1"}, "#gone": {"topic": "x"}})
        with caplog.at_level(logging.INFO, logger="forkchat.broker"):
            with _no_file_may_grow():
                first.put("#a", {"topic": "2"})
                first.apply({"#b": {"topic": "b"}, "#gone": None})
                first.put("#a", {"topic": "3"})
            assert first.available and first.retry_at is not None
            first.apply({})                 # the broker's next try, the disk writable again
            assert first.retry_at is None
    finally:
        first.release()
    assert caplog.text.count("failed, rooms will not persist until it can be written") == 1
    assert caplog.text.count("written again, rooms persist") == 1
    assert stored_rooms(tmp_path) == {"#a": {"topic": "3"}, "#b": {"topic": "b"}}


def test_a_change_undone_while_the_disk_is_full_does_not_say_written_again(
        tmp_path, monkeypatch, caplog):
    """A room made and removed while the writes fail (a full disk) leaves
    nothing to write: the write that changes nothing, which tells a store
    given back after a late read that it may be written, wrote no page and
    succeeded on the full disk too, and the log said "written again, rooms
    persist", then the failure a second time."""
    monkeypatch.setattr(store, "RETRY_S", 0.0, raising=False)
    first = store.RoomStore(str(tmp_path))
    try:
        first.apply({"#a": {"topic": "1"}})
        with caplog.at_level(logging.INFO, logger="forkchat.broker"):
            with _no_file_may_grow():
                first.apply({"#made": {"topic": "made"}})
                first.apply({"#made": None})
                first.apply({"#b": {"topic": "b"}})
            assert "written again, rooms persist" not in caplog.text
            assert first.retry_at is not None
            first.apply({})                 # the broker's next try, the disk writable again
    finally:
        first.release()
    assert caplog.text.count("failed, rooms will not persist until it can be written") == 1
    assert caplog.text.count("written again, rooms persist") == 1
    assert stored_rooms(tmp_path) == {"#a": {"topic": "1"}, "#b": {"topic": "b"}}


def test_the_broker_comes_back_for_a_failed_write(tmp_path, monkeypatch):
    """A topic change that failed to be written waited for the next join or
    part to be tried again, however long that was: the broker now wakes for
    the store's next try."""
    monkeypatch.setattr(store, "RETRY_S", 0.0, raising=False)
    with alice_on_a_broker(tmp_path) as (made, link):
        made._dispatch(link, ipc.Kind.REQUEST, b"JOIN #lobby")
        made._save_rooms()
        assert not made.store_dirty
        with _no_file_may_grow():
            made._dispatch(link, ipc.Kind.REQUEST, b"TOPIC #lobby :kept after all")
        assert made.store_dirty and made.next_store >= made.store.retry_at
        made._save_rooms()                  # what the loop does at next_store
        assert not made.store_dirty
        assert made.store.load()["#lobby"]["topic"] == "kept after all"


def test_a_lock_held_by_another_program_stalls_no_one(tmp_path, caplog):
    """An sqlite3 shell holding a write transaction on the store made each
    write of the broker wait 5 s (SQLite's default) before failing, all
    chat stopped meanwhile, and again at every try.  A write now waits a
    moment, fails, and is tried again once the lock is gone."""
    first = store.RoomStore(str(tmp_path))
    shell = sqlite3.connect(tmp_path / store.FILENAME, isolation_level=None)
    try:
        assert first.load() == {}
        assert first._db.execute("PRAGMA busy_timeout").fetchone()[0] <= 100
        shell.execute("BEGIN IMMEDIATE")
        with caplog.at_level(logging.ERROR, logger="forkchat.broker"):
            first.put("#a", {"topic": "1"})
        assert "database is locked" in caplog.text and first.retry_at is not None
        shell.execute("ROLLBACK")
        first.renew([])                     # the shutdown's write: tried whatever the time
        assert first.retry_at is None
    finally:
        shell.close()
        first.release()
    assert stored_rooms(tmp_path) == {"#a": {"topic": "1"}}


def test_a_store_that_cannot_be_opened_says_why(tmp_path, caplog):
    """SQLite says 'unable to open database file' whether the directory is
    missing, not ours or not a directory: the reason the system gave is
    added (a state_dir deleted or mistyped, as ourselves, said nothing else)."""
    with caplog.at_level(logging.WARNING, logger="forkchat.broker"):
        missing = store.RoomStore(str(tmp_path / "gone"))
    missing.release()
    assert not missing.available
    assert "unavailable, rooms will not persist: unable to open database file " \
           "(No such file or directory)" in caplog.text


def test_a_failing_store_encodes_each_change_once(tmp_path, monkeypatch):
    """Each try of a failing store encoded every record waiting again: at
    10000 rooms with their bans, tens of ms of the broker every 2 s for as
    long as the disk was full."""
    monkeypatch.setattr(store, "RETRY_S", 0.0)
    first = store.RoomStore(str(tmp_path))
    encoded = []
    real_encode = store._encode
    monkeypatch.setattr(store, "_encode",
                        lambda record: encoded.append(record) or real_encode(record))
    try:
        with _no_file_may_grow():
            first.apply({f"#r{i}": {"topic": str(i)} for i in range(10)})
            for _ in range(3):
                first.apply({})
        assert len(encoded) == 10 and first.retry_at is not None
        first.apply({})
        assert first.retry_at is None and len(first.load()) == 10
    finally:
        first.release()


@pytest.mark.parametrize("room_kib", [0, 4, 16, 64])
def test_a_write_cut_short_by_a_crash_leaves_the_store_as_it_was(tmp_path, room_kib):
    """A broker that dies in the middle of a write (the disk full after
    `room_kib` KiB of it, then killed) leaves a store that loads, with what
    was there before: a write is one SQLite transaction."""
    first = store.RoomStore(str(tmp_path))
    first.apply({"#kept": {"topic": "kept"}})
    first.release()
    pid = os.fork()
    if pid == 0:                    # the broker that dies
        code = 1
        try:
            child = store.RoomStore(str(tmp_path))
            child.load()
            wal = os.path.getsize(f"{child.path}-wal")
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (wal + room_kib * 1024, hard))
            child.apply({f"#r{i}": {"topic": "x" * 1000} for i in range(200)})
            code = 0 if child.retry_at is not None else 2      # 0: the write failed
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    after = store.RoomStore(str(tmp_path))
    try:
        assert after.load() == {"#kept": {"topic": "kept"}}
    finally:
        after.release()


def test_a_state_dir_deleted_while_in_use_is_written_anew_once_back(tmp_path, monkeypatch,
                                                                    caplog):
    """Writes went on into the removed file, for nobody to read: the next
    start found no rooms at all.  The removal is said, and every record is
    written once the directory is back."""
    monkeypatch.setattr(store, "RETRY_S", 0.0, raising=False)
    state = tmp_path / "state"
    state.mkdir()
    first = store.RoomStore(str(state))
    try:
        first.apply({"#old": {"topic": "from before"}, "#a": {"topic": "1"}})
        shutil.rmtree(state)
        with caplog.at_level(logging.INFO, logger="forkchat.broker"):
            first.put("#a", {"topic": "2"})
            first.apply({"#new": {"topic": "while gone"}})
            state.mkdir()
            first.apply({})
    finally:
        first.release()
    assert caplog.text.count("was removed or replaced while in use") == 1
    assert caplog.text.count("(No such file or directory)") == 1
    assert "written again" in caplog.text
    assert stored_rooms(state) == {"#old": {"topic": "from before"}, "#a": {"topic": "2"},
                                  "#new": {"topic": "while gone"}}


def test_a_store_deleted_and_found_unusable_is_tried_again(tmp_path, monkeypatch, caplog):
    """A state directory made again with a file that is not a database in it:
    each try opens the store again, without the broker's lock of the try
    before taken for another server's."""
    monkeypatch.setattr(store, "RETRY_S", 0.0, raising=False)
    state = tmp_path / "state"
    state.mkdir()
    first = store.RoomStore(str(state))
    try:
        first.apply({"#a": {"topic": "1"}})
        shutil.rmtree(state)
        state.mkdir()
        (state / store.FILENAME).write_bytes(b"not a database" * 100)
        with caplog.at_level(logging.WARNING, logger="forkchat.broker"):
            first.put("#b", {"topic": "2"})
            first.apply({})
            assert first.retry_at is not None
            (state / store.FILENAME).unlink()
            first.apply({})
            assert first.retry_at is None
    finally:
        first.release()
    assert "in use by another" not in caplog.text
    assert caplog.text.count("file is not a database") == 1
    assert stored_rooms(state) == {"#a": {"topic": "1"}, "#b": {"topic": "2"}}


def test_a_store_reopened_where_another_server_holds_the_lock_does_not_wait(
        tmp_path, monkeypatch, caplog):
    """The reopen runs in the broker's loop: it slept LOCK_WAIT_S there (3 s
    of no chat for anyone) for a lock that another server holds, which no
    wait releases.  The store says it is in use instead, at once."""
    monkeypatch.setattr(store, "RETRY_S", 0.0, raising=False)
    state = tmp_path / "state"
    state.mkdir()
    first = store.RoomStore(str(state))
    other = None
    try:
        first.apply({"#a": {"topic": "1"}})
        shutil.rmtree(state)
        state.mkdir()
        other = store.RoomStore(str(state))          # another server's broker, on the new dir
        slept = []
        monkeypatch.setattr(store.time, "sleep", slept.append)
        with caplog.at_level(logging.WARNING, logger="forkchat.broker"):
            first.put("#b", {"topic": "2"})
        assert slept == []
        assert "in use by another" in caplog.text
    finally:
        first.release()
        if other is not None:
            other.release()


def test_a_state_dir_that_is_a_file_is_not_called_unwritable(tmp_path, monkeypatch, caplog):
    """state_dir naming a file the server's user may not write: the broker
    said "cannot be written: ... give it to that user (chown)", which cures
    nothing, after the supervisor's "is not a directory".  It says why the
    store is unavailable, as it does when the file is writable."""
    afile = tmp_path / "afile"
    afile.write_text("")
    access = os.access
    monkeypatch.setattr(os, "access", lambda each, mode, **kw:
                        False if mode & os.W_OK and str(each) == str(afile)
                        else access(each, mode, **kw))
    assert store.not_writable(str(afile / store.FILENAME)) == []
    with caplog.at_level(logging.WARNING, logger="forkchat.broker"):
        opened = store.RoomStore(str(afile))
    opened.release()
    assert "chown" not in caplog.text
    assert f"room store {afile / store.FILENAME} unavailable, rooms will not persist: " \
           f"unable to open database file (Not a directory)" in caplog.text


def test_a_store_left_by_a_run_as_root_is_named_with_all_it_needs_written(
        tmp_path, monkeypatch, caplog):
    """A run as root leaves the store, its lock file and the directory it
    made root's.  The line (said once) named only the store: given back
    as told, the writes still failed (SQLite makes its -wal in the
    directory) without another word, and a lock file kept root's left the
    next broker without the lock against a second server."""
    state = tmp_path / "state"
    state.mkdir()
    made = store.RoomStore(str(state))
    made.apply({"#a": {"topic": "1"}})
    made.release()
    path = str(state / store.FILENAME)
    roots = {path, str(state / store.LOCK_FILENAME), str(state)}
    access = os.access
    monkeypatch.setattr(os, "access", lambda each, mode, **kw:
                        False if mode & os.W_OK and str(each) in roots
                        else access(each, mode, **kw))
    assert [entry.partition(" (")[0] for entry in store.not_writable(path)] == \
        [path, str(state / store.LOCK_FILENAME), str(state)]
    reader = store.RoomStore(str(state))
    try:
        with caplog.at_level(logging.ERROR, logger="forkchat.broker"):
            assert reader._say_not_writable()
    finally:
        reader.release()
    mode = os.stat(path).st_mode & 0o777
    assert f"cannot be written: {path} (owner " in caplog.text
    assert f"mode {mode:04o}), {state / store.LOCK_FILENAME} (owner " in caplog.text
    assert f"), {state} (owner " in caplog.text
    assert ") are not writable by user " in caplog.text
    assert "; give them to that user (chown) or make them writable" in caplog.text


def refuse_the_lock_file(tmp_path, monkeypatch):
    """Opening the lock file fails as for one left root's, and the store
    retries at once; returns the real os.open, to give the file back."""
    monkeypatch.setattr(store, "RETRY_S", 0.0)
    monkeypatch.setattr(store, "LOCK_WAIT_S", 0.0)
    lock_path = str(tmp_path / store.LOCK_FILENAME)
    real_open = os.open
    def root_owned(path, flags, *args, **kwargs):
        if str(path) == lock_path:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", root_owned)
    return real_open


def test_a_store_given_back_takes_the_lock_it_could_not_open(tmp_path, monkeypatch, caplog):
    """A lock file left root's cannot be opened, and the broker runs
    without the lock (SQLite is left to report).  Once the store, given
    back, is written again, the lock is taken too: it stayed off for the
    broker's life, and a second server on the state directory wrote over
    this one's records."""
    real_open = refuse_the_lock_file(tmp_path, monkeypatch)
    first = store.RoomStore(str(tmp_path))
    try:
        assert first.available
        # SQLite opened it read-only (the store root's): every write refused
        first._db.close()
        first._db = sqlite3.connect(f"file:{first.path}?mode=ro", uri=True,
                                    isolation_level=None)
        first.apply({"#a": {"topic": "1"}})
        assert first.retry_at is not None
        monkeypatch.setattr(os, "open", real_open)        # given back
        first.apply({})
        assert first.retry_at is None
        with caplog.at_level(logging.WARNING, logger="forkchat.broker"):
            second = store.RoomStore(str(tmp_path))
            second.release()
        assert "in use by another forkchat server" in caplog.text
    finally:
        first.release()
    assert stored_rooms(tmp_path) == {"#a": {"topic": "1"}}


def test_a_store_given_back_while_another_server_holds_its_lock_is_that_ones(
        tmp_path, monkeypatch, caplog):
    """The other side of the lock taken late: a server that took it
    meanwhile keeps the store, and this broker stops writing into it."""
    real_open = refuse_the_lock_file(tmp_path, monkeypatch)
    first = store.RoomStore(str(tmp_path))
    monkeypatch.setattr(os, "open", real_open)
    other = store.RoomStore(str(tmp_path))
    try:
        other.apply({"#a": {"topic": "theirs"}})
        first._db.close()
        first._db = sqlite3.connect(f"file:{first.path}?mode=ro", uri=True,
                                    isolation_level=None)
        with caplog.at_level(logging.WARNING, logger="forkchat.broker"):
            first.apply({"#a": {"topic": "mine"}})
            first.apply({"#a": {"topic": "mine again"}})
        assert "in use by another forkchat server" in caplog.text
        assert first.retry_at is None and not first.available
    finally:
        first.release()
        other.release()
    assert stored_rooms(tmp_path) == {"#a": {"topic": "theirs"}}


@contextlib.contextmanager
def _unreadable_until_given_back(monkeypatch):
    """SQLite cannot open the store (left root's 0600 after a run as root)
    until the list this yields is emptied: the admin's chown."""
    refused = [True]
    real_connect = store.RoomStore._connect

    def connect(self):
        if refused:
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(self)
    monkeypatch.setattr(store.RoomStore, "_connect", connect)
    monkeypatch.setattr(store, "not_writable", lambda path: [] if not refused else
                        [f"{path} (owner root, mode 0600)"])
    yield refused


def _stored_before(tmp_path, records: dict) -> None:
    made = store.RoomStore(str(tmp_path))
    made.apply(records)
    made.release()


def test_a_store_unreadable_at_the_start_is_read_before_it_is_written(tmp_path, monkeypatch,
                                                                      caplog):
    """Given back, a store unreadable at the start was written but never
    read: its records were never restored, and each room made meanwhile
    wrote over its own.  It is now read first: a live room's record (waiting)
    goes over the stored one, a record removed without having been loaded
    stays, and the others are the broker's to take, once.  It is tried with
    no change waiting too (the broker comes back for it)."""
    monkeypatch.setattr(store, "RETRY_S", 0.0)
    _stored_before(tmp_path, {"#live": {"topic": "stored"}, "#passing": {"topic": "stored"},
                              "#other": {"topic": "stored"}})
    with _unreadable_until_given_back(monkeypatch) as refused:
        late = store.RoomStore(str(tmp_path))
        try:
            assert late.load() == {} and late.retry_at is not None
            late.apply({"#live": {"topic": "live"}, "#passing": None, "#new": {"topic": "new"}})
            assert late.take_found() == {} and late.retry_at is not None
            refused.clear()
            with caplog.at_level(logging.INFO, logger="forkchat.broker"):
                late.apply({})
            assert late.take_found() == {"#passing": {"topic": "stored"},
                                         "#other": {"topic": "stored"}}
            assert late.take_found() == {} and late.retry_at is None
        finally:
            late.release()
    assert "read at last: 2 room records kept for their rooms, 1 rooms live" in caplog.text
    assert stored_rooms(tmp_path) == {"#live": {"topic": "live"}, "#passing": {"topic": "stored"},
                                      "#other": {"topic": "stored"}, "#new": {"topic": "new"}}


def test_the_broker_restores_a_store_given_back_with_nothing_changed(tmp_path, monkeypatch):
    """No room made or changed since the start: the store was read only at
    the first change, and a JOIN of a stored room before that made it
    afresh, its key and topic gone and written over."""
    monkeypatch.setattr(store, "RETRY_S", 0.0)
    _stored_before(tmp_path, {"#lobby": {"name": "#Lobby", "topic": "stored", "key": "k",
                                         "flags": "knt"}})
    with _unreadable_until_given_back(monkeypatch) as refused:
        with alice_on_a_broker(tmp_path) as (made, link):
            assert made.store_dirty             # the loop comes back for the store
            refused.clear()
            made._save_rooms()                  # what the loop does at next_store
            assert not made.store_dirty
            made._dispatch(link, ipc.Kind.REQUEST, b"JOIN #lobby k")
            room = made.state.rooms["#lobby"]
            assert (room.name, room.topic, room.key) == ("#lobby", "stored", "k")


def _stored_names(directory) -> list[str]:
    db = sqlite3.connect(directory / store.FILENAME)
    try:
        return [name for (name,) in db.execute("SELECT name FROM rooms ORDER BY rowid")]
    finally:
        db.close()


def test_records_keyed_in_another_case_are_restored_under_the_folded_name(tmp_path, caplog):
    """The rooms are keyed by their name folded as the server folds it
    (RFC 1459: [ ] \\ ~ are the upper case of { } | ^), and so was the
    lookup of a live room, but not the key of a stored record: one keyed
    in upper case (a hand edit) never came back, and sat in the store for
    ever beside the record written for the room.  Keys are folded at load,
    the rows stored again under their folded name, and two records that
    name one room are said once (the most recently written is kept)."""
    _hand_made_store(tmp_path, [
        ("#Lobby", json.dumps({"topic": "upper", "key": "secret"})),
        ("#room", json.dumps({"topic": "older"})),
        ("#ROOM", json.dumps({"topic": "newer"})),
        ("#A[B]", json.dumps({"topic": "brackets"})),
        ("#kept", json.dumps({"topic": "as it was"})),
    ])
    with caplog.at_level(logging.WARNING, logger="forkchat.broker"):
        with alice_on_a_broker(tmp_path) as (made, link):
            assert list(made.state.saved_rooms) == ["#lobby", "#room", "#a{b}", "#kept"]
            made._dispatch(link, ipc.Kind.REQUEST, b"JOIN #LOBBY,#room,#a{b} secret")
            assert [made.state.rooms[name].topic for name in ("#lobby", "#room", "#a{b}")] == \
                ["upper", "newer", "brackets"]
            assert made.state.rooms["#lobby"].key == "secret"
    assert caplog.text.count("name a room that another record names") == 1
    assert "1 room records name a room that another record names" in caplog.text
    assert "(#room)" in caplog.text
    assert sorted(_stored_names(tmp_path)) == ["#a{b}", "#kept", "#lobby", "#room"]
    assert _stored_names(tmp_path)[0] == "#kept"      # untouched, in its place
    assert stored_rooms(tmp_path)["#room"] == {"topic": "newer"}


def test_a_store_past_max_rooms_is_loaded_only_to_max_rooms(tmp_path, caplog):
    """The broker forgets kept records past max_rooms, the least recently
    written first, but only at its first write, after loading them all: a
    store grown by hand to 200,000 rows took 3 s to load while the first
    clients waited (all of them after a broker restart), then 1 s of the
    broker's loop to delete.  The load reads max_rooms rows, the most
    recently written, and deletes the others, said once."""
    _hand_made_store(tmp_path, [(f"#r{i}", json.dumps({"topic": str(i)})) for i in range(6)])
    with caplog.at_level(logging.WARNING, logger="forkchat.broker"):
        with alice_on_a_broker(tmp_path, max_rooms=3) as (made, _link):
            assert list(made.state.saved_rooms) == ["#r3", "#r4", "#r5"]
            assert _stored_names(tmp_path) == ["#r3", "#r4", "#r5"]
    assert caplog.text.count("3 room records past max_rooms (3) forgotten, the least "
                             "recently written") == 1
    with caplog.at_level(logging.WARNING, logger="forkchat.broker"):
        with alice_on_a_broker(tmp_path, max_rooms=3) as (made, _link):
            assert list(made.state.saved_rooms) == ["#r3", "#r4", "#r5"]
    assert caplog.text.count("past max_rooms") == 1


def test_a_restarted_broker_reads_every_record_of_its_rooms_past_max_rooms(tmp_path):
    """Past max_rooms the broker forgets kept records, never those of rooms
    live (max_rooms lowered by a reload below their number): a broker
    restarted after a crash, whose rooms come back with their workers,
    reads them all."""
    _hand_made_store(tmp_path, [(f"#r{i}", json.dumps({"topic": str(i)})) for i in range(6)])
    socks = [*socket.socketpair(), *socket.socketpair()]
    made = broker.Broker(socks[0], socks[2], config.Config(
        server=config.Server(state_dir=str(tmp_path)), limits=config.Limits(max_rooms=3)),
        "today", expected=((1, 0, "127.0.0.1:5000"),))
    try:
        assert list(made.state.saved_rooms) == [f"#r{i}" for i in range(6)]
    finally:
        made.store.release()
        made.selector.close()
        for sock in socks:
            sock.close()


def _back_by_reregister(made: broker.Broker, cid: int, nick: str, statuses: dict,
                        sockets: list) -> broker.Link:
    """A client of the dead broker's, back on a link of its own with its
    rooms (its sockets added to `sockets`, to close)."""
    sockets.extend(socket.socketpair())
    link = broker.Link(sockets[-1], 1 << 20)
    made._dispatch(link, ipc.Kind.HELLO, json.dumps({"cid": cid, "host": "h", "proto": "irc",
                                                     "reregister": True}).encode())
    made._dispatch(link, ipc.Kind.REREGISTER, json.dumps(
        {"nick": nick, "user": nick, "rooms": statuses}).encode())
    return link


def test_rooms_back_by_reregister_take_their_records_once_the_store_is_read(tmp_path,
                                                                           monkeypatch):
    """A broker killed while its store was unreadable: the next one had the
    rooms back by REREGISTER with none of their records, and wrote that
    empty state over them once the store was given back.  Now a room back
    so and unchanged takes its record when the store is read (its empty
    state never written); one a client changed meanwhile keeps what was
    set, written; one that emptied keeps its record for later; one with
    no record is written as it is."""
    monkeypatch.setattr(store, "RETRY_S", 0.0)
    _stored_before(tmp_path, {
        "#quiet": {"name": "#quiet", "topic": "stored quiet", "key": "k", "flags": "knt",
                   "bans": [["bad!*@*", "op", 1]]},
        "#touched": {"name": "#touched", "topic": "stored touched", "key": "t",
                     "flags": "knt"},
        "#left": {"name": "#left", "topic": "stored left", "flags": "nt"}})
    with _unreadable_until_given_back(monkeypatch) as refused, \
            _broker_on(tmp_path, expected=((1, 0, "h"), (2, 0, "h"))) as (made, sockets):
        alice = _back_by_reregister(made, 1, "alice", {"#quiet": "@", "#touched": "@",
                                                      "#left": "", "#fresh": "@"}, sockets)
        _back_by_reregister(made, 2, "bob", {"#quiet": ""}, sockets)
        assert not made.awaiting
        assert made.state.rooms["#quiet"].topic == ""     # not yet read
        made._dispatch(alice, ipc.Kind.REQUEST, b"TOPIC #touched :changed meanwhile")
        made._dispatch(alice, ipc.Kind.REQUEST, b"PART #left")
        made._dispatch(alice, ipc.Kind.REQUEST, b"MODE #quiet")    # changes nothing
        made._save_rooms()
        refused.clear()
        made._save_rooms()                  # what the loop does at next_store
        quiet, touched = made.state.rooms["#quiet"], made.state.rooms["#touched"]
        assert (quiet.topic, quiet.key, list(quiet.bans)) == ("stored quiet", "k",
                                                             ["bad!*@*"])
        assert (touched.topic, touched.key) == ("changed meanwhile", "")
        assert made.state.saved_rooms["#left"]["topic"] == "stored left"
        assert not made.records_awaited
        made._save_rooms()
    stored = stored_rooms(tmp_path)
    assert {name: record["topic"] for name, record in stored.items()} == {
        "#quiet": "stored quiet", "#touched": "changed meanwhile", "#left": "stored left",
        "#fresh": ""}
    assert (stored["#quiet"]["key"], stored["#touched"]["key"]) == ("k", "")



@contextlib.contextmanager
def _broker_on(tmp_path, expected: tuple = ()):
    """A Broker in-process, its store in `tmp_path`, on socket pairs (the
    list given, for the links its caller makes); all closed after."""
    sockets = [*socket.socketpair(), *socket.socketpair()]
    made = broker.Broker(sockets[0], sockets[2], config.Config(
        server=config.Server(state_dir=str(tmp_path))), "today", expected=expected)
    try:
        yield made, sockets
    finally:
        made.store.release()
        made.selector.close()
        for sock in sockets:
            sock.close()

def _registered(made: broker.Broker, cid: int, nick: str, sockets: list) -> broker.Link:
    """A client new to this broker, on a link of its own (its sockets added
    to `sockets`, to close)."""
    sockets.extend(socket.socketpair())
    link = broker.Link(sockets[-1], 1 << 20)
    made._dispatch(link, ipc.Kind.HELLO, json.dumps({"cid": cid, "host": "h",
                                                     "proto": "irc"}).encode())
    made._dispatch(link, ipc.Kind.REQUEST, f"NICK {nick}".encode())
    made._dispatch(link, ipc.Kind.REGISTER, json.dumps({"user": nick, "realname": nick}).encode())
    return link


def _topics_sent(made: broker.Broker, monkeypatch,
                 commands: tuple[bytes, ...] = (b"TOPIC",)) -> list[tuple[int, bytes]]:
    """The (cid, line) of every TOPIC (or other of `commands`) the broker
    queues from now on."""
    sent: list[tuple[int, bytes]] = []
    queue, queue_line, fanout = made.queue, made.queue_line, made.outbox.fanout

    def note(cid: int, line: bytes) -> None:
        if any(b" %s " % command in line for command in commands):
            sent.append((cid, line.rstrip(b"\r\n")))

    def recorded(cid: int, frame: bytes) -> None:
        for _kind, line in ipc.FrameReader().feed(frame):
            note(cid, line)
        queue(cid, frame)

    def recorded_line(cid: int, line: bytes, frame: bytes) -> None:
        note(cid, line)
        queue_line(cid, line, frame)

    def recorded_fanout(cids, line: bytes) -> None:
        cids = list(cids)
        for cid in cids:
            note(cid, line)
        fanout(cids, line)
    monkeypatch.setattr(made, "queue", recorded)
    monkeypatch.setattr(made, "queue_line", recorded_line)
    monkeypatch.setattr(made.outbox, "fanout", recorded_fanout)
    return sent


def test_rooms_made_by_join_while_the_store_is_unread_take_their_records_once_read(
        tmp_path, monkeypatch):
    """At a fresh start with the store unreadable, a room made by a JOIN
    and still live when the store was read wrote its empty state over its
    record, though nobody had changed it: a room that never empties lost
    its topic, key, modes and bans for good.  Now it takes its record, its
    members staying whatever its key and bans, and each (told it had no
    topic) gets a TOPIC line; one a client changed meanwhile keeps what was
    set; one emptied and made again awaits its record as well."""
    monkeypatch.setattr(store, "RETRY_S", 0.0)
    _stored_before(tmp_path, {
        "#lobby": {"name": "#Lobby", "topic": "stored lobby", "key": "k", "flags": "knt",
                   "bans": [["bob!*@*", "op", 1]]},
        "#touched": {"name": "#touched", "topic": "stored touched", "flags": "nt"},
        "#again": {"name": "#again", "topic": "stored again", "flags": "nt"}})
    with _unreadable_until_given_back(monkeypatch) as refused, \
            _broker_on(tmp_path) as (made, sockets):
        alice = _registered(made, 1, "alice", sockets)
        bob = _registered(made, 2, "bob", sockets)
        for link, line in ((alice, b"JOIN #lobby,#touched,#again"), (bob, b"JOIN #lobby"),
                           (alice, b"TOPIC #touched :changed meanwhile"),
                           (alice, b"PART #again"), (alice, b"JOIN #again"),
                           (alice, b"MODE #lobby"), (bob, b"MODE #lobby b"),
                           (bob, b"TOPIC #lobby")):      # none of these changes #lobby
            made._dispatch(link, ipc.Kind.REQUEST, line)
        made._save_rooms()
        sent = _topics_sent(made, monkeypatch)
        modes = _topics_sent(made, monkeypatch, (b"MODE",))
        refused.clear()
        made._save_rooms()                  # what the loop does at next_store
        assert sorted(modes) == [(1, b":forkchat.local MODE #lobby +kb k bob!*@*"),
                                 (2, b":forkchat.local MODE #lobby +kb k bob!*@*")]
        lobby = made.state.rooms["#lobby"]
        assert (lobby.name, lobby.topic, lobby.key, list(lobby.bans)) == (
            "#lobby", "stored lobby", "k", ["bob!*@*"])
        assert set(lobby.members) == {1, 2}
        assert made.state.rooms["#touched"].topic == "changed meanwhile"
        assert made.state.rooms["#again"].topic == "stored again"
        assert sorted(sent) == [(1, b":forkchat.local TOPIC #again :stored again"),
                                (1, b":forkchat.local TOPIC #lobby :stored lobby"),
                                (2, b":forkchat.local TOPIC #lobby :stored lobby")]
        assert not made.records_awaited
        made._save_rooms()
    stored = stored_rooms(tmp_path)
    assert {name: record["topic"] for name, record in stored.items()} == {
        "#lobby": "stored lobby", "#touched": "changed meanwhile", "#again": "stored again"}
    assert stored["#lobby"]["key"] == "k"


def test_a_member_back_by_reregister_who_left_and_came_back_meanwhile_gets_the_topic(
        tmp_path, monkeypatch):
    """A member back by REREGISTER with a room whose record waits for the
    store is told nothing once its record comes (its client still shows
    the topic), but one who left the room and joined it again meanwhile
    was told it had none: it gets the TOPIC, as one who joined meanwhile
    does.  So does one kicked and back."""
    monkeypatch.setattr(store, "RETRY_S", 0.0)
    _stored_before(tmp_path, {"#quiet": {"name": "#quiet", "topic": "stored quiet",
                                         "flags": "nt"}})
    with _unreadable_until_given_back(monkeypatch) as refused, \
            _broker_on(tmp_path, expected=((1, 0, "h"), (2, 0, "h"), (3, 0, "h"))) as (made, sockets):
        alice = _back_by_reregister(made, 1, "alice", {"#quiet": "@"}, sockets)
        bob = _back_by_reregister(made, 2, "bob", {"#quiet": ""}, sockets)
        carol = _back_by_reregister(made, 3, "carol", {"#quiet": ""}, sockets)
        for link, line in ((bob, b"PART #quiet"), (bob, b"JOIN #quiet"),
                           (alice, b"KICK #quiet carol"), (carol, b"JOIN #quiet")):
            made._dispatch(link, ipc.Kind.REQUEST, line)
        sent = _topics_sent(made, monkeypatch)
        refused.clear()
        made._save_rooms()
        assert made.state.rooms["#quiet"].topic == "stored quiet"
        assert sorted(sent) == [(2, b":forkchat.local TOPIC #quiet :stored quiet"),
                                (3, b":forkchat.local TOPIC #quiet :stored quiet")]


def test_a_member_back_by_reregister_who_asked_the_topic_meanwhile_gets_it(tmp_path,
                                                                         monkeypatch):
    """A member back by REREGISTER who asked the topic of a room awaiting
    its record was told it had none (331), and its client shows none: it
    gets the TOPIC once the record comes, as one who joined meanwhile does.
    One who asked nothing is told nothing (its client still shows it)."""
    monkeypatch.setattr(store, "RETRY_S", 0.0)
    _stored_before(tmp_path, {"#quiet": {"name": "#quiet", "topic": "stored quiet",
                                         "flags": "nt"}})
    with _unreadable_until_given_back(monkeypatch) as refused, \
            _broker_on(tmp_path, expected=((1, 0, "h"), (2, 0, "h"))) as (made, sockets):
        _back_by_reregister(made, 1, "alice", {"#quiet": "@"}, sockets)
        bob = _back_by_reregister(made, 2, "bob", {"#quiet": ""}, sockets)
        made._dispatch(bob, ipc.Kind.REQUEST, b"TOPIC #Quiet")
        sent = _topics_sent(made, monkeypatch)
        refused.clear()
        made._save_rooms()
        assert made.state.rooms["#quiet"].topic == "stored quiet"
        assert sent == [(2, b":forkchat.local TOPIC #quiet :stored quiet")]


def test_members_told_no_topic_get_the_modes_that_come_back_with_the_record(tmp_path,
                                                                           monkeypatch):
    """A member who joined a room awaiting its record was told it was +nt,
    and its client (weechat) still showed that once the record came, and
    knew no key to join again with (475 after /cycle): it gets MODE lines
    from the server with the modes, key, limit and bans come back, at most
    005 MODES parameters to a line, as it gets the TOPIC.  A member back by
    REREGISTER, whose client still shows them, is told nothing."""
    monkeypatch.setattr(store, "RETRY_S", 0.0)
    bans = [["a!*@*", "op", 1], ["b!*@*", "op", 1], ["c!*@*", "op", 1]]
    _stored_before(tmp_path, {"#quiet": {"name": "#quiet", "topic": "stored quiet",
                                         "flags": "imn", "key": "sesame", "limit": 10,
                                         "bans": bans}})
    with _unreadable_until_given_back(monkeypatch) as refused, \
            _broker_on(tmp_path, expected=((1, 0, "h"),)) as (made, sockets):
        _back_by_reregister(made, 1, "alice", {"#quiet": "@"}, sockets)
        bob = _registered(made, 2, "bob", sockets)
        made._dispatch(bob, ipc.Kind.REQUEST, b"JOIN #quiet")
        sent = _topics_sent(made, monkeypatch, (b"TOPIC", b"MODE"))
        refused.clear()
        made._save_rooms()
        quiet = made.state.rooms["#quiet"]
        assert (quiet.flags, quiet.key, quiet.limit) == ({"i", "m", "n"}, "sesame", 10)
        assert sent == [(2, b":forkchat.local TOPIC #quiet :stored quiet"),
                        (2, b":forkchat.local MODE #quiet +imklbb sesame 10 a!*@* b!*@*"),
                        (2, b":forkchat.local MODE #quiet +b-t c!*@*")]


def test_the_modes_come_back_are_told_in_lines_of_512_bytes(tmp_path, monkeypatch):
    """Bans of long masks come back in as many MODE lines as 512 bytes
    need, none cut short, together carrying every mask."""
    monkeypatch.setattr(store, "RETRY_S", 0.0)
    masks = [f"{letter * 170}!*@*" for letter in "abc"]
    _stored_before(tmp_path, {"#r": {"name": "#r", "flags": "nt",
                                     "bans": [[mask, "op", 1] for mask in masks]}})
    with _unreadable_until_given_back(monkeypatch) as refused, \
            _broker_on(tmp_path) as (made, sockets):
        alice = _registered(made, 1, "alice", sockets)
        made._dispatch(alice, ipc.Kind.REQUEST, b"JOIN #r")
        sent = _topics_sent(made, monkeypatch, (b"MODE",))
        refused.clear()
        made._save_rooms()
        assert len(sent) == 2
        told = [protocol.parse_line(line) for _cid, line in sent]
        assert all(len(line) + 2 <= protocol.MAX_LINE_BYTES for _cid, line in sent)
        assert [m.params[1] for m in told] == ["+bb", "+b"]
        assert [mask for m in told for mask in m.params[2:]] == masks


def test_a_store_given_back_with_nothing_to_write_says_it_is_written_again(
        tmp_path, monkeypatch, caplog):
    """A store unreadable at the start, given back, read, and with nothing
    to write (its rooms made meanwhile take their records) stayed failing:
    "written again, rooms persist" was never said, and the next failure (a
    full disk) went unsaid, the store being said to fail already.  A write
    that changes nothing now tells whether it may be written."""
    monkeypatch.setattr(store, "RETRY_S", 0.0)
    _stored_before(tmp_path, {"#lobby": {"topic": "stored"}})
    with _unreadable_until_given_back(monkeypatch) as refused:
        late = store.RoomStore(str(tmp_path))
        try:
            late.apply({})
            refused.clear()
            with caplog.at_level(logging.INFO, logger="forkchat.broker"):
                late.apply({})
                assert late.take_found() == {"#lobby": {"topic": "stored"}}
                assert "written again, rooms persist" in caplog.text
                assert late.retry_at is None
                caplog.clear()
                with _no_file_may_grow():
                    late.put("#lobby", {"topic": "changed"})
            assert "failed, rooms will not persist until it can be written" in caplog.text
        finally:
            late.release()


@pytest.mark.parametrize("leave", [b"PART #r", b"KICK #r alice", b"JOIN 0", None],
                         ids=["part", "kick", "join-0", "quit"])
def test_a_room_emptied_after_its_record_changed_is_removed_from_the_store_at_once(
        tmp_path, leave):
    """A topic or mode change is written at once, the removal of its room
    when it empties was written with the next half-second batch: a broker
    killed in between left the next one the record, and a newcomer making
    the room afresh was refused it (475, the old key) or shown the old
    topic.  The removal is written at once now, when it undoes such a
    record; a plain room's still waits for the batch."""
    with alice_on_a_broker(tmp_path) as (made, link):
        for line in (b"JOIN #plain", b"JOIN #r"):
            made._dispatch(link, ipc.Kind.REQUEST, line)
        made._save_rooms()
        for line in (b"MODE #r +k sekrit", b"TOPIC #r :old"):
            made._dispatch(link, ipc.Kind.REQUEST, line)
        assert sorted(_stored_names(tmp_path)) == ["#plain", "#r"]
        if leave is None:
            made._dispatch(link, ipc.Kind.BYE, b"gone")
        else:
            made._dispatch(link, ipc.Kind.REQUEST, leave)
        assert "#r" not in made.state.rooms
        # (with the removals waiting in the batch, #plain's if it went too)
        assert _stored_names(tmp_path) == (["#plain"] if leave and b"#r" in leave else [])


def test_a_plain_rooms_join_and_part_wait_for_the_batch(tmp_path):
    """Each write is a commit in the broker's loop: the removal of a room
    whose record is a new room's (most joins and parts) is written with
    the others, at most every STORE_EVERY_S, however often it comes."""
    with alice_on_a_broker(tmp_path) as (made, link):
        made._dispatch(link, ipc.Kind.REQUEST, b"JOIN #plain,#undone")
        made._dispatch(link, ipc.Kind.REQUEST, b"MODE #undone +k k")
        made._dispatch(link, ipc.Kind.REQUEST, b"MODE #undone -k k")
        made._save_rooms()
        made._dispatch(link, ipc.Kind.REQUEST, b"PART #plain,#undone")
        assert sorted(_stored_names(tmp_path)) == ["#plain", "#undone"]
        made._save_rooms()
        assert _stored_names(tmp_path) == []


def test_a_room_back_with_its_kept_record_is_removed_from_the_store_at_once(tmp_path):
    """A record kept from before a restart is undone at once too when its
    room, made again, empties."""
    _stored_before(tmp_path, {"#kept": {"topic": "stored", "key": "k"}})
    with alice_on_a_broker(tmp_path) as (made, link):
        made._dispatch(link, ipc.Kind.REQUEST, b"JOIN #kept k")
        assert made.state.rooms["#kept"].topic == "stored"
        made._dispatch(link, ipc.Kind.REQUEST, b"PART #kept")
        assert _stored_names(tmp_path) == []


def test_a_room_emptied_by_a_kill_is_removed_from_the_store_at_once(tmp_path):
    with alice_on_a_broker(tmp_path) as (made, link):
        made._dispatch(link, ipc.Kind.OPER, b'{"name": "admin"}')
        sockets: list = []
        try:
            bob = _registered(made, 2, "bob", sockets)
            for line in (b"JOIN #r", b"TOPIC #r :old"):
                made._dispatch(bob, ipc.Kind.REQUEST, line)
            assert _stored_names(tmp_path) == ["#r"]
            made._dispatch(link, ipc.Kind.REQUEST, b"KILL bob :spam")
            assert "#r" not in made.state.rooms
            assert _stored_names(tmp_path) == []
        finally:
            for sock in sockets:
                sock.close()
