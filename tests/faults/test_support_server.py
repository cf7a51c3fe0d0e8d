"""The test harness's own promise: a server it starts is stopped, even one
that never says it is listening."""

import psutil
import pytest

from tests.support.server import ServerProcess, left_behind


def test_a_server_that_never_reports_its_listeners_is_stopped(monkeypatch):
    """start() waited for "listening on" and raised when it did not come,
    leaving the server running with no caller to stop it (the make_server
    fixture records only servers that started): orphans that outlived the
    test run.  Asked for two listeners, the server reports one."""
    waited = ServerProcess.wait_for_log

    def short_wait(self, predicate, what, timeout=None):
        # The one listener at the usual pace (a slow machine took over 2 s
        # to start: stopped before it forked, it had no children to check),
        # then 2 s for the second, which never comes.
        waited(self, lambda: len(self.ports) >= 1, what)
        waited(self, predicate, what, 2.0)

    monkeypatch.setattr(ServerProcess, "wait_for_log", short_wait)
    server = ServerProcess()
    children: list[psutil.Process] = []
    real_stop = server.stop

    def stop(*args, **kwargs):
        children.extend(server.descendants())
        return real_stop(*args, **kwargs)

    server.stop = stop
    try:
        with pytest.raises(AssertionError, match="never logged 'listening on'"):
            server.start(expect_listeners=2)
        assert server.proc is not None and server.proc.poll() is not None
        assert children and not left_behind(children)
    finally:
        real_stop()
