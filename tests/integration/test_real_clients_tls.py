"""irssi and WeeChat connect over TLS, verifying a chain (server certificate
plus an intermediate, in one tls_cert file) against a test root they are
given: the chain is served whole, and both TLS stacks (OpenSSL for irssi,
GnuTLS for WeeChat) finish the handshake, register, talk and quit."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from tests.integration.test_real_clients import Tmux, expect_from
from tests.integration.test_tls import certs, start_tls_server, tls_port
from tests.support.ircclient import IrcTestClient


STEP_TIMEOUT = 15.0


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_chain(directory: str) -> tuple[str, str, str]:
    """A root, an intermediate and a server certificate for localhost and
    127.0.0.1: (root file, chain file: server then intermediate, key file)."""
    def path(name: str) -> str:
        return os.path.join(directory, name)
    with open(path("ca.ext"), "w") as handle:
        handle.write("basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign\n")
    with open(path("leaf.ext"), "w") as handle:
        handle.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test Root",
            "-addext", "basicConstraints=critical,CA:true", "-addext",
            "keyUsage=critical,keyCertSign", "-keyout", path("root.key"), "-out", path("root.pem"))
    for name, subject, issuer, ext in (("inter", "/CN=Test Intermediate", "root", "ca.ext"),
                                       ("leaf", "/CN=localhost", "inter", "leaf.ext")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
                "-keyout", path(f"{name}.key"), "-out", path(f"{name}.csr"))
        openssl("x509", "-req", "-in", path(f"{name}.csr"), "-CA", path(f"{issuer}.pem"),
                "-CAkey", path(f"{issuer}.key"), "-CAcreateserial", "-days", "2",
                "-extfile", path(ext), "-out", path(f"{name}.pem"))
    with open(path("chain.pem"), "w") as chain:
        for name in ("leaf", "inter"):
            with open(path(f"{name}.pem")) as part:
                chain.write(part.read())
    for name in os.listdir(directory):
        os.chmod(path(name), 0o644)       # read by the server after its drop to nobody
    return path("root.pem"), path("chain.pem"), path("leaf.key")


def watcher_in_secure(server) -> IrcTestClient:
    """A plain client in #secure, which sees each step of the TLS one."""
    watcher = IrcTestClient(server.port_of("irc"))
    watcher.register("watcher")
    watcher.join("#secure")
    return watcher


IRSSI_TLS_CONFIG = """servers = ( { address = "localhost"; port = "{port}"; chatnet = "fc";
  autoconnect = "yes"; use_tls = "yes"; tls_verify = "yes"; tls_cafile = "{root}"; } );
chatnets = { fc = { type = "IRC"; }; };
channels = ( { name = "#secure"; chatnet = "fc"; autojoin = "yes"; } );
settings = { core = { real_name = "Irssi Tester"; user_name = "irssiu"; }; };
"""


@pytest.mark.skipif(not (shutil.which("irssi") and shutil.which("tmux")),
                    reason="irssi and tmux are needed")
def test_irssi_verifies_the_chain_and_talks_over_tls(make_server, certs):
    root, chain, key = make_chain(certs)
    server = start_tls_server(make_server, chain, key)
    watcher = watcher_in_secure(server)
    workdir = tempfile.mkdtemp(prefix="forkchat-irssi-tls-")
    home = os.path.join(workdir, "home")
    os.makedirs(home)
    with open(os.path.join(home, "config"), "w") as handle:
        handle.write(IRSSI_TLS_CONFIG.replace("{port}", str(tls_port(server)))
                     .replace("{root}", root))
    tmux = Tmux(workdir)
    try:
        tmux.start(f"irssi --home={home} -n fcirssi")
        assert expect_from(watcher, "fcirssi", "JOIN").params == ["#secure"]
        tmux.type("/msg #secure over tls")
        assert expect_from(watcher, "fcirssi", "PRIVMSG").params == ["#secure", "over tls"]
        tmux.type("/quit done")
        assert "done" in expect_from(watcher, "fcirssi", "QUIT").params[0]
    except AssertionError:
        print(tmux.screen())
        raise
    finally:
        tmux.stop()
        watcher.close()
        shutil.rmtree(workdir, ignore_errors=True)
    assert "TLS handshake failed" not in server.log_text()


def weechat_major() -> int:
    words = subprocess.run(["weechat-headless", "--version"], capture_output=True, text=True,
                           timeout=30).stdout.split()
    return int(words[0].split(".")[0]) if words and words[0][:1].isdigit() else 0


@pytest.mark.skipif(not shutil.which("weechat-headless"), reason="weechat-headless is needed")
def test_weechat_verifies_the_chain_and_talks_over_tls(make_server, certs):
    root, chain, key = make_chain(certs)
    server = start_tls_server(make_server, chain, key)
    watcher = watcher_in_secure(server)
    workdir = tempfile.mkdtemp(prefix="forkchat-weechat-tls-")
    fifo = os.path.join(workdir, "fifo")
    tls_flag = "-tls" if weechat_major() >= 4 else "-ssl"     # renamed in WeeChat 4.0
    setup = ";".join([
        f"/set fifo.file.path {fifo}",
        f"/set weechat.network.gnutls_ca_user {root}",
        f"/server add t 127.0.0.1/{tls_port(server)} {tls_flag}",
        "/set irc.server.t.nicks fcweechat", "/set irc.server.t.autojoin #secure",
        "/connect t"])
    process = subprocess.Popen(["weechat-headless", "--dir", workdir, "--run-command", setup],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)

    def command(line: str) -> None:
        with open(fifo, "w") as handle:
            handle.write(f"irc.server.t *{line}\n")
    try:
        assert expect_from(watcher, "fcweechat", "JOIN").params == ["#secure"]
        command("/msg #secure over tls")
        assert expect_from(watcher, "fcweechat", "PRIVMSG").params == ["#secure", "over tls"]
        command("/quit done")
        assert "done" in expect_from(watcher, "fcweechat", "QUIT").params[0]
        process.wait(STEP_TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait(5)
        watcher.close()
        shutil.rmtree(workdir, ignore_errors=True)
    assert "TLS handshake failed" not in server.log_text()
