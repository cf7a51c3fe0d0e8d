"""Certificate renewal as certbot and `systemctl reload forkchat` do it: the
files are replaced under the same paths and the server gets a SIGHUP."""

import os
import shutil
import signal
import subprocess
import ssl

import pytest

from tests.integration.test_tls import TlsClient, certs, make_cert, start_tls_server, tls_port

__all__ = ["certs"]     # the fixture, used by name


def reload_outcome(server) -> str:
    mark = server.log_length()
    server.signal(signal.SIGHUP)
    return server.wait_for_text("configuration reloaded", start=mark)


def start_with_a_client(make_server, certs, name: str):
    """A TLS server on a new certificate `name`, and a client registered
    as 'before' that trusts a copy of it ('first.pem', kept whatever the
    test does to the served files): (server, port, cert, key, first, before)."""
    cert, key = make_cert(certs, name)
    first = os.path.join(certs, "first.pem")
    shutil.copy(cert, first)
    server = start_tls_server(make_server, cert, key)
    port = tls_port(server)
    before = TlsClient(port, first)
    before.register("before")
    return server, port, cert, key, first, before


def test_a_renewed_certificate_with_the_old_key_is_reported_and_the_old_one_kept(
        make_server, certs):
    server, port, cert, key, first, before = start_with_a_client(make_server, certs, "live")

    renewed_cert, renewed_key = make_cert(certs, "renewed")
    shutil.copy(renewed_cert, cert)           # the key is not renewed yet: no match
    mark = server.log_length()
    outcome = reload_outcome(server)
    assert " WARNING " in outcome, outcome
    assert outcome.endswith("configuration reloaded, but 1 listener(s) kept their previous "
                            "certificate"), outcome
    server.wait_for_text("the key does not belong to the certificate; keeping the current "
                         "certificate", start=mark)
    kept = TlsClient(port, first)             # still served the first certificate
    kept.register("kept")
    with pytest.raises(ssl.SSLCertVerificationError):
        TlsClient(port, renewed_cert)

    shutil.copy(renewed_key, key)             # the pair is whole again
    outcome = reload_outcome(server)
    assert outcome.endswith(" INFO configuration reloaded"), outcome
    after = TlsClient(port, renewed_cert)
    after.register("after")
    before.sync()                             # nobody was dropped
    kept.sync()
    for client in (before, kept, after):
        client.close()


@pytest.mark.timeout(60)
def test_a_config_or_certificate_replaced_by_a_named_pipe_fails_the_reload_at_once(
        make_server, certs):
    """OpenSSL and the config loader opened a named pipe with no writer and
    waited on it: a SIGHUP held the supervisor's loop, and no client got in
    until someone wrote to the pipe."""
    cert, key = make_cert(certs, "live")
    server = start_tls_server(make_server, cert, key)
    port = tls_port(server)
    config_text = open(server.config_path).read()

    os.unlink(server.config_path)
    os.mkfifo(server.config_path)
    mark = server.log_length()
    server.signal(signal.SIGHUP)
    failed = server.wait_for_text("reload failed", start=mark)
    assert failed.endswith(f"reload failed, keeping the running configuration: "
                           f"{server.config_path}: file: cannot read: not a regular file"), failed
    first = TlsClient(port, cert)
    first.register("first")

    os.unlink(server.config_path)
    server.write_config(config_text)
    kept = os.path.join(certs, "kept.pem")
    os.rename(cert, kept)
    os.mkfifo(cert)
    mark = server.log_length()
    outcome = reload_outcome(server)
    assert outcome.endswith("configuration reloaded, but 1 listener(s) kept their previous "
                            "certificate"), outcome
    server.wait_for_text(f"{cert} is not a regular file; keeping the current certificate",
                         start=mark)
    second = TlsClient(port, kept)           # still served the loaded certificate
    second.register("second")
    first.sync()
    for client in (first, second):
        client.close()


def test_a_reload_to_a_certificate_of_another_key_type_serves_it_after_the_warm_up(
        make_server, certs):
    """The start warms up each TLS listener through its context (an RSA
    key's here); what that left in the supervisor must not pin it: after a
    reload to an EC certificate, a new client is served the new one (and
    one that trusts only the old is refused), and clients before it go on."""
    server, port, cert, key, first, before = start_with_a_client(make_server, certs, "rsa")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o644)
    outcome = reload_outcome(server)
    assert outcome.endswith(" INFO configuration reloaded"), outcome
    after = TlsClient(port, cert)
    after.register("after")
    assert after.sock.getpeercert()["subject"] == ((("commonName", "localhost"),),)
    with pytest.raises(ssl.SSLCertVerificationError):
        TlsClient(port, first)
    after.join("#after")
    before.join("#after")
    after.expect("JOIN")
    before.sync()
    for client in (before, after):
        client.close()


def make_dsa_cert(directory, name: str) -> tuple[str, str]:
    """A DSA certificate and key: OpenSSL loads them, and no client can
    complete a handshake with them (no cipher to share)."""
    params, cert, key = (os.path.join(directory, f"{name}.{ext}") for ext in ("param", "pem", "key"))
    subprocess.run(["openssl", "dsaparam", "-out", params, "2048"], check=True,
                   capture_output=True, timeout=120)
    subprocess.run(["openssl", "req", "-x509", "-newkey", f"dsa:{params}", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=60)
    os.chmod(cert, 0o644)
    os.chmod(key, 0o644)
    return cert, key


def test_a_certificate_no_handshake_completes_with_is_told_at_start_and_at_each_reload(
        make_server, certs):
    """forkchat-server(8), LOGGING: the warm-up's own handshake through a
    DSA certificate is refused, as every client's is; the start and the
    reload said nothing of it (a reload only "configuration reloaded")."""
    cert, key = make_dsa_cert(certs, "dsa")
    server = start_tls_server(make_server, cert, key)
    port = tls_port(server)
    told = (f"127.0.0.1:{port} (irc) with TLS: no TLS handshake completes with its "
            f"certificate {cert} (a test handshake failed: SSLV3_ALERT_HANDSHAKE_FAILURE); "
            f"its TLS clients will fail")
    lines = server.log_text().splitlines()
    assert [line for line in lines if line.endswith(f" WARNING {told}")], lines
    mark = server.log_length()
    outcome = reload_outcome(server)
    assert outcome.endswith(" INFO configuration reloaded"), outcome
    lines = server.log_text().splitlines()[mark:]
    assert [line for line in lines if line.endswith(f" WARNING {told}")], lines


def test_check_config_warns_of_a_certificate_no_handshake_completes_with(certs):
    """--check-config runs the start's test handshake: the pair loads (so
    the file is valid, status 0), and the warning is the start's own."""
    from tests.integration.test_tls import tls_config
    from tests.support.server import run_forkchat
    cert, key = make_dsa_cert(certs, "dsa")
    path = os.path.join(certs, "forkchat.toml")
    with open(path, "w") as handle:
        handle.write(tls_config(cert, key))
    checked = run_forkchat("-c", path, "--check-config")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.endswith(f"configuration OK ({path})\n"), checked.stdout
    assert checked.stderr == (
        f"forkchat-server: warning: listen[0]: no TLS handshake completes with its certificate "
        f"{cert} (a test handshake failed: SSLV3_ALERT_HANDSHAKE_FAILURE); its TLS clients "
        f"will fail\n")
