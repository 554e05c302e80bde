"""Choosing an address space by PID on a dump of a real KASLR + PTI guest, checked against
what the guest and QEMU say independently.

The guest's ``/init`` starts two ``sleep`` processes, waits until both sleep, and prints the
first one's PID and its ``/proc/PID/maps`` between markers. On the dump: ``--pid`` walks the
table ``tasks`` gives for that PID; every user page that walk maps lies in a VMA the guest
listed and carries no permission the VMA lacks, and the stack's top page and some of the program's
text are mapped; ``translate --pid`` of a stack address equals a walk of the four
levels read by hand with QEMU's ``xp`` from that root; ``--comm`` of their shared comm lists both;
and ``audit --all-roots`` finds no hooked table on this honest kernel.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from qemu_guest import INIT_PROLOGUE

pytestmark = pytest.mark.qemu

INIT = (
    INIT_PROLOGUE
    + r"""/bin/busybox sleep 100021 &
a=$!
/bin/busybox sleep 100022 &
b=$!
for pid in $a $b; do
  while read -r _ comm state _ < /proc/$pid/stat; [ "$state" != "S" ]; do :; done
done
echo "GDBEXT-PIDS $a $b"
echo "GDBEXT-MAPS-BEGIN"
cat /proc/$a/maps
echo "GDBEXT-MAPS-END"
echo "GDBEXT-READY"
while :; do wait; done
"""
)

_MAPS = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) ([r-][w-][x-][ps]) \S+ \S+ \S+\s*(.*)$")
_ADDR = 0x000F_FFFF_FFFF_F000


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gdbext.cli", *argv],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _xp(guest: object, paddr: int) -> int:
    text = guest.hmp(f"xp /1gx 0x{paddr:x}")  # type: ignore[attr-defined]
    return int(text.split(":", 1)[1].split()[0], 16)


def _walk_by_hand(guest: object, root: int, vaddr: int) -> int:
    """``vaddr``'s physical address, the four levels read with ``xp`` from ``root``."""
    table = root
    for level in (4, 3, 2, 1):
        shift = 12 + 9 * (level - 1)
        entry = _xp(guest, table + 8 * ((vaddr >> shift) & 0x1FF))
        assert entry & 1, f"level {level} entry 0x{entry:x} not present"
        if level == 1 or (level in (2, 3) and entry & 0x80):
            return (entry & _ADDR & ~((1 << shift) - 1)) | (vaddr & ((1 << shift) - 1))
        table = entry & _ADDR
    raise AssertionError("unreachable")


def test_pid_selects_the_tasks_table_as_the_guest_and_qemu_see_it(tmp_path: Path) -> None:
    from conftest import require_qemu

    require_qemu()
    import qemu_guest

    dump = tmp_path / "select.elf"
    config = qemu_guest.GuestConfig(cpu="qemu64", kaslr=True, pti=True, init=INIT)
    with qemu_guest.booted(config) as guest:
        guest.stop()
        guest.dump_elf(dump)
        serial = guest.serial_path.read_text(errors="replace")
        pid, other = map(int, re.search(r"GDBEXT-PIDS (\d+) (\d+)", serial).groups())  # type: ignore[union-attr]
        body = serial.split("GDBEXT-MAPS-BEGIN", 1)[1].split("GDBEXT-MAPS-END", 1)[0]
        vmas = []
        for line in body.splitlines():
            m = _MAPS.match(line.strip("\r"))
            if m is not None:
                vmas.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4)))
        assert vmas, serial[-2000:]

        tasks = json.loads(_cli("tasks", str(dump), "--json").stdout)["tasks"]
        (task,) = [t for t in tasks if t["pid"] == pid]
        root = int(task["root"], 16)
        assert task["address_space"] == task["root"]

        # walk --pid equals walk --cr3 of the task's root, in QEMU's info tlb format.
        by_pid = _cli("walk", str(dump), "--pid", str(pid), "--format", "qemu-tlb")
        by_cr3 = _cli("walk", str(dump), "--cr3", hex(root), "--format", "qemu-tlb")
        assert by_pid.returncode == 0 and by_pid.stdout == by_cr3.stdout and by_pid.stdout

        # The user pages mapped, against the guest's own /proc/PID/maps (the user table of
        # the PTI pair: the one user mode runs on).
        user = _cli("walk", str(dump), "--pid", str(pid), "--user-pgd", "--json",
                    "--range", "0-0x800000000000", "--filter", "u", "--no-merge")  # fmt: skip
        assert user.returncode == 0, user.stderr
        doc = json.loads(user.stdout)
        assert doc["root"] == f"0x{root | 0x1000:x}"
        mapped = [(int(r["vaddr"], 16), int(r["vaddr"], 16) + int(r["size"]), r)
                  for r in doc["mappings"]]  # fmt: skip
        assert mapped
        for start, end, rec in mapped:
            vma = next((v for v in vmas if v[0] <= start and end <= v[1]), None)
            assert vma is not None, f"0x{start:x}-0x{end:x} is in no VMA of the guest's maps"
            assert not rec["writable"] or vma[2][1] == "w", (rec, vma)
            assert not rec["executable"] or vma[2][2] == "x", (rec, vma)
        stack = next(v for v in vmas if v[3] == "[stack]")
        text = next(v for v in vmas if v[2].startswith("r-x") and v[3].endswith("busybox"))
        assert any(s <= stack[1] - 0x1000 < e for s, e, _ in mapped)  # exec wrote its top
        assert any(text[0] <= s < text[1] for s, _, _ in mapped)  # the code it runs

        # translate --pid of a stack address: QEMU's xp, four levels by hand.
        vaddr = stack[1] - 8
        t = _cli("translate", str(dump), hex(vaddr), "--pid", str(pid), "--json")
        assert t.returncode == 0, t.stderr
        (out,) = json.loads(t.stdout)
        assert int(out["paddr"], 16) == _walk_by_hand(guest, root, vaddr)

    # A comm two processes share (``busybox``: exec'd as /bin/busybox): one error, both listed.
    comm = task["comm"]
    amb = _cli("walk", str(dump), "--comm", comm)
    assert amb.returncode == 2 and amb.stdout == ""
    assert f"pid {pid} {comm}" in amb.stderr and f"pid {other} {comm}" in amb.stderr
    assert amb.stderr.count("\n") == 1

    # An honest kernel: no process's kernel half differs from the kernel's.
    audit = _cli("audit", str(dump), "--all-roots", "--rules", "wx", "--json")
    findings = json.loads(audit.stdout)["findings"]
    assert not [f for f in findings if f["severity"] == "critical"], findings
