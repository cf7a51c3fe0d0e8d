"""Room records on disk, so that a broker restart or a server restart
loses no topic, mode, key, limit or ban.

One small SQLite database (stdlib sqlite3, WAL) in the state directory,
one row per room: its folded name and a JSON record (`rooms.Room.meta`).
A topic or mode change is written at once with `put()`; joins and parts,
which only create and remove rooms, are written by `sync()` at most a few
times a second, only the rows that changed, in one transaction.  A store
that cannot be opened or written is logged once and then left alone: chat
goes on without persistence.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3

log = logging.getLogger("forkchat.broker")

FILENAME = "rooms.sqlite3"


class RoomStore:
    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, FILENAME)
        self._saved: dict[str, str] = {}
        self._db: sqlite3.Connection | None = None
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS rooms "
                             "(name TEXT PRIMARY KEY, record TEXT NOT NULL)")
        except sqlite3.Error as error:
            log.warning("room store %s unavailable, rooms will not persist: %s",
                        self.path, error)
            self._close()

    @property
    def available(self) -> bool:
        return self._db is not None

    def load(self) -> dict[str, dict]:
        """Every stored record; unreadable rows are skipped."""
        if self._db is None:
            return {}
        records: dict[str, dict] = {}
        try:
            rows = self._db.execute("SELECT name, record FROM rooms").fetchall()
        except sqlite3.Error as error:
            self._fail(error)
            return {}
        for name, text in rows:
            try:
                record = json.loads(text)
            except ValueError:
                continue
            if isinstance(record, dict):
                records[name] = record
                self._saved[name] = text
        return records

    def sync(self, records: dict[str, dict]) -> None:
        """Make the stored rows equal `records`, writing only the differences."""
        if self._db is None:
            return
        encoded = {name: json.dumps(record, sort_keys=True, separators=(",", ":"))
                   for name, record in records.items()}
        changed = [(name, text) for name, text in encoded.items()
                   if self._saved.get(name) != text]
        gone = [name for name in self._saved if name not in encoded]
        if not changed and not gone:
            return
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO rooms VALUES (?, ?)", changed)
                self._db.executemany("DELETE FROM rooms WHERE name = ?", [(n,) for n in gone])
        except sqlite3.Error as error:
            self._fail(error)
            return
        self._saved = encoded

    def put(self, name: str, record: dict) -> None:
        """Write one room's record now (a topic or mode change)."""
        if self._db is None:
            return
        text = json.dumps(record, sort_keys=True, separators=(",", ":"))
        if self._saved.get(name) == text:
            return
        try:
            self._db.execute("INSERT OR REPLACE INTO rooms VALUES (?, ?)", (name, text))
        except sqlite3.Error as error:
            self._fail(error)
            return
        self._saved[name] = text

    def _fail(self, error: sqlite3.Error) -> None:
        log.error("room store %s failed, rooms will not persist: %s", self.path, error)
        self._close()

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
        self._db = None
