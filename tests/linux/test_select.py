"""Choosing an address space by its owner (``--root``, ``--pid``, ``--comm``, ``--exe``) on a
simulated machine whose processes, tables and task list are built here: each option gives the
table built for that process, a name that matches two processes lists both, and an unknown one
says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import cli_text
from support.roots import KERNEL_ROOT, STACK_END, RootsMachine, build_roots_machine
from support.tasksim import TaskSpec, add_tasks

from gdbext.cli import main
from gdbext.errors import UsageError
from gdbext.frontend.commands import RootOptions, open_page_table, translate
from gdbext.frontend.roots import roots
from gdbext.frontend.selection import RootSelector, SelectionCandidate, SelectionError, resolve
from gdbext.frontend.tasks import tasks
from gdbext.plugin.target import Target
from gdbext.render.roots import render_text as render_roots
from gdbext.x86.paging import X86PageTable
from gdbext_sim.elfcore import write_qemu_elf_core

SLEEP, SH, JIT, SLEEP2 = 0x24_0000, 0x25_0000, 0x27_0000, 0x29_0000


def build_machine(levels: int = 4) -> RootsMachine:
    """The roots machine, a second ``/bin/sleep`` at :data:`SLEEP2`, and a task list: ``sh``
    (PTI), a kernel thread, ``sleep`` with a thread, ``jit``, another ``sleep``."""
    m = build_roots_machine(levels)
    m.add_process(SLEEP2, ("sleep", "5"), ("A=1",), "/bin/sleep")
    add_tasks(
        m,
        [
            TaskSpec(1, 1, "sh", SH),
            TaskSpec(2, 2, "kthreadd", None),
            TaskSpec(50, 50, "sleep", SLEEP),
            TaskSpec(51, 50, "sleep", SLEEP),
            TaskSpec(60, 60, "jit", JIT),
            TaskSpec(70, 70, "sleep", SLEEP2),
        ],
    )
    return m


def opened(
    target: Target, selector: RootSelector, options: RootOptions | None = None
) -> tuple[X86PageTable, tuple[str, ...]]:
    """The table ``selector`` chooses, opened as a command opens it, and the warnings."""
    chosen, warnings = resolve(target, selector, options or RootOptions())
    return open_page_table(target, chosen), warnings


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize(
    ("selector", "user_pgd", "root"),
    [
        (RootSelector(pid=50), False, SLEEP),
        (RootSelector(pid=51), False, SLEEP),  # a thread: its process's table
        (RootSelector(pid=1), False, SH),  # PTI: the kernel's table of the pair
        (RootSelector(pid=1), True, SH + 0x1000),  # --user-pgd: the user one
        (RootSelector(comm="jit"), False, JIT),
        (RootSelector(exe="jit"), False, JIT),
        (RootSelector(exe="/usr/local/bin/sh"), False, SH),  # the base name is compared
        (RootSelector(root=JIT), False, JIT),
    ],
)
def test_each_option_gives_the_table_built(
    levels: int, selector: RootSelector, user_pgd: bool, root: int
) -> None:
    m = build_machine(levels)
    target = m.target(KERNEL_ROOT)
    pt, warnings = opened(target, selector, RootOptions(user_pgd=user_pgd))
    assert (pt.root, pt.levels) == (root, levels)
    assert warnings == ()
    # The stack's top page is the one built for that process.
    want = m.processes[[p.root for p in m.processes].index(root & ~0x1000)]
    built = pt.translate(STACK_END - 0x1000).paddr
    assert m.memory.read(built + 0xFF8, 8) == bytes(8)
    assert want.filename.encode() in m.memory.read(built, 0x1000)


@pytest.mark.parametrize(
    ("selector", "candidates", "message"),
    [
        (
            RootSelector(comm="sleep"),
            [SelectionCandidate(SLEEP, 50, "sleep"), SelectionCandidate(SLEEP2, 70, "sleep")],
            "--comm sleep matches 2 address spaces: pid 50 sleep root 0x240000; "
            "pid 70 sleep root 0x290000",
        ),
        (
            RootSelector(exe="sleep"),
            [
                SelectionCandidate(SLEEP, 50, "sleep", "/bin/sleep"),
                SelectionCandidate(SLEEP2, 70, "sleep", "/bin/sleep"),
            ],
            "--exe sleep matches 2 address spaces",
        ),
        (RootSelector(pid=99), [], "--pid 99 matches no address space (no task has PID 99)"),
        (RootSelector(comm="nothing"), [], "--comm nothing matches no address space"),
        (RootSelector(exe="nothing"), [], "--exe nothing matches no address space"),
        (
            RootSelector(pid=2),
            [SelectionCandidate(None, 2, "kthreadd")],
            "--pid 2: pid 2 kthreadd no root: a kernel thread",
        ),
    ],
)
def test_no_match_or_several_is_one_error_with_the_candidates(
    selector: RootSelector, candidates: list[SelectionCandidate], message: str
) -> None:
    m = build_machine()
    with pytest.raises(SelectionError) as info:
        opened(m.target(KERNEL_ROOT), selector)
    assert list(info.value.candidates) == candidates
    assert str(info.value).startswith(message)
    assert info.value.exit_status == 2 and "\n" not in str(info.value)


def test_a_root_that_is_no_address_space_is_walked_with_a_warning() -> None:
    m = build_machine()
    target = m.target(KERNEL_ROOT)
    pt, (warning,) = opened(target, RootSelector(root=m.hostile[0]))
    assert pt.root == m.hostile[0]
    assert "is not an address space's top table" in warning and "outside RAM" in warning
    # A table whose kernel half is something else (an empty page; the kernel's maps 3
    # top-level ranges): how many entries differ.
    _, (warning,) = opened(target, RootSelector(root=0x30_0000))
    assert "3 of its 256 kernel-half entries differ" in warning
    # The PTI user table of an address space is one.
    assert opened(target, RootSelector(root=SH + 0x1000))[1] == ()
    with pytest.raises(UsageError, match="not a page-aligned"):
        opened(target, RootSelector(root=SH + 8))
    with pytest.raises(UsageError, match="--cr3 and --pid both"):
        opened(target, RootSelector(pid=1), RootOptions(cr3=SH))


def test_translate_by_pid_is_the_walk_of_that_table() -> None:
    m = build_machine()
    target = m.target(KERNEL_ROOT)
    by_pid = translate(
        target, [STACK_END - 8], resolve(target, RootSelector(pid=70), RootOptions())[0]
    )
    by_cr3 = translate(target, [STACK_END - 8], RootOptions(cr3=SLEEP2))
    assert by_pid.root == SLEEP2 and by_pid.outcomes == by_cr3.outcomes


def test_the_commands_take_the_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = build_machine()
    core = tmp_path / "select.elf"
    write_qemu_elf_core(core, m.memory, [m.cpu(KERNEL_ROOT)])
    dump = str(core)
    status, text = cli_text(["walk", dump, "--comm", "jit", "--json"])
    assert status == 0 and json.loads(text)["root"] == f"0x{JIT:x}"
    status, text = cli_text(["translate", dump, hex(STACK_END - 8), "--pid", "50", "--json"])
    assert status == 0 and f"0x{SLEEP:x}" in text
    status, text = cli_text(["read", dump, hex(STACK_END - 16), "16", "--exe", "jit"])
    assert status == 0 and "./jit" in text  # the file name execve left on its stack
    # diff takes each side's owner: the same as naming the two roots.
    by_owner = cli_text(["diff", dump, "--a-pid", "50", "--b-comm", "jit", "--json"])
    by_root = cli_text(["diff", dump, "--a-cr3", hex(SLEEP), "--b-cr3", hex(JIT), "--json"])
    assert by_owner == by_root and by_owner[0] == 1
    assert json.loads(by_owner[1])["a"]["root"] == f"0x{SLEEP:x}"
    for argv in (
        ["search", dump, "--pid", "60", "--string", "./jit"],
        ["who-maps", dump, "--root", hex(JIT), "0x1000000"],
        ["audit", dump, "--pid", "60"],
        ["kaslr", dump, "--pid", "60"],
    ):
        status, _ = cli_text(argv)
        assert status in (0, 1, 3), argv
    # Several candidates: exit status 2, one line on stderr.
    status = main(["walk", dump, "--comm", "sleep"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "pid 50 sleep root 0x240000" in err
    # A --root that is no address space's: walked, with the warning on stderr.
    status = main(["walk", dump, "--root", hex(m.hostile[0]), "--json"])
    assert "is not an address space's top table" in capsys.readouterr().err


def test_the_api_takes_the_options(tmp_path: Path) -> None:
    """``page_table(pid=..., comm=..., exe=...)`` gives the table built for that process, and
    an ambiguous name the error with the candidates."""
    import gdbext

    m = build_machine()
    core = tmp_path / "select.elf"
    write_qemu_elf_core(core, m.memory, [m.cpu(KERNEL_ROOT)])
    with gdbext.open(core) as target:
        assert target.page_table(pid=50).root == SLEEP
        assert target.page_table(pid=1, user_pgd=True).root == SH + 0x1000
        assert target.page_table(comm="jit").root == JIT
        jit = target.page_table(exe="jit")
        assert (jit.root, jit.warnings) == (JIT, ())
        # The process's own stack holds the file name execve left there.
        assert jit.translate(STACK_END - 8).paddr == translate_by_pid(core, 60)
        with pytest.raises(SelectionError, match="pid 50 sleep root 0x240000"):
            target.page_table(comm="sleep")


def translate_by_pid(core: Path, pid: int) -> int:
    """Where ``translate --pid PID`` puts the stack's last word (the command line's answer)."""
    status, text = cli_text(
        ["translate", str(core), hex(STACK_END - 8), "--pid", str(pid), "--json"]
    )
    assert status == 0
    return int(json.loads(text)[0]["paddr"], 16)


def test_roots_names_the_owning_tasks_and_tasks_the_address_spaces() -> None:
    m = build_roots_machine()
    m.add_process(SLEEP2, ("sleep", "5"), ("A=1",), "/bin/sleep")
    # jit has no task: its table is one no task owns (a freed table's look).
    add_tasks(m, [TaskSpec(1, 1, "sh", SH), TaskSpec(50, 50, "sleep", SLEEP),
                  TaskSpec(51, 50, "sleep", SLEEP), TaskSpec(70, 70, "sleep", SLEEP2),
                  TaskSpec(80, 80, "odd", 0x30_0000)])  # fmt: skip
    target = m.target(KERNEL_ROOT)
    found = roots(target)
    assert found.tasks_read and found.tasks_problem is None
    owners = {s.root: s.owners for s in found.spaces}
    assert owners == {KERNEL_ROOT: (), SH: ((1, "sh"),), SLEEP: ((50, "sleep"),),
                      SLEEP2: ((70, "sleep"),)}  # fmt: skip
    # No task owns jit's table and no CPU is on it: not an address space, but said.
    assert [s.root for s in found.unowned] == [JIT]
    assert found.unlisted == ((80, "odd", 0x30_0000),)
    lines = list(render_roots(found))
    sleep = "[50 sleep] sleep 100007  (/bin/sleep)"
    assert any(line.startswith("0x240000") and line.endswith(sleep) for line in lines)
    assert not any(line.startswith("0x270000") for line in lines)
    assert any(
        line.startswith("not listed: 1 table mapping user pages that no task owns")
        and line.endswith(": 0x270000")
        for line in lines
    )
    assert "task 80 odd: its root 0x300000 is not listed" in lines
    listed = tasks(target)
    assert {t.pid: listed.address_space(t.root) for t in listed.tasks.tasks} == {
        0: None, 1: "0x250000", 50: "0x240000", 51: "0x240000", 70: "0x290000", 80: None,
    }  # fmt: skip
    # Without BTF the stack identity is all there is, and nothing is said to be unowned.
    bare = build_roots_machine()
    found = roots(bare.target(KERNEL_ROOT))
    assert not found.tasks_read and "BTF" in (found.tasks_problem or "")
    assert not any("no task owns" in line for line in render_roots(found))


def test_the_debuggers_take_the_options(tmp_path: Path) -> None:
    """``pt-translate --pid`` and ``pt-walk --comm`` in GDB and LLDB: the command line's text,
    byte for byte (the options are declared once)."""
    import shutil

    from support import lldbrun
    from support.debuggers import gdb, marked, sections, without_progress

    m = build_machine()
    core = tmp_path / "select.elf"
    write_qemu_elf_core(core, m.memory, [m.cpu(KERNEL_ROOT)])
    commands = [f"translate --pid 50 {hex(STACK_END - 8)}", "walk --comm jit"]
    expected = []
    for command in commands:
        name, *words = command.split()
        status, text = cli_text([name, str(core), *words])
        assert status == 0
        expected.append(text)
    ran = 0
    if shutil.which("gdb") is not None:
        in_gdb = gdb(f"pt-backend core {core}", *marked(*(f"pt-{c}" for c in commands)))
        assert without_progress(in_gdb.stderr) == ""
        assert sections(in_gdb.stdout) == expected
        ran += 1
    if shutil.which("lldb") is not None:
        in_lldb = lldbrun.run([f"pt-backend core {core}", *(f"pt-{c}" for c in commands)])
        assert [r.out for r in in_lldb.results[1:]] == expected
        assert all(r.err == "" for r in in_lldb.results[1:])
        ran += 1
    if not ran:
        pytest.skip("neither gdb nor lldb")
