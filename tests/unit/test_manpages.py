"""The man pages in man/ are clean under mandoc and groff, and say what they must.

`mandoc -T lint -W style` (style hints too, such as a line over 80 bytes)
and `groff -man -ww -z` (all warnings, no output) must both be silent: any
message fails the test. groff exits 0
even when it warns, so its stderr is what counts. The tools come from
Debian's `mandoc` and `groff-base` packages (.ci/run installs them); a
missing tool fails these tests rather than skipping them.

Each option and each configuration key is its own .TP item in the pages, so
a coverage test can look for it as an item tag (see `item_tags`).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

MAN = Path(__file__).resolve().parents[2] / "man"
PAGES = {
    "forkchat-server.8": ("SYNOPSIS", "OPTIONS", "SIGNALS", "EXIT STATUS", "ENVIRONMENT",
                          "FILES", "EXAMPLES", "SEE ALSO"),
    "forkchat-client.1": ("SYNOPSIS", "OPTIONS", "LINE MODE", "EXIT STATUS", "EXAMPLES",
                          "SEE ALSO"),
    "forkchat.toml.5": ("[server]", "[[listen]]", "[limits]", "[[operators]]", "[log]",
                        "FILES", "EXAMPLES", "SEE ALSO"),
    "forkchat.7": ("ARCHITECTURE", "IRC PROFILE", "TUTORIAL COMPATIBILITY", "SEE ALSO"),
}


def tool(name: str, package: str) -> str:
    """Path of a lint tool, or a failure that says which package to install."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: apt-get install -y {package}")
    return path


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def item_tags(page: str) -> list[str]:
    """The plain text of every .TP/.TQ tag line of a page, as the reader sees it."""
    lines = (MAN / page).read_text().splitlines()
    return [plain_text(line) for previous, line in zip(lines, lines[1:])
            if previous in (".TP", ".TQ")]


def plain_text(line: str) -> str:
    """Render one man(7) text or font-macro line as plain text (enough for tags).

    Font macros: .B/.I join their words with spaces, the alternating ones
    (.BR, .BI, ...) join their arguments with nothing between them.
    """
    line = re.sub(r"\\f[BIRP]|\\[&|^]", "", line).replace("\\-", "-").replace("\\e", "\\")
    line = line.replace("\\(aq", "\x01").replace("\\(dq", "\x02")   # quotes, after shlex
    macro, _, rest = line.partition(" ") if line.startswith(".") else ("", "", line)
    words = shlex.split(rest) if macro else rest.split()
    joiner = "" if len(macro) == 3 else " "
    return " ".join(joiner.join(words).split()).replace("\x01", "'").replace("\x02", '"')


def test_every_page_is_present() -> None:
    assert sorted(p.name for p in MAN.iterdir()) == sorted(PAGES)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_mandoc_lint_is_silent(page: str) -> None:
    result = run(tool("mandoc", "mandoc"), "-T", "lint", "-W", "style", str(MAN / page))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("page", sorted(PAGES))
def test_groff_is_silent(page: str) -> None:
    result = run(tool("groff", "groff-base"), "-man", "-ww", "-z", str(MAN / page))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_lint_catches_a_broken_page(tmp_path: Path) -> None:
    """Guards the guard: both tools do complain about a bad page."""
    bad = tmp_path / "bad.1"
    bad.write_text(".TH BAD 1\n.SH NAME\nbad \\- page\n.SH DESCRIPTION\n.xyzzy\n")
    mandoc = run(tool("mandoc", "mandoc"), "-T", "lint", "-W", "warning", str(bad))
    groff = run(tool("groff", "groff-base"), "-man", "-ww", "-z", str(bad))
    assert mandoc.returncode != 0 and "date" in mandoc.stdout + mandoc.stderr
    assert "xyzzy" in groff.stderr


@pytest.mark.parametrize(("page", "section"),
                         [(page, section) for page, sections in PAGES.items()
                          for section in sections])
def test_page_has_section(page: str, section: str) -> None:
    headings = [line[4:].strip('"') for line in (MAN / page).read_text().splitlines()
                if line.startswith(".SH ")]
    assert section in headings


SERVER_OPTIONS = ["-c, --config file", "-l, --listen host:port", "--tutorial-listen host:port", "--name name",
                  "--password password", "--user user", "--log-level level",
                  "--check-config", "--hash-password", "--version", "-h, --help"]
CLIENT_OPTIONS = ["-n, --nick nick", "-r, --room room", "--tls", "--ca-file file", "--insecure",
                  "--password-file file", "--line", "-h, --help"]
CONFIG_KEYS = ["name", "network", "motd", "motd_file", "password", "default_room",
               "state_dir", "user", "group", "allow_root", "memory_merge", "address", "port", "protocol",
               "tls_cert", "tls_key", "max_clients", "max_clients_per_ip", "ipv4_prefix", "ipv6_prefix", "sendq_bytes",
               "recvq_bytes", "flood_burst", "flood_rate", "registration_timeout",
               "ping_interval", "ping_timeout", "nicklen", "roomlen", "topiclen",
               "rooms_per_client", "members_per_room", "bans_per_room", "level"]
ENVIRONMENT = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS",
               "LISTEN_FDNAMES", "JOURNAL_STREAM"]
SIGNALS = ["SIGTERM, SIGINT", "SIGHUP", "SIGUSR1"]
CLIENT_COMMANDS = ["join", "part", "msg", "query", "me", "nick", "topic", "names", "who",
                   "whois", "list", "away", "quit", "help", "raw", "switch"]


@pytest.mark.parametrize(("page", "wanted"), [
    ("forkchat-server.8", SERVER_OPTIONS + ENVIRONMENT + SIGNALS),
    ("forkchat-client.1", CLIENT_OPTIONS),
    ("forkchat.toml.5", CONFIG_KEYS),
])
def test_items_documented(page: str, wanted: list[str]) -> None:
    tags = item_tags(page)
    assert [item for item in wanted if item not in tags] == []


def test_client_commands_documented() -> None:
    """The design's commands and every command of the client's table are items."""
    from forkchat.client import slash
    commands = {tag.split()[0] for tag in item_tags("forkchat-client.1") if tag.startswith("/")}
    wanted = sorted(set(CLIENT_COMMANDS) | set(slash.COMMANDS))
    assert [c for c in wanted if "/" + c not in commands] == []


def section_item_tags(page: str) -> dict[str, list[str]]:
    """Item tags of a page grouped by the .SH section they appear in."""
    grouped: dict[str, list[str]] = {}
    section = ""
    lines = (MAN / page).read_text().splitlines()
    for previous, line in zip(lines, lines[1:]):
        if previous.startswith(".SH "):
            section = previous[4:].strip('"')
        if previous in (".TP", ".TQ"):
            grouped.setdefault(section, []).append(plain_text(line))
    return grouped


def test_every_server_option_is_documented() -> None:
    """Every option of forkchat-server --help is an item of forkchat-server(8)."""
    from forkchat import cli
    documented = set(re.findall(r"--?[\w-]+", " ".join(item_tags("forkchat-server.8"))))
    options = {option for action in cli.build_parser()._actions
               for option in action.option_strings}
    assert sorted(options - documented) == []


def test_every_client_option_is_documented() -> None:
    """Every option of forkchat-client --help is an item of forkchat-client(1)."""
    from forkchat.client import app
    documented = set(re.findall(r"--?[\w-]+", " ".join(item_tags("forkchat-client.1"))))
    options = {option for action in app.build_parser()._actions
               for option in action.option_strings}
    assert sorted(options - documented) == []


