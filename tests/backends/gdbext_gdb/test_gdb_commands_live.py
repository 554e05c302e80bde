"""The GDB front end's commands on the session QEMU guests: the live backend against QEMU's
own ``info tlb`` and ``gva2gpa`` on the same stopped VM, a detached target, PhyMemMode.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.debuggers import (
    GDB_NOISE,
    MARK,
    check_translations,
    gdb,
    marked,
    phymem_commands,
    probes_of,
    sections,
    tlb_lines,
    without_progress,
)
from support.gdblive import parse_xp

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="no gdb")


# --- live: QEMU guests -------------------------------------------------------------------------


def live_gdb(guest: QemuGuest, *commands: str) -> subprocess.CompletedProcess[str]:
    """GDB attached to the guest's gdbstub; detaches at the end (which resumes the VM)."""
    return gdb(
        "set pagination off",
        f"target remote 127.0.0.1:{guest.gdb_port}",
        *commands,
        "detach",
        timeout=300,
    )


#: The PTI guest as if stopped in user mode (CR3 on the user PGD), which a stop may or may not
#: hit: the test writes CR3 through the gdbstub first, and puts it back before GDB leaves.
ON_USER_HALF = "kaslr-pti-on-user-half"


@pytest.mark.qemu
@pytest.mark.parametrize("name", ["4level", "la57", "kaslr-pti", ON_USER_HALF])
def test_live_walk_and_translate_equal_qemu(
    qemu_guest: Callable[[str], QemuGuest], name: str
) -> None:
    """On a stopped guest: ``pt-walk --format qemu-tlb`` is ``info tlb`` line for line (under PTI
    both halves, against ``info tlb`` with CR3 set to each, whichever the VM stopped on);
    ``pt-translate`` and ``$pt_phys`` agree with ``gva2gpa`` on kernel and user addresses."""
    guest = qemu_guest(name.removesuffix("-on-user-half"))
    guest.stop()  # what the monitor and GDB see until GDB detaches (which resumes the VM)
    stopped_on = guest.cr3()
    if name == ON_USER_HALF:
        gdb(
            f"target remote 127.0.0.1:{guest.gdb_port}",
            f"set $cr3 = (long)0x{stopped_on | 0x1000:x}",
            "disconnect",  # the VM stays stopped
            source=False,
        )
    tlb = guest.info_tlb()
    cr3 = guest.cr3()
    assert cr3 == (stopped_on | 0x1000 if name == ON_USER_HALF else stopped_on)
    probes = probes_of(tlb)
    expected = {p: guest.gva2gpa(p) for p in probes}
    commands = [
        "pt-info",
        "python import time; gdbext_t = time.perf_counter()",
        "pt-walk --format qemu-tlb",
        "python print('SECONDS', time.perf_counter() - gdbext_t)",
        "pt-translate " + " ".join(f"0x{p:x}" for p in probes),
        *(f"p/x $pt_phys(0x{p:x})" for p in probes[:3]),
    ]
    # The VM may have stopped in user mode, with CR3 on the user half of the PTI pair: each
    # half is set in turn, and QEMU's monitor shows it (on GDB's stderr, after a marker).
    kernel_pgd, user_pgd = cr3 & ~0x1000, cr3 | 0x1000
    if name.startswith("kaslr-pti"):
        commands += [
            f"set $cr3 = (long)0x{kernel_pgd:x}",
            "pt-walk --format qemu-tlb",
            "pt-walk --user-pgd --format qemu-tlb",
            f"python gdb.write('{MARK} kernel\\n', gdb.STDERR)",
            "monitor info tlb",
            f"set $cr3 = (long)0x{user_pgd:x}",
            "pt-walk --format qemu-tlb",
            f"python gdb.write('{MARK} user\\n', gdb.STDERR)",
            "monitor info tlb",
            f"set $cr3 = (long)0x{stopped_on:x}",
            "p/x $cr3",
        ]
    proc = live_gdb(guest, *marked(*commands))
    assert "Traceback" not in proc.stderr, proc.stderr
    got = sections(proc.stdout)
    info, _, walk, seconds, translate = got[:5]
    assert f"cr3:       0x{cr3:x}" in info and "backend:     gdb" in info
    assert tlb_lines(walk) == tlb
    print(f"{name}: pt-walk --format qemu-tlb, {len(tlb)} lines: {seconds.split()[1]} s")
    # Its speed target (0.25 s) is bench/bench_gdb.py's, where it is measured.
    check_translations(translate, expected)
    for probe, line in zip(probes[:3], got[5:8], strict=True):
        assert line.splitlines()[0].split(" = ")[1] == f"{expected[probe]:#x}"
    if name.startswith("kaslr-pti"):
        # GDB writes what the stub's monitor prints to its stderr.
        _, kernel_monitor, user_monitor = re.split(
            rf"^{MARK} (?:kernel|user)\n", proc.stderr, flags=re.M
        )
        kernel_tlb, user_tlb = (
            re.findall(r"^[0-9a-f]{16}: [0-9a-f]{16} [-A-Z]{9}$", text, re.M)
            for text in (kernel_monitor, user_monitor)
        )
        kernel_walk, user_walk, user_walk_after_write = got[9], got[10], got[14]
        print(f"stopped with CR3 on the {'kernel' if cr3 == kernel_pgd else 'user'} half")
        assert tlb == (kernel_tlb if cr3 == kernel_pgd else user_tlb)
        assert tlb_lines(kernel_walk) == kernel_tlb
        assert tlb_lines(user_walk) == user_tlb != kernel_tlb
        assert tlb_lines(user_walk_after_write) == user_tlb
        assert got[-1].splitlines()[0].endswith(f" = 0x{stopped_on:x}"), got[-3:]  # put back


