"""The LLDB backend in the real ``lldb`` against QEMU booting Debian's kernel (4-level, LA57,
KASLR + PTI; the session guests of ``tests/conftest.py``).

- ``pt-walk --format qemu-tlb`` equals ``monitor info tlb`` line for line, ``pt-translate``
  agrees with ``gva2gpa``;
- LLDB's output equals GDB's for the same frozen state, command by command (GDB leaves with
  ``disconnect``, which keeps the VM stopped; LLDB's detach resumes it);
- PhyMemMode is back after every command, LLDB's memory cache never serves bytes of the other
  mode, the table cache lasts one stop, ``pt-connect`` connects to a running VM, and a QEMU
  killed mid-command is one clean error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support import lldbrun
from support.debuggers import (
    GDB_NOISE,
    check_translations,
    gdb,
    marked,
    phymem_commands,
    probes_of,
    sections,
    tlb_lines,
    without_progress,
)
from support.lldblive import mode_of, page_table_of, words_at

from gdbext.formats.bootparams import BOOT_PARAMS, E820_ENTRY

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(not lldbrun.available(), reason="no lldb"),
]
TLB_LINE = re.compile(r"^[0-9a-f]{16}: [0-9a-f]{16} [-A-Z]{9}$", re.M)
#: The lines of ``pt-info`` that name the debugger (the rest is the same in GDB and LLDB).
NAMING_LINES = re.compile(r"^(backend|connection|vCPUs): .*$", re.M)


#: The map the kernel printed at boot (``e820__print_table``), end inclusive.
BIOS_E820 = re.compile(r"BIOS-e820: \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] (.+?)\s*$", re.M)
#: ``e820_print_type``'s names of the e820 types.
E820_NAMES = {1: "usable", 2: "reserved", 3: "ACPI data", 4: "ACPI NVS", 5: "unusable"}
#: Where ``struct boot_params`` (:mod:`gdbext.formats.bootparams`) holds ``e820_entries``,
#: the setup header's magic and ``e820_table``.
E820_ENTRIES, HDRS, E820_TABLE = (
    BOOT_PARAMS.offset(f) for f in ("e820_entries", "header", "e820_table")
)
#: ``__START_KERNEL_map``, where the kernel image is mapped (its first GiB).
START_KERNEL_MAP = 0xFFFFFFFF80000000


def boot_params_at(guest: QemuGuest, tlb: list[str], tmp_path: Path) -> int:
    """The physical address of the kernel's own ``boot_params`` in the stopped ``guest``,
    found here without gdbext: in RAM as QEMU saves it (``pmemsave``), every ``"HdrS"`` at
    +0x202 whose e820 table is the map the kernel printed on its console (``BIOS-e820``);
    of those, the one in the kernel image (``.bss``), i.e. at or above the physical address
    QEMU gives the image's first mapping (``info tlb`` ``tlb``, ``gva2gpa``). The setup code's
    copy sits below 1 MiB."""
    printed = [(int(start, 16), int(end, 16) + 1, name)
               for start, end, name in BIOS_E820.findall(guest.serial_log())]  # fmt: skip
    assert printed, "no BIOS-e820 lines on the console"
    ram = tmp_path / "ram.bin"
    guest.pmemsave(ram, 0, guest.config.memory_bytes)
    data = ram.read_bytes()
    ram.unlink()
    found = []
    pos = data.find(b"HdrS")
    while pos >= 0:
        base = pos - HDRS
        count = data[base + E820_ENTRIES] if base >= 0 else 0
        if 0 < count <= 128 and base + E820_TABLE + count * E820_ENTRY.size <= len(data):
            table = [E820_ENTRY.struct.unpack_from(data, base + E820_TABLE + i * E820_ENTRY.size)
                     for i in range(count)]  # fmt: skip
            if [(a, a + n, E820_NAMES.get(t, f"type {t}")) for a, n, t in table] == printed:
                found.append(base)
        pos = data.find(b"HdrS", pos + 1)
    image_va = min(va for va in (int(line[:16], 16) for line in tlb) if va >= START_KERNEL_MAP)
    image = guest.gva2gpa(image_va)
    assert image is not None
    kernels = [base for base in found if base >= image]
    assert len(kernels) == 1, (f"boot_params with the printed e820 map at {list(map(hex, found))}, "
                               f"kernel image from 0x{image:x}")  # fmt: skip
    return kernels[0]


# --- QEMU as the oracle ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["4level", "la57", "kaslr-pti"])
def test_live_walk_and_translate_equal_qemu(
    qemu_guest: Callable[[str], QemuGuest], name: str
) -> None:
    """On a stopped guest: ``pt-walk --format qemu-tlb`` is ``info tlb`` line for line (under PTI
    both halves, against ``info tlb`` with CR3 set to each in LLDB, whichever the VM stopped
    on); ``pt-translate`` agrees with ``gva2gpa`` on kernel and user addresses."""
    guest = qemu_guest(name)
    guest.stop()
    tlb = guest.info_tlb()
    cr3 = guest.cr3()
    probes = probes_of(tlb)
    expected = {p: guest.gva2gpa(p) for p in probes}
    commands = [
        "pt-info",
        "pt-walk --format qemu-tlb",
        "pt-translate " + " ".join(f"0x{p:x}" for p in probes),
    ]
    # The VM may have stopped in user mode, with CR3 on the user half of the PTI pair: each
    # half is set in turn, and QEMU's monitor shows it.
    kernel_pgd, user_pgd = cr3 & ~0x1000, cr3 | 0x1000
    if name == "kaslr-pti":
        commands += [
            f"register write cr3 0x{kernel_pgd:x}",
            "process plugin packet monitor info tlb",
            "pt-walk --format qemu-tlb",  # the CPU state is read again after a register write
            "pt-walk --user-pgd --format qemu-tlb",
            f"register write cr3 0x{user_pgd:x}",
            "process plugin packet monitor info tlb",
            "pt-walk --format qemu-tlb",
            f"register write cr3 0x{cr3:x}",
            "register read cr3",
        ]
    run = lldbrun.run(commands, port=guest.gdb_port)
    assert all(r.ok for r in run.results), [r.err for r in run.results]
    info, walk, translate = run.outputs()[:3]
    assert f"cr3:       0x{cr3:x}" in info
    assert "backend:     lldb (gdb-remote 127.0.0.1:" in info
    assert "LLDB threads 1; CPU N is thread N+1" in info
    assert tlb_lines(walk) == tlb
    print(f"{name}: pt-walk --format qemu-tlb, {len(tlb)} lines: {run.results[1].seconds:.3f} s")
    check_translations(translate, expected)
    if name == "kaslr-pti":
        _, kernel_monitor, kernel_walk, user_walk, _, user_monitor, user_walk_after_write = (
            run.outputs()[3:10]
        )
        kernel_tlb, user_tlb = (
            TLB_LINE.findall(text.replace("\r", "")) for text in (kernel_monitor, user_monitor)
        )
        print(f"stopped with CR3 on the {'kernel' if cr3 == kernel_pgd else 'user'} half")
        assert tlb == (kernel_tlb if cr3 == kernel_pgd else user_tlb)
        assert tlb_lines(kernel_walk) == kernel_tlb
        assert tlb_lines(user_walk) == user_tlb != kernel_tlb
        assert tlb_lines(user_walk_after_write) == user_tlb
        assert run.outputs()[-1].strip() == f"cr3 = 0x{cr3:016x}"  # put back
    assert run.report["detached"]


# --- GDB as the reference: the same frozen state, command by command ------------------------


@pytest.mark.parametrize("name", ["4level", "la57"])
def test_lldb_equals_gdb_on_a_frozen_guest(
    qemu_guest: Callable[[str], QemuGuest], tmp_path: Path, name: str
) -> None:
    guest = qemu_guest(name)
    guest.stop()
    tlb = guest.info_tlb()
    probes = " ".join(f"0x{p:x}" for p in probes_of(tlb)[::4])
    at = boot_params_at(guest, tlb, tmp_path)
    commands = [
        "pt-info",
        "pt-walk",
        "pt-walk --format json",
        "pt-walk --format qemu-tlb",
        "pt-walk --format ptdump",
        "pt-walk --no-merge --range 0xffffffff80000000+0x40000000",
        "pt-walk --filter wx",
        f"pt-translate {probes}",
        "pt-translate --json 0xffffffff81000000 0x1",
        f"pt-heap --memmap e820 --at 0x{at:x}",
        "pt-audit",
        "pt-walk --has 0x1000",
    ]
    failing = ["pt-walk --cr3 0x7ffff000000", "pt-walk --cpu 1", "pt-heap --memmap bootinfo"]
    in_gdb = gdb(
        "set pagination off",
        f"target remote 127.0.0.1:{guest.gdb_port}",
        *marked(*commands, *failing),
        "disconnect",  # leaves the VM stopped: LLDB sees the same state
        timeout=300,
    )
    gdb_out = sections(in_gdb.stdout)
    gdb_errors = [
        line for line in without_progress(in_gdb.stderr).splitlines() if not GDB_NOISE.match(line)
    ]
    assert guest.hmp("info status").strip() == "VM status: paused"
    in_lldb = lldbrun.run([*commands, *failing], port=guest.gdb_port)
    results = in_lldb.results
    assert [r.ok for r in results] == [True] * len(commands) + [False] * len(failing)
    for command, got, expected in zip(commands, results, gdb_out, strict=False):
        if command == "pt-info":
            assert NAMING_LINES.sub("", got.out) == NAMING_LINES.sub("", expected)
            assert "backend:     gdb (remote 127.0.0.1:" in expected
            assert "backend:     lldb (gdb-remote 127.0.0.1:" in got.out
        else:
            assert got.out == expected, command
    assert len(results[3].out.splitlines()) == len(tlb)
    assert f" from e820 table of boot_params at 0x{at:x};" in results[9].out
    assert [r.err.removeprefix("error: ").rstrip("\n") for r in results[len(commands) :]] == (
        gdb_errors
    )
    assert "Traceback" not in in_lldb.proc.stdout + in_lldb.proc.stderr


# --- the backend's promises ------------------------------------------------------------------


@pytest.mark.parametrize("before", [0, 1])
def test_phymem_mode_is_back_after_every_command_failing_ones_included(
    qemu_guest: Callable[[str], QemuGuest], before: int
) -> None:
    guest = qemu_guest("4level")
    guest.stop()
    commands = phymem_commands("process plugin packet send", before, guest.cr3())
    run = lldbrun.run(commands, port=guest.gdb_port)
    out = run.outputs()
    assert [mode_of(out[i]) for i in (2, 4, 6, 8, 10)] == [str(before)] * 5
    assert "is not mapped" in out[3]
    assert [r.ok for r in run.results].count(False) == 2  # the two failing commands
    # LLDB's memory cache is on again, as the user had it.
    assert {r.memory_cache for r in run.results} == {"false"}
    assert "Traceback" not in run.proc.stdout + run.proc.stderr


def test_the_commands_send_no_packet_that_changes_the_target(
    qemu_guest: Callable[[str], QemuGuest], tmp_path: Path
) -> None:
    """Every packet the commands send, from LLDB's own packet log: memory and register reads,
    queries, and PhyMemMode switches that are put back; no memory or register write, no
    breakpoint, no resume (``M X P G Z z c s C S vCont k D`` and QEMU's ``?``, which drops the
    breakpoints). LLDB's packets reach QEMU through ``pt-connect``'s relay unchanged
    (``test_lldb_relay_live``); the relay's own ``D`` comes only after LLDB left, by design."""
    guest = qemu_guest("4level")
    guest.stop()
    at = boot_params_at(guest, guest.info_tlb(), tmp_path)
    log = tmp_path / "packets.log"
    commands = [
        f"log enable -f {log} gdb-remote packets",
        "pt-info",
        "pt-walk",
        "pt-walk --format json --filter wx",
        "pt-translate $rip 0x1000",
        f"pt-heap --memmap e820 --at 0x{at:x}",
        "pt-audit",
        "pt-walk --cr3 0x7ffff000000",
        "log disable gdb-remote packets",
    ]
    run = lldbrun.run(commands, port=guest.gdb_port)
    assert [r.ok for r in run.results].count(False) == 1  # the root outside RAM
    # (Lines with "history[N]" are the packets before the log was enabled: the connection's.)
    text = log.read_text(errors="replace")
    sent = re.findall(r"^(?!.*history\[).*send packet: \$([^#]*)#", text, re.M)
    assert len(sent) > 100
    changing = [
        p for p in sent if p[:1] in "MXPGZzcsCSkDR?" or p.startswith(("vCont", "vKill", "vRun"))
    ]
    assert changing == []
    # Reads ('m', 'p'), queries ('q...', LLDB's 'jThreadsInfo'...), and set packets only for
    # PhyMemMode, each switch put back; the monitor command is only 'info mtree -f'.
    assert {p for p in sent if p[:1] == "Q"} == {"Qqemu.PhyMemMode:1", "Qqemu.PhyMemMode:0"}
    modes = "".join(p[-1] for p in sent if p.startswith("Qqemu.PhyMemMode:"))
    assert re.fullmatch("0(10)+", modes), modes  # the probe (to the mode it is in), then pairs
    monitor = {bytes.fromhex(p[6:]).decode() for p in sent if p.startswith("qRcmd,")}
    assert monitor == {"info mtree -f"}


