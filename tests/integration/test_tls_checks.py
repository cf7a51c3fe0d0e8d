"""What a sysadmin is told about TLS files before the users find out:
--check-config loads each TLS listener's certificate and key as the start
does, and a certificate out of date anywhere in the chain is a warning at
start, at each reload and from --check-config."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess

import pytest

from tests.integration.test_tls import TlsClient, certs, make_cert
from tests.support.server import run_forkchat

__all__ = ["certs"]     # the fixture, used by name


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def signed(directory: str, name: str, days: str, issuer: str | None = None,
           extensions: str = "") -> tuple[str, str]:
    """/O=Test/CN=`name`, signed by the pair named `issuer`, else by itself.

    `days` -1 makes one that expired a day ago (OpenSSL 3.0 has no -not_after).
    """
    def path(suffix: str) -> str:
        return os.path.join(directory, f"{name}.{suffix}")
    with open(path("ext"), "w") as handle:
        handle.write(extensions)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", f"/O=Test/CN={name}", "-keyout", path("key"), "-out", path("csr"))
    signer = (["-CA", os.path.join(directory, f"{issuer}.pem"), "-CAkey",
               os.path.join(directory, f"{issuer}.key"), "-CAcreateserial"]
              if issuer else ["-key", path("key")])
    openssl("x509", "-req", "-in", path("csr"), *signer, "-days", days, "-extfile", path("ext"),
            "-out", path("pem"))
    for suffix in ("pem", "key"):
        os.chmod(path(suffix), 0o644)        # read by the server after its drop to nobody
    return path("pem"), path("key")


CA = "basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign\n"
LOCALHOST = "subjectAltName=DNS:localhost\n"


def listen(*pairs: tuple[str, str]) -> str:
    """A TLS [[listen]] entry on port 0 for each (cert, key), and a plain one.

    Each on an address of its own (127.0.0.1, 127.0.0.2, ...): a reload
    matches entries by address, port and protocol, and two on port 0 of one
    address would be taken for one.
    """
    text = "".join(f'[[listen]]\naddress = "127.0.0.{index + 1}"\nport = 0\n'
                   f'tls_cert = "{cert}"\ntls_key = "{key}"\n'
                   for index, (cert, key) in enumerate(pairs))
    return text + '[[listen]]\naddress = "127.0.0.1"\nport = 0\n'


def run_server(directory: str, config_text: str, *args: str) -> subprocess.CompletedProcess:
    path = os.path.join(directory, "forkchat.toml")
    with open(path, "w") as handle:
        handle.write(config_text)
    return run_forkchat("-c", path, "--state-dir", os.path.join(directory, "state"), *args)


def broken_pairs(directory: str) -> dict[str, tuple[str, str]]:
    """(cert, key) pairs that each stop the start."""
    cert, key = make_cert(directory, "good")
    _, other_key = make_cert(directory, "other")
    inter_cert, _ = signed(directory, "inter", "30", extensions=CA)
    leaf_cert, leaf_key = signed(directory, "leaf", "30", issuer="inter")
    wrong_order = os.path.join(directory, "wrong-order.pem")
    garbage = os.path.join(directory, "garbage.pem")
    with open(wrong_order, "w") as handle:
        handle.write(open(inter_cert).read() + open(leaf_cert).read())
    pipe = os.path.join(directory, "pipe.key")    # read for ever, without a writer
    os.mkfifo(pipe)
    with open(garbage, "w") as handle:
        handle.write("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n"
                     "-----END CERTIFICATE-----\n")
    return {"key of another certificate": (cert, other_key),
            "chain with the intermediate first": (wrong_order, leaf_key),
            "garbage PEM": (garbage, key),
            "missing key": (cert, os.path.join(directory, "missing.key")),
            "key is a directory": (cert, directory),
            "key is a named pipe": (cert, pipe)}


def test_check_config_fails_with_the_starts_own_words_for_each_broken_pair(certs):
    """--check-config said "configuration OK" to each of these, and the start
    then stopped with status 1.  Now it says what the start says, for every
    broken listener at once, with status 2."""
    pairs = broken_pairs(certs)
    said_at_start = []
    for cert, key in pairs.values():
        started = run_server(certs, listen((cert, key)))
        assert started.returncode == 1, started.stderr
        said_at_start.append(started.stderr.strip())
    assert all(line.startswith("forkchat-server: cannot load TLS certificate ")
               and line.count("\n") == 0 for line in said_at_start), said_at_start
    checked = run_server(certs, listen(*pairs.values()), "--check-config")
    assert checked.returncode == 2, checked
    assert checked.stderr.strip().splitlines() == said_at_start
    assert "configuration OK" not in checked.stdout


def test_check_config_names_the_tls_files_it_loaded(certs):
    cert, key = make_cert(certs, "good")
    checked = run_server(certs, listen((cert, key)), "--check-config")
    assert checked.returncode == 0, checked
    lines = checked.stdout.strip().splitlines()
    assert lines[0].startswith(f"forkchat-server: listen[0]: TLS certificate {cert} and key {key} "
                               f"load (CN=localhost, valid until "), lines
    assert lines[1].startswith("forkchat-server: configuration OK ("), lines


def test_out_of_date_certificates_are_warned_of_at_start_reload_and_check(make_server, certs):
    """OpenSSL serves them without a word; only the leaf was looked at, and
    --check-config looked at nothing.  The server still serves them."""
    old_leaf = signed(certs, "old", "-1", extensions=LOCALHOST)
    signed(certs, "root", "30", extensions=CA)
    signed(certs, "inter", "-1", issuer="root", extensions=CA)
    leaf, leaf_key = signed(certs, "leaf", "30", issuer="inter", extensions=LOCALHOST)
    chain = os.path.join(certs, "chain.pem")
    with open(chain, "w") as handle:
        handle.write(open(leaf).read() + open(os.path.join(certs, "inter.pem")).read())
    os.chmod(chain, 0o644)
    config_text = listen((chain, leaf_key), old_leaf)
    wanted = [f"TLS certificate {chain}: chain certificate 2 (O=Test, CN=inter) expired on ",
              f"TLS certificate {old_leaf[0]} (O=Test, CN=old) expired on "]

    def warnings(text: str) -> list[str]:
        return [line.split("expired on ")[0] + "expired on " for line in text.splitlines()
                if " WARNING TLS certificate " in line or ": warning: TLS certificate " in line]

    def stripped(lines: list[str]) -> list[str]:
        return [line[line.index("TLS certificate "):] for line in lines]

    server = make_server(config_text=config_text, listen=[])
    server.wait_for_log(lambda: len(server.ports) >= 3, "three listeners")
    assert stripped(warnings(server.log_text())) == wanted
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
        TlsClient(next(port for host, port, proto in server.ports
                       if host == "127.0.0.1" and proto == "irc+tls"),
                  os.path.join(certs, "root.pem"))
    mark = server.log_length()
    server.signal(signal.SIGHUP)
    server.wait_for_text("configuration reloaded", start=mark)
    assert stripped(warnings("\n".join(server.log_text().splitlines()[mark:]))) == wanted

    checked = run_server(certs, config_text, "--check-config")
    assert checked.returncode == 0, checked
    assert stripped(warnings(checked.stderr)) == wanted
    assert all(line.startswith("forkchat-server: warning: TLS certificate ")
               for line in checked.stderr.strip().splitlines()), checked.stderr
    assert "configuration OK" in checked.stdout
