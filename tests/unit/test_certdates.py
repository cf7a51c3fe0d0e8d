"""certdates: the subject and dates of each certificate of a PEM chain,
read with a small DER walk, checked against openssl's own reading."""

from __future__ import annotations

import calendar
import subprocess
import time

import pytest
from hypothesis import given, settings, strategies as st

from forkchat import certdates


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout


def self_signed(directory, name: str, subject: str, days: str = "30") -> str:
    cert = directory / f"{name}.pem"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", days, "-subj", subject, "-keyout", str(directory / f"{name}.key"),
            "-out", str(cert))
    return str(cert)


def openssl_dates(path: str) -> tuple[float, float]:
    """(notBefore, notAfter) as `openssl x509` reads them: the oracle."""
    lines = dict(line.split("=", 1) for line in
                 openssl("x509", "-in", path, "-noout", "-startdate", "-enddate").splitlines())
    return (calendar.timegm(time.strptime(lines["notBefore"], "%b %d %H:%M:%S %Y GMT")),
            calendar.timegm(time.strptime(lines["notAfter"], "%b %d %H:%M:%S %Y GMT")))


def test_the_dates_and_subject_are_openssls(tmp_path):
    cert = self_signed(tmp_path, "one", "/C=FR/O=Example Org/CN=chat.example.org")
    [dates] = certdates.read_chain(cert)
    assert (dates.not_before, dates.not_after) == openssl_dates(cert)
    assert dates.subject == "C=FR, O=Example Org, CN=chat.example.org"


def test_a_chain_is_read_in_the_files_order_past_text_around_it(tmp_path):
    """certbot's fullchain.pem: the server's certificate, then the intermediates;
    other files carry `subject=` lines or a key around the blocks."""
    first = self_signed(tmp_path, "first", "/CN=server")
    second = self_signed(tmp_path, "second", "/CN=intermediate", days="2")
    chain = tmp_path / "chain.pem"
    chain.write_text("subject=CN = server\n" + open(first).read() + "\n"
                     + open(second).read() + open(tmp_path / "second.key").read())
    read = certdates.read_chain(str(chain))
    assert [cert.subject for cert in read] == ["CN=server", "CN=intermediate"]
    assert [cert.not_after for cert in read] == [openssl_dates(first)[1], openssl_dates(second)[1]]


def test_a_file_without_certificates_has_none(tmp_path):
    key = tmp_path / "one.key"
    self_signed(tmp_path, "one", "/CN=x")
    assert certdates.read_chain(str(key)) == []


def test_a_missing_file_is_an_oserror(tmp_path):
    with pytest.raises(OSError):
        certdates.read_chain(str(tmp_path / "none.pem"))


def test_a_damaged_certificate_is_a_valueerror(tmp_path):
    cert = self_signed(tmp_path, "one", "/CN=x")
    lines = open(cert).read().splitlines()
    damaged = tmp_path / "damaged.pem"
    damaged.write_text("\n".join(lines[:2] + lines[-1:]) + "\n")     # its first 64 bytes only
    with pytest.raises(ValueError):
        certdates.read_chain(str(damaged))


# -- hand-made DER: the corners openssl's CLI does not make -------------------------------

def tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    length = bytes([size]) if size < 0x80 else bytes([0x82]) + size.to_bytes(2, "big")
    return bytes([tag]) + length + content


def attribute(oid: bytes, tag: int, value: bytes) -> bytes:
    return tlv(0x31, tlv(0x30, tlv(0x06, oid) + tlv(tag, value)))


CN = bytes([0x55, 0x04, 0x03])          # 2.5.4.3
ORG_ID = bytes([0x55, 0x04, 0x61])      # 2.5.4.97, not in the table


def certificate(not_before: bytes, not_after: bytes, subject: bytes = b"",
                version: bool = True) -> bytes:
    algorithm = tlv(0x30, tlv(0x06, bytes([0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02])))
    tbs = ((tlv(0xA0, tlv(0x02, b"\x02")) if version else b"") + tlv(0x02, b"\x01")
           + algorithm + tlv(0x30, attribute(CN, 0x0C, b"issuer"))
           + tlv(0x30, not_before + not_after) + tlv(0x30, subject)
           + tlv(0x30, b"\x00" * 200))                       # a key, long-form length
    return tlv(0x30, tlv(0x30, tbs) + algorithm + tlv(0x03, b"\x00" * 64))


def utc(text: str) -> bytes:
    return tlv(0x17, text.encode())


def generalized(text: str) -> bytes:
    return tlv(0x18, text.encode())


@pytest.mark.parametrize(("encoded", "wanted"), [
    (utc("491231235959Z"), "2049-12-31 23:59:59"),          # RFC 5280: YY < 50 is 20YY
    (utc("500101000000Z"), "1950-01-01 00:00:00"),          # YY >= 50 is 19YY
    (generalized("20500101000000Z"), "2050-01-01 00:00:00"),
    (generalized("99991231235959Z"), "9999-12-31 23:59:59"),  # "no well-defined expiration"
])
def test_both_time_types_are_read_as_rfc5280_says(encoded, wanted):
    dates = certdates.parse_der(certificate(utc("000101000000Z"), encoded))
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(dates.not_after)) == wanted
    assert dates.not_before == calendar.timegm((2000, 1, 1, 0, 0, 0))


def test_a_version_1_certificate_has_no_version_field():
    dates = certdates.parse_der(certificate(utc("000101000000Z"), utc("010101000000Z"),
                                            version=False))
    assert dates.not_after == calendar.timegm((2001, 1, 1, 0, 0, 0))


@pytest.mark.parametrize(("subject", "wanted"), [
    (b"", ""),
    (attribute(CN, 0x0C, "chât\u00e9".encode()), "CN=chât\u00e9"),            # UTF8String
    (attribute(CN, 0x1E, "Zoë".encode("utf-16-be")), "CN=Zoë"),                # BMPString
    (attribute(ORG_ID, 0x13, b"VATFR-1"), "2.5.4.97=VATFR-1"),                  # unknown type
    (attribute(CN, 0x0C, b"evil\r\n\x1b[2J"), "CN=evil\\x0d\\x0a\\x1b[2J"),    # for a terminal
])
def test_subjects_are_shown_as_openssl_names_them(subject, wanted):
    dates = certdates.parse_der(certificate(utc("000101000000Z"), utc("010101000000Z"),
                                            subject))
    assert dates.subject == wanted


@pytest.mark.parametrize("der", [
    b"",
    b"\x30\x05\x30\x03\x02\x01",                                  # truncated
    b"\x30\x80\x00\x00",                                          # indefinite length: not DER
    tlv(0x30, tlv(0x30, b"")) + b"\x00",                          # bytes after it
    certificate(utc("000101000000Z"), tlv(0x04, b"20000101")),    # not a time
    certificate(utc("000101000000Z"), utc("001301000000Z")),      # month 13
    certificate(utc("000101000000Z"), utc("000101000000+0100")),  # DER wants Z
])
def test_malformed_der_is_a_valueerror(der):
    with pytest.raises(ValueError):
        certdates.parse_der(der)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 299))
def test_any_damage_is_a_valueerror_never_another_exception(noise, where):
    """What OpenSSL loaded but this walk cannot read costs a warning, never a crash."""
    good = certificate(utc("000101000000Z"), utc("010101000000Z"), attribute(CN, 0x13, b"x"))
    damaged = good[:where % len(good)] + noise + good[where % len(good) + len(noise):]
    try:
        certdates.parse_der(damaged)
    except ValueError:
        pass
