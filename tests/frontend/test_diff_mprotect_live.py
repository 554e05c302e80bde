"""``diff`` on a real guest: a test program's ``mprotect`` between two stops is one changed
range of its address space, its permissions as the program set them; the 512 MiB guest's
kernel table snapshots in well under 1 MiB."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest
from qemu_guest import INIT_PROLOGUE

from gdbext.frontend.commands import RootOptions
from gdbext.frontend.diff import DiffOptions, diff
from gdbext.x86.diff import CHANGED

pytestmark = pytest.mark.qemu

#: A program without libc (busybox has no mprotect): maps 4 pages at 0x10000000 read-write,
#: touches them, prints the ready marker, sleeps 4 s, makes pages 1 and 2 read-only, says so.
PROGRAM = r"""
static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8),
                     "r"(r9) : "rcx", "r11", "memory");
    return r;
}
static void say(const char *s) { long n = 0; while (s[n]) n++; sys6(1, 1, (long)s, n, 0, 0, 0); }
void _start(void) {
    volatile char *p = (volatile char *)sys6(9, 0x10000000, 4 * 4096, 3, 0x32, -1, 0);
    for (int i = 0; i < 4; i++) p[i * 4096] = 1;
    say("GDBEXT-READY\n");
    long ts[2] = {4, 0};
    sys6(35, (long)ts, 0, 0, 0, 0, 0);
    sys6(10, 0x10001000, 2 * 4096, 1, 0, 0, 0);
    say("GDBEXT-MPROTECT-DONE\n");
    for (;;) sys6(34, 0, 0, 0, 0, 0, 0);
}
"""

INIT = (
    INIT_PROLOGUE
    + """/bin/busybox base64 -d > /bin/mprot <<'B64'
{program}
B64
/bin/busybox chmod 755 /bin/mprot
/bin/mprot &
while :; do wait; done
"""
)

REGION = 0x10000000
USER_HALF = "0x0-0x800000000000"


def _program(tmp: Path) -> bytes:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc to build the test program")
    source = tmp / "mprot.c"
    source.write_text(PROGRAM)
    binary = tmp / "mprot"
    flags = ["-static", "-nostdlib", "-O1", "-fno-builtin", "-fno-stack-protector",
             "-fno-asynchronous-unwind-tables", "-Wl,--build-id=none", "-s"]  # fmt: skip
    subprocess.run([gcc, *flags, "-o", str(binary), str(source)], check=True)
    return binary.read_bytes()


def test_mprotect_is_one_permission_change(tmp_path: Path) -> None:
    from conftest import require_qemu

    require_qemu()
    import qemu_guest

    from gdbext.frontend.roots import roots
    from gdbext.frontend.snapshot import SnapshotOptions, snapshot
    from gdbext.x86.diff import REMOVED
    from gdbext_dump.dump import open_dump

    program = base64.encodebytes(_program(tmp_path)).decode()
    init = INIT.format(program=program.strip())
    before, after = tmp_path / "before.elf", tmp_path / "after.elf"
    config = qemu_guest.GuestConfig(memory="512M", cpu="qemu64", pti=False, init=init)
    with qemu_guest.booted(config) as guest:
        guest.stop()
        guest.dump_elf(before)
        guest.cont()
        guest.wait_for("GDBEXT-MPROTECT-DONE", 60)
        guest.stop()
        guest.dump_elf(after)
    old, new = open_dump(str(before)), open_dump(str(after))
    # The program's address space, named by the file it was exec'd from.
    spaces = [
        s
        for s in roots(new).spaces
        if s.identity is not None and s.identity.filename == "/bin/mprot"
    ]
    assert len(spaces) == 1
    root = RootOptions(cr3=spaces[0].root)
    result = diff(old, new, DiffOptions(old=root, new=root))
    user = [c for c in result.changes if c.start < 1 << 47]
    assert [(c.kind, c.start, c.end, c.what) for c in user] == [
        (CHANGED, REGION + 0x1000, REGION + 0x3000, ("permissions", "flags"))
    ]
    (change,) = user
    assert change.old is not None and change.new is not None
    assert (change.old.user, change.old.writable) == (True, True)
    assert (change.new.user, change.new.writable, change.new.executable) == (True, False, False)
    assert change.old.paddr == change.new.paddr  # the same frames, now read-only
    assert all(c.kind != REMOVED for c in result.changes)
    # A 512 MiB guest's kernel table, saved: well under 1 MiB.
    snap = tmp_path / "kernel.elf"
    saved = snapshot(new, SnapshotOptions(str(snap), RootOptions(kernel=True)))
    assert saved.size == snap.stat().st_size < 1 << 20
    print(f"512 MiB guest, kernel table snapshot: {saved.size} bytes, {saved.tables} tables")
