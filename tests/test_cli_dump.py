"""The command line on dump files: the positional DUMP, root selection and frames not captured.

Dumps are written here from simulated machines (QEMU-format ELF cores, kdump-compressed files,
raw images) whose page tables the test builds; expected walks and translations are computed
from what the test mapped, or are the same command run on the simulator itself.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from gdbext import cli
from gdbext.cpu import CpuState
from gdbext.flags import PageTableFlags
from gdbext.frontend.parsing import build_parser
from gdbext.plugin.host import Host
from gdbext.x86.paging import X86PageTable
from gdbext_sim.elfcore import write_qemu_elf_core
from gdbext_sim.kdump import write_kdump_from_memory
from gdbext_sim.memory import SparsePhysMemory, TopDownFrameAllocator
from gdbext_sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "fixtures" / "scenarios" / "demo.json"
CR0, CR4, CR4_LA57, EFER = 0x80050033, 0x6A0 | 0x20, 1 << 12, 0xD01
KERNEL_MAP = 0xFFFFFFFF80000000
W, U, G, NX = 2, 4, 0x100, 1 << 63

Leaf = tuple[int, int, int, int]  # vaddr, paddr, page size, leaf flags (without P and PS)
QEMU_CHARS = [(63, "X"), (8, "G"), (7, "P"), (6, "D"), (5, "A"), (4, "C"), (3, "T"), (2, "U"),
              (1, "W")]  # fmt: skip


def qemu_lines(leaves: Sequence[Leaf]) -> list[str]:
    """``info tlb`` lines for leaves built by map_range (PS shown for large pages only)."""
    out = []
    for va, pa, size, flags in sorted(leaves):
        entry = flags | 1 | (0x80 if size > 4096 else 0)
        chars = "".join(c if entry >> bit & 1 else "-" for bit, c in QEMU_CHARS)
        out.append(f"{va:016x}: {pa:016x} {chars}")
    return out


@dataclass
class Machine:
    memory: SparsePhysMemory
    roots: dict[str, int]
    leaves: dict[str, list[Leaf]]


def pages(va: int, pa: int, count: int, flags: int, size: int = 4096) -> list[Leaf]:
    return [(va + i * size, pa + i * size, size, flags) for i in range(count)]


def two_address_spaces() -> Machine:
    """A PTI-like kernel PGD (8 KiB-aligned) with its user PGD right after it, a process's
    PGD, and a 5-level table, all in 16 MiB."""
    mem = SparsePhysMemory(16 << 20)
    alloc = TopDownFrameAllocator(mem)
    user, kernel = alloc.allocate_frame(), alloc.allocate_frame()
    process, la57 = alloc.allocate_frame(), alloc.allocate_frame()
    assert user is not None and kernel is not None and process is not None and la57 is not None
    assert kernel % 0x2000 == 0 and user == kernel + 0x1000
    plan = {
        "kernel": (kernel, 4, pages(0xFFFFFFFF81000000, 0x100000, 3, G)
                   + pages(0xFFFF888000000000, 0, 2, W | NX | G, 1 << 21)
                   + pages(0x400000, 0x300000, 2, U | NX)),
        "user": (user, 4, pages(0x400000, 0x300000, 2, U)
                 + pages(0xFFFFFE0000000000, 0x500000, 1, G)),
        "process": (process, 4, pages(0x7FFFF000, 0x600000, 4, U | W | NX)),
        "la57": (la57, 5, pages(0xFF11000000000000, 0, 4, W | NX, 1 << 21)
                 + pages(0x100000000000000 - 0x1000, 0x700000, 1, U)),
    }  # fmt: skip
    for root, levels, leaves in plan.values():
        pt = X86PageTable(mem, root, levels, allow_writes=True)
        for va, pa, size, flags in leaves:
            pt.map_range(va, pa, size, size, PageTableFlags(flags), alloc)
    return Machine(
        mem,
        {name: p[0] for name, p in plan.items()},
        {name: p[2] for name, p in plan.items()},
    )


def vmcoreinfo(root: int, levels: int | None = None, phys_base: int = 0x0) -> str:
    symbol = (root - phys_base + KERNEL_MAP) % (1 << 64)
    text = f"OSRELEASE=6.1.0-test\nSYMBOL(init_top_pgt)={symbol:x}\nNUMBER(phys_base)={phys_base}\n"
    if levels is not None:
        text += f"NUMBER(pgtable_l5_enabled)={int(levels == 5)}\n"
    return text + "KERNELOFFSET=0\n"


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), ""
    try:
        status = cli.run(argv, Host.create(), out)
    except Exception as exc:  # GdbextError: what main() would print
        status, err = getattr(exc, "exit_status", 99), str(exc)
    return status, out.getvalue(), err


@pytest.fixture(scope="module")
def spaces() -> Machine:
    return two_address_spaces()


@pytest.fixture(scope="module")
def core(spaces: Machine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ELF core with two CPUs: CPU 0 in the kernel PGD, CPU 1 in the process (PCID 5)."""
    path = tmp_path_factory.mktemp("core") / "two.elf"
    cpus = [
        CpuState(cr0=CR0, cr3=spaces.roots["kernel"], cr4=CR4, efer=EFER),
        CpuState(cr0=CR0, cr3=spaces.roots["process"] | 5, cr4=CR4 | (1 << 17), efer=EFER),
    ]
    write_qemu_elf_core(path, spaces.memory, cpus, vmcoreinfo=vmcoreinfo(spaces.roots["kernel"]))
    return path


