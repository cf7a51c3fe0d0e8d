"""Room records on disk, so that a broker restart or a server restart
loses no topic, mode, key, limit or ban.

One small SQLite database (stdlib sqlite3, WAL) in the state directory,
one row per room: its folded name and a JSON record (`rooms.Room.meta`).
A topic or mode change is written at once with `put()`; joins and parts,
which only create and remove rooms, are written by `apply()` at most a few
times a second, only the rows of the rooms created or removed, in one
transaction, but at once for a room removed whose stored record is not a
new room's (see `record()`).  A store that cannot be opened is logged once
and left alone: chat goes on without persistence.  One that cannot be written (a full disk)
keeps what it could not write and tries again every RETRY_S seconds, logging
the failure once and the first write that succeeds again; one removed while
in use (its directory deleted) is opened again at its path, and every record
written into it.  One the broker may not write (left owned by root, a
read-only state_dir) is named once, with what to do, and opened again at
every try, so that fixing the permission is all it takes; if it could not
be read at the start, its records are read once it can be, and restored as
a start restores them (`take_found`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pwd
import sqlite3
import stat
import time
from typing import Iterable

from forkchat import protocol

log = logging.getLogger("forkchat.broker")

FILENAME = "rooms.sqlite3"
LOCK_FILENAME = "rooms.lock"
# A server restarted at once may find its old broker still exiting: its
# lock goes with it, so a held lock is waited for this long first.
LOCK_WAIT_S = 3.0
LOCK_POLL_S = 0.05
# A write that failed (a full disk) is tried again this often, with all
# the changes since, while the broker has any.
RETRY_S = 2.0
# How long a write waits for a lock held by another program (an sqlite3
# shell in a transaction): the broker serves everyone meanwhile, and the
# write is tried again RETRY_S later.  SQLite's default was 5 s.
BUSY_WAIT_MS = 50
IN_USE = "in use"           # what _open() says when another server holds the lock
# A write that changes nothing, for a failing store with nothing left to
# write (one unreadable at the start, given back and read, whose rooms all
# take their records): refused if the store is still read-only, else it
# says "written again".  Left failing, the store never said so, and the
# next failure (a full disk) went unsaid, being "said once" already.  Only
# then, at the read: it writes no page, so on a full disk it succeeded, and
# a room made and removed meanwhile had "written again" said, then the
# failure once more.
WRITABLE_PROBE = "DELETE FROM rooms WHERE 0"


class RoomStore:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, FILENAME)
        self._saved: dict[str, str] = {}
        self._pending: dict[str, str | None] = {}     # texts not written yet (a failed write)
        self._failing = False
        self._retry_at = 0.0
        self._db: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None     # the open database's device and inode
        self._lost = False          # it was removed or replaced: to be opened again
        self._read_only = False     # a write was refused: connect again at the next try
        self._lock_fd = -1
        self._lock_error = ""       # why the lock file could not be opened
        self._unloaded = False      # its records could not be read at the start
        self._found: dict[str, dict] = {}   # records read late, for the broker to take
        self._most: int | None = None   # the most records read (max_rooms), see load
        problem = self._open()
        if problem == IN_USE:
            self._say_in_use()
        elif problem and self._say_not_writable():
            # opened at the next write, as a store removed while in use is,
            # and read then
            self._lost = self._failing = self._unloaded = True
            self._retry_at = time.monotonic() + RETRY_S
        elif problem:
            log.warning("room store %s unavailable, rooms will not persist: %s",
                        self.path, problem)

    def _say_in_use(self) -> None:
        log.warning("room store %s is in use by another forkchat server (a shared "
                    "state_dir), rooms will not persist", self.path)

    def _open(self, lock_wait: float | None = None) -> str:
        """Lock the directory and open the database: '' once done, else
        IN_USE or the reason (after LOCK_WAIT_S unless told)."""
        if not self._lock(self.directory, LOCK_WAIT_S if lock_wait is None else lock_wait):
            return IN_USE
        try:
            self._db = self._connect()
        except sqlite3.Error as error:
            # SQLite says "unable to open database file" whatever the cause;
            # the lock file's open, just before, said which it was.
            return f"{error}{self._lock_error}"
        self._file = _file_at(self.path)
        return ""

    def _connect(self) -> sqlite3.Connection:
        """A connection to the database at the path, made if missing.

        Raises:
            sqlite3.Error: it cannot be opened or made.
        """
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS rooms "
                       "(name TEXT PRIMARY KEY, record TEXT NOT NULL)")
            db.execute(f"PRAGMA busy_timeout={BUSY_WAIT_MS}")
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _lock(self, directory: str, wait: float) -> bool:
        """Hold the directory's lock for as long as this broker runs; False
        if another server holds it (after `wait` seconds: a broker started
        just after one died may find its lock not yet released).

        Two servers on one state_dir (a second instance with the default
        /var/lib/forkchat) each wrote the other's room records over its own
        and restored them on the next join.  The lock is the broker's own:
        its exit, crash or SIGKILL releases it for the next broker.  A lock
        file that cannot be opened is left to SQLite to report, with the
        reason kept here.
        """
        try:
            fd = os.open(os.path.join(directory, LOCK_FILENAME),
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            self._lock_error = f" ({error.strerror or error})"
            return True
        self._lock_error = ""
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(LOCK_POLL_S)
                continue
            except OSError:
                os.close(fd)       # a file system without locks: as before
                return True
            self._lock_fd = fd
            return True

    def release(self) -> None:
        """Close the store and give up the lock (the process's exit does
        both anyway)."""
        self._close()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    @property
    def available(self) -> bool:
        return self._db is not None

    def load(self, most: int | None = None) -> dict[str, dict]:
        """Every stored record, the least recently written first (a written
        row gets a new rowid); only the `most` most recently written (the
        broker's max_rooms), the others deleted.

        The broker forgets the records past max_rooms, the least recently
        written first, but did so only at its first write after loading
        them all: a store grown by hand to 200,000 rows took 3 s to load
        while the first clients (all of them, after a broker restart)
        waited, then 1 s more of the broker's loop to delete the rows.

        A row that is not a JSON object under a UTF-8 name is skipped, and
        a field of the wrong type dropped (the rest of its record kept),
        with one warning: a hand-edited `"bans": 5` made every JOIN of its
        room crash the broker, and a row that was not UTF-8 made the whole
        store fail.  Each is keyed by its name folded as the server folds
        room names (rows under another case are stored again so, at once).
        """
        self._most = most           # for a store read late too
        if self._db is None:
            return {}
        try:
            records = self._read()
        except sqlite3.Error as error:
            log.warning("room store %s unavailable, rooms will not persist: %s",
                        self.path, error)
            self._close()
            return {}
        if self._pending:
            self._write()
        return records

    def _read(self) -> dict[str, dict]:
        """Every stored record (as `load` says), each noted as stored.

        Raises:
            sqlite3.Error: the rows cannot be read.
        """
        assert self._db is not None
        rows = self._db.execute("SELECT rowid, CAST(name AS BLOB), CAST(record AS BLOB) "
                                "FROM rooms ORDER BY rowid DESC LIMIT ?",
                                (-1 if self._most is None else self._most,)).fetchall()
        rows.reverse()
        if rows and len(rows) == self._most:
            self._forget_before(rows[0][0])
        records: dict[str, dict] = {}
        texts: dict[str, str] = {}
        doubled: list[str] = []
        bad = 0
        for _rowid, raw_name, raw_record in rows:
            name, text, record = _decode(raw_name, raw_record)
            if record is None:
                bad += 1
                continue
            if _drop_wrong_types(record):
                bad += 1        # its row is written over when the room is next
            self._saved[name] = text
            folded = protocol.casefold(name)
            if folded in records:
                doubled.append(folded)
                del records[folded]     # the most recently written is kept, in its place
            records[folded], texts[folded] = record, text
        self._store_folded(texts)
        if bad:
            log.warning("room store %s: %d room records unreadable in whole or part, "
                        "what was unreadable is skipped", self.path, bad)
        if doubled:
            log.warning("room store %s: %d room records name a room that another record "
                        "names in another case (%s), the most recently written of each is "
                        "kept", self.path, len(doubled), " ".join(sorted(set(doubled))[:5]))
        return records

    def _forget_before(self, rowid: int) -> None:
        """Delete the rows written before this one (past max_rooms), in one
        statement; if they cannot be, the next start forgets them."""
        assert self._db is not None
        if not self._db.execute("SELECT 1 FROM rooms WHERE rowid < ? LIMIT 1",
                                (rowid,)).fetchall():
            return                  # no write (the store may be read-only)
        try:
            with self._db:
                self._db.execute("BEGIN")
                forgotten = self._db.execute("DELETE FROM rooms WHERE rowid < ?",
                                             (rowid,)).rowcount
        except sqlite3.Error as error:
            self._failed(error)
            return
        if forgotten > 0:
            log.warning("room store %s: %d room records past max_rooms (%d) forgotten, the "
                        "least recently written", self.path, forgotten, self._most)

    def _store_folded(self, texts: dict[str, str]) -> None:
        """Have each record just read stored under its folded name and no
        other, at the next write.

        The broker keys a room by its name folded (RFC 1459), the lookup of
        a kept record too: a record keyed in upper case (a hand edit) never
        came back, and the room's own record was written beside it, both
        loaded at every start, the older one never deleted.
        """
        for name in self._saved:
            if protocol.casefold(name) != name:
                self._pending[name] = None
        for folded, text in texts.items():
            if self._saved.get(folded) != text:
                self._pending[folded] = text

    def apply(self, changes: dict[str, dict | None]) -> None:
        """Write these rows (None: delete it) in one transaction, only
        those that differ from what is stored.

        While the store is failing they wait, with those of the writes that
        failed, for the next try (`retry_at`): a store that failed once (a
        full disk for a moment) was left alone for the rest of the broker's
        life, and every topic, mode and room since was lost at the restart.
        """
        if self._db is None and not self._lost:
            return
        for name, record in changes.items():     # encoded once, not at every try
            self._pending[name] = None if record is None else _encode(record)
        if not self._failing or time.monotonic() >= self._retry_at:
            self._write()

    def put(self, name: str, record: dict) -> None:
        """Write one room's record now (a topic or mode change)."""
        self.apply({name: record})

    def record(self, name: str) -> dict | None:
        """The record of this room that the store holds, or is to write (a
        failed write's); None if it has none, or is to delete it.

        The broker writes the removal of a room at once if its record is
        not a new room's (Broker._rooms_left).
        """
        text = self._pending[name] if name in self._pending else self._saved.get(name)
        return None if text is None else json.loads(text)

    @property
    def retry_at(self) -> float | None:
        """When (time.monotonic) changes kept by a failed write, or a store
        not yet read, are to be tried again; None if none wait.

        A store unreadable at the start is tried even with no change to
        write: read only at the first change after its permission was
        fixed, the JOIN that made that change had made its room afresh, and
        the room's record was written over (see `_read_late`).
        """
        waiting = self._pending or self._unloaded
        return self._retry_at if waiting and (self._db is not None or self._lost) else None

    @property
    def unread(self) -> bool:
        """Whether the store could not be read at the start and has not
        been read since: a room made meanwhile has had no record.  The
        broker keeps the records of rooms back from its predecessor out of
        it until then, so that they may take the stored ones (see
        Broker._note_rooms_back)."""
        return self._unloaded

    def take_found(self) -> dict[str, dict]:
        """The records of a store unreadable at the start, read since it
        became readable, that are not the rooms' live now; each given once.

        The broker keeps them as it keeps those of a load at its start, for
        when their rooms are created again.
        """
        found, self._found = self._found, {}
        return found

    def renew(self, names: Iterable[str]) -> None:
        """Make these rows the most recently written, as they are (the rooms
        alive at a shutdown), after writing any changes still waiting.

        Kept records are forgotten past max_rooms, the least recently
        written first (state.store_changes).  A room made long ago and
        alive at the shutdown kept the place of its last write, behind the
        records of rooms left at earlier shutdowns, and was the first one
        the next start forgot, its topic, key and bans with it.
        """
        if self._db is None and not self._lost:
            return
        self._write()
        if self._db is None:
            return
        rows = [(name,) for name in names if name in self._saved]
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("UPDATE rooms SET rowid = (SELECT max(rowid) + 1 "
                                     "FROM rooms) WHERE name = ?", rows)
        except sqlite3.Error as error:
            self._failed(error)

    def _write(self) -> None:
        """Write the changes waiting, in one transaction; on failure they
        wait for the next try."""
        if self._file is None or _file_at(self.path) != self._file:
            problem = self._reopen()
            if problem:
                self._failed(problem)
                return
            if self._db is None:
                return              # another server's store now
        elif self._read_only and not self._connect_again():
            return
        read_now = self._unloaded
        if read_now and not self._read_late():
            return
        written: dict[str, str] = {}
        gone: list[str] = []
        for name, text in self._pending.items():
            if text is None:
                if name in self._saved:
                    gone.append(name)
            elif self._saved.get(name) != text:
                written[name] = text
        db = self._db
        if db is None:
            return              # not open: the changes wait for the next try
        if written or gone or (self._failing and read_now):
            try:
                with db:
                    db.execute("BEGIN")
                    if not (written or gone):
                        db.execute(WRITABLE_PROBE)
                    db.executemany("DELETE FROM rooms WHERE name = ?", [(n,) for n in gone])
                    db.executemany("INSERT OR REPLACE INTO rooms VALUES (?, ?)",
                                   list(written.items()))
            except sqlite3.Error as error:
                self._failed(error)
                return
            if self._failing:
                log.info("room store %s written again, rooms persist", self.path)
            self._failing = False
        self._pending.clear()
        for name in gone:
            del self._saved[name]
        self._saved.update(written)

    def _reopen(self) -> str:
        """Open the database at the path again, as the one written was
        removed (the state directory deleted, say) or replaced, and have
        every record written into it: '' once done, else why not.

        Writes went on into the file that had been removed, for nobody to
        read: the next start found no rooms, or those of the file put in
        its place.  Its lock went with it, so the new one is taken.
        """
        if not self._lost:
            log.warning("room store %s was removed or replaced while in use, every room "
                        "record is written anew", self.path)
            self._lost = True
            self._pending = {**self._saved, **self._pending}
            self._saved = {}
        self._close()
        self._unlock()              # ours too, or the lock would be held against us
        # No wait here: this runs in the broker's loop, and a lock held now
        # is another server's, which a sleep would not change but all chat would stop for.
        problem = self._open(lock_wait=0.0)
        if problem == IN_USE:
            self._say_in_use()
            self._lost = False
            self._pending.clear()
            return ""
        if not problem:
            self._lost = False
        return problem

    def _read_late(self) -> bool:
        """Read the records of a store that could not be read at the start,
        now that it is open: False (and tried again later) if it still
        cannot be read.

        Until then the broker made rooms without their records.  The store
        was written again once its permission was fixed, but its records
        never restored: a kept room came back without its key, topic and
        bans, and its fresh record went over the stored one.  Now, as at a
        start, a room live now keeps its live state (its record, waiting,
        is written over the stored one), and the records of the others are
        the broker's to keep (`take_found`); a record the broker removed
        without having had it is kept, not deleted.
        """
        changes, self._pending = self._pending, {}     # the broker's, apart from the read's
        try:
            records = self._read()
        except sqlite3.Error as error:
            self._pending = changes
            self._failed(error)
            return False
        self._unloaded = False
        for name, record in records.items():
            if changes.get(name) is None:   # not live: kept, even if "removed"
                changes.pop(name, None)
                self._found[name] = record
        self._pending.update(changes)
        log.info("room store %s read at last: %d room records kept for their rooms, "
                 "%d rooms live keep their state", self.path, len(self._found),
                 len(records) - len(self._found))
        return True

    def _connect_again(self) -> bool:
        """Replace a connection whose writes were refused: SQLite opened the
        file read-only, and stays so after its permission is fixed (every
        try failed until the broker restarted).  False if that failed.

        The lock is taken too if its file could not be opened (left root's
        with the store): given back with it, the broker ran on without the
        lock for its life, and a second server on the directory wrote over
        its records.  If another holds it now, the store is that one's.
        """
        if self._lock_fd < 0 and not self._lock(self.directory, 0.0):
            self._say_in_use()
            self._close()
            self._read_only = False
            self._pending.clear()
            return False
        try:
            fresh = self._connect()
        except sqlite3.Error as error:
            self._failed(error)
            return False
        self._close()
        self._db, self._read_only = fresh, False
        return True

    def _failed(self, error: sqlite3.Error | str) -> None:
        """A write failed: said once until one succeeds, tried again later."""
        if _refused(error):
            self._read_only = True
            if not self._failing and self._say_not_writable():
                self._failing = True
        if not self._failing:
            log.error("room store %s failed, rooms will not persist until it can be "
                      "written again (tried every %g s): %s", self.path, RETRY_S, error)
        self._failing = True
        self._retry_at = time.monotonic() + RETRY_S

    def _say_not_writable(self) -> bool:
        """Name what of the store the broker may not write, and what to do;
        False if all of it looks writable (another cause)."""
        what = not_writable(self.path)
        if what:
            verb, it = ("is", "it") if len(what) == 1 else ("are", "them")
            log.error("room store %s cannot be written: %s %s not writable by user %s; "
                      "give %s to that user (chown) or make %s writable, and rooms persist "
                      "again (tried every %g s)", self.path, ", ".join(what), verb,
                      _user(os.geteuid()), it, it, RETRY_S)
        return bool(what)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
        self._db = None


def not_writable(path: str) -> list[str]:
    """Each of the store's files, its lock file and its directory that this
    process may not write, with its owner and mode.

    All of them, not the first: the line is said once, and a run as root
    leaves the store, its lock file and the directory it made all root's.
    Named only the store, the admin gave it back and the writes went on
    failing (the directory, where SQLite makes its -wal, still root's)
    without another word, and the lock file kept root's disabled the
    lock against a second server.

    A "directory" that is a file is none of these: its mode is not why the
    store cannot be opened, and no chown cures it (the caller says why).
    """
    directory = os.path.dirname(path) or "."
    found: list[str] = []
    for each in (path, f"{path}-wal", f"{path}-shm", os.path.join(directory, LOCK_FILENAME),
                 directory):
        try:
            status = os.stat(each)
        except OSError:
            continue
        if each == directory and not stat.S_ISDIR(status.st_mode):
            continue
        if not os.access(each, os.W_OK):
            found.append(f"{each} (owner {_user(status.st_uid)}, mode "
                         f"{stat.S_IMODE(status.st_mode):04o})")
    return found


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _refused(error: sqlite3.Error | str) -> bool:
    """Whether SQLite refused a write to a database it opened read-only."""
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_READONLY


def _file_at(path: str) -> tuple[int, int] | None:
    """The device and inode of the file at `path`, None if there is none."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


# The type of each field of a record (rooms.Room.meta) that can be trusted;
# a field missing is fine (a record from an older version).
FIELD_TYPES: dict[str, type] = {
    "name": str, "created": int, "topic": str, "topic_setter": str, "topic_time": int,
    "flags": str, "key": str, "limit": int, "bans": list}


def _encode(record: dict) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def _decode(raw_name: object, raw_record: object) -> tuple[str, str, dict | None]:
    """A row's name, record text and record; None for the record if the row
    cannot be read (a name or record that is not UTF-8 text, a record that
    is not a JSON object)."""
    if not isinstance(raw_name, bytes) or not isinstance(raw_record, bytes):
        return "", "", None
    try:
        name, text = raw_name.decode("utf-8"), raw_record.decode("utf-8")
        record = json.loads(text)
    except ValueError:          # UnicodeDecodeError and JSONDecodeError too
        return "", "", None
    return name, text, record if isinstance(record, dict) else None


def _drop_wrong_types(record: dict) -> bool:
    """Remove the fields whose value is not of their type; True if any was."""
    wrong = [field for field, kind in FIELD_TYPES.items()
             if field in record and not _is(record[field], kind)]
    for field in wrong:
        del record[field]
    return bool(wrong)


def _is(value: object, kind: type) -> bool:
    """isinstance, but a JSON true or false is no int."""
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))
