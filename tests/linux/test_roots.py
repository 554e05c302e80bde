"""``roots`` on simulated machines whose address spaces are known: every table built is
listed, each once (a PTI pair as one), the look-alikes are not, and each process is named by
the argv its stack was built with."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from support.cli import cli_text
from support.roots import KERNEL_ROOT, STACK_END, build_roots_machine, exec_stack

from gdbext.frontend.roots import RootsOptions, roots
from gdbext.geometry import PAGE_SIZE
from gdbext.linux.roots import exec_identity
from gdbext_sim.elfcore import write_qemu_elf_core

KERNEL_MAP = 0xFFFFFFFF80000000


@pytest.mark.parametrize("levels", [4, 5])
def test_every_table_built_is_listed_and_nothing_else(levels: int) -> None:
    m = build_roots_machine(levels)
    sh = m.processes[1]
    result = roots(m.target(sh.root | 0x1000))  # stopped in user mode: CR3 is the user table
    assert result.levels == levels and result.kernel_root == sh.root
    assert "CPU 0's CR3" in result.kernel_source and "PTI kernel twin" in result.kernel_source
    # Without VMCOREINFO the kernel's table is known by its half only: with an empty user
    # half, it is told from the tables of processes that exited by nothing.
    ids = [s.root for s in result.spaces]
    assert ids == [p.root for p in m.processes]
    assert [s.id for s in result.spaces] == [f"0x{r:x}" for r in ids]
    by_root = {s.root: s for s in result.spaces}
    for p in m.processes:
        space = by_root[p.root]
        assert not space.kernel
        assert space.user_root == (p.root + 0x1000 if p.pti else None)
        assert space.usage.bytes == space.usage.user_bytes == p.bytes
        assert space.usage.wx_pages == p.wx_bytes // PAGE_SIZE
        assert space.identity is not None
        assert space.identity.filename == p.filename
        assert space.identity.argv == p.argv
        assert space.identity.envc == len(p.envp)
        assert space.identity.page == STACK_END - PAGE_SIZE
    assert by_root[sh.root].cpus == (0,)
    # The look-alikes: counted and said why, never listed; the exited process's table apart.
    assert sorted(r.table for r in result.rejected) == sorted(m.hostile)
    assert result.rejected_count == len(m.hostile)
    reasons = {r.table: r.reason for r in result.rejected}
    assert "outside RAM" in reasons[m.hostile[0]]
    assert "reserved bits 0x80" in reasons[m.hostile[1]]
    assert list(result.empty) == [KERNEL_ROOT, *m.empty]
    assert not any(s.kernel for s in result.spaces)
    assert result.bytes_scanned == 64 << 20


def test_without_pti_the_twin_of_a_table_is_not_its_user_table() -> None:
    m = build_roots_machine()
    result = roots(m.target(KERNEL_ROOT))
    # 0x240000's twin 0x241000 holds whatever the allocator put there: no PTI pair.
    by_root = {s.root: s for s in result.spaces}
    assert by_root[m.processes[0].root].user_root is None
    assert by_root[KERNEL_ROOT].cpus == (0,) and by_root[KERNEL_ROOT].kernel
    assert by_root[m.processes[0].root].cpus == ()
    assert list(result.empty) == m.empty


def test_the_identity_can_be_skipped() -> None:
    m = build_roots_machine()
    result = roots(m.target(KERNEL_ROOT), RootsOptions(identity=False))
    assert all(s.identity is None for s in result.spaces)


def test_a_stack_without_its_pointer_array_gives_the_file_name_only() -> None:
    data = exec_stack(STACK_END, ("sleep", "1"), ("A=b",), "/bin/sleep")
    top = data[PAGE_SIZE:]
    assert exec_identity(top, STACK_END - PAGE_SIZE) is not None  # the array is in the top page
    # Keep only the strings: the array and the auxiliary vector zeroed.
    strings_at = data.rindex(b"x86_64\0")
    bare = bytes(strings_at) + data[strings_at:]
    found = exec_identity(bare, STACK_END - len(bare))
    assert found is not None and found.filename == "/bin/sleep" and found.argv is None
    assert exec_identity(bytes(PAGE_SIZE), 0) is None
    assert exec_identity(b"\x0f\x05" * 2044 + b"\0" * 8, 0) is None


def test_a_page_nothing_touched_between_the_strings_and_the_array_is_read_as_zeros() -> None:
    """``arch_align_stack`` moves the stack pointer down by up to 8 KiB below exec's strings:
    a page inside that gap is never written, so not mapped. The argument array below it is
    still found (a real guest's process went unnamed when its stack was read down to the first
    unmapped page only)."""
    m = build_roots_machine()
    p = m.add_process(0x29_0000, ("sleep", "100009"), ("A=b",), "/bin/sleep", untouched=True)
    by_root = {s.root: s for s in roots(m.target(KERNEL_ROOT)).spaces}
    identity = by_root[p.root].identity
    assert identity is not None and identity.page == STACK_END - PAGE_SIZE
    assert (identity.filename, identity.argv, identity.envc) == ("/bin/sleep", p.argv, 1)
    assert by_root[p.root].usage.bytes == p.bytes


def test_the_command_line_on_a_dump_with_vmcoreinfo(tmp_path: Path) -> None:
    m = build_roots_machine()
    core = tmp_path / "roots.elf"
    symbol = KERNEL_ROOT + KERNEL_MAP
    info = f"OSRELEASE=6.1.0-test\nSYMBOL(init_top_pgt)={symbol:x}\nNUMBER(phys_base)=0\n"
    write_qemu_elf_core(core, m.memory, [m.cpu(m.processes[2].root)], vmcoreinfo=info)
    status, text = cli_text(["roots", str(core), "--json"])
    assert status == 0
    doc = json.loads(text)
    assert doc["kernel_source"] == "VMCOREINFO" and doc["kernel_root"] == f"0x{KERNEL_ROOT:x}"
    spaces = {s["id"]: s for s in doc["address_spaces"]}
    assert set(spaces) == {f"0x{r:x}" for r in (KERNEL_ROOT, *(p.root for p in m.processes))}
    jit = spaces[f"0x{m.processes[2].root:x}"]
    assert jit["identity"]["argv"] == ["./jit"] and jit["wx_pages"] == 3 and jit["cpus"] == [0]
    assert [s["kind"] for s in doc["address_spaces"]] == ["kernel"] + ["process"] * 3
    sh = spaces[f"0x{m.processes[1].root:x}"]
    assert sh["user_root"] == f"0x{m.processes[1].root + 0x1000:x}"
    assert doc["rejected_count"] == 2 and doc["empty"] == [f"0x{m.empty[0]:x}"]
    status, text = cli_text(["roots", str(core)])
    lines = text.splitlines()
    assert status == 0 and lines[0].startswith("kernel root 0x200000 (VMCOREINFO), 4-level")
    assert any("sh -c 'sleep 100008' GDBEXT-ROOTS-X  (/bin/sh)" in line for line in lines)
    assert any(line.startswith("0x250000  0x250000+0x251000 (PTI)") for line in lines)
    assert any("not listed: 2 pages" in line for line in lines)
    # An explicit --cr3 is the reference, whatever VMCOREINFO says.
    status, text = cli_text(["roots", str(core), "--json", "--cr3", hex(m.processes[0].root)])
    doc = json.loads(text)
    assert status == 0 and doc["kernel_source"] == "--cr3"
    assert doc["kernel_root"] == f"0x{m.processes[0].root:x}"
    assert doc["empty"] == [f"0x{KERNEL_ROOT:x}", f"0x{m.empty[0]:x}"]


@pytest.mark.parametrize(
    ("name", "golden"),
    [("4level", "info-tlb"), ("kaslr-pti", "info-tlb-user"), ("la57", "info-tlb")],
)
def test_the_committed_dumps_hold_the_kernels_table_and_cpu_0s(
    name: str, golden: str, kernel_dump: Callable[[str], Path]
) -> None:
    """The minimized dumps keep only the tables reachable from CPU 0's CR3 and the kernel's
    root: those two are the address spaces, and CPU 0's maps in its user half what QEMU's
    ``info tlb`` of the table user mode runs on says."""
    from support.goldens import info_tlb, registers

    from gdbext_dump.dump import open_dump

    target = open_dump(str(kernel_dump(name)))
    try:
        result = roots(target)
        kernel_root = target.facts.kernel_root
    finally:
        if target.close is not None:
            target.close()
    cr3 = registers(name)["CR3"] & ~0xFFF
    assert result.kernel_source == "VMCOREINFO" and result.kernel_root == kernel_root
    assert [s.root for s in result.spaces] == sorted([kernel_root, cr3])
    process = next(s for s in result.spaces if s.root == cr3)
    assert process.cpus == (0,) and not process.kernel
    assert process.user_root == (cr3 | 0x1000 if name == "kaslr-pti" else None)
    user_end = 1 << (56 if name == "la57" else 47)
    tlb = {va: v for va, v in info_tlb(f"{name}.{golden}").items() if va < user_end}
    assert process.usage.bytes == len(tlb) * PAGE_SIZE  # 4 KiB leaves only in user space
    wx = [va for va, (_pa, flags) in tlb.items() if "W" in flags and "X" not in flags]
    assert process.usage.wx_pages == len(wx)
    assert process.identity is None  # the stacks were not kept


def test_a_table_linked_again_is_counted_not_walked_again() -> None:
    """Every user entry of one process links the same lower table (an alias bomb): the walk
    reads it once, and counts what each link maps."""
    from gdbext.mapper import read_u64, write_u64

    m = build_roots_machine()
    jit = m.processes[2]
    first = read_u64(m.memory, jit.root)  # links the tables of the text, data and W+X pages
    for i in range(1, 255):
        write_u64(m.memory, jit.root + 8 * i, first)
    below = 3 + 2 + 3  # pages under entry 0: text, data, W+X
    space = {s.root: s for s in roots(m.target(KERNEL_ROOT)).spaces}[jit.root]
    assert space.usage.bytes == (255 * below + 2 + 2) * PAGE_SIZE  # and the stack, the vDSO
    assert space.usage.wx_pages == 3
    assert space.identity is not None and space.identity.argv == ("./jit",)
