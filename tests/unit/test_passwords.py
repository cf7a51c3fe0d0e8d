from forkchat import passwords


def test_hash_verifies_only_the_right_password():
    stored = passwords.hash_password("s3cret")
    assert stored.startswith("scrypt$") and passwords.valid_hash(stored)
    assert passwords.verify(stored, "s3cret")
    assert not passwords.verify(stored, "s3cret ")


def test_plain_passwords_still_work():
    assert passwords.verify("plain", "plain") and not passwords.verify("plain", "Plain")


def test_malformed_hash_never_verifies():
    assert not passwords.valid_hash("scrypt$x$y")
    assert not passwords.verify("scrypt$1$2$3$zz$zz", "anything")
