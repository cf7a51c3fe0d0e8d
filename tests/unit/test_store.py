"""The room store's lock: one server per state directory."""

from __future__ import annotations

import logging

from forkchat import store


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
    """The broker forgets kept records oldest first (state.room_records):
    the order of the load is the order of the last writes, not of the names."""
    first = store.RoomStore(str(tmp_path))
    try:
        first.sync({"#a": {"topic": "1"}, "#b": {"topic": "1"}, "#c": {"topic": "1"}})
        first.put("#a", {"topic": "2"})
        first.sync({"#a": {"topic": "2"}, "#b": {"topic": "1"}, "#c": {"topic": "3"}})
    finally:
        first.release()
    second = store.RoomStore(str(tmp_path))
    try:
        assert list(second.load()) == ["#b", "#a", "#c"]
    finally:
        second.release()
