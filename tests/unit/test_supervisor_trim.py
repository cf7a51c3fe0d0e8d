"""The supervisor gives its C heap's free pages back before it forks a
spawner: every fork of a worker copies the page table of what the spawner
has present, free heap pages included."""

from __future__ import annotations

from forkchat import config, supervisor


def test_the_heap_is_trimmed_just_before_the_spawner_is_forked(monkeypatch):
    done: list[str] = []
    monkeypatch.setattr(supervisor, "_malloc_trim", lambda pad: done.append(f"trim {pad}") or 1)
    targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None)
    boss = supervisor.Supervisor(config.Config(), targets)

    def fork(kind, target, args, *rest):
        done.append(f"fork {kind}")
        child = supervisor.Child(kind, 4321, None, -1)
        boss.children[child.pid] = child
        return child
    monkeypatch.setattr(boss, "_start", fork)
    try:
        assert boss.start_spawner()
        assert done == ["trim 0", "fork spawner"]
    finally:
        boss.broker_listener.close()
        boss.selector.close()
        for handle in boss.spawners.values():
            handle.sock.close()


def test_without_malloc_trim_the_spawner_is_forked_all_the_same(monkeypatch):
    """Not glibc (musl has no malloc_trim): nothing is trimmed, nothing fails."""
    monkeypatch.setattr(supervisor, "_malloc_trim", None)
    supervisor.trim_heap()