@pytest.mark.qemu
def test_a_detached_target_is_one_line_and_gdb_goes_on(
    qemu_guest: Callable[[str], QemuGuest],
) -> None:
    guest = qemu_guest("4level")
    proc = gdb(
        "pt-backend gdb",
        f"target remote 127.0.0.1:{guest.gdb_port}",
        "pt-backend gdb",
        "detach",
        "pt-walk",
        "p $pt_phys(0)",
        "pt-translate 0x1000",
        "echo alive\\n",
    )
    needs = "the gdb backend needs a live target: connect GDB first (target remote HOST:PORT)"
    errors = [
        line for line in without_progress(proc.stderr).splitlines() if not GDB_NOISE.match(line)
    ]
    assert errors == [needs] * 4
    assert f"backend gdb: remote 127.0.0.1:{guest.gdb_port}\n" in proc.stdout
    assert proc.stdout.endswith("alive\n")
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.qemu
@pytest.mark.parametrize("before", [0, 1])
def test_phymem_mode_is_back_after_every_command_failing_ones_included(
    qemu_guest: Callable[[str], QemuGuest], before: int
) -> None:
    """Each pt-* command leaves QEMU's PhyMemMode as it found it, whether it succeeds, finds
    nothing, or fails on bad input (a root outside RAM, a BootInfo that is not there)."""
    guest = qemu_guest("4level")
    guest.stop()
    commands = phymem_commands("maintenance packet", before, guest.cr3())
    proc = live_gdb(guest, *marked(*commands))
    assert "Traceback" not in proc.stdout + proc.stderr
    got = sections(proc.stdout)
    replies = [re.search(r'received: "(\d)"', got[i]) for i in (2, 4, 6, 8, 10)]
    modes = [m.group(1) if m else got[i] for m, i in zip(replies, (2, 4, 6, 8, 10), strict=True)]
    assert modes == [str(before)] * 5
    assert "is not mapped" in got[3]
    errors = [
        line for line in without_progress(proc.stderr).splitlines() if not GDB_NOISE.match(line)
    ]
    assert len(errors) == 2, errors  # the two failing commands, one line each


def u64_bytes(text: str) -> bytes:
    """The bytes of ``pt-read --format u64`` lines (``ADDRESS  0xVALUE``)."""
    values = [int(line.split()[1], 16) for line in text.splitlines() if " 0x" in line]
    return struct.pack(f"<{len(values)}Q", *values)


@pytest.mark.qemu
def test_live_read_equals_monitor_xp(
    qemu_guest: Callable[[str], QemuGuest], tmp_path: Path
) -> None:
    """``pt-read --phys`` is QEMU's ``xp``, across a page boundary and for a whole table page
    (raw, to a file); a virtual read is QEMU's ``x`` (through the stopped CPU's CR3); past the
    end of RAM is a gap; PhyMemMode is 0 after."""
    guest = qemu_guest("4level")
    guest.stop()
    cr3 = guest.cr3() & ~0xFFF
    cross, text = 0x100FF0, 0xFFFFFFFF81000FF0
    xp_root = parse_xp(guest.hmp(f"xp /512gx 0x{cr3:x}"))
    xp_cross = parse_xp(guest.hmp(f"xp /4gx 0x{cross:x}"))
    x_text = parse_xp(guest.hmp(f"x /4gx 0x{text:x}"))
    raw = tmp_path / "root.bin"
    proc = live_gdb(
        guest,
        *marked(
            f"pt-read --phys 0x{cross:x} 32 --format u64",
            f"pt-read 0x{text:x} 32 --format u64",
            f"pt-read --phys 0x{cr3:x} 4K --format raw -o {raw}",
            "pt-read --phys 0x7fffff0 32",
            "maintenance packet qqemu.PhyMemMode",
        ),
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    phys, virt, written, beyond, mode = sections(proc.stdout)
    assert len(xp_cross) == len(x_text) == 32 and any(x_text)
    assert (u64_bytes(phys), u64_bytes(virt), written) == (xp_cross, x_text, "")
    assert raw.read_bytes() == xp_root and any(xp_root)
    assert beyond.splitlines()[-1] == (
        "0000000008000000-0000000008000010  ** 16B unreadable: outside RAM **"
    ), beyond
    assert 'received: "0"' in mode
