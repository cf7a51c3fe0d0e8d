"""The worker's broker link: frames wait for a broker and survive a new one."""

import errno
import os
import socket
import tempfile

import pytest

from forkchat import ipc, link


@pytest.fixture
def broker_socket():
    directory = tempfile.mkdtemp()
    path = os.path.join(directory, "broker")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    yield listener, path
    listener.close()
    os.unlink(path)
    os.rmdir(directory)


def test_frames_queued_before_a_broker_exists_arrive_in_order(broker_socket):
    listener, path = broker_socket
    out = link.BrokerLink(path + "-not-yet")
    out.queue(ipc.encode(ipc.Kind.REQUEST, b"PRIVMSG #a :one"))
    assert not out.connect()
    out.address = path
    assert out.connect()
    out.queue_first([ipc.encode_json(ipc.Kind.HELLO, {"cid": 1})])
    out.queue(ipc.encode(ipc.Kind.REQUEST, b"PRIVMSG #a :two"))
    out.flush()
    peer, _ = listener.accept()
    frames = ipc.FrameReader().feed(peer.recv(4096))
    assert [kind for kind, _ in frames] == [ipc.Kind.HELLO, ipc.Kind.REQUEST, ipc.Kind.REQUEST]
    assert frames[2][1] == b"PRIVMSG #a :two"
    peer.close()


def test_a_partly_written_frame_is_dropped_on_reconnect(broker_socket):
    listener, path = broker_socket
    out = link.BrokerLink(path)
    out.queue(b"x" * 10)
    out.queue(b"y" * 10)
    out._consume(4)                     # as if 4 bytes had reached a broker that died
    assert out.connect()
    assert out.out == [b"y" * 10]
    out.close()


def test_eof_is_link_lost(broker_socket):
    listener, path = broker_socket
    out = link.BrokerLink(path)
    assert out.connect()
    peer, _ = listener.accept()
    peer.close()
    out.sock.settimeout(5)
    with pytest.raises(link.LinkLost):
        out.read()
    out.close()


LINES = 6000          # about 80 KB: more than one read (64 KiB), less than the socket buffer


def test_what_a_dead_broker_wrote_is_read_after_the_write_error(broker_socket):
    """A write error may come first; the frames the broker wrote are still there."""
    listener, path = broker_socket
    out = link.BrokerLink(path)
    assert out.connect()
    peer, _ = listener.accept()
    out.queue(ipc.encode(ipc.Kind.REQUEST, b"PRIVMSG #a :unread"))
    out.flush()                        # unread by the peer: its close is a reset, as a kill's
    peer.sendall(b"".join(ipc.encode(ipc.Kind.DELIVER, b"line %d" % n) for n in range(LINES)))
    peer.close()
    out.queue(ipc.encode(ipc.Kind.REQUEST, b"PRIVMSG #a :late"))
    with pytest.raises(link.LinkLost):
        out.flush()
    frames = out.read_rest()
    assert [payload for _, payload in frames] == [b"line %d" % n for n in range(LINES)]
    assert out.read_rest() == []
    out.close()


def test_nothing_is_read_after_a_bad_frame(broker_socket):
    listener, path = broker_socket
    out = link.BrokerLink(path)
    assert out.connect()
    peer, _ = listener.accept()
    peer.sendall(b"\xff" * 8)
    out.sock.settimeout(5)
    with pytest.raises(link.LinkLost):
        out.read()
    peer.sendall(ipc.encode(ipc.Kind.DELIVER, b"after the garbage"))
    peer.close()
    assert out.read_rest() == []
    out.close()


def test_count_and_overfull():
    out = link.BrokerLink("unused")
    out.queue(ipc.encode(ipc.Kind.SYNC, b""))
    out.queue(ipc.encode(ipc.Kind.REQUEST, b"x" * (link.QUEUE_BYTES)))
    assert out.count(ipc.Kind.SYNC) == 1 and out.overfull()


def test_no_descriptor_for_the_socket_is_a_failed_connect_not_a_crash(monkeypatch):
    """ENFILE (the whole system out of descriptors) raised out of connect()
    and crashed the worker, its client dropped without a word."""
    def no_socket(*args, **kwargs):
        raise OSError(errno.ENFILE, "Too many open files in system")
    queued = link.BrokerLink(b"\0forkchat-test-nobody")
    queued.queue(b"frame")
    monkeypatch.setattr(link.socket, "socket", no_socket)
    assert queued.connect() is False
    assert not queued.connected and queued.out == [b"frame"]
