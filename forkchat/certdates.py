"""The subject and validity dates of each certificate in a PEM chain file.

OpenSSL loads an expired certificate, or a chain with an expired
intermediate, without a word, and every client that checks it then fails
its handshake: the operator should hear of it at start, at a reload and
from --check-config.  Python's ssl module has no public way to read a
certificate's dates (ssl._ssl._test_decode_cert is private, and reads the
first certificate of a file only), so this reads them itself: each PEM
block becomes DER through ssl.PEM_cert_to_DER_cert, and a small DER walk
takes the fields of RFC 5280 section 4.1 up to the subject.  Nothing here
checks a signature: the dates are for a warning, not for trust.
"""

from __future__ import annotations

import datetime
import re
import ssl
from dataclasses import dataclass

MAX_CHAIN_BYTES = 1 << 20
PEM_BLOCK = re.compile(re.escape(ssl.PEM_HEADER) + r".*?" + re.escape(ssl.PEM_FOOTER), re.DOTALL)

SEQUENCE, SET, INTEGER, OID, VERSION = 0x30, 0x31, 0x02, 0x06, 0xA0
UTC_TIME, GENERALIZED_TIME = 0x17, 0x18
# RFC 5280 4.1.2.5: UTCTime for years up to 2049, GeneralizedTime after.
TIME_FORMATS = {UTC_TIME: "%y%m%d%H%M%SZ", GENERALIZED_TIME: "%Y%m%d%H%M%SZ"}
# The directory string types a Name's values use (RFC 5280 4.1.2.4), and
# how each is encoded.  T61String is taken as Latin-1, as OpenSSL shows it.
STRING_CODECS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1",
                 0x1E: "utf-16-be", 0x1C: "utf-32-be"}
# Attribute names as `openssl x509 -subject` shows them; others as dotted OIDs.
ATTRIBUTE_NAMES = {"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST",
                   "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.5": "serialNumber",
                   "1.2.840.113549.1.9.1": "emailAddress",
                   "0.9.2342.19200300.100.1.25": "DC"}


@dataclass(frozen=True)
class Dates:
    """One certificate: whom it names, and when it is valid (seconds since the epoch)."""
    subject: str
    not_before: float
    not_after: float


def read_chain(path: str) -> list[Dates]:
    """Every certificate of a PEM file, in the file's order (the server's first).

    Raises:
        OSError: the file cannot be read.
        ValueError: a certificate is not well-formed DER.
    """
    with open(path, "rb") as handle:
        text = handle.read(MAX_CHAIN_BYTES).decode("ascii", "replace")
    return [parse_der(ssl.PEM_cert_to_DER_cert(block))
            for block in PEM_BLOCK.findall(text)]


def parse_der(der: bytes) -> Dates:
    """The subject and validity of one DER certificate.

    Raises:
        ValueError: the bytes are not the start of an X.509 certificate.
    """
    certificate = _only(der, SEQUENCE)
    tbs, _ = _element(certificate, 0, SEQUENCE)
    fields = _children(tbs)
    if fields and fields[0][0] == VERSION:
        fields = fields[1:]
    tags = [tag for tag, _ in fields[:5]]
    if tags != [INTEGER, SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE]:
        raise ValueError("not an X.509 certificate")
    validity = _children(fields[3][1])
    if len(validity) != 2:
        raise ValueError("a validity is two times")
    return Dates(subject=name_text(fields[4][1]),
                 not_before=_time(*validity[0]), not_after=_time(*validity[1]))


def name_text(content: bytes) -> str:
    """A Name as `CN=chat.example.org, O=Example`, in the certificate's order."""
    parts = []
    for tag, relative in _children(content):
        if tag != SET:
            raise ValueError("a name is a sequence of sets")
        for _, pair in _children(relative):
            (oid_tag, oid), (value_tag, value) = _children(pair)[:2]
            if oid_tag != OID:
                raise ValueError("an attribute starts with its type")
            dotted = _oid(oid)
            parts.append(f"{ATTRIBUTE_NAMES.get(dotted, dotted)}={_string(value_tag, value)}")
    return ", ".join(parts)


def _time(tag: int, content: bytes) -> float:
    if tag not in TIME_FORMATS:
        raise ValueError("a validity time is UTCTime or GeneralizedTime")
    moment = datetime.datetime.strptime(content.decode("ascii"), TIME_FORMATS[tag])
    if tag == UTC_TIME and moment.year >= 2050:     # RFC 5280: YY >= 50 is 19YY
        moment = moment.replace(year=moment.year - 100)
    return moment.replace(tzinfo=datetime.timezone.utc).timestamp()


def _string(tag: int, content: bytes) -> str:
    """A directory string, its control characters shown as \\xNN: the
    subject goes into log lines and a terminal."""
    text = content.decode(STRING_CODECS.get(tag, "latin-1"), "replace")
    return "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in text)


def _oid(content: bytes) -> str:
    """Dotted form of an OBJECT IDENTIFIER (X.690 8.19)."""
    if not content or content[-1] & 0x80:
        raise ValueError("a truncated object identifier")
    numbers, value = [], 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            numbers.append(value)
            value = 0
    first = min(numbers[0] // 40, 2)
    return ".".join(str(n) for n in [first, numbers[0] - 40 * first, *numbers[1:]])


def _only(data: bytes, tag: int) -> bytes:
    """The content of the single element `data` holds, which must be a `tag`."""
    content, end = _element(data, 0, tag)
    if end != len(data):
        raise ValueError("bytes after the certificate")
    return content


def _element(data: bytes, offset: int, tag: int) -> tuple[bytes, int]:
    found, content, end = _tlv(data, offset)
    if found != tag:
        raise ValueError(f"expected tag 0x{tag:02x}, found 0x{found:02x}")
    return content, end


def _children(data: bytes) -> list[tuple[int, bytes]]:
    """(tag, content) of each element of a constructed value's content."""
    found, offset = [], 0
    while offset < len(data):
        tag, content, offset = _tlv(data, offset)
        found.append((tag, content))
    return found


def _tlv(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """One DER element at `offset`: (tag, content, offset after it).

    Only the low tag numbers a certificate's fields use, and definite
    lengths (DER has no other), are read.
    """
    if offset + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length, start = data[offset], data[offset + 1], offset + 2
    if tag & 0x1F == 0x1F:
        raise ValueError("a high tag number")
    if length & 0x80:
        size = length & 0x7F
        if not 1 <= size <= 4 or start + size > len(data):
            raise ValueError("a bad DER length")
        length, start = int.from_bytes(data[start:start + size], "big"), start + size
    if start + length > len(data):
        raise ValueError("truncated DER")
    return tag, data[start:start + length], start + length
