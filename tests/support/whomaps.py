"""The simulated machine of the ``who-maps`` and ``aliases`` tests: frames mapped at several
addresses with other permissions, and a page table linked 8 times. The tests compute what they
expect from these placements."""

from __future__ import annotations

import json
from pathlib import Path

from support.scenario import mapping

#: A machine with frames mapped several times with other permissions, and a shared table.
SCENARIO = {
    "levels": 4,
    "ram": "128M",
    "nxe": True,
    "mappings": [
        mapping(0x400000, 0x3000000, 4, "USER_ACCESSIBLE"),
        mapping(0xFFFFC90000100000, 0x3000000, 4, "WRITABLE", "NO_EXECUTE"),
        mapping(0xFFFFFFFF81000000, 0x3001000, 2),
        mapping(0xFFFF888000000000, 0x3000000, 1, "WRITABLE", "NO_EXECUTE", size="2M"),
        mapping(0xFFFFFF0000000000, 0x2000000, 1, "GLOBAL", "NO_EXECUTE"),
        mapping(0xFFFFFF0000001000, 0x3003000, 1, "NO_EXECUTE"),
    ],
    # The level-1 table of 0xffffff0000000000 linked by 7 more PDEs: 8 copies, 2 MiB apart.
    "links": [{"vaddr": "0xffffff0000200000", "level": 2, "count": 7,
               "table_of": "0xffffff0000000000"}],
}  # fmt: skip


def scenario_file(tmp: Path) -> Path:
    path = tmp / "whomaps.json"
    path.write_text(json.dumps(SCENARIO))
    return path
