"""listeners: the one-line reasons an operator reads when a listener fails."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from forkchat import certdates, config, listeners


def make_pair(directory, name: str, days: str = "2") -> tuple[str, str]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", days,
                    "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


def load_error(cert: str, key: str) -> str:
    with pytest.raises(listeners.BindError) as caught:
        listeners.tls_context(config.Listener(tls_cert=cert, tls_key=key))
    return str(caught.value)


def test_a_file_that_is_not_pem_is_named_so_not_in_openssl_words(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    message = load_error(str(junk), str(junk))
    assert message.endswith("not a PEM certificate chain and its PEM private key"), message
    assert "_ssl.c" not in message


def test_a_key_of_another_certificate_is_named_so(tmp_path):
    cert, _ = make_pair(tmp_path, "one")
    _, other_key = make_pair(tmp_path, "two")
    message = load_error(cert, other_key)
    assert message.endswith("the key does not belong to the certificate"), message


def test_a_missing_file_keeps_the_system_reason(tmp_path):
    assert load_error(str(tmp_path / "no.crt"), str(tmp_path / "no.key")).endswith(
        "No such file or directory")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("which", ["cert", "key"])
def test_a_certificate_or_key_that_is_a_named_pipe_is_refused_at_once(tmp_path, which):
    """OpenSSL opened a named pipe with no writer and waited for ever: the
    start, --check-config, and a reload, which held the supervisor's loop."""
    cert, key = make_pair(tmp_path, "one")
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    files = {"cert": cert, "key": key, which: str(pipe)}
    assert load_error(files["cert"], files["key"]) == (
        f"cannot load TLS certificate {files['cert']} / key {files['key']}: "
        f"{pipe} is not a regular file")


def test_a_failed_ipv6_bind_shows_the_address_in_brackets():
    with socket.socket(socket.AF_INET6) as taken:
        taken.bind(("::1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(listeners.BindError, match=rf"cannot listen on \[::1\]:{port}: "):
            listeners.bind(config.Listener(address="::1", port=port))


def test_a_key_of_another_type_is_named_so(tmp_path):
    """OpenSSL 3 says 'no certificate assigned' for an EC key given with an RSA certificate."""
    cert, _ = make_pair(tmp_path, "rsa")
    ec_key = tmp_path / "ec.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-out", str(ec_key)],
                   check=True, capture_output=True, timeout=60)
    message = load_error(cert, str(ec_key))
    assert message.endswith("the key does not belong to the certificate"), message


def test_an_encrypted_key_is_named_so_and_never_prompts(tmp_path):
    """Without a callback OpenSSL prompts on the terminal, and a start or reload hangs there."""
    key, cert = tmp_path / "enc.key", tmp_path / "enc.crt"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-aes256", "-pass", "pass:secret",
                    "-out", str(key)], check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "req", "-x509", "-key", str(key), "-passin", "pass:secret",
                    "-days", "2", "-subj", "/CN=enc", "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    message = load_error(str(cert), str(key))
    assert "the private key is encrypted with a passphrase" in message, message


def test_an_out_of_date_certificate_is_served_with_a_warning(tmp_path, monkeypatch, caplog):
    """OpenSSL serves it silently and every verifying client fails its handshake."""
    cert, key = make_pair(tmp_path, "old")
    with caplog.at_level("WARNING", logger="forkchat.supervisor"):
        listeners.warn_out_of_date(cert, 0)
        listeners.warn_out_of_date(key, 0)             # not a certificate: nothing to say
    early = [record.getMessage() for record in caplog.records]
    assert len(early) == 1 and f"{cert} (CN=old) is not valid before " in early[0], early
    caplog.clear()
    monkeypatch.setattr(listeners.time, "time", lambda: 4102444800.0)     # 2100
    with caplog.at_level("WARNING", logger="forkchat.supervisor"):
        assert listeners.tls_context(config.Listener(tls_cert=cert, tls_key=key)) is not None
    warned = [record.getMessage() for record in caplog.records]
    assert len(warned) == 1 and " expired on " in warned[0], warned
    assert warned[0].endswith("clients that check it will refuse to connect")


def test_a_current_certificate_loads_without_a_word(tmp_path, caplog):
    cert, key = make_pair(tmp_path, "new")
    with caplog.at_level("WARNING", logger="forkchat.supervisor"):
        listeners.tls_context(config.Listener(tls_cert=cert, tls_key=key))
    assert not caplog.records


