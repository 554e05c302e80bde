"""``kaslr`` on a running KASLR + PTI guest over the debugger-free ``gdbstub`` backend, against
the VMCOREINFO note of a dump of the same stop, read here with pyelftools.

The direct map's base is checked against ``SYMBOL(mem_section)``, an address the kernel
allocated in the direct map: ``page_offset_base`` is 1 GiB-aligned and the guest has less than
1 GiB of RAM, so that address rounded down to 1 GiB is the base.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .test_kaslr import START_KERNEL, START_KERNEL_MAP, TOP, _vmcoreinfo

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = pytest.mark.qemu

GB = 1 << 30


def test_live_kaslr_equals_the_guests_vmcoreinfo(
    qemu_guest: Callable[[str], QemuGuest], tmp_path: Path
) -> None:
    guest = qemu_guest("kaslr-pti")
    guest.stop()
    dump = tmp_path / "stop.elf"
    guest.dump_elf(dump)
    vmci = _vmcoreinfo(dump)
    proc = subprocess.run(
        [sys.executable, "-m", "gdbext.cli", "kaslr", "--backend", "gdbstub",
         f"127.0.0.1:{guest.gdb_port}", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, "")
    bases = json.loads(proc.stdout)["bases"]
    offset = int(vmci["KERNELOFFSET"], 16)
    text = (START_KERNEL + offset) % TOP
    assert offset != 0  # a KASLR guest
    assert bases["kaslr_slide"]["value"] == hex(offset)
    assert bases["kernel_text"]["value"] == hex(text)
    phys_base = int(vmci["NUMBER(phys_base)"]) % TOP
    assert bases["kernel_phys"]["value"] == hex((text - START_KERNEL_MAP + phys_base) % TOP)
    mem_section = int(vmci["SYMBOL(mem_section)"], 16)
    assert bases["direct_map"]["value"] == hex(mem_section - mem_section % GB)
    assert json.loads(proc.stdout)["disagreements"] == []