@pytest.mark.parametrize("page", ["forkchat-server.8", "forkchat-client.1"])
def test_every_documented_option_exists(page: str) -> None:
    """The other direction: every option an item of OPTIONS names is one the
    program takes (an option renamed or removed in the code would stay in
    the page, and a user's command line would end in a usage error)."""
    from forkchat import cli
    from forkchat.client import app
    parser = {"forkchat-server.8": cli.build_parser, "forkchat-client.1": app.build_parser}[page]()
    options = {option for action in parser._actions for option in action.option_strings}
    documented = set(re.findall(r"(?<![\w-])--?[a-z][\w-]*",
                                " ".join(section_item_tags(page)["OPTIONS"])))
    assert sorted(documented - options) == []


def help_default(option: str) -> str:
    """The default forkchat-server --help states for an option."""
    from forkchat import cli
    action = next(a for a in cli.build_parser()._actions if option in a.option_strings)
    found = re.search(r"\(default:? ([^)]+)\)", action.help or "")
    assert found, action.help
    return found.group(1)


@pytest.mark.parametrize(("option", "item", "code_default"), [
    ("--state-dir", "--state-dir dir", lambda config: config.Server().state_dir),
    ("--log-level", "--log-level level", lambda config: config.Log().level),
])
def test_option_defaults_agree(option: str, item: str, code_default) -> None:
    """An option's default is the same in --help, in its item of
    forkchat-server(8) and in the code."""
    from forkchat import config
    value = code_default(config)
    assert help_default(option) == value
    assert value in item_text("forkchat-server.8", "OPTIONS", item)


def test_client_help_lists_the_exit_statuses_of_its_page() -> None:
    """forkchat-client --help ends with the exit statuses; they are the
    page's EXIT STATUS items, no more and no fewer."""
    from forkchat.client import app
    epilog = app.build_parser().epilog or ""
    listed = re.findall(r"^  (\d+) ", epilog.split("exit status:", 1)[1], re.MULTILINE)
    assert set(listed) == exit_statuses("forkchat-client.1")


CONFIG_SECTIONS = {"[server]": "Server", "[[listen]]": "Listener", "[limits]": "Limits",
                   "[[operators]]": "Operator", "[log]": "Log"}


@pytest.mark.parametrize(("section", "class_name"), sorted(CONFIG_SECTIONS.items()))
def test_every_config_key_is_documented(section: str, class_name: str) -> None:
    """Every field of the config dataclasses is an item of its table in forkchat.toml(5)."""
    import dataclasses

    from forkchat import config
    keys = {field.name for field in dataclasses.fields(getattr(config, class_name))}
    documented = set(section_item_tags("forkchat.toml.5").get(section, []))
    assert sorted(keys - documented) == []
    assert sorted(documented - keys) == []


def documented_defaults(section: str) -> dict[str, object]:
    """key -> the default forkchat.toml(5) states for it, parsed as a TOML value.

    An item states its default as "..., default" at the end of a line and the
    value, in bold, as the first argument of the next line's font macro.
    """
    import tomllib
    defaults: dict[str, object] = {}
    key, current = "", ""
    lines = (MAN / "forkchat.toml.5").read_text().splitlines()
    for previous, line in zip(lines, lines[1:]):
        if previous.startswith(".SH "):
            current = previous[4:].strip('"')
        if previous == ".TP":
            key = plain_text(line)
        if current == section and re.search(r"(^|\s)default$", previous) \
                and line.startswith(".B"):
            argument = line.partition(" ")[2]
            value = argument[1:].partition('"')[0] if argument.startswith('"') \
                else argument.split()[0]
            defaults[key] = tomllib.loads("v = " + value.replace("\\(dq", '"'))["v"]
    return defaults


@pytest.mark.parametrize(("section", "class_name"), sorted(CONFIG_SECTIONS.items()))
def test_documented_defaults_match_the_code(section: str, class_name: str) -> None:
    import dataclasses

    from forkchat import config
    fields = dataclasses.fields(getattr(config, class_name))
    code = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    assert documented_defaults(section) == code


def test_config_example_loads(tmp_path: Path) -> None:
    """The EXAMPLES file of forkchat.toml(5), placeholders filled in, is a valid config."""
    from forkchat import config, passwords
    text = (MAN / "forkchat.toml.5").read_text()
    example = text.split("\n.SH EXAMPLES\n", 1)[1].split("\n.EX\n", 1)[1].split("\n.EE\n", 1)[0]
    motd = tmp_path / "motd.txt"
    motd.write_text("hello\n")
    example = (example.replace("/etc/forkchat/motd.txt", str(motd))
               .replace("scrypt$16384$8$1$...$...", passwords.hash_password("secret")))
    path = tmp_path / "forkchat.toml"
    path.write_text(example)
    loaded = config.load(str(path))
    assert [listener.protocol for listener in loaded.listen] == ["irc", "irc", "tutorial"]
    assert loaded.operators[0].name == "admin"


# -- what the pages say about the code's constants ----------------------------------


def rendered(page: str) -> str:
    """A page as the reader sees it (mandoc, plain ASCII), whitespace collapsed."""
    result = run(tool("mandoc", "mandoc"), "-T", "ascii", "-O", "width=1000", str(MAN / page))
    assert result.returncode == 0, result.stderr
    return " ".join(re.sub(r".\x08", "", result.stdout).split())


def subsection(page: str, title: str) -> str:
    """The rendered text of one .SS or .SH of a page, up to the next heading."""
    lines = (MAN / page).read_text().splitlines()
    start = lines.index(title)
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith((".SS ", ".SH "))), len(lines))
    return " ".join(plain_text(line) for line in lines[start + 1:end]
                    if not line.startswith((".TP", ".TQ", ".PP", ".IP", ".RS", ".RE")))


def test_isupport_tokens_documented() -> None:
    """Every 005 token is named in forkchat(7); fixed values appear exactly."""
    from forkchat import state, state_query
    tokens = state_query.isupport_tokens(state.ChatState(state.Settings()))
    text = subsection("forkchat.7", ".SS ISUPPORT")
    assert [t for t in tokens if t.partition("=")[0] not in text] == []
    configured = ("NETWORK", "NICKLEN", "CHANNELLEN", "TOPICLEN", "CHANLIMIT", "MAXLIST",
                  "TARGMAX")
    fixed = [t for t in tokens if t.partition("=")[0] not in configured]
    assert [t for t in fixed if t not in text] == []


def test_modes_documented() -> None:
    """Every room and user mode letter the server knows is in forkchat(7)'s Modes."""
    from forkchat import rooms, state_users
    lines = (MAN / "forkchat.7").read_text().splitlines()
    start = lines.index(".SS Modes")
    end = lines.index(".SS ISUPPORT")
    rooms_part = lines[start:lines.index("User modes:", start)]
    users_part = lines[lines.index("User modes:", start):end]
    assert sorted(set(rooms.KNOWN_MODES) - {line[3:] for line in rooms_part}) == []
    assert sorted(set(state_users.USER_MODES) - {line[3:] for line in users_part}) == []


def exit_statuses(page: str) -> set[str]:
    return set(section_item_tags(page).get("EXIT STATUS", []))


def test_server_exit_statuses() -> None:
    from forkchat import cli, supervisor
    codes = {"0", str(cli.EXIT_FAILURE), str(cli.EXIT_USAGE), str(supervisor.BROKER_BOOT_ERROR),
             str(cli.EXIT_INTERRUPTED)}
    assert exit_statuses("forkchat-server.8") == codes


def test_client_exit_statuses() -> None:
    assert exit_statuses("forkchat-client.1") == {"0", "1", "2", "130"}


def test_broker_restart_bound_documented() -> None:
    """The halt after repeated broker deaths says the numbers the supervisor uses."""
    from forkchat import supervisor
    text = rendered("forkchat-server.8")
    assert f"more than {supervisor.BROKER_RESTARTS} times within " \
           f"{supervisor.BROKER_RESTART_WINDOW_S:.0f} seconds" in text


