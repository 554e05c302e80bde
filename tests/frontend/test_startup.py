"""What the command line loads to start: only what the command uses.

``gdbext --version`` needs no plugin host and no engine; ``gdbext backends`` asks the plugins
for their backends and loads no engine, renderer, dump reader or simulator, nor argparse and the
commands' declarations. Checked by what a fresh interpreter has imported once the command ran
(deterministic, unlike its time: ``bench/bench_startup.py`` measures that), and by the
dataclasses it has declared: each costs start-up time (its generated methods are compiled when
the class is made), so the classes a command cannot do without are dataclasses only where
``dataclasses.replace`` or a dataclass's field handling is used; the others are plain classes
or named tuples.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.cli import cli_text

from gdbext import __version__

#: Modules of the work itself: a start-up that needs none must load none of them.
ENGINE = (
    "gdbext.x86.paging",
    "gdbext.linux.",
    "gdbext.frontend.commands",
    "gdbext.frontend.heap",
    "gdbext.render.text",
    "gdbext.render.jsonout",
    "gdbext.render.ptdump",
    "gdbext.audit.engine",
    "gdbext_dump.dump",
    "gdbext_sim.scenario",
)

#: Run in a fresh interpreter: prints the dataclasses the gdbext modules loaded declare (taken
#: after the loaded modules: ``dataclasses`` itself is imported here).
DECLARED = """
import dataclasses
declared = sorted(
    f"{name}.{value.__qualname__}"
    for name, module in list(sys.modules.items())
    if name.startswith("gdbext")
    for value in list(vars(module).values())
    if isinstance(value, type) and value.__module__ == name and dataclasses.is_dataclass(value)
)
print(json.dumps({"status": status, "out": out.getvalue(), "modules": modules,
                  "dataclasses": declared}))
"""

SCRIPT = (
    """
import contextlib, io, json, sys
from gdbext.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        status = main(sys.argv[1:])
    except SystemExit as exc:
        status = exc.code
modules = sorted(sys.modules)
"""
    + DECLARED
)


def loaded(*argv: str) -> dict[str, object]:
    """Exit status, output and imported modules of ``gdbext ARGV`` in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *argv], capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(proc.stdout)
    return result


#: The dataclasses every command that lists or opens a backend declares: a target and what
#: opens it (:mod:`gdbext.plugin.target`), the kernel's facts (:mod:`gdbext.plugin.facts`).
#: Plugins and front ends make new ones with ``dataclasses.replace``.
PLUGIN_DATACLASSES = [
    "gdbext.plugin.facts.BootInfoFacts",
    "gdbext.plugin.facts.KernelFacts",
    "gdbext.plugin.facts.VmcoreFacts",
    "gdbext.plugin.target.OpenRequest",
    "gdbext.plugin.target.Target",
]

#: Those a walk of a dump declares besides: options and values made anew with
#: ``dataclasses.replace`` (roots, walk options, CPU state, layouts), an address range and a
#: permission filter that check their fields, merged ranges, which the merge grows in place,
#: and a layout's kernel options (a default argument's value).
WALK_DATACLASSES = [
    "gdbext.addr.AddrRange",
    "gdbext.cpu.CpuState",
    "gdbext.frontend.commands.RootOptions",
    "gdbext.frontend.commands.WalkOptions",
    "gdbext.linux.layout.Layout",
    "gdbext.linux.layout.Options",
    "gdbext.permfilter.PermFilter",
    "gdbext.x86.merge.MergedRange",
]


def engine_modules(modules: object) -> list[str]:
    assert isinstance(modules, list)
    return [m for m in modules if m.startswith(ENGINE)]


def test_version_loads_no_plugin_and_no_engine() -> None:
    result = loaded("--version")
    assert (result["status"], result["out"]) == (0, f"gdbext {__version__}\n")
    modules = result["modules"]
    assert isinstance(modules, list)
    assert engine_modules(modules) == []
    assert "pluggy" not in modules and "gdbext.plugin.host" not in modules
    # Answered before the commands' declarations, argparse and the error tree are loaded.
    assert [m for m in modules if m.startswith(("gdbext.frontend", "gdbext.errors"))] == []
    assert "argparse" not in modules and "dataclasses" not in modules


def test_backends_loads_neither_argparse_nor_the_commands() -> None:
    """``gdbext backends`` alone is answered before the command line's parser is built: no
    argparse (nor its gettext and shutil), no commands' declarations, no error tree beyond
    what the plugins import; the dataclasses declared are the plugin interface's only."""
    result = loaded("backends")
    assert result["status"] == 0
    modules = result["modules"]
    assert isinstance(modules, list)
    assert [m for m in modules if m.startswith("gdbext.frontend")] == []
    assert [m for m in ("argparse", "gettext", "shutil") if m in modules] == []
    assert result["dataclasses"] == PLUGIN_DATACLASSES


@pytest.mark.parametrize("argv", [["--version", "walk"], ["--ver"]])
def test_version_answered_early_as_argparse_answers_it(argv: list[str]) -> None:
    """``--version`` first is answered before argparse; other spellings (``--ver``) still go
    through argparse's version action, with the same line."""
    result = loaded(*argv)
    assert (result["status"], result["out"]) == (0, f"gdbext {__version__}\n")


