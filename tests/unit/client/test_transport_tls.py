"""transport: the words a user reads when a TLS connection cannot be made."""

from __future__ import annotations

import ssl

import pytest

from forkchat.client import transport


def refusal(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    error.verify_code, error.verify_message = code, message
    return error


@pytest.mark.parametrize("code, message, cure", [
    (10, "certificate has expired", "check the clock here"),
    (9, "certificate is not yet valid", "check the clock here"),
    (62, "Hostname mismatch, certificate is not valid for 'chat'.", "connect by a name"),
    (20, "unable to get local issuer certificate", "use --ca-file"),
])
def test_each_refusal_names_its_own_cure(code, message, cure):
    """A CA file cures an unknown issuer only; it was advised for all."""
    words = transport._untrusted_words(refusal(code, message))
    assert words.startswith(message.rstrip(".") + " (" + cure), words
    assert ("--ca-file" in words) == (code == 20), words


def test_openssl_words_lose_their_wrapping():
    error = ssl.SSLError(1, "[SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version "
                            "(_ssl.c:1006)")
    error.reason = "TLSV1_ALERT_PROTOCOL_VERSION"
    assert transport._tls_words(error) == "tlsv1 alert protocol version"


def test_a_close_during_the_handshake_is_said_so():
    error = ssl.SSLEOFError(8, "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation "
                               "of protocol (_ssl.c:1006)")
    error.reason = "UNEXPECTED_EOF_WHILE_READING"
    assert transport._tls_words(error).startswith(
        "the server closed the connection during the handshake")
