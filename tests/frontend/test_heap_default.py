"""``heap`` on a Linux dump needs no ``--memmap``: e820 is the default where the target is Linux.

The expected heap comes from the guest's own boot log (the ``BIOS-e820`` lines its serial
console printed, ``fixtures/kernels/NAME.serial.log``) and QEMU's ``gva2gpa`` of the direct
map's base, both recorded at the stop the dump was taken.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from support.cli import cli_text as run
from support.paths import KERNELS

from gdbext.errors import UsageError
from gdbext.frontend.parsing import build_parser
from gdbext.plugin.host import Host


def largest_usable(name: str) -> tuple[int, int]:
    """The largest ``usable`` range of the guest's boot log, end exclusive."""
    log = (KERNELS / f"{name}.serial.log").read_text()
    ranges = [
        (int(lo, 16), int(hi, 16) + 1)
        for lo, hi in re.findall(r"BIOS-e820: \[mem 0x([0-9a-f]+)-0x([0-9a-f]+)\] usable", log)
    ]
    assert ranges
    return max(ranges, key=lambda r: r[1] - r[0])


def direct_map_base(name: str) -> int:
    """The higher-half address QEMU translated to physical 0."""
    text = (KERNELS / f"{name}.gva2gpa.txt").read_text()
    hits = [int(va, 16) for va, pa in re.findall(r"^([0-9a-f]{16}) ([0-9a-f]{16})$", text, re.M)
            if int(pa, 16) == 0 and int(va, 16) >> 63]  # fmt: skip
    return min(hits)


@pytest.mark.parametrize("name", ["4level", "kaslr-pti", "la57"])
def test_heap_defaults_to_e820_on_a_linux_dump(
    kernel_dump: Callable[[str], Path], name: str
) -> None:
    dump = str(kernel_dump(name))
    status, out = run(["heap", dump, "--json"])
    assert status == 0
    lo, hi = largest_usable(name)
    base = direct_map_base(name)
    assert out.strip() == f'{{"start": "0x{base + lo:x}", "end": "0x{base + hi:x}"}}'
    status, text = run(["heap", dump])
    assert status == 0 and "the e820 table (Linux's default) of boot_params at 0x" in text
    assert run(["heap", dump, "--memmap", "e820", "--json"])[1] == out


def test_no_default_where_the_target_is_not_linux(tmp_path: Path) -> None:
    scenario = tmp_path / "plain.json"
    scenario.write_text('{"levels": 4, "ram": "16M", "mappings": []}')
    with pytest.raises(UsageError, match=r"not known to be Linux .* give --memmap bootinfo"):
        run(["heap", "--backend", "sim", "--scenario", str(scenario)])


def test_help_says_what_heap_means() -> None:
    parser = build_parser(Host.create())
    sub = next(a for a in parser._actions if a.dest == "command")
    assert isinstance(sub.choices, Mapping)
    text = " ".join(sub.choices["heap"].format_help().split())
    assert "Linux: the largest Usable region of the e820 map" in text
    assert "moved into the direct map" in text
    assert "e820 is the default for a Linux target" in text
    assert "A BootInfo kernel (booted by the bootloader crate): the seed's contract" in text
    # The debuggers' help is the same parser's.
    from gdbext.session import Session

    session_help = " ".join(Session(Host.create()).help("pt-heap").split())
    assert "Linux: the largest Usable region of the e820 map" in session_help
    assert "the seed's contract" in session_help
