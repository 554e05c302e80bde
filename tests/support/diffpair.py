"""A pair of simulated machines with known changes between them (``diff``'s and ``map
--diff``'s tests): :func:`machine` of :data:`BASE` and :func:`changed_machine`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gdbext_sim.elfcore import write_qemu_elf_core
from gdbext_sim.scenario import SimMachine, build_machine
from support.scenario import mapping

KERN = 0xFFFF_8880_0000_0000
BASE = [
    mapping(0x400000, 0x100000, 4, "USER_ACCESSIBLE"),
    mapping(0x600000, 0x200000, 2, "USER_ACCESSIBLE", "WRITABLE", "NO_EXECUTE"),
    mapping(KERN, 0x400000, 1, "WRITABLE", size="2M"),
    mapping(KERN + (4 << 20), 0x800000, 3, "WRITABLE", "NO_EXECUTE"),
]


def machine(mappings: list[dict[str, Any]], levels: int = 4) -> SimMachine:
    return build_machine({"levels": levels, "ram": "64M", "mappings": mappings})


def changed_machine() -> SimMachine:
    """BASE with: one page mapped at 0x800000, 0x600000..0x602000 unmapped, the text made
    writable, the 2 MiB page split into 512 4 KiB pages of the same frames, G set at KERN+4M."""
    return machine(
        [
            mapping(0x400000, 0x100000, 4, "USER_ACCESSIBLE", "WRITABLE"),
            mapping(0x800000, 0x300000, 1, "USER_ACCESSIBLE"),
            mapping(KERN, 0x400000, 512, "WRITABLE"),
            mapping(KERN + (4 << 20), 0x800000, 1, "WRITABLE", "NO_EXECUTE", "GLOBAL"),
            mapping(KERN + (4 << 20) + 0x1000, 0x801000, 2, "WRITABLE", "NO_EXECUTE"),
        ]
    )


def core(m: SimMachine, path: Path) -> str:
    write_qemu_elf_core(path, m.memory, m.cpus)
    return str(path)


def stop_with_user_snapshot(guest: Any, tmp_path: Path) -> tuple[Path, Path]:
    """Stop the live ``guest`` (a :class:`qemu_guest.QemuGuest` with PTI), dump the stop, and
    snapshot the dump's PTI user half with the command line: ``(dump, user snapshot)``, for
    the debuggers' live ``pt-diff`` and ``pt-map --diff`` against that snapshot."""
    from support.cli import cli_text

    guest.stop()
    dump, user = tmp_path / "stop.elf", tmp_path / "user.elf"
    guest.dump_elf(dump)
    assert cli_text(["snapshot", str(dump), "--user-pgd", "-o", str(user)])[0] == 0
    return dump, user