def test_reply_reading_rate_documented() -> None:
    """The pace at which a client reading a big reply counts as heard from,
    as the pages state it, is the worker's."""
    from forkchat import worker
    assert worker.TAKING_RATE == 1024
    assert "took at least 1 KiB a second of the server's output" in rendered("forkchat.toml.5")
    assert "reads it at 1 KiB a second or more" in rendered("forkchat.7")


def test_signals_documented() -> None:
    """Every signal the supervisor acts on is an item of forkchat-server(8)'s SIGNALS."""
    from forkchat import supervisor
    documented = " ".join(section_item_tags("forkchat-server.8")["SIGNALS"])
    names = {signum.name for signum in supervisor.SIGNAL_ACTIONS}
    assert sorted(name for name in names if name not in documented) == []
    # and the other way: no item names a signal the supervisor ignores
    assert sorted(set(re.findall(r"SIG[A-Z0-9]+", documented)) - names) == []


def test_refusal_reasons_documented() -> None:
    """The reasons a connection is refused with, before any worker exists, are
    in forkchat.toml(5): the limits', and the supervisor's and spawner's own."""
    from forkchat import admission, listeners
    package = Path(__file__).resolve().parents[2] / "forkchat"
    source = "".join((package / name).read_text() for name in ("supervisor.py", "spawner.py"))
    named = {"listeners.BUSY": listeners.BUSY,       # reasons passed by their constant's name
             "listeners.SHUTTING_DOWN": listeners.SHUTTING_DOWN}
    reasons = re.findall(r'refuse\((?:request\.)?conn, (?:request\.)?peer, "([^"]+)"', source) \
        + [named[name] for name in re.findall(
            r'refuse\((?:request\.)?conn, (?:request\.)?peer, (listeners\.\w+)', source)] \
        + [named[name] for name in re.findall(     # self._refusal(): busy, or stopping
            r'return (listeners\.\w+) if self\.stopping else (listeners\.\w+)', source)[0]] \
        + list(admission.REFUSALS)
    assert len(reasons) >= 5
    text = rendered("forkchat.toml.5")
    assert [r for r in reasons if r not in text] == []


def test_client_defaults_documented() -> None:
    from forkchat.client import app
    text = rendered("forkchat-client.1")
    for value in (app.DEFAULT_HOST, f"port {app.DEFAULT_PORT}", f"{app.DEFAULT_TLS_PORT} with",
                  app.DEFAULT_ROOM, app.NICK_PROMPT.strip()):
        assert value in text


# -- forkchat-server(8)'s LOGGING lists every line the server logs --------------------

PACKAGE = Path(__file__).resolve().parents[2] / "forkchat"
STRING = r'f?"((?:[^"\\]|\\.)*)"'
# log.info("..."), self.logger.error("..."), getLogger(...).exception("..."), log.log(LEVEL, "...")
LOG_CALL = re.compile(
    r"(?:\blog|\blogger|\))\.(?:info|warning|error|exception|critical)\(\s*" + STRING
    + r"|\blog\.log\([^\",]*,\s*" + STRING)
PLACEHOLDER = re.compile(r"%[-#0-9.]*[sdrfgi]|\{[^}]*\}")
HEAD_LETTERS = 12     # a line's head: its text up to the first literal run past this many letters


def log_formats() -> list[tuple[str, str]]:
    """(where, format) of every log call of level info and above in forkchat/*.py.

    Lines whose text is only placeholders ("%s": a refusal line, a bind
    error) are left out; their texts are checked where they are made.
    """
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        source = path.read_text()
        for match in LOG_CALL.finditer(source):
            text = match.group(1) if match.group(1) is not None else match.group(2)
            text += "".join(more.group(1) for more in continued(source, match.end()))
            text = text.replace('\\"', '"')
            line = source.count("\n", 0, match.start()) + 1
            if re.search(r"[A-Za-z]{2}", PLACEHOLDER.sub("", text)):
                found.append((f"{path.name}:{line}", text))
    return found


def continued(source: str, end: int) -> Iterator[re.Match[str]]:
    """The string literals that follow one at `end`, joined to it by Python
    ("a " "b"): a long log line is written over several."""
    while more := NEXT_STRING.match(source, end):
        yield more
        end = more.end()


NEXT_STRING = re.compile(r"\s*" + STRING)


def dynamic_lines() -> list[tuple[str, str]]:
    """Lines logged through "%s" whose text the code builds elsewhere."""
    from forkchat import admission, listeners, supervisor
    refusals = admission.RefusalLog()          # "%s" as the address and reason, "%r" the block
    found = [("admission.RefusalLog", line) for line in
             refusals.refused("%s", "%s", 0.0) + refusals.refused("%s", "%s", 0.0, "%r")]
    for now in (1.0, 2.0):                     # two more: "connections"
        refusals.refused("%s", "%s", now)
    found += [("admission.RefusalLog", re.sub(r" \d+ more ", " %d more ", line))
              for line in refusals.flush()]
    for name in ("supervisor.py", "broker.py"):
        for what, resumed in re.findall(r'AcceptTrouble\(log, "([^"]+)",\s*"([^"]+)"\)',
                                        (PACKAGE / name).read_text()):
            pause = f"{listeners.ACCEPT_PAUSE_S:.1f}"
            found += [(name, f"{what} failed: %s; paused, retried every {pause} s"),
                      (name, resumed)]
    found.append(("supervisor._count_death",
                  f"broker died %d times in {supervisor.BROKER_RESTART_WINDOW_S:.0f} s; giving up"))
    found += [("supervisor.Shutdown", reason) for reason in     # logged as the server halts
              re.findall(r'raise Shutdown\("([^"]+)"', (PACKAGE / "supervisor.py").read_text())]
    source = (PACKAGE / "supervisor.py").read_text()
    for match in re.finditer(r"troubles\.append\(" + STRING, source):   # a reload's outcome
        trouble = match.group(1) + "".join(m.group(1) for m in continued(source, match.end()))
        found.append(("supervisor reload", f"configuration reloaded, but {trouble}"))
    found += [("supervisor._fork_failed", line) for line in     # logged through "%s"
              re.findall(r'_fork_failed\("\w+", ' + STRING, source)]
    return found


def head_pattern(text: str) -> str:
    """A regex for the head of a logged line, placeholders matching any short text.

    The page gives the start of each line (what follows may be described in
    prose), so only the head must appear: enough literal text to tell the
    line from the others.
    """
    pattern, letters = "", 0
    for index, part in enumerate(re.split(f"({PLACEHOLDER.pattern})", text)):
        if index % 2:
            pattern += r".{1,80}?"
            continue
        pattern += r"\s+".join(re.escape(word) for word in part.split(" "))
        letters += len(re.findall(r"[A-Za-z]", part))
        if letters >= HEAD_LETTERS:
            break
    return pattern


def section_rendered(page: str, title: str) -> str:
    """The text of one .SH section as mandoc renders it, whitespace collapsed."""
    result = run(tool("mandoc", "mandoc"), "-T", "ascii", "-O", "width=1000", str(MAN / page))
    assert result.returncode == 0, result.stderr
    lines = re.sub(r".\x08", "", result.stdout).splitlines()
    start = lines.index(title)
    end = next(i for i in range(start + 1, len(lines)) if lines[i][:1].isalpha())
    return " ".join(" ".join(lines[start + 1:end]).split())