def test_lldb_never_serves_bytes_cached_in_the_other_mode(
    qemu_guest: Callable[[str], QemuGuest],
) -> None:
    """LLDB caches what it reads and keeps it across a PhyMemMode switch (the control below).
    The backend bypasses that cache after its switch: a page LLDB cached virtually is read
    physically by ``pt-walk --cr3`` (the same output as GDB's), and LLDB's next virtual read
    gets virtual bytes again."""
    guest = qemu_guest("4level")
    guest.stop()
    # A user page of the stopped process (busybox is linked at 0x400000), inside RAM physically
    # too, whose virtual and physical bytes differ.
    page = next(
        va
        for va in (int(line[:16], 16) for line in guest.info_tlb())
        if 0x100000 <= va < 0x7000000 and words_at(guest, "x", va) != words_at(guest, "xp", va)
    )
    virtual_words = words_at(guest, "x", page)
    physical_words = words_at(guest, "xp", page)
    walk = f"pt-walk --cr3 0x{page:x} --format json"
    in_gdb = gdb(
        "set pagination off",
        f"target remote 127.0.0.1:{guest.gdb_port}",
        *marked(walk),
        "disconnect",
        timeout=300,
    )
    read = f"memory read -s8 -fx -c4 0x{page:x}"
    commands = [
        read,  # LLDB caches the virtual bytes
        "process plugin packet send Qqemu.PhyMemMode:1",
        read,  # the control: the cached virtual bytes, not the physical ones
        "process plugin packet send Qqemu.PhyMemMode:0",
        walk,  # reads the same page physically
        read,  # virtual again
        "settings show target.process.disable-memory-cache",
    ]
    run = lldbrun.run(commands, port=guest.gdb_port)
    assert all(r.ok for r in run.results), [r.err for r in run.results]
    out = run.outputs()

    def words(text: str) -> list[str]:
        return re.findall(r"0x[0-9a-f]{16}", text)

    assert words(out[0]) == virtual_words != physical_words
    assert words(out[2]) == virtual_words  # stale: why the backend bypasses the cache
    assert out[4] == sections(in_gdb.stdout)[0]
    assert words(out[5]) == virtual_words
    assert out[6].endswith("= false\n")


