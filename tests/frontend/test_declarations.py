"""Each command is declared once, and the command line, the debuggers and the reference read it.

The declarations' own rules (names, summaries, exit statuses), the debuggers' parsers as the
command line's without the target options, and a command added as one declaration (with a
plugin that renders it) that the command line runs, the debugger session runs with the same
output, and the reference lists.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from gdbext import cli
from gdbext.errors import EXIT_NOT_FOUND, EXIT_OK
from gdbext.frontend import cmd, reference
from gdbext.frontend.command import Command, Invocation
from gdbext.frontend.parsing import build_command_parser, build_parser
from gdbext.plugin.formats import OutputFormat
from gdbext.plugin.hookspecs import hookimpl
from gdbext.plugin.host import Host
from gdbext.plugin.target import OpenRequest
from gdbext.session import Selection, Session

DEMO = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios" / "demo.json"
#: What only the command line's parsers have: what to open.
TARGET_OPTIONS = {"--backend", "--dump", "--format-in", "--base", "--direct-map", "--read-via",
                  "--debugger", "--scenario", "--address", "--stub-timeout"}  # fmt: skip


def test_names_and_summaries() -> None:
    names = [c.name for c in cmd.COMMANDS]
    assert names == [
        "info", "walk", "translate", "read", "search", "who-maps", "aliases", "heap", "audit",
        "kaslr", "roots", "tasks", "snapshot", "diff", "map",
    ]  # fmt: skip
    for command in cmd.COMMANDS:
        assert command.debugger_name == f"pt-{command.name}"
        assert cmd.find(command.name) is command
        assert cmd.find_debugger(command.debugger_name) is command
        # The command line's summary is a phrase for a column; the debuggers' a sentence.
        assert command.summary[0].islower() and not command.summary.endswith(".")
        assert command.debugger_summary[0].isupper() and command.debugger_summary.endswith(".")
        statuses = [s for s, _ in command.all_exit_statuses()]
        assert statuses == sorted(set(statuses)) and {EXIT_OK, 2} <= set(statuses)
    assert cmd.find_debugger("pt-backend") is None


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)


@pytest.mark.parametrize("command", cmd.COMMANDS, ids=lambda c: c.name)
def test_the_debuggers_parse_as_the_command_line_without_the_target(command: Command) -> None:
    host = Host.create()
    cli_parser = build_command_parser(host, command.name, "gdbext", target_options=True)
    debugger = Session(host).parser(command.debugger_name)
    assert _options(debugger) == _options(cli_parser) - TARGET_OPTIONS
    assert debugger.description == cli_parser.description == command.description
    sub = next(a for a in build_parser(host)._actions if isinstance(a, argparse._SubParsersAction))
    assert sub.choices[command.name].description == command.description


# --- a command added as one declaration ------------------------------------------------------


def _run_hello(call: Invocation) -> int:
    call.emit(call.target.description)
    return EXIT_OK if call.args.times else EXIT_NOT_FOUND


def _hello_arguments(p: argparse.ArgumentParser, target_options: bool) -> None:
    p.add_argument("--times", type=int, default=1, help="how many greetings")


HELLO = Command(
    name="hello",
    summary="greet the target",
    debugger_summary="Greet the target.",
    run=_run_hello,
    arguments=_hello_arguments,
    page_table=False,
    exit_statuses=((EXIT_NOT_FOUND, "no greeting asked for"),),
)


class HelloPlugin:
    """Renders ``hello``: the plugin side of a new command."""

    @staticmethod
    def render(description: str) -> Iterator[str]:
        yield f"hello, {description}"

    @hookimpl
    def gdbext_output_formats(self) -> Sequence[OutputFormat]:
        return [OutputFormat("text", "hello", self.render, "a greeting")]


@pytest.fixture
def hello(monkeypatch: pytest.MonkeyPatch) -> Host:
    monkeypatch.setattr(cmd, "COMMANDS", (*cmd.COMMANDS, HELLO))
    return Host.create(extra_plugins=[HelloPlugin()])


def test_a_new_command_runs_on_the_command_line(hello: Host) -> None:
    out = io.StringIO()
    status = cli.run(["hello", "--backend", "sim", "--scenario", str(DEMO)], hello, out)
    assert status == EXIT_OK and out.getvalue().startswith("hello, ")
    assert cli.run(["hello", "--times", "0", "--backend", "sim", "--scenario", str(DEMO)],
                   hello, io.StringIO()) == EXIT_NOT_FOUND  # fmt: skip
    assert "hello     greet the target" in build_parser(hello).format_help()


def test_a_new_command_runs_in_the_debuggers_with_the_same_output(hello: Host) -> None:
    expected = io.StringIO()
    cli.run(["hello", "--backend", "sim", "--scenario", str(DEMO)], hello, expected)
    request = OpenRequest(None, {"scenario": str(DEMO)})
    session = Session(hello, default=lambda: Selection("sim", request))
    assert "pt-hello" in session.commands()
    assert session.summary("pt-hello") == "Greet the target."
    assert session.help("pt-hello").startswith("Greet the target.\n\nusage: pt-hello [-h]")
    out = io.StringIO()
    assert session.run("pt-hello", [], out) == EXIT_OK
    assert out.getvalue() == expected.getvalue()


def test_a_new_command_is_in_the_reference(hello: Host) -> None:
    text = reference.render(hello)
    assert "| `gdbext hello` | `pt-hello` | greet the target |" in text
    assert "\n## hello\n" in text and "- 1: no greeting asked for" in text