def test_log_lines_are_found() -> None:
    """Guards the guard: the scan sees the server's log calls of every kind."""
    texts = [text for _where, text in log_formats()]
    assert len(texts) > 60
    assert "listening on %s" in texts                          # log.info
    assert "%s failed: %s; paused, retried every %.1f s" in texts   # self.logger.error
    assert "%s crashed" in texts                               # getLogger(...).exception
    assert "cannot reach the broker: %s" in texts              # log.log(level, ...)
    assert re.search(head_pattern("%s did not stop in %.0f s; killed"),
                     "worker for conn N did not stop in 3 s; killed")
    assert not re.search(head_pattern("conn %d from %s (%s)"), "conn N from address: TLS")


def test_every_log_line_is_documented() -> None:
    """Each line the server logs at level info or above is in LOGGING of
    forkchat-server(8), at least its head (see head_pattern)."""
    text = section_rendered("forkchat-server.8", "LOGGING")
    missing = [f"{where}: {line}" for where, line in log_formats() + dynamic_lines()
               if not re.search(head_pattern(line), text)]
    assert missing == []


def item_text(page: str, section: str, key: str) -> str:
    """The plain text of the .TP item tagged `key` in a .SH section of a page."""
    lines = (MAN / page).read_text().splitlines()
    start = lines.index(f".SH {section}")
    tag = next(i for i in range(start, len(lines))
               if lines[i - 1] == ".TP" and plain_text(lines[i]) == key)
    end = next(i for i in range(tag + 1, len(lines)) if lines[i].startswith((".TP", ".SH")))
    return " ".join(plain_text(line) for line in lines[tag + 1:end]
                    if not line.startswith((".TQ", ".PP", ".RS", ".RE")))


def test_limit_bounds_documented() -> None:
    """The floor or ceiling config.py puts on a limit is in its forkchat.toml(5) item."""
    from forkchat import config
    for key, (ceiling, _why) in config.AT_MOST.items():
        text = item_text("forkchat.toml.5", "[limits]", key)
        assert f"at most {ceiling}" in text or f"1 to {ceiling}," in text, key
    for key, (floor, _why) in config.AT_LEAST.items():
        assert f"at least {floor}" in item_text("forkchat.toml.5", "[limits]", key), key


def test_fixed_room_bounds_documented() -> None:
    """The broker's fixed bounds that forkchat(7) states by hand are the code's."""
    from forkchat import protocol, rooms, state_query, state_rooms
    text = rendered("forkchat.7")
    wanted = [f"keys of {rooms.KEYLEN}, ban masks of {rooms.MAX_MASK_CHARS} (a longer one is cut)",
              f"{state_rooms.MAX_INVITES} pending invitations per user",
              f"of a room of more than {state_query.WHO_ROOM_PACED} members",
              f"USERHOST of {state_query.MAX_USERHOST} nicknames",
              # the most one-letter nicks 'ISON a b ...' holds in a line
              "ISON looks up every nickname its line names, up to "
              f"{(protocol.MAX_BODY_BYTES - len('ISON ')) // 2 + 1}"]
    assert [phrase for phrase in wanted if phrase not in text] == []
    toml = item_text("forkchat.toml.5", "[limits]", "bans_per_room")
    assert f"of up to {rooms.MAX_MASK_CHARS} characters" in toml


def test_room_name_bytes_documented() -> None:
    """The bound in bytes a room name has whatever roomlen, which the
    pages state by hand in four places, is protocol.MAX_ROOM_BYTES, and the
    numerics they give for a name and a ban mask too long are the code's."""
    from forkchat import numerics, protocol
    cap = protocol.MAX_ROOM_BYTES
    text = rendered("forkchat.7")
    wanted = [f"at most {cap} bytes in UTF-8 whatever roomlen "
              f"({cap // 2} accented letters, {cap // 4} emoji); a longer one is refused "
              f"with {numerics.ERR_NOSUCHCHANNEL}",
              f"room names of {cap} bytes in UTF-8 ({numerics.ERR_NOSUCHCHANNEL})",
              f"lines carry whole ({numerics.ERR_INVALIDMODEPARAM})",
              f'is refused with {numerics.ERR_INVALIDMODEPARAM} "Ban mask too long: at most']
    assert [phrase for phrase in wanted if phrase not in text] == []
    assert 'text=f"Ban mask too long: at most {mask_bytes} bytes here"' \
        in (PACKAGE / "rooms.py").read_text()
    roomlen = item_text("forkchat.toml.5", "[limits]", "roomlen")
    assert f"So is a name of more than {cap} bytes in UTF-8 (RFC 1459's bound; " \
           f"{cap // 2} accented letters, {cap // 4} emoji)" in roomlen
    assert f"in all (and {cap} bytes in UTF-8)" in rendered("forkchat.toml.5")


def test_ban_mask_room_documented() -> None:
    """forkchat(7) says 200 ASCII characters of a ban mask fit its MODE and
    367 lines with the default limits, not with a nicklen near its ceiling
    and a long server name: the bound state_rooms.ban_mask_bytes computes."""
    from types import SimpleNamespace

    from forkchat import config, rooms, session, state_rooms
    most_nick = config.AT_MOST["nicklen"][0]
    text = rendered("forkchat.7")
    assert f"{rooms.MAX_MASK_CHARS} ASCII characters fit with the default limits" in text
    assert f"nor with a nicklen near its {most_nick} and a long server name" in text

    def room_for_mask(nicklen: int, roomlen: int) -> int:
        settings = SimpleNamespace(nicklen=nicklen, server_name="s" * config.MAX_NAME_BYTES)
        setter = "n" * nicklen + "!" + "u" * session.USERLEN + "@" + "h" * session.WIDEST_HOST
        room = rooms.Room("#" + "r" * (roomlen - 1), 0)
        return state_rooms.ban_mask_bytes(SimpleNamespace(settings=settings), room, setter)

    limits = config.Limits()
    assert room_for_mask(limits.nicklen, limits.roomlen) >= rooms.MAX_MASK_CHARS
    assert room_for_mask(most_nick, limits.roomlen) < rooms.MAX_MASK_CHARS


def test_client_numbers_documented() -> None:
    """The client's pacing, retry and buffer numbers, stated by hand in
    forkchat-client(1) and the README, are the code's."""
    from forkchat.client import buffers, connection, linemode
    delays = ", ".join(f"{d:.0f}" for d in connection.RECONNECT_DELAYS_S[:-1])
    pacing = f"a burst of {connection.SEND_BURST}, then one every {connection.SEND_INTERVAL_S}"
    text = rendered("forkchat-client.1")
    wanted = [pacing + " seconds",
              f"({delays}, then every {connection.RECONNECT_DELAYS_S[-1]:.0f} seconds)",
              f"a timeout of {connection.CONNECT_TIMEOUT_S:.0f} seconds",
              f"after {connection.IDLE_PING_S:.0f} seconds of silence",
              f"gives up after {linemode.GIVE_UP_S / 60:.0f} minutes",
              f"every {linemode.BARRIER_LINES} lines",
              f"get up to {linemode.DRAIN_S:.0f} seconds",
              f"while {connection.CTCP_ANSWERS_QUEUED} answers wait",
              f"its last {buffers.SCROLLBACK_LINES} lines",
              f"Buffer 1 keeps the last {buffers.SCROLLBACK_LINES} lines",
              f"up to {connection.REJOIN_ROOMS} in one JOIN line",
              f"answer of more than {buffers.BIG_ANSWER_ROWS} rows,",
              f"an answer of up to {buffers.BIG_ANSWER_ROWS} rows is shown where you typed it"]
    assert [phrase for phrase in wanted if phrase not in text] == []
    readme = " ".join((MAN.parent / "README.md").read_text().split())
    assert f"({pacing} s)" in readme
    assert f"a `/who` or `/names` of more than {buffers.BIG_ANSWER_ROWS} rows" in readme


