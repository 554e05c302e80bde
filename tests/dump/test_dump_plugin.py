"""The ``core`` backend as the plugin host sees it: name, options, opening by source."""

from __future__ import annotations

from pathlib import Path

import pytest

from gdbext.cpu import CpuState
from gdbext.errors import UsageError
from gdbext.plugin.host import Host
from gdbext.plugin.target import OpenRequest
from gdbext_sim.elfcore import write_qemu_elf_core
from gdbext_sim.memory import SparsePhysMemory


def test_core_backend_is_registered_with_its_options() -> None:
    info = Host.create().backend("core")
    assert info.summary == "offline dump: QEMU/vmcore ELF, kdump, LiME, raw"
    assert [(o.name, o.metavar, o.required) for o in info.options] == [
        ("format_in", "FORMAT", False),
        ("base", "ADDR", False),
    ]


def test_open_by_source_and_options(tmp_path: Path) -> None:
    mem = SparsePhysMemory(0x10000)
    mem.write(0x3000, b"hello")
    core = tmp_path / "x.core"
    write_qemu_elf_core(core, mem, [CpuState(0x80000011, 0x1000, 0x20)])
    open_ = Host.create().backend("core").open
    target = open_(OpenRequest(str(core)))
    assert target.backend == "core"
    assert target.mapper.read(0x3000, 5) == b"hello"
    assert list(target.cpus) == [CpuState(0x80000011, 0x1000, 0x20)]
    raw = open_(OpenRequest(str(core), {"format_in": "raw", "base": "0x100000"}))
    assert raw.mapper.read(0x100000, 4) == b"\x7fELF"
    assert open_(OpenRequest(str(core), {"format_in": "elf", "base": None})).cpus == target.cpus
    with pytest.raises(UsageError, match="needs a dump file"):
        open_(OpenRequest(None, {}))
    with pytest.raises(UsageError, match="--base"):
        open_(OpenRequest(str(core), {"format_in": "raw", "base": "zz"}))
    with pytest.raises(UsageError, match="raw images only"):
        open_(OpenRequest(str(core), {"base": "0x1000"}))
    with pytest.raises(UsageError, match="--format-in must be one of"):
        open_(OpenRequest(str(core), {"format_in": "qcow2"}))
