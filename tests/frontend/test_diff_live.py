"""``diff`` on a real guest: ``insmod`` between two stops adds the module's mappings in the
modules area, where the guest's ``/proc/modules`` says the module is, and nothing else there;
the first stop's snapshot diffs as its dump does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gdbext.frontend.commands import RootOptions
from gdbext.frontend.diff import DiffOptions, diff
from gdbext.geometry import PAGE_SIZE
from gdbext.x86.diff import ADDED

pytestmark = pytest.mark.qemu

#: The guest's /init: the marker with no module loaded; a few seconds of guest time later
#: (the guest's clock stands while the VM is stopped), qemu_fw_cfg loaded, /proc/modules said.
INIT = r"""#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo 0 > /proc/sys/kernel/kptr_restrict
echo "GDBEXT-READY"
sleep 4
for m in /lib/modules/*.ko; do insmod "$m" || echo "GDBEXT-INSMOD-FAILED $m"; done
while read -r line; do echo "GDBEXT-MODULE $line"; done < /proc/modules
echo "GDBEXT-LOADED"
while :; do sleep 1000; done
"""

MODULES_AREA = (0xFFFF_FFFF_C000_0000, 0xFFFF_FFFF_FF00_0000)


def test_insmod_adds_the_module_mappings_in_the_modules_area(tmp_path: Path) -> None:
    from conftest import require_qemu

    require_qemu()
    import qemu_guest

    from gdbext.frontend.snapshot import SnapshotOptions, snapshot
    from gdbext_dump.dump import open_dump

    before, after, snap = tmp_path / "before.elf", tmp_path / "after.elf", tmp_path / "snap.elf"
    config = qemu_guest.GuestConfig(cpu="qemu64", kaslr=False, pti=False, init=INIT)
    with qemu_guest.booted(config) as guest:
        guest.stop()
        guest.dump_elf(before, vmcoreinfo=False)  # qemu_fw_cfg not loaded yet
        guest.cont()
        guest.wait_for("GDBEXT-LOADED", 60)
        guest.stop()
        guest.dump_elf(after)
        serial = guest.serial_path.read_text(errors="replace")
    assert "GDBEXT-INSMOD-FAILED" not in serial, serial[-2000:]
    m = re.search(r"GDBEXT-MODULE qemu_fw_cfg (\d+) \d+ \S+ \S+ (0x[0-9a-f]+)", serial)
    assert m is not None, serial[-2000:]
    size, base = int(m[1]), int(m[2], 16)
    assert MODULES_AREA[0] <= base < MODULES_AREA[1]

    old, new = open_dump(str(before)), open_dump(str(after))
    kernel = new.facts.kernel_root  # init_top_pgt: the same frame at both stops (no KASLR)
    assert kernel is not None
    same = DiffOptions(old=RootOptions(cr3=kernel), new=RootOptions(cr3=kernel), range=None)
    result = diff(old, new, same)
    in_modules = [c for c in result.changes if MODULES_AREA[0] <= c.start < MODULES_AREA[1]]
    # Only additions in the modules area, starting at the module's base and covering it.
    assert in_modules and all(c.kind == ADDED for c in in_modules)
    assert in_modules[0].start == base
    added = sum(c.size for c in in_modules)
    assert added >= size - size % PAGE_SIZE
    assert {r for c, r in zip(result.changes, result.regions, strict=True) if c in in_modules} == {
        "module mapping space"
    }
    # The first stop's snapshot, diffed against the second stop, says the same.
    snapshot(old, SnapshotOptions(str(snap), RootOptions(cr3=kernel)))
    assert snap.stat().st_size < 1 << 20
    from_snapshot = diff(open_dump(str(snap)), new, DiffOptions(new=RootOptions(cr3=kernel)))
    assert from_snapshot.changes == result.changes