def test_client_bounds_documented() -> None:
    """The bounds the client keeps against an odd or hostile server, and
    the note a cut reason gets, stated by hand in forkchat-client(1), are
    the code's."""
    from forkchat import numerics, protocol
    from forkchat.client import buffers, connection, slash, transport
    text = rendered("forkchat-client.1")
    minute = {60.0: "a minute"}[connection.PING_TIMEOUT_S]
    outbuf = {1 << 20: "1 MiB"}[transport.MAX_OUTBUF_BYTES]
    _cut, note = slash._fitted("x" * 201, "quit reason", 139)
    wanted = [f"stops answering for {minute} after a PING",
              f"with {outbuf} of it waiting",
              f"up to {buffers.MEMBERS_MAX}: no more are kept",
              f"at most {buffers.PRIVATE_BUFFERS_MAX} private conversations at a time",
              f"longer than an IRC line ({slash.LINE_BYTES} bytes without its end",
              f'"{note[0][1]}"',
              f'(forkchat-server answers "{numerics.TEXTS[numerics.ERR_INPUTTOOLONG]}"']
    assert [phrase for phrase in wanted if phrase not in text] == []
    assert slash.LINE_BYTES == protocol.MAX_BODY_BYTES     # "an IRC line", as servers hold it
    readme = " ".join((MAN.parent / "README.md").read_text().split())
    tokens = ", ".join(f"`{token}`" for token in connection.LENGTH_TOKENS)
    assert f"(or for the server's {tokens}) is cut to fit" in readme
    assert f"`/raw` refuses a line over {slash.LINE_BYTES} bytes" in readme


def test_client_cleaned_characters_documented() -> None:
    """The Unicode controls forkchat-client(1) says remote text loses (its
    bidirectional controls and line separators, as "U+XXXX" and "U+XXXX to
    U+YYYY") are exactly those the client drops."""
    from forkchat.client import events
    text = rendered("forkchat-client.1")
    start = text.index("Text from the server and from other people")
    said = text[start:text.index("a tab becomes a space", start)]
    documented: set[int] = set()
    for first, last in re.findall(r"U\+([0-9A-F]{4})(?: to U\+([0-9A-F]{4}))?", said):
        documented.update(range(int(first, 16), int(last or first, 16) + 1))
    dropped = {point for point in range(0xA0, 0x10000)
               if events.sanitize(chr(point)) == ""}
    assert documented == dropped


def test_server_timings_documented() -> None:
    """The waits forkchat-server(8) states by hand are the code's."""
    from forkchat import broker, ipc, supervisor, worker
    text = rendered("forkchat-server.8")
    wanted = [f"up to {supervisor.STOP_GRACE_S:.0f} seconds",          # SIGTERM's grace
              f"at most {ipc.HEARTBEAT_S:.0f} seconds old",             # SIGUSR1's counts
              f"last {supervisor.BROKER_SILENT_S:.0f} seconds",         # the watchdog
              f"more than {supervisor.BROKER_SILENT_S:.0f} seconds",
              f"after {broker.RECOVERY_WAIT_S:.0f} seconds",            # re-registration
              f"{worker.BROKER_GIVE_UP_S:.0f} seconds at most",         # no broker
              f"logged every {broker.REFUSED_LINKS_WINDOW_S:.0f} seconds",
              f"every {supervisor.STATUS_EVERY_S:.0f} seconds",
              f"at most {supervisor.STOP_REFUSALS} of them"]            # the stop's queue
    assert [phrase for phrase in wanted if phrase not in text] == []
    assert supervisor.SPAWNER_RETRY_S == supervisor.BROKER_RETRY_S == 1.0   # "every second"
    assert supervisor.STOP_REFUSALS_S == 0.5                    # "at most half a second"


def test_state_dir_modes_documented(tmp_path: Path) -> None:
    """The modes the pages give a state directory the server makes, and its
    parents, are those it makes them with (forkchat-server(8) said 0700 for
    the parents too, where they are 0755 so that the user it switches to can
    reach the directory)."""
    import os

    from forkchat import cli
    state = tmp_path / "new" / "parent" / "state"
    old = os.umask(0o077)              # the server's own umask (cli.private_files)
    try:
        cli._make_state_dir(str(state))
    finally:
        os.umask(old)
    own, parent = (f"{path.stat().st_mode & 0o777:04o}" for path in (state, state.parent))
    assert f"(mode {own}; missing parents {parent})" in rendered("forkchat.toml.5")
    text = rendered("forkchat-server.8")
    assert f"missing one with mode {own}, and its missing parents with mode {parent};" in text
    assert f"directory is created (mode {own})" in text


def test_limit_defaults_in_forkchat7_match_the_code() -> None:
    """forkchat(7)'s Limits paragraph states every default by hand, apart
    from forkchat.toml(5) whose defaults are checked above: it must follow
    config.py when a default changes, and the fixed bounds their constants."""
    from forkchat import config, numerics, rooms, state, state_query, state_rooms
    lim, fixed = config.Limits(), state.Settings()
    text = subsection("forkchat.7", ".SS Limits")
    wanted = [
        f"the defaults are: {lim.max_clients} clients, {lim.max_clients_per_ip} per IP address "
        f"(an IPv6 /{lim.ipv6_prefix} counts as one address), {lim.connect_burst} connections "
        f"from one address in a burst and then {lim.connect_rate:g} a second",
        f"nicknames of {lim.nicklen} characters, room names of {lim.roomlen}, "
        f"topics of {lim.topiclen}",
        f"{lim.rooms_per_client} rooms per client ({numerics.ERR_TOOMANYCHANNELS}), "
        f"{lim.members_per_room} members per room ({numerics.ERR_CHANNELISFULL}), "
        f"{lim.bans_per_room} bans per room ({numerics.ERR_BANLISTFULL}), "
        f"{lim.max_rooms} rooms ({numerics.ERR_TOOMANYCHANNELS})",
        f"a send queue of {lim.sendq_bytes // 1024} KiB per client and a broker buffer of "
        f"{lim.broker_buffer_bytes // 1048576} MiB per worker",
        f"for the ping timeout, {lim.ping_timeout:g} seconds",
        f"a burst of {lim.flood_burst} lines through, then {lim.flood_rate:g} lines a second, "
        f"holding further input in a receive queue of {lim.recvq_bytes // 1024} KiB",
        f"per room named: {lim.rooms_per_client} at once",
        f"then {lim.flood_rate:g} a second, further lines held",
        f"{lim.nick_changes} nickname changes in any {lim.nick_change_window:g} seconds "
        f"(beyond them: {numerics.ERR_NICKTOOFAST}",
        f"{lim.registration_timeout:g} seconds to register; a PING after "
        f"{lim.ping_interval:g} seconds of silence, and {lim.ping_timeout:g} seconds to answer it",
        f"kick, part, quit and away texts of {fixed.kicklen} characters",
        f"keys of {rooms.KEYLEN},",
        f"{state_rooms.MAX_INVITES} pending invitations",
        f"USERHOST of {state_query.MAX_USERHOST} nicknames",
        "ISON looks up every nickname its line names",
    ]
    assert fixed.kicklen == fixed.awaylen
    assert [phrase for phrase in wanted if phrase not in text] == []


