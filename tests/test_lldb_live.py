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

import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import lldbrun
import pytest
from test_gdb_frontend import (
    GDB_NOISE,
    check_translations,
    gdb,
    marked,
    phymem_commands,
    probes_of,
    sections,
    tlb_lines,
    wait_for_stderr,
    without_progress,
)

from gdbext.formats.bootparams import BOOT_PARAMS, E820_ENTRY

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(not lldbrun.available(), reason="no lldb"),
]

#: A command that reads all of a 128 MiB guest's RAM through the stub (more than 5 s): the
#: e820 scan with a root outside RAM, so that no kernel image is found to search first.
FULL_SCAN = "pt-heap --memmap e820 --cr3 0x40000000"
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

QUERY = "process plugin packet send qqemu.PhyMemMode"


def mode_of(output: str) -> str:
    m = re.search(r"^response: (\d)$", output, re.M)
    assert m, output
    return m.group(1)


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


def words_at(guest: QemuGuest, command: str, addr: int) -> list[str]:
    """The first four quadwords at ``addr`` by the monitor's ``x`` (virtual) or ``xp``."""
    return re.findall(r"0x[0-9a-f]{16}", guest.hmp(f"{command} /4gx 0x{addr:x}"))


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
        if 0x100000 <= va < 0x7000000
        and words_at(guest, "x", va) != words_at(guest, "xp", va)
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


ENTRY_ADDR = 0x000F_FFFF_FFFF_F000


def page_table_of(guest: QemuGuest, vaddr: int) -> tuple[int, int]:
    """The page table (last level) that maps the 4 KiB page at ``vaddr`` in the current CR3
    (4-level paging), and the page's physical address: a walk with the monitor's ``xp``."""
    table = guest.cr3() & ENTRY_ADDR
    for shift in (39, 30, 21):
        index = (vaddr >> shift) & 0x1FF
        entry = int(guest.hmp(f"xp /1gx 0x{table + 8 * index:x}").split()[-1], 16)
        assert entry & 1 and not entry & 0x80, hex(entry)  # present, not a large page
        table = entry & ENTRY_ADDR
    pte = int(guest.hmp(f"xp /1gx 0x{table + 8 * ((vaddr >> 12) & 0x1FF):x}").split()[-1], 16)
    return table, pte & ENTRY_ADDR


def test_pt_connect_connects_to_a_running_vm(qemu_guest: Callable[[str], QemuGuest]) -> None:
    """LLDB 14's ``gdb-remote`` fails on a running QEMU (the VM's stop reply comes first);
    ``pt-connect`` retries and connects every time."""
    guest = qemu_guest("4level")
    guest.cont()
    time.sleep(0.2)
    plain = subprocess.run(
        lldbrun.argv(f"gdb-remote 127.0.0.1:{guest.gdb_port}", "process detach"),
        capture_output=True,
        text=True,
        cwd=lldbrun.ROOT,
        timeout=60,
        check=False,
    )
    assert "handshake" in plain.stderr  # the control: the pitfall is real
    for _ in range(5):
        guest.cont()
        time.sleep(0.2)
        assert guest.hmp("info status").strip() == "VM status: running"
        run = lldbrun.run(["pt-info"], port=guest.gdb_port)
        assert run.results[0].ok and "paging:    4-level" in run.outputs()[0]
        assert run.report["detached"]