# --- The positional DUMP ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_core(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "demo.elf"
    load_scenario(DEMO).write_core(path)
    return path


@pytest.mark.parametrize(
    "fmt", [["--format", "qemu-tlb"], ["--json"], ["--json", "--no-merge"], ["--labels", "none"]]
)
def test_walk_dump_equals_the_simulator(demo_core: Path, fmt: list[str]) -> None:
    sim = run(["walk", "--backend", "sim", "--scenario", str(DEMO), *fmt])
    assert sim[0] == 0
    for form in (
        ["walk", str(demo_core)],
        ["walk", "--backend", "core", str(demo_core)],
        ["walk", "--dump", str(demo_core)],
        ["walk", *fmt, str(demo_core)],
    ):
        assert run([*form, *fmt]) == sim, form


def test_translate_dump_then_addresses(demo_core: Path) -> None:
    addrs = ["0xffff888001234567", "0x400010", "0x500000"]
    sim = run(["translate", "--backend", "sim", "--scenario", str(DEMO), "--json", *addrs])
    assert sim[0] == 1
    assert run(["translate", str(demo_core), "--json", *addrs]) == sim
    assert run(["translate", "--json", "--dump", str(demo_core), *addrs]) == sim
    assert run(["translate", "--backend", "core", str(demo_core), *addrs, "--json"]) == sim
    # Addresses on both sides of an option.
    assert run(["translate", str(demo_core), addrs[0], "--json", *addrs[1:]]) == sim


def test_a_dump_named_like_a_number(
    demo_core: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from minimize import copy_sparse

    copy_sparse(demo_core, tmp_path / "0x1000")  # its 256 MiB are mostly holes: kept holes
    monkeypatch.chdir(tmp_path)
    status, out, _ = run(["translate", "./0x1000", "0x400010"])
    assert status == 0 and out.startswith("0x0000000000400010 -> 0x1000010")
    assert run(["translate", "--dump", "0x1000", "0x400010"])[:2] == (status, out)
    # Without ./ it is an address, and nothing says what to open.
    status, _, err = run(["translate", "0x1000", "0x400010"])
    assert status == 2 and "a DUMP or --backend NAME is required" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["walk"], "a DUMP or --backend NAME is required"),
        (["info", "{core}", "--backend", "sim"], "backend sim takes none"),
        (["walk", "{core}", "--scenario", "x.json"], "--scenario is an option of backend sim"),
        (["walk", "{core}", "--dump", "{core}"], "two dumps given"),
        (["translate", "{core}"], "at least one VADDR"),
        (["translate", "{core}", "0x1000", "zzz"], "not a number: zzz"),
        (["translate", "--backend", "sim", "--scenario", str(DEMO), "zzz"], "not a number"),
        (["walk", "{core}", "--kernel", "--cr3", "0x1000"], "not allowed with"),
        (["walk", "{core}", "--bogus"], "unrecognized arguments: --bogus"),
        (["walk", "/nonexistent/dump.elf"], "/nonexistent/dump.elf"),
        (["heap", "--memmap", "json", "f.json", "{core}"], "put the DUMP before the options"),
        (["heap", "{core}", "--memmap", "e820", "x"], "--memmap e820 takes no FILE"),
        (["walk", "{core}", "--labels", "fancy"], "invalid choice"),
    ],
)
def test_usage_errors(core: Path, argv: list[str], message: str) -> None:
    status, out, err = run([a.replace("{core}", str(core)) for a in argv])
    assert status == 2 and message in err and "\n" not in err and out == ""


def test_backend_options_of_the_core_plugin_are_offered() -> None:
    parser = build_parser(Host.create())
    args = parser.parse_args(["walk", "img", "--format-in", "raw", "--base", "0x100000"])
    assert (args.dump, args.backend_format_in, args.backend_base) == ("img", "raw", "0x100000")


