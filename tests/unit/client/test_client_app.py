"""Command line parsing of forkchat-client."""

import pathlib
import re

import pytest

from forkchat.client import app, connection


@pytest.mark.parametrize("text, tls, expected", [
    (None, False, ("127.0.0.1", 6667)),
    (None, True, ("127.0.0.1", 6697)),
    ("chat.example.org", False, ("chat.example.org", 6667)),
    ("chat:7000", False, ("chat", 7000)),
    ("[::1]:7000", False, ("::1", 7000)),
    ("[::1]", False, ("::1", 6667)),
    ("::1", False, ("::1", 6667)),
])
def test_parse_address(text, tls, expected):
    assert app.parse_address(text, tls) == expected


@pytest.mark.parametrize("text", ["host:0", "host:99999", "host:abc", ":6667"])
def test_parse_address_errors(text):
    with pytest.raises(ValueError):
        app.parse_address(text, False)


@pytest.mark.parametrize("text", ["[::1", "[::1]x", "[::1]6667", "[::1]:"])
def test_parse_address_refuses_what_follows_brackets_but_a_port(text):
    """'[::1' and '[::1]x' connected to [::1]:6667 without a word about the
    rest; '[::1]:' leaves the port out, as 'host:' does."""
    if text.endswith(":"):
        assert app.parse_address(text, False) == ("::1", 6667)
        return
    with pytest.raises(ValueError, match=r"\[::1\]:6667"):
        app.parse_address(text, False)


@pytest.mark.parametrize("nick, ok", [
    ("bob", True), ("[bot]", True), ("a-b_c", True), ("_bob", True), ("[x]", True),
    ("`^{|}\\", True), ("9lives", False),
    ("-x", False), ("two words", False), ("", False), ("é", False),
])
def test_valid_nick(nick, ok):
    assert app.valid_nick(nick) is ok