def signed_by(directory, name: str, issuer: tuple[str, str], days: str,
              extensions: str = "") -> tuple[str, str]:
    """A certificate for /CN=`name` signed by the `issuer` pair."""
    key, request = directory / f"{name}.key", directory / f"{name}.csr"
    cert, ext = directory / f"{name}.crt", directory / f"{name}.ext"
    ext.write_text(extensions)
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj",
                    f"/O=Test/CN={name}", "-keyout", str(key), "-out", str(request)],
                   check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "x509", "-req", "-in", str(request), "-CA", issuer[0],
                    "-CAkey", issuer[1], "-CAcreateserial", "-days", days, "-extfile", str(ext),
                    "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


def end_date(cert: str) -> str:
    """notAfter as `openssl x509` gives it, in the log's form (2026-12-01 09:30:00 UTC)."""
    text = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-enddate"], check=True,
                          capture_output=True, text=True, timeout=60).stdout
    moment = time.strptime(text.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y GMT")
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", moment)


def test_an_expired_intermediate_is_named_with_its_subject_and_date(tmp_path, monkeypatch,
                                                                     caplog):
    """Only the file's first certificate was read: an intermediate out of date
    (every client that checks the chain refuses it) loaded without a word."""
    root = make_pair(tmp_path, "root")
    inter = signed_by(tmp_path, "inter", root, "3", "basicConstraints=critical,CA:true\n")
    leaf, leaf_key = signed_by(tmp_path, "leaf", inter, "30")
    chain = tmp_path / "chain.pem"
    chain.write_text(open(leaf).read() + open(inter[0]).read())
    later = time.time() + 5 * 86400      # the intermediate (3 days) is out of date, the leaf not
    monkeypatch.setattr(listeners.time, "time", lambda: later)
    with caplog.at_level("WARNING", logger="forkchat.supervisor"):
        assert listeners.tls_context(config.Listener(tls_cert=str(chain), tls_key=leaf_key))
    warned = [record.getMessage() for record in caplog.records]
    assert warned == [f"TLS certificate {chain}: chain certificate 2 (O=Test, CN=inter) expired "
                      f"on {end_date(inter[0])}: clients that check it will refuse to connect"]


def test_a_certificate_about_to_expire_is_named_with_its_date(tmp_path, monkeypatch, caplog):
    cert, key = make_pair(tmp_path, "soon", days="90")
    later = time.time() + 80 * 86400                 # 10 days left
    monkeypatch.setattr(listeners.time, "time", lambda: later)
    with caplog.at_level("WARNING", logger="forkchat.supervisor"):
        assert listeners.tls_context(config.Listener(tls_cert=cert, tls_key=key))
    warned = [record.getMessage() for record in caplog.records]
    assert warned == [f"TLS certificate {cert} (CN=soon) expires soon, on {end_date(cert)}: "
                      f"renew it, then reload"]


DAY = 86400.0


@pytest.mark.parametrize(("lifetime", "left", "soon"), [
    (90 * DAY, 15 * DAY, False), (90 * DAY, 13 * DAY, True),     # 14 days before the end
    (6 * DAY, 2 * DAY, False), (6 * DAY, 1 * DAY, True),         # a quarter of a short one
])
def test_about_to_expire_is_14_days_or_a_quarter_of_a_short_lifetime(lifetime, left, soon):
    """A six-day certificate renewed in time was 'about to expire' at every start."""
    cert = certdates.Dates("CN=x", not_before=1000.0, not_after=1000.0 + lifetime)
    assert listeners.expires_soon(cert, cert.not_after - left) == soon


def test_chain_summary_names_the_servers_certificate_and_what_follows(tmp_path):
    root = make_pair(tmp_path, "root")
    leaf, _ = signed_by(tmp_path, "leaf", root, "30")
    chain = tmp_path / "chain.pem"
    chain.write_text(open(leaf).read() + open(root[0]).read())
    assert listeners.chain_summary(listeners.chain_dates(str(chain))) == (
        f"O=Test, CN=leaf, valid until {end_date(leaf)}, then 1 more certificate")
    assert listeners.chain_summary(listeners.chain_dates(root[1])) == \
        "its dates could not be read"


def test_a_refused_client_that_spoke_first_reads_the_error_line_then_a_clean_end():
    """irssi sends CAP, NICK and USER as soon as it connects; a refusal closed the
    socket with them unread, which is a reset: the client read 'Connection reset
    by peer' (a Windows one lost the ERROR line itself).  Now: the line, then EOF."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname(), timeout=5)
        client.sendall(b"CAP LS 302\r\nNICK late\r\nUSER late 0 * :Late\r\n")
        conn, _ = server.accept()
        conn.settimeout(5)
        assert conn.recv(4, socket.MSG_PEEK) == b"CAP "     # what it sent is there, unread
        listeners.refuse(conn, "127.0.0.1", "Too many connections from your address")
        got = b""
        while chunk := client.recv(4096):                  # ConnectionResetError before
            got += chunk
        client.close()
    assert got == b"ERROR :Closing Link: 127.0.0.1 (Too many connections from your address)\r\n"


# -- two listeners on one port ------------------------------------------------------------

def specs(*pairs: tuple[str, int]) -> tuple[config.Listener, ...]:
    return tuple(config.Listener(address=address, port=port) for address, port in pairs)


@pytest.mark.parametrize(("pairs", "wanted"), [
    ((("127.0.0.1", 7000), ("127.0.0.1", 7000)),
     ["listen[1] (127.0.0.1:7000) clashes with listen[0] (127.0.0.1:7000)"]),
    ((("0.0.0.0", 7000), ("127.0.0.1", 7000)),
     ["listen[1] (127.0.0.1:7000) clashes with listen[0] (0.0.0.0:7000)"]),
    ((("localhost", 7000), ("0.0.0.0", 7000)),
     ["listen[1] (0.0.0.0:7000) clashes with listen[0] (localhost:7000)"]),
    ((("::", 7000), ("0.0.0.0", 7000), ("::1", 7000)),
     ["listen[1] (0.0.0.0:7000) clashes with listen[0] ([::]:7000)",
      "listen[2] ([::1]:7000) clashes with listen[0] ([::]:7000)"]),
    ((("::1", 7000), ("0::1", 7000)),
     ["listen[1] ([0::1]:7000) clashes with listen[0] ([::1]:7000)"]),
    ((("127.0.0.1", 0), ("127.0.0.1", 0)), []),               # port 0: a free port each
    ((("127.0.0.1", 7000), ("127.0.0.2", 7000)), []),
    ((("127.0.0.1", 7000), ("::1", 7000)), []),                # two families
    ((("0.0.0.0", 7000), ("::1", 7000)), []),
    ((("127.0.0.1", 7000), ("127.0.0.1", 7001)), []),
])
def test_listeners_that_take_one_port_are_named(pairs, wanted):
    assert listeners.clashes(specs(*pairs)) == [f"{line}: {listeners.CLASH}" for line in wanted]


def ipv6_available() -> bool:
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize(("first", "second", "clashing"), [
    ("0.0.0.0", "127.0.0.1", True), ("::", "0.0.0.0", True), ("::", "::1", True),
    ("127.0.0.1", "127.0.0.2", False), ("::1", "127.0.0.1", False),
])
def test_the_clashes_named_are_the_ones_the_kernel_refuses(first, second, clashing):
    """Each pair the table calls clashing fails to bind, each other one binds."""
    if ":" in first + second and not ipv6_available():
        pytest.skip("no IPv6 here")
    bound = listeners.bind(config.Listener(address=first, port=0))
    port = bound.sock.getsockname()[1]
    try:
        pair = specs((first, port), (second, port))
        assert bool(listeners.clashes(pair)) == clashing
        try:
            listeners.bind(pair[1]).sock.close()
            refused = False
        except listeners.BindError:
            refused = True
        assert refused == clashing
    finally:
        bound.sock.close()


def test_bind_all_names_the_clash_and_binds_nothing():
    """It said 'cannot listen on 127.0.0.1:P: Address already in use', with
    the port free again by the time the operator looked for its owner."""
    probe = listeners.bind(config.Listener(address="127.0.0.1", port=0))
    port = probe.sock.getsockname()[1]
    probe.sock.close()
    with pytest.raises(listeners.BindError) as caught:
        listeners.bind_all(specs(("127.0.0.1", port), ("0.0.0.0", port)))
    assert str(caught.value) == (f"listen[1] (0.0.0.0:{port}) clashes with listen[0] "
                                 f"(127.0.0.1:{port}): {listeners.CLASH}")
    listeners.bind(config.Listener(address="0.0.0.0", port=port)).sock.close()


def test_a_chain_with_the_intermediate_first_is_named_so(tmp_path):
    """OpenSSL matches the key with the file's first certificate: a chain put
    together as 'intermediate, then server' read only 'the key does not belong
    to the certificate', though it does, and the operator looked for another key."""
    ca_cert, ca_key = make_pair(tmp_path, "ca")
    leaf_key, request = tmp_path / "leaf.key", tmp_path / "leaf.csr"
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=leaf",
                    "-keyout", str(leaf_key), "-out", str(request)],
                   check=True, capture_output=True, timeout=60)
    leaf = tmp_path / "leaf.crt"
    subprocess.run(["openssl", "x509", "-req", "-in", str(request), "-CA", ca_cert, "-CAkey",
                    ca_key, "-CAcreateserial", "-days", "2", "-out", str(leaf)],
                   check=True, capture_output=True, timeout=60)
    right, wrong = tmp_path / "right.pem", tmp_path / "wrong.pem"
    right.write_text(leaf.read_text() + open(ca_cert).read())
    wrong.write_text(open(ca_cert).read() + leaf.read_text())
    assert listeners.tls_context(config.Listener(tls_cert=str(right), tls_key=str(leaf_key)))
    message = load_error(str(wrong), str(leaf_key))
    assert message.endswith("the key does not belong to the first certificate of the file (a "
                            "chain lists the server's own certificate first, then its "
                            "intermediates)"), message
    _, other_key = make_pair(tmp_path, "other")       # one certificate: the words as before
    assert load_error(str(leaf), other_key).endswith("the key does not belong to the certificate")