def test_backends_loads_the_plugins_but_no_engine() -> None:
    result = loaded("backends")
    assert result["status"] == 0
    out = result["out"]
    assert isinstance(out, str) and out.startswith("core ")
    modules = result["modules"]
    assert isinstance(modules, list) and "gdbext_sim.plugin" in modules
    assert engine_modules(modules) == []
    assert "gdbext_gdbstub.plugin" in modules  # listed, yet pwntools waits for a connection
    assert not [m for m in modules if m.startswith(("pwn", "gdbext_gdbstub.connection"))]
    # The targets' types (CPU state, mappers, address ranges, x86) are not needed to list them.
    ground = ("gdbext.addr", "gdbext.cpu", "gdbext.mapper")
    assert [m for m in modules if m in ground or m.startswith("gdbext.x86")] == []


@pytest.mark.parametrize("argv", [["--help"], ["walk", "--help"]])
def test_help_loads_no_engine(argv: list[str]) -> None:
    """``walk --help`` shows the walk's defaults (:mod:`gdbext.defaults`), but loads none of
    the code that walks, renders, reads a dump or simulates."""
    result = loaded(*argv)
    assert result["status"] == 0
    assert engine_modules(result["modules"]) == []


#: Builds the help of every command, as GDB and LLDB do when gdbext loads (a command's help is
#: given when it is registered), and prints the modules loaded.
EVERY_HELP = """
import json, sys
from gdbext.plugin.host import Host
from gdbext.session import Session
session = Session(Host.create())
helps = [session.help(name) for name in session.commands()]
print(json.dumps({"helps": len(helps), "modules": sorted(sys.modules)}))
"""


def test_every_commands_help_loads_none_of_the_work() -> None:
    """Loading gdbext into a debugger builds every command's help: that loads none of the
    code that does the commands' work (the walk, the search, the task list, the renderers)."""
    proc = subprocess.run(
        [sys.executable, "-c", EVERY_HELP], capture_output=True, text=True, check=True
    )
    result = json.loads(proc.stdout)
    assert result["helps"] >= 15
    work = (
        *ENGINE,
        "gdbext.x86.",
        "gdbext.audit.",
        "gdbext.render.",
        "gdbext.frontend.memsearch",
        "gdbext.frontend.memread",
        "gdbext.frontend.kaslr",
        "gdbext.frontend.addrmap",
        "gdbext.frontend.roots",
        "gdbext.frontend.tasks",
    )
    # The colour switch a front end reads; the built-in renderers' and rules' plugins.
    allowed = ("gdbext.render.common", "gdbext.render.builtin", "gdbext.audit.builtin")
    assert [m for m in result["modules"] if m.startswith(work) and m not in allowed] == []


#: What a walk of a dump with the default text output has no use for.
NOT_FOR_A_WALK = (
    "gdbext.audit.model",
    "gdbext.audit.rule",
    "gdbext.audit.engine",
    "gdbext.audit.context",
    "gdbext.render.jsonout",
    "gdbext.render.ptdump",
    "gdbext.render.audit",
    "gdbext_sim.scenario",
    "gdbext_gdb.gdb_link",
    "gdbext_lldb.lldb_",
    "gdbext_lldb.relay",
    "gdbext.linux.roots",
    "gdbext.linux.tasks",
    "gdbext.linux.symbols",
    "gdbext.frontend.tasks",
    "gdbext.frontend.selection",
    "gdbext.frontend.translation",
    "gdbext_gdb.gdb_commands",
    "hypothesis",
    "json",
    "textwrap",
    "importlib.metadata",
)

#: :data:`SCRIPT`, with the modules taken before the script's own ``json`` import.
SCRIPT_BEFORE_JSON = (
    """
import contextlib, io, sys
from gdbext.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    status = main(sys.argv[1:])
modules = sorted(sys.modules)
import json
"""
    + DECLARED
)


def test_walk_of_a_dump_loads_only_what_the_text_walk_uses(
    kernel_dump: Callable[[str], Path],
) -> None:
    """The README's first command (a walk of a dump, text output) loads the engine, the Linux
    layout, the dump reader and the text renderer, and nothing of the audit, the other
    renderers, the simulator or the debuggers (only their plugins, which every command loads)."""
    dump = kernel_dump("kaslr-pti")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT_BEFORE_JSON, "walk", str(dump)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout)
    assert result["status"] == 0
    assert result["out"] == cli_text(["walk", str(dump)])[1]
    modules = result["modules"]
    used = ("gdbext.x86.walk", "gdbext.linux.layout", "gdbext_dump.elf", "gdbext.render.text")
    assert [m for m in used if m not in modules] == []
    assert [m for m in modules if m.startswith(NOT_FOR_A_WALK)] == []
    # Plain classes and named tuples elsewhere: each dataclass costs start-up time.
    assert result["dataclasses"] == sorted(PLUGIN_DATACLASSES + WALK_DATACLASSES)


@pytest.mark.parametrize(
    ("argv", "built"), [(["backends"], []), (["walk", "x.elf"], ["gdbext walk"])]
)
def test_only_the_chosen_command_s_parser_is_built(
    argv: list[str], built: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command line's parser lists every command (``gdbext --help``), but makes the parser
    of the command run only."""
    from gdbext.frontend import parsing
    from gdbext.plugin.host import Host

    made: list[str] = []

    class Counted(parsing.Parser):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self.prog)

    monkeypatch.setattr(parsing, "Parser", Counted)
    parser = parsing.build_parser(Host.create())
    assert parsing.parse_command(parser, argv).command == argv[0]
    assert made == ["gdbext", "gdbext backends", *built]
    assert "walk" in parser.format_help() and made == ["gdbext", "gdbext backends", *built]