def test_raw_image_with_format_in_and_cr3(spaces: Machine, tmp_path: Path) -> None:
    path = tmp_path / "ram.img"
    path.write_bytes(spaces.memory.read(0, 16 << 20))
    root = spaces.roots["process"]
    status, out, _ = run(["walk", str(path), "--format-in", "raw", "--cr3", hex(root),
                          "--format", "qemu-tlb"])  # fmt: skip
    assert status == 0 and out.splitlines() == qemu_lines(spaces.leaves["process"])


# --- Root selection -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "space"),
    [
        ([], "kernel"),
        (["--cpu", "0"], "kernel"),
        (["--cpu", "1"], "process"),
        (["--cr3", "{process}"], "process"),
        (["--cr3", "{process}+0x805"], "process"),  # PCID and PWT bits are masked
        (["--kernel"], "kernel"),
        (["--kernel", "--cpu", "1"], "kernel"),
        (["--user-pgd"], "user"),
        (["--kernel", "--user-pgd"], "user"),
        (["--cr3", "{kernel}", "--user-pgd"], "user"),
        (["--cr3", "{user}", "--user-pgd"], "user"),  # already the user half
        (["--cr3", "{la57}", "--levels", "5"], "la57"),
    ],
)
def test_root_selection(core: Path, spaces: Machine, args: list[str], space: str) -> None:
    def fill(arg: str) -> str:
        for name, root in spaces.roots.items():
            if f"{{{name}}}+" in arg:
                return hex(root + int(arg.split("+")[1], 16))
            arg = arg.replace(f"{{{name}}}", hex(root))
        return arg

    status, out, _ = run(["walk", str(core), "--format", "qemu-tlb", *map(fill, args)])
    assert status == 0
    assert out.splitlines() == qemu_lines(spaces.leaves[space])


def test_cpu_out_of_range(core: Path) -> None:
    status, _, err = run(["walk", str(core), "--cpu", "2"])
    assert status == 2 and "there is no CPU 2; this target has 2" in err


@pytest.mark.parametrize("flattened", [False, True])
def test_kernel_levels_from_vmcoreinfo(spaces: Machine, tmp_path: Path, flattened: bool) -> None:
    """A 5-level kernel table (pgtable_l5_enabled=1) while the CPU says 4 levels; phys_base."""
    path = tmp_path / "la57.kdump"
    cpus = [CpuState(cr0=CR0, cr3=spaces.roots["process"], cr4=CR4, efer=EFER)]
    info = vmcoreinfo(spaces.roots["la57"], levels=5, phys_base=0x200000)
    write_kdump_from_memory(path, spaces.memory, cpus, vmcoreinfo=info, flattened=flattened)
    status, out, _ = run(["walk", str(path), "--kernel", "--format", "qemu-tlb"])
    assert status == 0 and out.splitlines() == qemu_lines(spaces.leaves["la57"])
    status, out, _ = run(["walk", str(path), "--format", "qemu-tlb"])
    assert out.splitlines() == qemu_lines(spaces.leaves["process"])
    # --levels overrides the kernel's: walked as 4-level, the table maps other addresses.
    status, out, _ = run(["walk", str(path), "--kernel", "--levels", "4", "--json"])
    assert json.loads(out)["levels"] == 4
    status, out, _ = run(["translate", str(path), "--kernel", "0xff11000000201234"])
    assert status == 0 and out.startswith("0xff11000000201234 -> 0x201234  2M page  rw- kern")


@pytest.mark.parametrize(
    ("info", "message"),
    [
        (None, "--kernel needs the dump's VMCOREINFO, and {path} has none"),
        ("OSRELEASE=6.1\n", "lacks SYMBOL(init_top_pgt) and NUMBER(phys_base)"),
        ("SYMBOL(init_top_pgt)=ffffffff82a10000\n", "lacks NUMBER(phys_base)"),
    ],
)
def test_kernel_without_vmcoreinfo(
    spaces: Machine, tmp_path: Path, info: str | None, message: str
) -> None:
    path = tmp_path / "plain.elf"
    cpus = [CpuState(cr0=CR0, cr3=spaces.roots["kernel"], cr4=CR4, efer=EFER)]
    write_qemu_elf_core(path, spaces.memory, cpus, vmcoreinfo=info)
    status, _, err = run(["walk", str(path), "--kernel"])
    assert status == 2 and message.replace("{path}", str(path)) in err
    assert "--cr3 ADDR" in err


# --- Frames not in the dump -----------------------------------------------------------------------