def test_line_mode_formats_documented() -> None:
    """Each way line mode prints talk and joins is an item of LINE MODE in
    forkchat-client(1), as events.line_text makes it (a private notice and a
    private action carry "[private]", which the page did not show)."""
    from forkchat.client import events
    stamp = 0.0
    cases = [("msg", "#room", {}), ("msg", "#lobby", {}), ("msg", "", {"private": True}),
             ("notice", "#room", {}), ("notice", "", {"private": True}),
             ("action", "#room", {}), ("action", "", {"private": True}),
             ("join", "#room", {}), ("part", "#room", {"text": "reason"}),
             ("quit", "#room", {"text": "reason"}), ("nick", "#room", {"other": "newnick"}),
             ("nick", "#room", {"other": "newnick", "own": True})]
    documented = set(section_item_tags("forkchat-client.1")["LINE MODE"])
    missing = []
    for kind, current, extra in cases:
        fields = {"buffer": "#room", "nick": "nick", "text": "text", **extra}
        if fields.get("private"):
            fields["buffer"] = "nick"
        line = events.line_text(events.UiEvent(kind, stamp, **fields), current)
        line = "HH:MM" + line.removeprefix(events.clock(stamp))
        if line not in documented:
            missing.append(line)
    assert missing == []


def test_forkchat7_numbers_match_the_code() -> None:
    """The waits and bounds forkchat(7) and the README state by hand (the
    server's page is checked in test_server_timings_documented)."""
    from forkchat import broker, ipc, protocol, supervisor, tutorial, worker
    text = rendered("forkchat.7")
    share = {0.25: "a quarter", 0.5: "half"}[broker.SCAN_SHARE]
    restarts = (f"More than {supervisor.BROKER_RESTARTS} {{}} deaths within "
                f"{supervisor.BROKER_RESTART_WINDOW_S:.0f} seconds stop the server with exit "
                f"status {supervisor.BROKER_BOOT_ERROR}")
    flush = f"at most every {broker.FLUSH_WINDOW_S * 1000:.0f} ms"
    wanted = [f"retrying for up to {worker.BROKER_GIVE_UP_S:.0f} seconds",
              f"or {broker.RECOVERY_WAIT_S:.0f} seconds have passed",
              restarts.format("broker"), restarts.format("spawner"),
              f"at most once every {broker.REFUSED_LINKS_WINDOW_S:.0f} seconds",
              flush,
              f"and so does output for at most {broker.FLUSH_AT_ONCE_LINKS} workers",
              f"leave as one frame (of {ipc.RUN_BYTES // 1024} KiB at most)",
              f"at most {share} of the broker's time, beyond a burst of "
              f"{broker.SCAN_BURST_S * 1000:.0f} ms",
              f"at most {protocol.MAX_LINE_BYTES} bytes including CR LF",
              f"split into messages of {tutorial.MAX_TEXT_BYTES} bytes"]
    assert [phrase for phrase in wanted if phrase not in text] == []
    readme = " ".join((MAN.parent / "README.md").read_text().split())
    assert f"sends what gathered {flush} (output for at most {broker.FLUSH_AT_ONCE_LINKS} " \
           f"workers at once)" in readme


def test_quit_wait_and_broker_flood_numbers_documented() -> None:
    """The wait of a closing worker for a broker to take its goodbye and
    the broker's repeat of each worker's flood control, which forkchat(7)
    states by hand, are the worker's and the broker's."""
    from forkchat import broker, worker
    text = rendered("forkchat.7")
    second = {1.0: "1 second"}[worker.CLOSE_FLUSH_S]
    twice = {2: "twice"}[broker.FLOOD_MARGIN]
    wanted = [f"waits until a live broker has its goodbye ({second} at most",
              f"The worker's flood control is repeated by the broker, at {twice} the rate",
              f"and {broker.FLOOD_OWN_FRAMES} frames more for those a worker sends of itself",
              f"is held to {twice} the new limits from its start"]
    assert [phrase for phrase in wanted if phrase not in text] == []


def test_scan_queue_and_worker_binding_numbers_documented() -> None:
    """The bounds of the scans waiting their turn and the wait of a HELLO
    for its worker's pid, which several paragraphs of forkchat(7) and
    forkchat-server(8) state by hand, are the broker's."""
    from forkchat import broker
    wait = f"{broker.SCAN_WAIT_S:.0f} seconds"
    text = rendered("forkchat.7")
    wanted = [f"At most {broker.SCAN_QUEUE} scans wait (one per client), none longer than {wait}",
              f"one asked for when {broker.SCAN_QUEUE} wait, that has waited {wait}",
              f"flood control lets a client send in {wait}",
              f"waits for them all: on a broker kept busy, up to {wait} for each",
              f"the window is as long as the wait, up to {wait}",
              f"named for {broker.BIND_WAIT_S:.0f} seconds at most"]
    assert [phrase for phrase in wanted if phrase not in text] == []
    server = rendered("forkchat-server.8")
    assert f"refused after waiting {broker.BIND_WAIT_S:.0f} seconds to be named" in server


def test_words_sent_to_misdirected_clients_documented() -> None:
    """What an HTTP request or an IRC client on the wrong port, and a
    worker refused its REREGISTER, are told, as forkchat(7) quotes it, is
    what the code sends, and the HTTP methods it lists are those it knows."""
    from forkchat import commands, worker
    text = rendered("forkchat.7")
    listed = re.search(r"an HTTP method \(([^)]*)\)", text)
    assert listed is not None
    assert set(listed.group(1).split(", ")) == commands.HTTP_METHODS
    package = Path(__file__).resolve().parents[2] / "forkchat"
    assert '"Server error: session not restored"' in (package / "broker.py").read_text()
    assert '"NUL byte in USER line"' in (package / "worker.py").read_text()
    wanted = [f"which closes the connection (\"{commands.HTTP_REASON}\")",
              f"({worker.TUTORIAL_PORT_TEXT})",
              worker.NOT_HTTP_TEXT, "Server error: session not restored",
              "(NUL byte in USER line)"]
    assert [phrase for phrase in wanted if phrase not in text] == []


def test_store_and_certificate_numbers_documented() -> None:
    """The room store's waits and retries and the certificate warnings'
    thresholds and daily look, stated by hand in forkchat-server(8) and the
    README, are the code's."""
    from forkchat import listeners, store, supervisor
    text = rendered("forkchat-server.8")
    share = {0.25: "a quarter", 0.5: "half"}[listeners.EXPIRY_WARNING_SHARE]
    wanted = [f"after waiting {store.LOCK_WAIT_S:.0f} seconds for it",
              f"waited for {store.LOCK_WAIT_S:.0f} seconds first",
              f"once it can, trying every {store.RETRY_S:.0f} seconds",
              f"it waits {store.BUSY_WAIT_MS} ms at most",
              f"tries again every {store.RETRY_S:.0f} seconds, with every change since",
              f"with less than {listeners.EXPIRY_WARNING_DAYS} days of it left, or less than "
              f"{share} of its lifetime",
              "and once a day while the server runs"]
    assert [phrase for phrase in wanted if phrase not in text] == []
    assert supervisor.CERTIFICATES_EVERY_S == 86400      # "once a day", "the daily look"
    readme = " ".join((MAN.parent / "README.md").read_text().split())
    assert f"about to expire ({listeners.EXPIRY_WARNING_DAYS} days, or {share} of a shorter " \
           f"lifetime)" in readme
    assert "once a day while it is served" in readme


@pytest.mark.parametrize("page", sorted(PAGES))
def test_title_line_names_the_page_and_the_version(page: str) -> None:
    """.TH gives the page's own name and section and the package's version,
    which man(1) shows in every page's footer."""
    from forkchat import __version__
    name, _, section = page.rpartition(".")
    title = shlex.split((MAN / page).read_text().splitlines()[0])
    assert title[:3] == [".TH", name.upper(), section]
    assert title[4] == f"forkchat {__version__}"


def test_pip_installs_every_page() -> None:
    """pip puts each page where man(1) finds it from a virtual environment's
    PATH (share/man/manN), as the README says: a page left out of
    pyproject.toml's data-files would be missing from every installation."""
    import tomllib
    project = tomllib.loads((MAN.parent / "pyproject.toml").read_text())
    data_files = project["tool"]["setuptools"]["data-files"]
    installed = {f"{directory}/{Path(source).name}"
                 for directory, sources in data_files.items() for source in sources
                 if source.startswith("man/")}
    assert installed == {f"share/man/man{page.rpartition('.')[2]}/{page}" for page in PAGES}


