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
    monkeypatch.setattr(ServerProcess, "wait_for_log",
                        lambda self, predicate, what, timeout=2.0:
                        waited(self, predicate, what, timeout))
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