def test_every_tls12_suite_offered_can_be_chosen(tmp_path):
    """The man page names the suites: ECDHE with AES-GCM or ChaCha20.  DHE ones
    were offered too, and none could ever be chosen (no DH parameters)."""
    cert, key = make_pair(tmp_path, "suites")
    context = listeners.tls_context(config.Listener(tls_cert=cert, tls_key=key))
    names = [suite["name"] for suite in context.get_ciphers() if suite["protocol"] == "TLSv1.2"]
    assert names and all(name.startswith("ECDHE-") for name in names), names
    assert all("GCM" in name or "CHACHA20" in name for name in names), names


def test_the_man_page_gives_the_expiry_warnings_days():
    page = (Path(__file__).resolve().parents[2] / "man" / "forkchat-server.8").read_text()
    text = " ".join(page.split())
    assert (f"less than {listeners.EXPIRY_WARNING_DAYS} days of it left, or less than a "
            f"quarter of its lifetime") in text
    assert listeners.EXPIRY_WARNING_SHARE == 0.25


@pytest.mark.parametrize("setting, port, hint", [
    ("2000\n", 1500, " (a port below 2000 needs root"),     # raised: 1500 needs it too
    ("80\n", 443, None),            # lowered: refused for another reason, no guess
    ("1024\n", 194, " (a port below 1024 needs root"),
    ("garbled", 194, " (a port below 1024 needs root"),    # unreadable: the default
])
def test_the_low_port_hint_follows_the_kernels_setting(tmp_path, monkeypatch, setting, port,
                                                        hint):
    """Where ports stop needing root is net.ipv4.ip_unprivileged_port_start,
    not always 1024: a hint from 1024 alone named the wrong cause, or none."""
    path = tmp_path / "ip_unprivileged_port_start"
    path.write_text(setting)
    monkeypatch.setattr(listeners, "UNPRIVILEGED_PORT_START", str(path))
    said = listeners._needed(config.Listener(port=port), PermissionError(13, "Permission denied"))
    if hint is None:
        assert said == ""
    else:
        assert said.startswith(hint) and said.endswith("see PRIVILEGES in forkchat-server(8))")


def test_the_low_port_hint_reads_1024_without_the_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(listeners, "UNPRIVILEGED_PORT_START", str(tmp_path / "none"))
    assert listeners.first_unprivileged_port() == 1024
