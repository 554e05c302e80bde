"""Structure offsets from DWARF: a C file shaped as Linux's structures, compiled with ``gcc -g``
(:mod:`tests.support.dwarfc`). The offsets read from its DWARF must be those the compiler's
``offsetof()`` prints; the task walk on the simulated kernel (:mod:`tests.support.tasksim`),
its memory written at the compiled offsets, must give the tasks the same walk gives with the
BTF's offsets on a machine written at those. The "vmlinux" is linked 16 MiB below where the
simulated image is, so its ``init_task`` is found only once moved by the KASLR slide."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from support.cli import cli_text
from support.dwarfc import Compiled, compile_layout
from support.roots import KERNEL_ROOT, TEXT, RootsMachine, build_roots_machine
from support.tasksim import BTF_LAYOUT, DATA_PA, DATA_VA, INIT_TASK, TaskSpec, add_tasks

from gdbext.cli import main
from gdbext.errors import EXIT_BAD_INPUT, EXIT_NOT_FOUND, DwarfError
from gdbext.frontend.tasks import TasksOptions, tasks
from gdbext.linux.dwarf import load_dwarf_types
from gdbext.linux.tasks import TaskLayout, task_layout
from gdbext_sim.elfcore import write_qemu_elf_core

SLIDE = 16 << 20
SH, SLEEP, JIT = 0x25_0000, 0x24_0000, 0x27_0000
SPECS = [
    TaskSpec(1, 1, "sh", SH),
    TaskSpec(2, 2, "kthreadd", None),
    TaskSpec(50, 50, "sleep", SLEEP),
    TaskSpec(51, 50, "sleep", SLEEP),
    TaskSpec(60, 60, "jit", JIT),
]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Compiled:
    return compile_layout(tmp_path_factory.mktemp("dwarf"), INIT_TASK - SLIDE, TEXT - SLIDE)


def machine(layout: TaskLayout | None = None) -> RootsMachine:
    m = build_roots_machine()
    if layout is None:
        add_tasks(m, SPECS)
    else:
        add_tasks(m, SPECS, layout)
    return m


def listed(found: object) -> list[tuple[int, int, str, str, int | None]]:
    from gdbext.frontend.tasks import TasksResult

    assert isinstance(found, TasksResult)
    assert found.tasks.error is None
    return [(t.pid, t.tgid, t.comm, t.state, t.root) for t in found.tasks.tasks]


def test_dwarf_offsets_are_the_compilers(compiled: Compiled) -> None:
    types = load_dwarf_types(compiled.vmlinux)
    assert task_layout(types) == compiled.layout()
    truth = compiled.truth
    # Through the anonymous struct (thread_node), the anonymous union's neighbours, a typedef.
    assert types.member("task_struct", "thread_node.prev").offset == truth["thread_node"][0] + 8
    assert types.member("task_struct", "comm").size == 16
    assert types.member("task_struct", "pid").size == truth["pid"][1] == 4
    assert types.member("mm_struct", "pgd").offset == truth["mm_pgd"][0] != 0
    assert types.find("task_struct").size == truth["task_struct_size"][0]


@pytest.mark.parametrize(
    "debug", [("-gdwarf-2", "-gstrict-dwarf"), ("-gdwarf-4",), ("-gdwarf-5",)], ids=str
)
def test_each_dwarf_version_gives_the_compilers_offsets(
    debug: tuple[str, ...], tmp_path: Path
) -> None:
    # DWARF 2 writes member locations as expressions (DW_OP_plus_uconst), later ones as numbers.
    built = compile_layout(tmp_path, INIT_TASK, TEXT, debug)
    assert task_layout(load_dwarf_types(built.vmlinux)) == built.layout()


def test_bitfields_and_missing_members_are_refused(compiled: Compiled) -> None:
    types = load_dwarf_types(compiled.vmlinux)
    with pytest.raises(DwarfError, match="bitfield"):
        types.member("task_struct", "in_iowait")
    with pytest.raises(DwarfError, match=r"vmlinux: DWARF: task_struct has no 'state'"):
        types.member("task_struct", "state")
    with pytest.raises(DwarfError, match="no structure 'files_struct'"):
        types.member("files_struct", "count")


def test_a_vmlinux_without_debug_info_is_one_clear_error(
    compiled: Compiled, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    objcopy = shutil.which("objcopy")
    if objcopy is None:
        pytest.skip("objcopy is not installed: no stripped copy to make")
    stripped = tmp_path / "vmlinux-nodebug"
    subprocess.run([objcopy, "--strip-debug", str(compiled.vmlinux), str(stripped)], check=True)
    with pytest.raises(DwarfError, match=f"{stripped}: DWARF: no debug info"):
        load_dwarf_types(stripped)
    core = tmp_path / "core.elf"
    m = machine(compiled.layout())
    write_qemu_elf_core(core, m.memory, [m.cpu(KERNEL_ROOT)])
    status = main(["tasks", str(core), "--vmlinux", str(stripped)])
    out, err = capsys.readouterr()
    assert (status, out) == (EXIT_BAD_INPUT, "")
    assert len(err.splitlines()) == 1
    assert err.startswith(f"gdbext: {stripped}: DWARF: no debug info (.debug_info)")


def test_the_walk_gives_the_same_tasks_with_dwarf_as_with_btf(compiled: Compiled) -> None:
    want = listed(tasks(machine().target(KERNEL_ROOT)))
    assert [t[:3] for t in want] == [(0, 0, "swapper/0")] + [(s.pid, s.tgid, s.comm) for s in SPECS]
    assert compiled.layout() != BTF_LAYOUT
    target = machine(compiled.layout()).target(KERNEL_ROOT)
    # init_task searched for (swapper/0 at the DWARF's comm offset), then given.
    assert listed(tasks(target, TasksOptions(vmlinux=str(compiled.vmlinux)))) == want
    given = TasksOptions(vmlinux=str(compiled.vmlinux), init_task=INIT_TASK)
    got = tasks(target, given)
    assert listed(got) == want
    assert (got.dwarf, got.btf_at) == (str(compiled.vmlinux), None)


def test_cli_with_vmlinux_uses_its_slid_init_task(compiled: Compiled, tmp_path: Path) -> None:
    m = machine(compiled.layout())
    # init_task's comm renamed: the search for swapper/0 fails, the symbol does not.
    comm = INIT_TASK - DATA_VA + DATA_PA + compiled.layout().comm
    m.memory.write(comm, b"idle\0")
    core = tmp_path / "core.elf"
    write_qemu_elf_core(core, m.memory, [m.cpu(KERNEL_ROOT)])
    status, out = cli_text(["tasks", str(core), "--vmlinux", str(compiled.vmlinux), "--json"])
    assert status == 0, out
    doc = json.loads(out)
    assert (doc["dwarf"], doc["btf"]) == (str(compiled.vmlinux), None)
    assert doc["init_task"] == hex(INIT_TASK)
    assert [(t["pid"], t["comm"]) for t in doc["tasks"]] == [(0, "idle")] + [
        (s.pid, s.comm) for s in SPECS
    ]
    # Without the vmlinux, the BTF's offsets do not fit this memory: no init_task.
    assert main(["tasks", str(core)]) == EXIT_NOT_FOUND


def test_owner_options_with_vmlinux_take_its_offsets(compiled: Compiled, tmp_path: Path) -> None:
    """``--pid``/``--comm`` with ``--vmlinux`` read the task list with the DWARF's offsets:
    the table built for that process; without it, the BTF's do not fit this memory."""
    core = tmp_path / "core.elf"
    m = machine(compiled.layout())
    write_qemu_elf_core(core, m.memory, [m.cpu(KERNEL_ROOT)])
    vmlinux = ["--vmlinux", str(compiled.vmlinux)]
    status, out = cli_text(["walk", str(core), "--pid", "50", *vmlinux, "--json"])
    assert (status, json.loads(out)["root"]) == (0, hex(SLEEP))
    status, out = cli_text(["walk", str(core), "--comm", "jit", *vmlinux, "--json"])
    assert (status, json.loads(out)["root"]) == (0, hex(JIT))
    assert main(["walk", str(core), "--pid", "50"]) != 0


def test_system_map_gives_init_task_and_the_btf_the_offsets(tmp_path: Path) -> None:
    m = machine()
    m.memory.write(INIT_TASK - DATA_VA + DATA_PA + BTF_LAYOUT.comm, b"idle\0")
    core = tmp_path / "core.elf"
    write_qemu_elf_core(core, m.memory, [m.cpu(KERNEL_ROOT)])
    system_map = tmp_path / "System.map"
    # Linked 16 MiB lower: the slide moves init_task to where the image is.
    system_map.write_text(f"{TEXT - SLIDE:x} T _text\n{INIT_TASK - SLIDE:x} D init_task\n")
    status, out = cli_text(["tasks", str(core), "--system-map", str(system_map), "--json"])
    assert status == 0, out
    doc = json.loads(out)
    assert doc["dwarf"] is None and doc["btf"] is not None
    assert [(t["pid"], t["comm"]) for t in doc["tasks"]] == [(0, "idle")] + [
        (s.pid, s.comm) for s in SPECS
    ]
