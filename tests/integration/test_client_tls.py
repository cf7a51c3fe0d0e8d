"""forkchat-client --tls against forkchat-server's TLS listener: what the user reads."""

from __future__ import annotations

from tests.integration.test_client_linemode import run_client
from tests.integration.test_tls import TlsClient, certs, make_cert, start_tls_server, tls_port



def test_a_name_mismatch_advises_the_name_not_a_ca_file(make_server, certs):
    """The certificate is for localhost and the user typed 127.0.0.1: a CA file
    would not help, and the line said to use one."""
    cert, key = make_cert(certs, "one")
    server = start_tls_server(make_server, cert, key)
    port = tls_port(server)
    result = run_client(["-n", "named", "--tls", "--ca-file", cert, f"127.0.0.1:{port}"], "hi\n")
    err = result.stderr.decode()
    assert result.returncode == 1 and err.count("\n") == 1, err
    assert f"TLS certificate of 127.0.0.1:{port} not trusted: IP address mismatch" in err, err
    assert "(connect by a name the certificate is for, or use --insecure" in err, err
    assert "--ca-file" not in err and "'127.0.0.1'. (" not in err, err


def test_an_unknown_issuer_still_advises_a_ca_file(make_server, certs):
    cert, key = make_cert(certs, "one")
    server = start_tls_server(make_server, cert, key)
    port = tls_port(server)
    result = run_client(["-n", "named", "--tls", f"localhost:{port}"], "hi\n")
    err = result.stderr.decode()
    assert result.returncode == 1 and err.count("\n") == 1, err
    assert f"TLS certificate of localhost:{port} not trusted: self-signed certificate " \
           "(use --ca-file, or --insecure to skip the check)" in err, err


def test_a_refusal_during_the_handshake_is_said_in_words(make_server, certs):
    """A TLS listener refuses a connection (here: max_clients_per_ip) with a
    bare close; the user read '[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred
    in violation of protocol (_ssl.c:1006)'."""
    cert, key = make_cert(certs, "one")
    server = start_tls_server(make_server, cert, key, "[limits]\nmax_clients_per_ip = 1\n")
    port = tls_port(server)
    holder = TlsClient(port, cert)
    holder.register("holder")
    result = run_client(["-n", "second", "--tls", "--ca-file", cert, f"localhost:{port}"], "hi\n")
    err = result.stderr.decode()
    assert result.returncode == 1 and err.count("\n") == 1, err
    assert f"TLS handshake with localhost:{port} failed: " in err, err
    assert ("the server closed the connection during the handshake" in err
            or "Connection reset by peer" in err), err
    for noise in ("_ssl.c", "[SSL:", "[Errno"):
        assert noise not in err, err
    holder.close()