def environment_read(directory: Path) -> set[str]:
    """Names of the environment variables the modules of a directory read."""
    found = set()
    for path in directory.glob("*.py"):
        found.update(re.findall(r'environ(?:\.get|\.setdefault)?\(\s*"([A-Z_]+)"',
                                path.read_text()))
    return found


def test_every_environment_variable_read_is_documented() -> None:
    """Each variable the server or the client reads is an item of its page's
    ENVIRONMENT (the test suite's fault hook aside)."""
    from forkchat import systemd
    server = (environment_read(PACKAGE) | set(systemd.LISTEN_VARIABLES)) - {"FORKCHAT_TEST_HOOKS"}
    client = environment_read(PACKAGE / "client") - {"LINES", "COLUMNS"}
    assert {"NOTIFY_SOCKET", "INVOCATION_ID", "TERM", "ESCDELAY"} <= server | client
    for page, names in (("forkchat-server.8", server), ("forkchat-client.1", client)):
        documented = " ".join(section_item_tags(page)["ENVIRONMENT"]).replace(",", " ").split()
        assert sorted(names - set(documented)) == [], page


def test_every_documented_environment_variable_is_read() -> None:
    """The other direction: each variable of forkchat-server(8)'s ENVIRONMENT
    is one the server reads (COLUMNS through its help formatter)."""
    from forkchat import systemd
    read = environment_read(PACKAGE) | set(systemd.LISTEN_VARIABLES)
    documented = " ".join(section_item_tags("forkchat-server.8")["ENVIRONMENT"]).split()
    assert sorted(set(documented) - read) == []


def test_files_sections_name_the_servers_files() -> None:
    """FILES of forkchat-server(8) and forkchat.toml(5) give the default
    state_dir's room store by the names store.py uses, and the units the
    source tree ships."""
    from forkchat import config, store
    state = config.Server().state_dir
    server = section_rendered("forkchat-server.8", "FILES")
    assert f"{state} The default state directory" in server
    assert f"{state}/{store.FILENAME}" in server and store.LOCK_FILENAME in server
    assert f"{state}/{store.FILENAME}" in section_rendered("forkchat.toml.5", "FILES")
    units = sorted(path.name for path in (MAN.parent / "scripts" / "systemd").iterdir())
    assert [f"/etc/systemd/system/{unit}" in server for unit in units] == [True] * len(units)


def test_every_irc_command_is_in_forkchat7() -> None:
    """Each command a worker answers itself or the broker handles is named in
    forkchat(7)'s IRC PROFILE."""
    from forkchat import commands, state
    names = set(commands.COMMANDS) | set(state.HANDLERS)
    assert len(names) > 30
    text = section_rendered("forkchat.7", "IRC PROFILE")
    assert sorted(name for name in names if not re.search(rf"\b{name}\b", text)) == []


def test_socket_unit_restart_stops_the_service_first() -> None:
    """systemd refuses to start a socket unit while its service runs
    ("Socket service forkchat.service already active, refusing"), so the
    steps that apply a new ListenStream= stop the service before they
    restart forkchat.socket: "restart the socket unit" alone, as the README
    and the log line said, failed on every running server."""
    from forkchat import cli, config
    steps = ["systemctl stop forkchat.service", "systemctl restart forkchat.socket",
             "systemctl start forkchat.service"]
    server = section_rendered("forkchat-server.8", "SYSTEMD")
    readme = " ".join((MAN.parent / "README.md").read_text().replace("`", "").split())
    socket_unit = " ".join((MAN.parent / "scripts" / "systemd" / "forkchat.socket")
                           .read_text().replace("#", " ").replace("&&", " ").split())
    for text in (server, readme, socket_unit):
        at = [text.find(step) for step in steps]
        assert -1 not in at and at == sorted(at), (at, text[:60])
    import logging
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append          # type: ignore[method-assign]
    logger = logging.getLogger("forkchat.supervisor")
    logger.addHandler(handler)
    try:
        cli.passed_specs(config.Config(listen=(config.Listener(
            port=6697, tls_cert="c.pem", tls_key="k.pem"),)), [("irc", ("::", 6667))])
    finally:
        logger.removeHandler(handler)
    [line] = [record.getMessage() for record in records]
    assert "then stop the service and restart the socket unit" in line
    assert line.split(": ", 1)[1] in section_rendered("forkchat-server.8", "LOGGING") \
        .replace("add ListenStream=N", "add ListenStream=6697")


def test_the_install_path_the_unit_hides_is_named() -> None:
    """The unit's ProtectHome=yes hides /home and /root from the service, so
    ExecStart= through a link to a virtual environment in a home fails with
    203/EXEC; forkchat-server(8), which says to link an installation made
    elsewhere, and the unit's own comment say where it may not be."""
    unit = (MAN.parent / "scripts" / "systemd" / "forkchat.service").read_text()
    assert "\nProtectHome=yes\n" in unit
    server = section_rendered("forkchat-server.8", "SYSTEMD")
    assert "The installation must be outside /home and /root, and so must the Python its " \
           "virtual environment was made with" in server
    assert "the unit's ProtectHome=yes hides them" in server
    comment = " ".join(line.lstrip("# ") for line in unit.splitlines() if line.startswith("#"))
    assert "must not be under /home or /root (ProtectHome=yes below" in comment


def test_oper_and_admission_numbers_documented() -> None:
    """The waits after failed OPER and PASS attempts, the connect-rate and
    refusal-log bounds, the memory census's pace, the worker's send buffer
    and a crashed worker's exit status, which the pages state by hand, are
    the code's constants (none of them was checked, so a change of one left
    the pages stating the old number)."""
    import inspect

    from forkchat import admission, children, commands, operguard, procstats, supervisor, worker
    toml = rendered("forkchat.toml.5")
    server = rendered("forkchat-server.8")
    guard_first, guard_max = operguard.FIRST_DELAY_S, operguard.MAX_DELAY_S / 60
    wanted_toml = [
        f"must wait {commands.OPER_RETRY_S:.0f} seconds before the next one, twice as long "
        f"after each further failure, up to {commands.OPER_RETRY_MAX_S:.0f} seconds",
        f"The first {operguard.FREE_FAILURES} start no wait for the address",
        f"must wait {guard_first:.0f} seconds, twice as long after each further failure, "
        f"up to {guard_max:.0f} minutes",
        f"and so do {operguard.QUIET_S / 60:.0f} minutes without a failure",
        f"The counts of up to {operguard.MAX_ADDRESSES} addresses",
        f"past {operguard.FREE_FAILURES}, every connection from there waits",
        f"The rates of the {admission.MAX_CONNECT_BUCKETS} blocks that connected last are "
        f"kept; a block connecting after {admission.MAX_CONNECT_BUCKETS} others",
        f"send buffer of the connection small ({worker.CLIENT_SNDBUF_BYTES // 1024} KiB)",
    ]
    census_slice = inspect.signature(procstats.PssCensus).parameters["slice_size"].default
    window = f"{admission.REFUSAL_WINDOW_S:.0f}"
    wanted_server = [
        f"went past the {operguard.FREE_FAILURES} that are let through",
        f"{operguard.QUIET_S / 60:.0f} quiet minutes",
        f"for a reason in {window} seconds is logged",
        f"refused N more connections from address in {window} s",
        f"measured every {'minute' if supervisor.MEMORY_EVERY_S == 60 else '?'}, "
        f"{census_slice} processes at a time",
        f"the worker exits with status {children.EX_SOFTWARE}",
    ]
    assert [phrase for phrase in wanted_toml if phrase not in toml] == []
    assert [phrase for phrase in wanted_server if phrase not in server] == []
    assert f"exits with status {children.EX_SOFTWARE}" in rendered("forkchat.7")


