"""The command reference and the docs agree with the commands' declarations.

``docs/commands.md`` is what :mod:`gdbext.frontend.reference` makes of the declarations (made
again here and compared), and every command line the docs show (``gdbext CMD --option``,
``pt-CMD --option``, in code blocks and code spans) names a command and options that exist:
each is looked up in the parser that would parse it.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gdbext.audit.registry import audit_rules
from gdbext.frontend import reference
from gdbext.frontend.cmd import COMMANDS
from gdbext.frontend.parsing import build_command_parser, build_parser
from gdbext.plugin.host import Host
from gdbext.session import Session

ROOT = Path(__file__).resolve().parents[2]
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

#: A command line in the docs: ``gdbext CMD ...`` or ``pt-CMD ...`` up to a comment or a pipe.
COMMAND_LINE = re.compile(r"(?:^|[\s(`])(gdbext|pt-[a-z]+(?:-[a-z]+)*)\b((?: +[^\s#|;`)]+)*)")
#: What the LLDB adapter adds (``pt-connect``: LLDB's own) and the debugger functions.
DEBUGGER_ONLY = {"pt-backend", "pt-connect"}


def test_the_committed_reference_is_the_declarations() -> None:
    committed = (ROOT / reference.PATH).read_text()
    assert committed == reference.render(Host.create()), (
        "docs/commands.md differs from the declarations: run python -m gdbext.frontend.reference"
    )


def test_the_check_mode_finds_a_stale_reference(tmp_path: Path) -> None:
    path = tmp_path / "commands.md"
    path.write_text((ROOT / reference.PATH).read_text().replace("## walk", "## wlak"))
    proc = subprocess.run(
        [sys.executable, "-m", "gdbext.frontend.reference", "--check", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and "differs from the declarations at line" in proc.stderr
    subprocess.run([sys.executable, "-m", "gdbext.frontend.reference", str(path)], check=True)
    assert path.read_text() == (ROOT / reference.PATH).read_text()


def test_the_reference_shows_each_command_once_with_its_help() -> None:
    text = (ROOT / reference.PATH).read_text()
    host = Host.create()
    for command in COMMANDS:
        assert text.count(f"\n## {command.name}\n") == 1
        assert f"`{command.debugger_name}`" in text
        usage = build_command_parser(host, command.name, prog=f"gdbext {command.name}")
        assert usage.description is not None and usage.description.split()[0] in text
        for status, when in command.all_exit_statuses():
            assert f"- {status}: {when}" in text


def _code(text: str) -> Iterator[str]:
    """The code of a Markdown text: fenced blocks' lines and inline code spans."""
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            yield line
        else:
            yield from re.findall(r"`([^`]+)`", line)


#: Words after ``gdbext`` in prose, not commands.
PROSE = {"the", "and", "with", "in", "itself", "command", "does", "is"}
#: Options the docs show on purpose as mistakes (a failing command in a batch run).
MISTAKES = {"--bogus"}


class Checker:
    """Looks up the command lines of a Markdown text in the parsers that would parse them."""

    def __init__(self) -> None:
        host = Host.create()
        self.host = host
        self.session = Session(host)
        cli = build_parser(host)
        self.sub = next(a for a in cli._actions if isinstance(a, argparse._SubParsersAction))
        self.names = {c.name for c in COMMANDS} | {"backends"}
        self.debugger_names = {c.debugger_name for c in COMMANDS} | DEBUGGER_ONLY
        #: ``pt-writable-alias`` is an audit rule, not a command.
        self.rules = set(audit_rules(host))
        self.checked = 0

    def parser(self, name: str, words: list[str]) -> tuple[argparse.ArgumentParser | None, str]:
        """The parser of the command line ``name words...``, and the command's name; None
        when it is not a command line (prose, a path) or names no parser (``pt-connect``)."""
        if name == "gdbext":
            if not words or not re.fullmatch(r"[a-z]+", words[0]) or words[0] in PROSE:
                return None, ""
            if words[0] not in self.names:
                raise LookupError(f"gdbext {words[0]}")
            if words[0] == "backends":
                parser = self.sub.choices["backends"]
                assert isinstance(parser, argparse.ArgumentParser)
                return parser, "backends"
            return build_command_parser(self.host, words[0], "x", target_options=True), words[0]
        if name in self.rules:
            return None, ""
        if name not in self.debugger_names:
            raise LookupError(name)
        if name == "pt-connect":
            return None, ""
        return self.session.parser(name), name

    def problems(self, doc: str, text: str) -> list[str]:
        """What ``text`` names that does not exist, as ``doc: command --option`` lines."""
        wrong = []
        for code in _code(text):
            for m in COMMAND_LINE.finditer(code):
                words = m[2].split()
                try:
                    parser, command = self.parser(m[1], words)
                except LookupError as exc:
                    wrong.append(f"{doc}: {exc}")
                    continue
                if parser is None:
                    continue
                self.checked += 1
                known = set(parser._option_string_actions)
                for word in words:
                    option = word.split("=", 1)[0]
                    if not re.fullmatch(r"--[a-z][a-z0-9-]*", option) or option in MISTAKES:
                        continue
                    if option not in known:
                        wrong.append(f"{doc}: {command} {option}")
        return wrong


def test_the_docs_name_only_commands_and_options_that_exist() -> None:
    checker = Checker()
    wrong = [w for path in DOCS for w in checker.problems(path.name, path.read_text())]
    assert not wrong, "the docs name what does not exist:\n" + "\n".join(sorted(set(wrong)))
    assert checker.checked > 20  # the docs do show command lines


@pytest.mark.parametrize(
    ("text", "wrong"),
    [
        ("`gdbext wlak dump.elf`", ["x.md: gdbext wlak"]),
        (
            "```sh\ngdbext walk vmcore.elf --kernal  # comment --nothing\n```",
            ["x.md: walk --kernal"],
        ),
        ("`pt-wlak --cr3 0x1000`", ["x.md: pt-wlak"]),
        ("`pt-walk --scenario demo.json`", ["x.md: pt-walk --scenario"]),
        ("`pt-translate $rsp --cr3 $cr3`, `gdbext backends`, `pt-writable-alias`", []),
    ],
)
def test_the_check_finds_what_does_not_exist(text: str, wrong: list[str]) -> None:
    assert Checker().problems("x.md", text) == wrong