def test_settings_from_arguments(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\nignored\n")
    args = app.build_parser().parse_args(
        ["-n", "cron", "-r", "ops", "-r", "#dev", "--password-file", str(secret), "h:1"])
    settings = app.make_settings(args, interactive=False)
    assert settings == connection.Settings(host="h", port=1, nick="cron",
                                           rooms=("#ops", "#dev"), password="s3cret")


@pytest.mark.parametrize("argv, message", [
    (["-n", "9x"], "invalid nickname"),
    (["-n", "x", "--insecure"], "need --tls"),
    (["-n", "x", "--tls", "--insecure", "--ca-file", __file__], "give one or the other"),
    (["-n", "x", "--password-file", "/nonexistent/pw"], "cannot read password file"),
    (["-n", "x", "h:port"], "bad port"),
    (["-n", "x", "h:\u00b2"], "bad port"),
    (["-n", "x", "h: 6667"], "bad port"),
    (["-n", "x", "h:\u0667"], "bad port"),
    (["-n", "x", "-r", ""], "invalid room name"),
    (["-n", "x", "-r", "#a b"], "invalid room name"),
    (["-n", "x", "--tls", "--ca-file", "/nonexistent/ca.pem"], "cannot read CA file"),
    (["-n", "x", "--tls", "--ca-file", __file__], "cannot use CA file"),
])
def test_usage_errors_exit_2_with_one_line(argv, message, capsys):
    """Each wrong option is one line on stderr and status 2."""
    assert app.main(argv + ["--line"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("content", ["", "\n", "\ns3cret\n"])
def test_a_password_file_with_an_empty_first_line_is_a_usage_error(tmp_path, capsys, content):
    """No PASS went out, and the server's 'wants a password (give it with
    --password-file)' pointed at the option already given."""
    secret = tmp_path / "pw"
    secret.write_text(content)
    assert app.main(["-n", "x", "--line", "--password-file", str(secret)]) == 2
    assert "first line is empty" in capsys.readouterr().err


def test_a_refused_answer_to_the_question_is_told_on_stderr(monkeypatch, capsys):
    """`forkchat-client host > file`: the question and its complaint must stay
    on the terminal, so on stderr, worded as the rule the code applies."""
    answers = iter(["9lives", "_bob"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    assert app.ask_nick_tty() == "_bob"
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"forkchat-client: invalid nickname '9lives': {app.NICK_RULE}\n" in captured.err
    assert "start with a letter" not in captured.err


def test_a_refused_n_is_told_with_the_same_rule(capsys):
    assert app.main(["-n", "9lives", "--line"]) == 2
    assert capsys.readouterr().err == \
        f"forkchat-client: invalid nickname '9lives': {app.NICK_RULE}\n"


def test_the_rule_in_words_matches_the_rule_in_code():
    """Every character NICK_RULE names may start a nick; digits and - only follow."""
    specials = app.NICK_RULE.split("one of ")[1].split(" first")[0].split()
    assert all(app.valid_nick(char) and app.valid_nick("a" + char) for char in specials)
    assert app.valid_nick("a1-") and not app.valid_nick("1a") and not app.valid_nick("-a")


def test_alternative_nicks():
    assert [connection.alternative_nick("bob", n) for n in (1, 2, 3)] == ["bob_", "bob2", "bob3"]


def test_help_documents_both_modes(capfd):
    assert app.main(["--help"]) == 0
    text = capfd.readouterr().out
    for needle in ("full-screen", "line mode", "HH:MM <nick> text", "[private]",
                   "HH:MM * nick joined #room", "exit status:", "first stdin line is the nickname"):
        assert needle in text


def test_help_lists_every_exit_status_of_the_man_page(capfd):
    """A script's author reads --help: 130 (Ctrl+C) was missing from it."""
    man = pathlib.Path(__file__).parents[3] / "man" / "forkchat-client.1"
    section = man.read_text().split(".SH EXIT STATUS")[1].split(".SH ")[0]
    documented = re.findall(r"^\.TP\n\.B (\d+)$", section, re.M)
    assert app.main(["--help"]) == 0
    help_section = capfd.readouterr().out.split("exit status:\n")[1].split("\n\n")[0]
    listed = re.findall(r"^  (\d+) ", help_section, re.M)
    assert documented == listed == ["0", "1", "2", "130"]


def test_help_names_every_slash_command(capfd):
    """--help's list of commands is the client's table, not an older copy."""
    from forkchat.client import slash
    assert app.main(["--help"]) == 0
    text = capfd.readouterr().out
    for name in slash.COMMANDS:
        assert re.search(rf"/{name}\b", text), name


def test_python_dash_m_forkchat_client_runs_the_client():
    """`python3 -m forkchat` runs the server, so `python3 -m forkchat.client`
    is what a user of a checkout tries for the client: it must not answer
    "'forkchat.client' is a package and cannot be directly executed"."""
    import os
    import pathlib
    import subprocess
    import sys
    root = pathlib.Path(__file__).resolve().parents[3]
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, "-m", "forkchat.client", "--help"],
                          capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: forkchat-client")


def run_help(stdout) -> "subprocess.CompletedProcess[str]":
    import os
    import subprocess
    import sys
    root = pathlib.Path(__file__).resolve().parents[3]
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([sys.executable, "-m", "forkchat.client", "--help"], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, env=env, timeout=30)


def test_help_to_a_full_disk_is_one_line_and_status_1():
    """`forkchat-client --help > /dev/full` lost its text and exited 0."""
    with open("/dev/full", "w") as full:
        done = run_help(full)
    assert (done.returncode, done.stderr) == (
        1, "forkchat-client: cannot write to standard output: No space left on device\n")


def test_help_to_a_reader_gone_is_one_line_and_status_1():
    import os
    reader, writer = os.pipe()
    os.close(reader)
    with os.fdopen(writer, "w") as gone:
        done = run_help(gone)
    assert (done.returncode, done.stderr) == (
        1, "forkchat-client: cannot write to standard output: Broken pipe\n")