def test_readme_lists_the_clients_commands_and_options() -> None:
    """The README's client section lists the slash commands and shows the
    options; both are written by hand, so a command or option added to the
    client must be added there too."""
    from forkchat.client import app, slash
    readme = (MAN.parent / "README.md").read_text()
    section = readme.split("## The client", 1)[1].split("\n## ", 1)[0]
    listed = re.search(r"Commands: `([^`]*)`", section)
    assert listed is not None
    assert sorted(word.lstrip("/") for word in listed.group(1).split()) == sorted(slash.COMMANDS)
    usage = section.split("\n\n", 2)[1]
    options = {option for action in app.build_parser()._actions
               for option in action.option_strings if option.startswith("--")}
    shown = set(re.findall(r"--[\w-]+", usage))
    short = {option for action in app.build_parser()._actions for option in action.option_strings
             if len(option) == 2} - {"-h"}
    assert sorted(options - shown - {"--help", "--nick", "--room"}) == []
    assert sorted(short - set(re.findall(r"(?<![\w-])-\w\b", usage))) == []


def test_readme_module_table_names_every_module() -> None:
    """The README's table of modules ("How it is built") names each module
    of forkchat/ (a row may name several, as `state_*.py` does), and no
    module that is gone."""
    import fnmatch
    readme = (MAN.parent / "README.md").read_text()
    table = readme.split("## How it is built", 1)[1].split("\n## ", 1)[0]
    named = [name.removeprefix("forkchat/") for row in table.splitlines()
             if row.startswith("| `") for name in re.findall(r"`([^`]+)`", row.split("|")[1])]
    modules = sorted(path.name for path in PACKAGE.glob("*.py")
                     if path.name not in ("__init__.py", "__main__.py"))
    assert [m for m in modules if not any(fnmatch.fnmatch(m, name) for name in named)] == []
    assert [n for n in named if n != "client/" and not fnmatch.filter(modules, n)] == []
    assert (PACKAGE / "client").is_dir() and "client/" in named


def test_every_logging_item_is_a_line_the_server_logs() -> None:
    """The other way round from test_every_log_line_is_documented: each item
    of LOGGING starts a line the code logs (its words up to any cut), so an
    item for a line reworded or no longer logged is caught, not left to
    mislead whoever greps the log for it."""
    starts = set()
    for text in (text for _where, text in log_formats() + dynamic_lines()):
        cuts = [index for index, char in enumerate(text) if char == " "] + [len(text)] \
            + [end for match in PLACEHOLDER.finditer(text) for end in match.span()]
        starts.update(text[:cut] for cut in cuts      # enough words to tell a line
                      if len(re.findall(r"[A-Za-z]", PLACEHOLDER.sub("", text[:cut]))) >= 4)
    patterns = [re.compile(full_pattern(start)) for start in starts]
    tags = section_item_tags("forkchat-server.8")["LOGGING"]
    assert len(tags) > 60
    assert [tag for tag in tags if not any(p.fullmatch(tag) for p in patterns)] == []


def full_pattern(text: str) -> str:
    """A regex for a whole logged line, or the start of one, as a page
    writes it: each placeholder stands for a word or a few (N, address)."""
    pattern = ""
    for index, part in enumerate(re.split(f"({PLACEHOLDER.pattern})", text)):
        pattern += r".{1,80}?" if index % 2 else r"\s+".join(re.escape(w) for w in part.split(" "))
    return pattern


@pytest.mark.parametrize("page", ["forkchat-server.8", "forkchat-client.1"])
def test_synopsis_shows_every_option(page: str) -> None:
    """Each option (in one of its spellings) is in the page's SYNOPSIS, not
    only in OPTIONS, as --help's usage line shows them all."""
    from forkchat import cli
    from forkchat.client import app
    parser = {"forkchat-server.8": cli.build_parser, "forkchat-client.1": app.build_parser}[page]()
    shown = set(re.findall(r"(?<![\w-])--?[\w-]+", section_rendered(page, "SYNOPSIS")))
    missing = [action.option_strings for action in parser._actions
               if action.option_strings and "--help" not in action.option_strings
               and not shown & set(action.option_strings)]
    assert missing == []


def test_readme_quotes_the_warning_of_a_start_as_an_ordinary_user() -> None:
    """The README's first command, run as an ordinary user, logs that the
    room store in the default state_dir is unavailable; the README quotes
    that line, by the store's own words and path."""
    from forkchat import config, store
    assert 'log.warning("room store %s unavailable, rooms will not persist' in \
        (PACKAGE / "store.py").read_text()
    readme = " ".join((MAN.parent / "README.md").read_text().split())
    assert f"(`room store {config.Server().state_dir}/{store.FILENAME} unavailable`)" in readme


def test_pip_installs_every_package() -> None:
    """pyproject.toml names the packages to install one by one: a package
    added under forkchat/ and not listed there would be missing from every
    installation, while the tests, run from the checkout, still passed."""
    import tomllib
    project = tomllib.loads((MAN.parent / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    found = {".".join(path.parent.relative_to(PACKAGE.parent).parts)
             for path in PACKAGE.rglob("__init__.py")}
    assert listed == found


def test_state_dir_item_says_what_the_unit_lets_the_server_write() -> None:
    """Under the shipped unit (ProtectSystem=strict) a state_dir other than
    its StateDirectory= is read-only, so rooms silently stopped persisting
    for whoever moved it; forkchat.toml(5) says so with the unit's values."""
    unit = (MAN.parent / "scripts" / "systemd" / "forkchat.service").read_text()
    state = re.search(r"^StateDirectory=(\S+)$", unit, re.M)
    strict = re.search(r"^ProtectSystem=(\S+)$", unit, re.M)
    assert state and strict
    text = item_text("forkchat.toml.5", "[server]", "state_dir")
    assert f"makes /var/lib/{state.group(1)} for its dynamic user " \
           f"(StateDirectory={state.group(1)})" in text
    assert f"every other path read-only (ProtectSystem={strict.group(1)})" in text


def test_readme_tls_example_loads(tmp_path: Path) -> None:
    """The [[listen]] entry of the README's TLS section is a valid file, as
    forkchat.toml(5)'s example is (test_config_example_loads)."""
    from forkchat import config
    readme = (MAN.parent / "README.md").read_text()
    section = readme.split("\n## TLS\n", 1)[1].split("\n## ", 1)[0]
    block = "\n".join(line[4:] for line in section.strip("\n").split("\n\n", 1)[0].splitlines())
    assert block.startswith("[[listen]]")
    path = tmp_path / "forkchat.toml"
    path.write_text(block + "\n")
    [listener] = config.load(str(path)).listen
    assert (listener.port, bool(listener.tls_cert), bool(listener.tls_key)) == (6697, True, True)


def test_the_reload_outcome_item_keeps_its_closing_sentences() -> None:
    """LOGGING's "configuration reloaded" item ends with what the broker
    says and what a SIGHUP logs without -c or during a stop; the item for
    the reload's TLS warm-up was put in its middle, so those sentences read
    as said of a failed warm-up, and the outcome item lost them."""
    outcome = item_text("forkchat-server.8", "LOGGING", "configuration reloaded")
    warm_up = item_text("forkchat-server.8", "LOGGING",
                        "the warm-up of the new TLS contexts failed (the reload goes on)")
    for sentence in ("broker took the new configuration",
                     "SIGHUP: no configuration file to reload",
                     "SIGHUP: the server is stopping, nothing reloaded"):
        assert sentence in outcome and sentence not in warm_up, sentence
