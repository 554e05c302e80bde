"""The debugger-agnostic front end (:mod:`gdbext.session`), without a debugger.

Outputs are compared with the command line's (:func:`gdbext.cli.run`, what ``gdbext`` runs) on
the same dump or scenario; translations with the engine's; target lifetimes and command scopes
through a recording backend plugin.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from depth import FULL, kernels

from gdbext import cli
from gdbext.errors import (
    InputError,
    NotFoundError,
    NotMappedError,
    PluginError,
    UntranslatedError,
    UsageError,
)
from gdbext.frontend import commands
from gdbext.frontend.completion import Completion, complete_path
from gdbext.frontend.parsing import build_command_parser
from gdbext.frontend.progress import PROGRESS_LINE
from gdbext.plugin.hookspecs import hookimpl
from gdbext.plugin.host import Host
from gdbext.plugin.target import BackendInfo, BackendOption, OpenRequest, Target
from gdbext.render.common import ANSI as ANSI_STYLE
from gdbext.session import Selection, Session
from gdbext.x86.records import LeafRun
from gdbext_sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "fixtures" / "scenarios" / "demo.json"
LA57 = ROOT / "fixtures" / "scenarios" / "la57.json"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STYLE = ANSI_STYLE


class Recorder:
    """A backend plugin (``rec``: the simulator's scenario) that records opens, closes and
    command scopes; ``fail_reads`` makes its mapper raise that exception."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.fail_reads: BaseException | None = None
        self.opened = 0

    def _open(self, request: OpenRequest) -> Target:
        n = self.opened
        self.opened += 1
        self.events.append(f"open {n}")
        target = load_scenario(request.option("scenario")).to_target()
        recorder = self

        class Mapper:
            def read(self, paddr: int, size: int) -> bytes:
                if recorder.fail_reads is not None:
                    raise recorder.fail_reads
                return target.mapper.read(paddr, size)

            def write(self, paddr: int, data: bytes) -> None:
                target.mapper.write(paddr, data)

        @contextlib.contextmanager
        def scope() -> Iterator[None]:
            self.events.append(f"enter {n}")
            try:
                yield
            finally:
                self.events.append(f"exit {n}")

        return dataclasses.replace(
            target,
            backend="rec",
            mapper=Mapper(),
            command_scope=scope,
            close=lambda: self.events.append(f"close {n}"),
        )

    @hookimpl
    def gdbext_backends(self) -> Sequence[BackendInfo]:
        return [
            BackendInfo(
                "rec",
                "recording simulator",
                self._open,
                [BackendOption("scenario", "FILE", "scenario", required=True)],
            )
        ]


@pytest.fixture(scope="module")
def host() -> Host:
    return Host.create()


def run(session: Session, name: str, *argv: str, colour: bool = False) -> tuple[int, str]:
    out = io.StringIO()
    status = session.run(name, list(argv), out, colour=colour)
    return status, out.getvalue()


def cli_output(host: Host, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = cli.run(list(argv), host, out)
    return status, out.getvalue()


def selected(host: Host, *argv: str, **kwargs: object) -> Session:
    session = Session(host, **kwargs)  # type: ignore[arg-type]
    session.backend(list(argv), io.StringIO())
    return session


# --- output equals the command line's ---------------------------------------------------------


@pytest.mark.parametrize("name", kernels())
def test_every_command_on_a_real_dump_equals_the_command_line(
    host: Host, kernel_dump: Callable[[str], Path], name: str
) -> None:
    """Each command in the session, as the command line prints it. A quick run leaves the whole
    walks in JSON, ``qemu-tlb`` and ``ptdump`` to the GDB and LLDB tests of every command, which
    run them through this session on the same dump."""
    dump = str(kernel_dump(name))
    session = selected(host, "core", dump)
    cases: list[tuple[str, list[str]]] = [
        ("walk", []),
        ("walk", ["--kernel", "--filter", "x", "--no-merge"]),
        ("walk", ["--range", "0xffffffff80000000-0xffffffffc0000000", "--labels", "none"]),
        ("translate", ["0x400000", "0xffffffff81000000", "--json"]),
        ("info", []),
        ("heap", ["--memmap", "e820"]),
    ]
    if FULL:
        cases += [("walk", ["--format", f]) for f in ("json", "qemu-tlb", "ptdump")]
        if name == "kaslr-pti":
            cases.append(("walk", ["--user-pgd", "--format", "qemu-tlb"]))
    for command, argv in cases:
        expected = cli_output(host, command, dump, *argv)
        assert run(session, f"pt-{command}", *argv) == expected, (command, argv)
        assert expected[1].count("\n") > 0


def test_qemu_tlb_equals_the_committed_qemu_golden(
    host: Host, kernel_dump: Callable[[str], Path]
) -> None:
    import lzma

    session = selected(host, "core", str(kernel_dump("la57")))
    status, text = run(session, "pt-walk", "--format", "qemu-tlb")
    golden = lzma.decompress((ROOT / "fixtures/kernels/la57.info-tlb.txt.xz").read_bytes())
    assert status == 0
    assert text.splitlines() == [line for line in golden.decode().splitlines() if line]


def test_exit_statuses(host: Host) -> None:
    session = selected(host, "sim", "--scenario", str(DEMO))
    # 1: not mapped; the output says so.
    status, text = run(session, "pt-translate", "0x400000", "0x1000")
    assert status == 1
    assert text.startswith("0x0000000000400000 -> 0x1000000  4K page  r-x user\n")
    assert "0x1000 is not mapped" in text
    # 1: nothing passes the filter.
    status, text = run(session, "pt-walk", "--range", "0x0-0x600000", "--filter", "w")
    assert status == 1 and text.endswith("# 0 lines, 0 leaf entries, 0 anomalies; 4-level paging, "
                                         "root 0xffff000\n")  # fmt: skip
    # 1: errors that say nothing is there are the result.
    assert run(session, "pt-walk", "--has", "0x1000") == (
        1,
        "0x1000 is not mapped: its PD entry is not present (value 0x0)\n",
    )
    # 2: raised, after the output.
    out = io.StringIO()
    with pytest.raises(
        UntranslatedError, match=r"^pt-translate: 0x800000000000 is not canonical for 48-bit"
    ):
        session.run("pt-translate", ["0x400000", "0x800000000000"], out)
    # The error is the exception's, not the output's; the mapped address is output.
    assert "not canonical" not in out.getvalue()
    assert out.getvalue().startswith("0x0000000000400000 -> ")


def test_usage_errors_name_the_command(host: Host) -> None:
    session = selected(host, "sim", "--scenario", str(DEMO))
    for argv, message in [
        (["--bogus"], "pt-walk: unrecognized arguments: --bogus"),
        (["--format", "nope"], "pt-walk: argument --format: invalid choice"),
        (["--range", "zz"], "pt-walk: argument --range"),
        (["--cpu", "3"], "there is no CPU 3"),
    ]:
        with pytest.raises(UsageError, match=re.escape(message)):
            session.run("pt-walk", argv, io.StringIO())
    with pytest.raises(UsageError, match="pt-translate: argument VADDR: not a number: zz"):
        session.run("pt-translate", ["zz"], io.StringIO())
    with pytest.raises(UsageError, match="pt-translate: the following arguments are required"):
        session.run("pt-translate", [], io.StringIO())


def test_help(host: Host) -> None:
    session = Session(host)
    text = session.help("pt-walk")
    first, _, rest = text.partition("\n\n")
    assert first == "Walk a page table: every mapping, merged into ranges (as `gdbext walk`)."
    assert rest.startswith("usage: pt-walk ")
    for option in ("--format", "--filter", "--range", "--has", "--no-merge", "--cr3", "--kernel",
                   "--user-pgd", "--cpu", "--labels", "qemu-tlb", "ptdump"):  # fmt: skip
        assert option in rest
    assert "--backend" not in rest and "--scenario" not in rest  # pt-backend's business
    assert "usage: pt-backend [-h] [NAME [SOURCE] [backend options]]" in session.help("pt-backend")
    assert "--scenario FILE" in session.help("pt-backend")
    out = io.StringIO()
    assert session.run("pt-walk", ["--help"], out) == 0  # no backend needed
    assert out.getvalue() == session.parser("pt-walk").format_help()


# --- backend selection and target lifetime ----------------------------------------------------


def test_no_backend_is_one_line_naming_the_way_out(host: Host) -> None:
    session = Session(host, no_backend_hint="do this")
    with pytest.raises(UsageError, match=r"^no backend selected; do this$"):
        session.run("pt-walk", [], io.StringIO())
    with pytest.raises(UsageError, match="no backend selected"):
        session.phys(0)
    out = io.StringIO()
    session.backend([], out)
    lines = out.getvalue().splitlines()
    assert lines[-1] == "selected: none; do this"
    assert {line.split()[0] for line in lines[:-1]} == set(host.backends())


def test_selection_switch_closes_the_previous_target() -> None:
    rec = Recorder()
    host = Host.create(extra_plugins=[rec])
    session = Session(host)
    out = io.StringIO()
    session.backend(["rec", "--scenario", str(DEMO)], out)
    assert out.getvalue() == f"backend rec: {DEMO}\n"
    run(session, "pt-info")
    run(session, "pt-walk")
    assert rec.events == ["open 0", "enter 0", "exit 0", "enter 0", "exit 0"]  # opened once
    # A backend that does not open keeps the selection.
    with pytest.raises(UsageError, match="backend rec needs --scenario"):
        session.backend(["rec"], io.StringIO())
    with pytest.raises(PluginError, match="no backend named nope"):
        session.backend(["nope"], io.StringIO())
    with pytest.raises(UsageError, match="--scenario is an option of backend"):
        session.backend(["core", "x.elf", "--scenario", str(DEMO)], io.StringIO())
    assert session.selection == Selection("rec", OpenRequest(None, {"scenario": str(DEMO)}))
    session.backend(["rec", "--scenario", str(LA57)], io.StringIO())
    assert rec.events[-2:] == ["open 1", "close 0"]
    out = io.StringIO()
    session.backend([], out)
    lines = out.getvalue().splitlines()
    assert "* rec        recording simulator" in lines
    assert [line for line in lines if line.startswith("*")] == ["* rec        recording simulator"]
    assert lines[-1] == f"selected: rec --scenario {LA57}"
    session.close()
    assert rec.events[-1] == "close 1"


def test_live_backends_open_for_every_command_and_scopes_always_exit() -> None:
    rec = Recorder()
    host = Host.create(extra_plugins=[rec])
    default = Selection("rec", OpenRequest(None, {"scenario": str(DEMO)}), "connected")
    session = Session(host, default=lambda: default, live_backends=("rec",))
    out = io.StringIO()
    session.backend([], out)
    assert out.getvalue().endswith(f"selected: rec --scenario {DEMO} (default: connected)\n")
    run(session, "pt-info")
    run(session, "pt-translate", "0x400000")
    assert rec.events == ["open 0", "enter 0", "exit 0", "close 0", "open 1", "enter 1", "exit 1"]
    del rec.events[:]
    # Failing commands, Ctrl-C and lost connections leave the scope too.
    with pytest.raises(UsageError):
        session.run("pt-walk", ["--cpu", "9"], io.StringIO())
    rec.fail_reads = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        session.run("pt-walk", [], io.StringIO())
    rec.fail_reads = ConnectionResetError("lost")
    with pytest.raises(ConnectionResetError):
        session.phys(0x400000)
    assert rec.events == [e for n in (2, 3, 4) for e in (f"close {n - 1}", f"open {n}",
                                                         f"enter {n}", f"exit {n}")]  # fmt: skip


def test_source_is_expanded_and_checked(
    host: Host, kernel_dump: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    session = Session(host)
    with pytest.raises(InputError, match=r"^/nonexistent/dump\.elf: cannot open"):
        session.backend(["core", "/nonexistent/dump.elf"], io.StringIO())
    with pytest.raises(UsageError, match="backend sim takes none"):
        session.backend(["sim", "x.json"], io.StringIO())
    dump = kernel_dump("4level")
    monkeypatch.setenv("HOME", str(dump.parent))
    session.backend(["core", "~/" + dump.name], io.StringIO())
    assert session.selection is not None and session.selection.request.source == str(dump)


# --- progress -------------------------------------------------------------------------------


def test_progress_reports_leaves_once_per_interval(host: Host) -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 0.3  # every look at the clock is 0.3 s later
        return now[0]

    reports: list[str] = []
    session = selected(
        host, "sim", "--scenario", str(DEMO), progress=reports.append, progress_after=1.0,
        clock=clock,
    )  # fmt: skip
    status, text = run(session, "pt-walk", "--format", "qemu-tlb")
    assert status == 0 and text
    assert reports, "a walk that ran past a second reports"
    pattern = re.compile(r"^pt-walk: (\d+) leaves so far, \d+ s \(Ctrl-C interrupts\)$")
    counts = [int(m.group(1)) for m in map(pattern.match, reports) if m]
    assert len(counts) == len(reports) and counts == sorted(counts)
    # What tests (and log readers) filter progress by matches every report, and only them.
    assert all(PROGRESS_LINE.fullmatch(r) for r in reports)
    assert not PROGRESS_LINE.fullmatch("pt-walk: cannot read 0x1000: Input/output error")
    # Without a reporter nothing is wrapped or reported.
    quiet = selected(host, "sim", "--scenario", str(DEMO), clock=clock)
    assert run(quiet, "pt-walk", "--format", "qemu-tlb") == (status, text)


def test_kaslr_leaks_reports_progress_while_it_reads(
    host: Host, kernel_dump: Callable[[str], Path]
) -> None:
    """``pt-kaslr --leaks`` over every page of the kernel half (all of RAM through the direct
    map, each frame read once) reports progress from its reads as a walk does, and its output
    is the command line's."""
    now = [0.0]

    def clock() -> float:
        now[0] += 0.3  # every look at the clock is 0.3 s later
        return now[0]

    dump = str(kernel_dump("kaslr-pti"))

    def reported(*argv: str) -> tuple[str, list[str]]:
        reports: list[str] = []
        session = selected(
            host, "core", dump, progress=reports.append, progress_after=1.0, clock=clock
        )
        status, text = run(session, "pt-kaslr", *argv)
        assert status == 0
        assert cli_output(host, "kaslr", dump, *argv) == (0, text)
        return text, reports

    half = ("--kernel", "--all-pages", "--range", "0xffff800000000000-0xffffffffffffffff")
    _, alone = reported()
    text, leaks = reported("--leaks", *half)
    assert re.search(
        r"^leaks in 0xffff800000000000-0xffffffffffffffff .*: \d+ pointers$", text, re.M
    )
    assert all(re.fullmatch(r"pt-kaslr: \d+ s \(Ctrl-C interrupts\)", r) for r in leaks)
    # Its 128 MiB read in chunks of at most 1 MiB: a report every 4 reads, not only the
    # report's own walks.
    assert len(leaks) >= len(alone) + 25, (alone, leaks)


# --- $pt_phys, $pt_virt -----------------------------------------------------------------------


def test_phys_and_virt_on_a_real_dump(host: Host, kernel_dump: Callable[[str], Path]) -> None:
    dump = str(kernel_dump("kaslr-pti"))
    session = selected(host, "core", dump)
    target = session._open()
    pt = commands.open_page_table(target)
    leaves = [r for r in pt.iter_runs() if type(r) is LeafRun]
    for rec in leaves[:: max(1, len(leaves) // 50)]:
        vaddr = rec.vaddr + rec.size // 2 + 5
        paddr = pt.translate(vaddr).paddr
        assert session.phys(vaddr) == paddr
        first = min(
            r.vaddr + paddr - r.paddr for r in leaves if r.paddr <= paddr < r.paddr + r.size
        )
        assert session.virt(paddr) == first
        assert pt.translate(first).paddr == paddr
    with pytest.raises(NotMappedError, match="0x1000 is not mapped"):
        session.phys(0x1000)
    with pytest.raises(NotFoundError, match="physical 0x7ffffffff000 is not mapped"):
        session.virt(0x7FFFFFFFF000)


# --- completion -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("pt-walk", "--fo", Completion("--fo", ("--format",))),
        ("pt-walk", "--format q", Completion("q", ("qemu-tlb",))),
        ("pt-walk", "--format ", Completion("", ("json", "ptdump", "qemu-tlb", "text"))),
        ("pt-walk", "--labels l", Completion("l", ("linux",))),
        ("pt-walk", "--no", Completion("--no", ("--no-merge",))),
        ("pt-walk", "--cr3 ", Completion("")),
        ("pt-walk", "--cr3 0x1000 --us", Completion("--us", ("--user-pgd",))),
        ("pt-translate", "0x1000 ", Completion("")),
        ("pt-translate", "0x1000 --k", Completion("--k", ("--kernel",))),
        ("pt-heap", "--memmap ", Completion("", ("bootinfo", "e820", "json"))),
        ("pt-heap", "--memmap json fixtures/sc", Completion.path("fixtures/sc")),
        ("pt-heap", "--memmap e820 --a", Completion("--a", ("--at",))),
        ("pt-backend", "", Completion("", ("core", "gdb", "lldb", "sim"))),
        ("pt-backend", "co", Completion("co", ("core",))),
        ("pt-backend", "core fixtures/kernels/la57.e", Completion.path("fixtures/kernels/la57.e")),
        ("pt-backend", "sim --scenario fixtures/scen", Completion.path("fixtures/scen")),
        ("pt-backend", "sim --sc", Completion("--sc", ("--scenario",))),
    ],
)
def test_completion(
    host: Host, name: str, text: str, expected: Completion, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    session = Session(host)
    got = session.complete(name, text)
    if name == "pt-backend" and not text:
        expected = Completion("", tuple(sorted(host.backends())))
    assert got == expected


def test_file_names_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dumps").mkdir()
    for name in ("a.elf", "b.kdump", ".hidden"):
        (tmp_path / "dumps" / name).touch()
    monkeypatch.chdir(tmp_path)
    assert Completion.path("d") == Completion("d", ("dumps/",), filename=True)
    assert complete_path("dumps/") == ("dumps/a.elf", "dumps/b.kdump")
    assert complete_path("dumps/.") == ("dumps/.hidden",)
    assert complete_path(f"{tmp_path}/dumps/b") == (f"{tmp_path}/dumps/b.kdump",)
    assert complete_path("nowhere/x") == ()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert complete_path("~/dumps/a") == ("~/dumps/a.elf",)


def test_completion_of_an_empty_word_lists_the_options(host: Host) -> None:
    got = Session(host).complete("pt-walk", "")
    assert "--format" in got.candidates and "--filter" in got.candidates
    assert all(c.startswith("--") for c in got.candidates)


# --- colour -----------------------------------------------------------------------------------


def test_colour_marks_up_text_only(host: Host, kernel_dump: Callable[[str], Path]) -> None:
    session = selected(host, "core", str(kernel_dump("4level")))
    for argv in (["--format", "text"], ["--filter", "wx", "--labels", "linux"]):
        plain = run(session, "pt-walk", *argv)
        styled = run(session, "pt-walk", *argv, colour=True)
        assert styled[0] == plain[0]
        assert ANSI.sub("", styled[1]) == plain[1]
        assert f"{STYLE.section}---[ Low Kernel Mapping ]---" in styled[1] or "--filter" in argv
    for fmt in ("json", "qemu-tlb", "ptdump"):
        assert "\x1b" not in run(session, "pt-walk", "--format", fmt, colour=True)[1]
    translated = run(session, "pt-translate", "0x1", "0xffffffff81000000", colour=True)[1]
    assert translated.startswith("\x1b[33m0x0000000000000001: 0x1 is not mapped")


def test_colour_comes_from_the_renderers(host: Host, tmp_path: Path) -> None:
    """The text renderers style the fields they know (a W+X range's permissions, markers, the
    header and summary); the rest of the line is as without colour."""
    doc = json.loads(DEMO.read_text())
    # The kernel text writable: a W+X range.
    kernel_text = next(m for m in doc["mappings"] if m["vaddr"] == "0xffffffff81000000")
    kernel_text["flags"].append("WRITABLE")
    scenario = tmp_path / "wx.json"
    scenario.write_text(json.dumps(doc))
    session = selected(host, "sim", "--scenario", str(scenario))
    for command in (["pt-walk", "--labels", "linux"], ["pt-translate", "0xffffffff81000000"]):
        plain = run(session, *command)[1]
        styled = run(session, *command, colour=True)[1]
        assert ANSI.sub("", styled) == plain
        wx = [line for line in plain.splitlines() if " rwx kern" in line]
        assert len(wx) == 1
        assert wx[0].replace("rwx", f"{STYLE.wx}rwx{STYLE.reset}", 1) in styled.splitlines()
    walk = run(session, "pt-walk", "--labels", "linux", colour=True)[1]
    assert f"{STYLE.comment}# start" in walk
    assert f"{STYLE.section}---[ High Kernel Mapping ]---{STYLE.reset}" in walk.splitlines()


# --- the command line's pieces the front ends use -----------------------------------------------


def test_cli_run_on_a_given_target_leaves_it_open() -> None:
    rec = Recorder()
    host = Host.create(extra_plugins=[rec])
    target = host.backend("rec").open(OpenRequest(None, {"scenario": str(DEMO)}))
    out = io.StringIO()
    assert cli.run(["walk", "--format", "json"], host, out, target=target) == 0
    assert out.getvalue() == cli_output(host, "walk", "--backend", "sim", "--scenario",
                                        str(DEMO), "--format", "json")[1]  # fmt: skip
    assert rec.events == ["open 0"]  # not closed; the caller enters scopes itself
    with pytest.raises(UsageError, match=r"unrecognized arguments: x\.elf"):
        cli.run(["walk", "x.elf"], host, io.StringIO(), target=target)
    with pytest.raises(UsageError, match="--backend"):
        cli.run(["walk", "--backend", "sim"], host, io.StringIO(), target=target)
    with pytest.raises(UsageError, match="no command bogus"):
        build_command_parser(host, "bogus", prog="pt-bogus")


def test_progress_is_sparser_when_not_on_a_terminal() -> None:
    """Front ends report progress every second on a terminal, every 5 s into a file or pipe."""
    import os
    import pty

    from gdbext.frontend.progress import progress_after

    master, slave = pty.openpty()
    read, write = os.pipe()
    try:
        assert progress_after(slave) == 1.0
        assert progress_after(write) == 5.0
    finally:
        for fd in (master, slave, read, write):
            os.close(fd)
    assert progress_after(10_000) == 5.0  # not open
