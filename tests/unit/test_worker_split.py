"""A client's lines as TCP may cut them: the worker's framing must not care
where one read ends and the next begins."""

import pytest

from forkchat import worker
from tests.unit.test_worker_lines import fake_broker, linked_worker  # noqa: F401 (fixture)

# Local commands only (answered without the broker): a CRLF line, a bare-LF
# one with UTF-8 text, an empty line, a NUL, a latin-1 USER, CAP LS 302, a
# line of 700 bytes (417 once, wherever it is cut) and the 510 bytes allowed.
STREAM = (b"PING :a\r\nPING :\xc3\xa9t\xc3\xa9\n\r\nPING :x\x00y\r\n"
          b"CAP LS 302\r\nUSER jos 0 * :Jos\xe9\r\nPING :" + b"l" * 694 + b"\r\n"
          b"PING :" + b"m" * 504 + b"\r\nPING :z\r\n")


def _answers(address, accept, pieces: list[bytes]) -> bytes:
    """What the worker writes to a client that sends `pieces` one read each."""
    with linked_worker((address, accept)) as (w, client_end, _server_end):
        for piece in pieces:
            client_end.sendall(piece)
            w.on_client(worker.selectors.EVENT_READ)
        return bytes(w.sendq)


def test_a_stream_cut_anywhere_is_answered_as_one_read(fake_broker):  # noqa: F811
    """Every cut of the stream in two (a character's bytes, a CR from its
    LF, a NUL, a line end) gets the answers the whole stream does."""
    address, accept = fake_broker
    whole = _answers(address, accept, [STREAM])
    assert whole.count(b"PONG") == 4 and whole.count(b" 417 ") == 1
    assert b"CAP * LS :" in whole
    assert "PONG forkchat.local \u00e9t\u00e9\r\n".encode() in whole
    for cut in range(1, len(STREAM)):
        assert _answers(address, accept, [STREAM[:cut], STREAM[cut:]]) == whole, cut