def test_the_table_cache_lasts_one_stop(qemu_guest: Callable[[str], QemuGuest]) -> None:
    """A PTE changed behind LLDB's back (raw ``M`` packet) shows only after a new stop (a
    single step); the walk then equals a fresh ``info tlb``."""
    guest = qemu_guest("4level")
    guest.stop()
    tlb = guest.info_tlb()
    # An empty slot in the page table of a mapped user 4 KiB page of the current CR3.
    user = next(
        int(line[:16], 16) for line in tlb if int(line[:16], 16) < 1 << 47 and "P" not in line[34:]
    )
    table, paddr = page_table_of(guest, user)
    listing = guest.hmp(f"xp /512gx 0x{table:x}")
    words = [int(w, 16) for w in re.findall(r"0x([0-9a-f]{16})", listing)]
    index = words.index(0)
    vaddr = (user & ~0x1FFFFF) + index * 4096
    pte = (paddr & ~0xFFF) | (1 << 63) | 0x5  # present, user, NX
    new_line = f"{vaddr:016x}: {paddr & ~0xFFF:016x} X------U-"

    def poke(value: int) -> list[str]:
        return [
            "process plugin packet send Qqemu.PhyMemMode:1",
            f"process plugin packet send M{table + 8 * index:x},8:"
            + value.to_bytes(8, "little").hex(),
            "process plugin packet send Qqemu.PhyMemMode:0",
        ]

    commands = [
        "pt-walk --format qemu-tlb",
        *poke(pte),
        "pt-walk --format qemu-tlb",  # the same stop: from the cache
        "thread step-inst",  # a new stop
        "pt-walk --format qemu-tlb",
        "process plugin packet monitor info tlb",
        *poke(0),
    ]
    run = lldbrun.run(commands, port=guest.gdb_port)
    assert all(r.ok for r in run.results), [r.err for r in run.results]
    out = run.outputs()
    first, cached, after, fresh = out[0], out[4], out[6], out[7]
    assert tlb_lines(first) == tlb and new_line not in first
    assert cached == first
    assert new_line in tlb_lines(after)
    assert tlb_lines(after) == TLB_LINE.findall(fresh.replace("\r", ""))
