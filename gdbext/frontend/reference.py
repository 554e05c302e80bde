"""The command reference (``docs/commands.md``), made from the commands' declarations.

``python -m gdbext.frontend.reference`` writes it; ``--check`` says whether the committed file
is what the declarations give (exit status 1 and the first differing line when not). Each
command's section is its ``--help`` on the command line (argparse's, 100 columns wide), its name
and line in GDB and LLDB, and its exit statuses; the options come from the installed plugins
(backends and output formats), so the reference is made with the project's own.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gdbext.frontend import cmd
from gdbext.frontend.command import COMMON_EXIT_STATUSES, Command
from gdbext.frontend.parsing import build_command_parser, build_parser

if TYPE_CHECKING:
    from gdbext.plugin.host import Host

#: Where the reference is committed, from the checkout's root.
PATH = Path("docs") / "commands.md"
#: Columns of the help texts.
WIDTH = 100

_HEADER = """\
# Command reference

Every command of the `gdbext` command line, and its name in GDB and LLDB. Generated from the
commands' declarations (`gdbext/frontend/cmd/`) by `python -m gdbext.frontend.reference`: do not
edit by hand; a test fails when this file and the code disagree.

In GDB and LLDB a command takes the same arguments without the target options (`DUMP`,
`--backend`, `--dump` and the backends' options): it runs on the backend `pt-backend` selected,
or on the debugger's own connection to a gdbstub. Its output is the command line's, byte for
byte.
"""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, width=WIDTH)


def _help(parser: argparse.ArgumentParser) -> str:
    parser.formatter_class = _formatter
    return parser.format_help().rstrip()


def _exit_statuses(statuses: Sequence[tuple[int, str]]) -> list[str]:
    return ["Exit status:", "", *(f"- {status}: {when}" for status, when in statuses)]


def _section(host: Host, command: Command) -> list[str]:
    parser = build_command_parser(
        host, command.name, prog=f"gdbext {command.name}", target_options=True
    )
    return [
        f"## {command.name}",
        "",
        f"`gdbext {command.name}`: {command.summary}. In GDB and LLDB: `{command.debugger_name}`, "
        f"{command.debugger_summary[0].lower()}{command.debugger_summary[1:]}",
        "",
        "```text",
        _help(parser),
        "```",
        "",
        *_exit_statuses(command.all_exit_statuses()),
        "",
    ]


def _backends(host: Host) -> list[str]:
    from gdbext.session import BACKEND_SUMMARY, Session

    parser = build_parser(host)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    backends = sub.choices["backends"]
    assert isinstance(backends, argparse.ArgumentParser)
    return [
        "## backends",
        "",
        "`gdbext backends`: list the installed backends, one line each (name and summary). In "
        f"GDB and LLDB: `pt-backend`, {BACKEND_SUMMARY[0].lower()}{BACKEND_SUMMARY[1:]}",
        "",
        "```text",
        _help(backends),
        "```",
        "",
        "```text",
        _help(Session(host).parser("pt-backend")),
        "```",
        "",
        *_exit_statuses(COMMON_EXIT_STATUSES),
        "",
    ]


def render(host: Host) -> str:
    """The reference, as Markdown."""
    lines = [_HEADER, "| command line | GDB and LLDB | what |", "| --- | --- | --- |"]
    for command in cmd.COMMANDS:
        lines.append(f"| `gdbext {command.name}` | `{command.debugger_name}` | {command.summary} |")
    lines += [
        "| `gdbext backends` | `pt-backend` | the installed backends (the debuggers: select one) |",
        "",
        "```text",
        _help(build_parser(host)),
        "```",
        "",
    ]
    for command in cmd.COMMANDS:
        lines += _section(host, command)
    lines += _backends(host)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gdbext.frontend.reference [--check] [PATH]``."""
    from gdbext.plugin.host import Host

    parser = argparse.ArgumentParser(
        prog="python -m gdbext.frontend.reference", description="Write the command reference."
    )
    parser.add_argument("path", nargs="?", type=Path, default=PATH, help=f"default {PATH}")
    parser.add_argument(
        "--check", action="store_true", help="compare with the file instead of writing it"
    )
    args = parser.parse_args(argv)
    text = render(Host.create())
    if not args.check:
        args.path.write_text(text)
        return 0
    committed = args.path.read_text() if args.path.exists() else ""
    if committed == text:
        return 0
    old, new = committed.splitlines(), text.splitlines()
    line = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), None)
    where = min(len(old), len(new)) if line is None else line
    print(
        f"{args.path}: differs from the declarations at line {where + 1}; run "
        "python -m gdbext.frontend.reference",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