def test_two_vcpus_then_qemu_killed_mid_command_is_one_clean_error(tmp_path: Path) -> None:
    """Two vCPUs are LLDB threads 1 and 2 (``--cpu 1`` is thread 2's CR3). QEMU killed while
    ``pt-heap --memmap e820`` scans RAM (:data:`FULL_SCAN`): one line, and LLDB answers the next
    commands."""
    from qemu_guest import GuestConfig, QemuGuest

    from conftest import require_qemu

    require_qemu()
    with QemuGuest(GuestConfig(cpu="qemu64", smp=2)) as guest:
        guest.stop()
        regs = [
            int(m, 16)
            for m in re.findall(r"CR3=([0-9a-f]{16})", guest.hmp("info registers -a"))
        ]
        text = guest.gva2gpa(0xFFFFFFFF81000000)
        assert text is not None
        commands = [
            "pt-info",
            "pt-translate --cpu 1 0xffffffff81000000",
            FULL_SCAN,
            "pt-walk",
            "script print('alive')",
        ]
        with tempfile.TemporaryDirectory() as tmp:
            command, out = lldbrun.driver_argv(commands, Path(tmp), port=guest.gdb_port)
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=lldbrun.ROOT
            )
            seen = wait_for_stderr(proc, b"pt-heap: ", 120)
            os.kill(guest.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate(timeout=120)
            done = subprocess.CompletedProcess(command, proc.returncode, stdout.decode(), "")
            run = lldbrun.collect(out, done)
    info, translate, heap, walk, alive = run.results
    assert "vCPUs:       2 (LLDB threads 1-2; CPU N is thread N+1)" in info.out
    assert len(regs) == 2
    cpu1 = info.out.split("cpu 1:\n", 1)[1]
    assert cpu1.startswith("  paging:") and f"cr3:       0x{regs[1]:x}\n" in cpu1
    assert translate.ok and f"0xffffffff81000000 -> 0x{text:x} " in translate.out
    print(heap.err, walk.err)
    assert not heap.ok and heap.err.count("\n") == 1, heap.err
    assert "lost the connection" in heap.err or "needs a live target" in heap.err, heap.err
    assert not walk.ok and walk.err.count("\n") == 1, walk.err
    assert alive.ok
    assert "Traceback" not in stdout.decode() + (seen + stderr).decode()


def test_a_gdbstub_gone_between_commands_is_one_line_not_cached_output(
    qemu_guest: Callable[[str], QemuGuest], tmp_path: Path
) -> None:
    """QEMU's gdbstub goes away while LLDB waits (``gdbserver none``; a killed QEMU alike):
    LLDB 14 keeps the process "stopped", so without asking the stub the next command would print
    the tables cached at that stop as if nothing happened. It is one line, for every command."""
    guest = qemu_guest("4level")
    guest.stop()
    ready, go = tmp_path / "ready", tmp_path / "go"
    walk = "pt-walk --range 0xffffffff81000000+0x200000"
    commands = [
        walk,
        f"script open({str(ready)!r}, 'w').close()",
        f"script import os, time; [time.sleep(0.05) for _ in range(2400) "
        f"if not os.path.exists({str(go)!r})]",
        walk,
        "pt-info",
    ]
    command, out = lldbrun.driver_argv(commands, tmp_path, port=guest.gdb_port)
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=lldbrun.ROOT
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        guest.hmp("gdbserver none")
        go.touch()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        guest.hmp(f"gdbserver tcp:127.0.0.1:{guest.gdb_port}")
    run = lldbrun.collect(out, subprocess.CompletedProcess(command, proc.returncode, stdout, ""))
    first, _, _, again, info = run.results
    assert first.ok  # after the Linux layout line (VMCOREINFO found live: labels on)
    assert "\n0xffffffff81000000-0xffffffff81200000 " in "\n" + first.out, first.out
    gone = "error: lost the connection to the target (the gdbstub is gone)\n"
    assert (again.ok, again.out, again.err) == (False, "", gone)
    assert (info.ok, info.out, info.err) == (False, "", gone)
    assert "Traceback" not in stdout + stderr
    after = lldbrun.run(["pt-info"], port=guest.gdb_port)  # the guest serves the next tests
    assert after.results[0].ok


def test_pt_backend_lldb_and_a_detached_target(qemu_guest: Callable[[str], QemuGuest]) -> None:
    """``pt-backend lldb`` selects this debugger's connection; once LLDB detached, every command
    is one line saying what to do, and LLDB goes on."""
    guest = qemu_guest("4level")
    guest.stop()
    needs = (
        "error: the lldb backend needs a live target: connect LLDB first (pt-connect HOST:PORT, "
        "or gdb-remote HOST:PORT)\n"
    )
    run = lldbrun.run(
        ["pt-backend lldb", "pt-backend", "process detach", "pt-walk", "pt-translate 0x1000"],
        port=guest.gdb_port,
    )
    selected, listing, detach, walk, translate = run.results
    assert selected.out == f"backend lldb: gdb-remote 127.0.0.1:{guest.gdb_port}\n"
    assert "* lldb " in listing.out
    assert re.search(r"^selected: lldb --debugger \d+$", listing.out, re.M), listing.out
    assert detach.ok
    assert (walk.ok, walk.err, translate.ok, translate.err) == (False, needs, False, needs)
    assert "Traceback" not in run.proc.stdout + run.proc.stderr


def test_ctrl_c_in_a_live_command_restores_the_mode_and_the_cache(
    qemu_guest: Callable[[str], QemuGuest],
) -> None:
    """SIGINT while ``pt-heap --memmap e820`` scans RAM through the stub (:data:`FULL_SCAN`; in
    PhyMemMode, LLDB's memory cache bypassed): one line, and both are put back. The progress
    line before it comes after 5 s: stderr is a pipe."""
    guest = qemu_guest("4level")
    guest.stop()
    with tempfile.TemporaryDirectory() as tmp:
        command, out = lldbrun.driver_argv([FULL_SCAN], Path(tmp), port=guest.gdb_port)
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=lldbrun.ROOT
        )
        seen = wait_for_stderr(proc, b"pt-heap: 5 s", 120)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
        run = lldbrun.collect(out, subprocess.CompletedProcess(command, proc.returncode, "", ""))
    (heap,) = run.results
    text = (seen + stderr).decode()
    assert "pt-heap: interrupted\n" in text and "Traceback" not in text + stdout.decode()
    assert heap.memory_cache == "false"
    assert run.report["detached"]
    guest.stop()
    after = lldbrun.run([QUERY], port=guest.gdb_port)
    assert mode_of(after.outputs()[0]) == "0"



