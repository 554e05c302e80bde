"""``roots`` on a dump of a real KASLR + PTI guest whose ``/init`` starts processes with
distinctive argv: the CPU's table is among the address spaces, and each process is named by
its argv, its stack's top page where the guest's ``/proc/PID/maps`` says the stack ends."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from qemu_guest import INIT_PROLOGUE

from gdbext.frontend.roots import roots
from gdbext.geometry import PAGE_SIZE

pytestmark = pytest.mark.qemu

#: The guest's /init: two processes exec'd with distinctive argv (``/bin/busybox`` named with
#: a slash, so that the shell execs it rather than running the applet in a fork), a shell
#: whose child execs a third; once all three sleep, their stacks' ends and the marker.
INIT = (
    INIT_PROLOGUE
    + r"""/bin/busybox sleep 100007 &
a=$!
/bin/busybox sh -c '/bin/busybox sleep $((100000 + 8)); :' GDBEXT-ROOTS-X &
b=$!
c=
while [ -z "$c" ]; do
  f=$(/bin/busybox grep -l '10000[8]' /proc/[0-9]*/cmdline 2>/dev/null)
  c=${f#/proc/}; c=${c%/cmdline}
done
for pid in $a $b $c; do
  while read -r _ comm state _ < /proc/$pid/stat; [ "$state" != "S" ]; do :; done
  /bin/busybox grep '\[stack\]' /proc/$pid/maps | while read -r range _; do
    echo "GDBEXT-STACK $pid ${range#*-}"
  done
done
echo "GDBEXT-READY"
while :; do wait; done
"""
)

ARGV = {
    ("/bin/busybox", "sleep", "100007"),
    ("/bin/busybox", "sh", "-c", "/bin/busybox sleep $((100000 + 8)); :", "GDBEXT-ROOTS-X"),
    ("/bin/busybox", "sleep", "100008"),
}


def test_roots_of_a_real_guest_name_its_processes(tmp_path: Path) -> None:
    from conftest import require_qemu

    require_qemu()
    import qemu_guest

    from gdbext_dump.dump import open_dump

    dump = tmp_path / "roots.elf"
    config = qemu_guest.GuestConfig(cpu="qemu64", kaslr=True, pti=True, init=INIT)
    with qemu_guest.booted(config) as guest:
        guest.stop()
        cr3 = guest.cr3() & ~0xFFF
        guest.dump_elf(dump)
        serial = guest.serial_path.read_text(errors="replace")
    stack_ends = {int(end, 16) for end in re.findall(r"GDBEXT-STACK \d+ ([0-9a-f]+)", serial)}
    assert len(stack_ends) >= 1, serial[-2000:]
    target = open_dump(str(dump))
    try:
        result = roots(target)
    finally:
        if target.close is not None:
            target.close()
    assert result.kernel_source == "VMCOREINFO" and result.levels == 4
    # The CPU's table (kernel or user half of a pair) is one of them, marked as CPU 0's.
    on_cpu = [s for s in result.spaces if cr3 in s.roots]
    assert len(on_cpu) == 1 and on_cpu[0].cpus == (0,)
    # PTI is on: every address space is a pair, the kernel's and every process's; the
    # real-mode trampoline's table (kernel half copied, low memory mapped for the kernel
    # only) is not a process's.
    for s in result.spaces:
        if s.kind in ("kernel", "process"):
            assert s.user_root == s.root + 0x1000, s
        else:
            assert s.identity is None and s.kind in ("supervisor", "no-pages"), s
    assert [s.kernel for s in result.spaces].count(True) == 1
    named = {s.identity.argv: s for s in result.spaces if s.identity and s.identity.argv}
    assert set(named) >= ARGV, sorted(named)
    for argv in ARGV:
        ident = named[argv].identity
        assert ident is not None and ident.filename == "/bin/busybox"
        assert ident.page + PAGE_SIZE in stack_ends
        assert named[argv].usage.bytes > 0 and named[argv].usage.wx_pages == 0
