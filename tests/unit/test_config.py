"""config.load: every bad value is one reported error, never a crash.

Each case writes a small file and checks the error lines that
`--check-config` and a SIGHUP reload would show (str(ConfigError)).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from forkchat import config


def errors_of(tmp_path: Path, text: str) -> list[str]:
    """The error lines of a config file, or [] when it loads."""
    path = tmp_path / "forkchat.toml"
    path.write_text(text)
    try:
        config.load(str(path))
    except config.ConfigInvalid as invalid:
        return [str(error).removeprefix(str(path)) for error in invalid.errors]
    return []


def loads(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "forkchat.toml"
    path.write_text(text)
    return config.load(str(path))


# -- arrays of tables whose entries are not tables -------------------------------------

@pytest.mark.parametrize(("text", "wanted"), [
    ("listen = [1, 2]\n", [":1: listen[0]: must be a table", ":1: listen[1]: must be a table"]),
    ('operators = ["x"]\n', [":1: operators[0]: must be a table"]),
    ('# c\nlisten = [{port = 0}, "6667"]\n', [":2: listen[1]: must be a table"]),
    ('operators = [{name = "a", password = "b"}, []]\n',
     [":1: operators[1]: must be a table"]),
])
def test_an_array_entry_that_is_not_a_table_is_an_error(tmp_path, text, wanted):
    assert errors_of(tmp_path, text) == wanted


def test_a_good_inline_array_of_tables_still_loads(tmp_path):
    loaded = loads(tmp_path, 'listen = [{port = 0}, {port = 0, protocol = "tutorial"}]\n')
    assert [listener.protocol for listener in loaded.listen] == ["irc", "tutorial"]


@pytest.mark.parametrize(("text", "wanted"), [
    ("listen = 1\n", [":1: listen: must be an array of tables ([[listen]])"]),
    ("server = 1\n", [":1: server: must be a table"]),
])
def test_a_table_or_array_of_the_wrong_kind_is_named_with_its_line(tmp_path, text, wanted):
    assert errors_of(tmp_path, text) == wanted