STALL_PLUGIN = """
import os, signal
from gdbext_lldb import lldb_link

read_memory = lldb_link.LldbProcessLink.read_memory

def stalling_read(self, addr, size):
    # QEMU stops answering right after the command switched to PhyMemMode 1.
    lldb_link.LldbProcessLink.read_memory = read_memory
    os.kill({pid}, signal.SIGSTOP)
    return read_memory(self, addr, size)

lldb_link.LldbProcessLink.read_memory = stalling_read
"""


def test_a_gdbstub_that_stops_answering_costs_one_packet_timeout(
    qemu_guest: Callable[[str], QemuGuest], tmp_path: Path
) -> None:
    """QEMU stopped (SIGSTOP) in the middle of a command, in PhyMemMode 1: the command fails
    after LLDB's packet timeout with one line, the next ones at once (LLDB's replies are out of
    step for good: a register read would get a memory read's bytes), nothing hangs; after
    ``process detach`` the next ``pt-connect`` puts the mode back before LLDB reads anything."""
    guest = qemu_guest("4level")
    guest.stop()
    root = guest.cr3() & ENTRY_ADDR
    text = guest.gva2gpa(0xFFFFFFFF81000000)
    assert text is not None
    text_words = words_at(guest, "x", 0xFFFFFFFF81000000)[:2]
    plugin = tmp_path / "stall.py"
    plugin.write_text(STALL_PLUGIN.format(pid=guest.pid))
    mark = "@@mark@@"
    script = tmp_path / "commands.lldb"
    script.write_text(
        "\n".join(
            [
                f"command script import {plugin}",
                "script import time; t = time.monotonic()",
                "pt-walk",
                f"script print('{mark}', round(time.monotonic() - t, 1)); t = time.monotonic()",
                "pt-info",
                f"script print('{mark}', round(time.monotonic() - t, 1))",
                f"script import os, signal; os.kill({guest.pid}, signal.SIGCONT)",
                "process detach",
                f"pt-connect 127.0.0.1:{guest.gdb_port}",
                f"script print('{mark}')",
                "x/1i $pc",
                "memory read -s8 -fx -c2 0xffffffff81000000",
                "pt-walk --has 0xffffffff81000000",
                QUERY,
                "process detach",
            ]
        )
        + "\n"
    )
    try:
        proc = subprocess.run(
            lldbrun.argv(
                "settings set plugin.process.gdb-remote.packet-timeout 2",
                f"pt-connect 127.0.0.1:{guest.gdb_port}",
                f"command source -e false {script}",
            ),
            capture_output=True,
            text=True,
            cwd=lldbrun.ROOT,
            timeout=120,
            check=False,
        )
    finally:
        os.kill(guest.pid, signal.SIGCONT)
    stalled = (
        f"error: the gdbstub did not answer a read of 0x{root:x} in 2 s (QEMU stopped or hung?); "
        "LLDB's replies are out of step from there on: reconnect ('process detach', then "
        "pt-connect HOST:PORT)"
    )
    assert proc.stderr.splitlines() == [stalled, stalled]
    timings = re.findall(rf"^{mark} (\S+)$", proc.stdout, re.M)
    assert 1.8 <= float(timings[0]) < 4 and float(timings[1]) < 0.5, timings
    after = proc.stdout.split(f"{mark}\n")[-1]
    # The mode was put back before LLDB read the instruction at $pc: virtual bytes, not zeros.
    assert "PhyMemMode put back to 0 (the last connection stopped answering in mode 1)" in (
        proc.stdout
    )
    # (The stop is usually in the kernel, but a user process may be running: any address.)
    assert re.search(r"^->  0x[0-9a-f]+: [0-9a-f]{2}", after, re.M), after
    assert not re.search(r": 00 00 +addb", after)
    # The kernel's text, read virtually, is what the monitor read before (not RAM's zeros).
    assert re.findall(r"0x[0-9a-f]{16}", after.split("0xffffffff81000000: ", 1)[1])[:2] == (
        text_words
    ), after
    assert re.search(
        rf"^0xffffffff81000000-0x[0-9a-f]+ .* r-x kern G +-> 0x{text:x}$", after, re.M
    )
    assert mode_of(after) == "0"
    assert "Traceback" not in proc.stdout + proc.stderr