def test_translate_reports_frames_not_in_the_dump(spaces: Machine, tmp_path: Path) -> None:
    path = tmp_path / "excluded.kdump"
    cpus = [CpuState(cr0=CR0, cr3=spaces.roots["kernel"], cr4=CR4, efer=EFER)]
    # The kernel text's second page (0x101000) is in RAM but excluded from the dump.
    write_kdump_from_memory(path, spaces.memory, cpus, excluded=[0x101], flattened=False)
    args = ["translate", str(path), "0xffffffff81000010", "0xffffffff81001010"]
    status, out, _ = run(args)
    assert status == 0
    heads = [line for line in out.splitlines() if line.startswith("0x")]
    assert heads == [
        "0xffffffff81000010 -> 0x100010  4K page  r-x kern",
        "0xffffffff81001010 -> 0x101010  4K page  r-x kern  (mapped; the frame is not in the dump)",
    ]
    status, out, _ = run([*args, "--json"])
    assert status == 0
    assert [(r["paddr"], r["captured"]) for r in json.loads(out)] == [
        ("0x100010", True),
        ("0x101010", False),
    ]


def test_a_table_not_in_the_dump_is_its_own_result(spaces: Machine, tmp_path: Path) -> None:
    path = tmp_path / "no-table.kdump"
    cpus = [CpuState(cr0=CR0, cr3=spaces.roots["process"], cr4=CR4, efer=EFER)]
    pt = X86PageTable(spaces.memory, spaces.roots["process"], 4)
    leaf_table = pt.translate(0x7FFFF000).steps[-1].table
    write_kdump_from_memory(path, spaces.memory, cpus, excluded=[leaf_table >> 12])
    status, out, _ = run(["translate", str(path), "--json", "0x7ffff000"])
    assert status == 1
    [record] = json.loads(out)
    assert "not captured in the dump (unknown whether it is mapped)" in record["error"]
    assert "is not mapped" not in record["error"]


def test_dump_paths_with_spaces_and_relative(demo_core: Path, tmp_path: Path) -> None:
    spaced = tmp_path / "a dump.elf"
    os.symlink(demo_core, spaced)
    status, out, _ = run(["walk", str(spaced), "--range", "0x400000-0x402000", "--json"])
    assert status == 0 and len(json.loads(out)["mappings"]) == 1


def test_default_cpu_is_the_targets_selected_one() -> None:
    """Without --cpu the root is the selected CPU's (hint ``selected_cpu``: GDB's selected
    thread on a live target), else CPU 0's; --cpu N always wins."""
    import dataclasses

    from gdbext.cpu import CpuState
    from gdbext.frontend import commands
    from gdbext_sim.scenario import load_scenario

    target = load_scenario(str(DEMO)).to_target()
    cpu0 = target.cpu(0)
    assert cpu0.cr3 is not None
    other = CpuState(cr0=cpu0.cr0, cr3=cpu0.cr3 + 0x1000, cr4=cpu0.cr4, efer=cpu0.efer)
    two = dataclasses.replace(target, cpus=[cpu0, other])
    assert commands.cpu_index(two, commands.RootOptions()) == 0
    selected = dataclasses.replace(two, facts=dataclasses.replace(two.facts, selected_cpu=1))
    assert commands.cpu_index(selected, commands.RootOptions()) == 1
    assert commands.cpu_index(selected, commands.RootOptions(cpu=0)) == 0
    # open_page_table follows it (the root is only read when walking).
    assert commands.open_page_table(selected, commands.RootOptions()).root == other.root
    assert commands.open_page_table(selected, commands.RootOptions(cpu=0)).root == cpu0.root


def test_info_says_when_paging_is_off() -> None:
    """CR0.PG=0 (or CR4.PAE=0) in a dump's CPU state: ``info`` says the tables CR3 names are
    not in use instead of claiming 4-level paging."""
    import dataclasses

    from gdbext.cpu import CR0_PG, CR4_PAE, CpuState
    from gdbext.frontend import commands
    from gdbext.render.text import render_info
    from gdbext_sim.scenario import load_scenario

    target = load_scenario(str(DEMO)).to_target()
    cpu = target.cpu(0)
    assert cpu.cr0 is not None and cpu.cr4 is not None
    off = CpuState(cr0=cpu.cr0 & ~CR0_PG, cr3=cpu.cr3, cr4=cpu.cr4, efer=cpu.efer)
    no_pae = CpuState(cr0=cpu.cr0, cr3=cpu.cr3, cr4=cpu.cr4 & ~CR4_PAE, efer=cpu.efer)
    lines = list(render_info(commands.info(dataclasses.replace(target, cpus=[cpu, off, no_pae]))))
    paging = [line for line in lines if line.startswith("  paging:")]
    assert paging == [
        "  paging:    4-level",
        "  paging:    4-level (but CR0.PG=0: paging is off, CR3's tables are not in use)",
        "  paging:    4-level (but CR4.PAE=0: 32-bit paging, which gdbext does not walk)",
    ]
