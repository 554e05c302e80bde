"""Bad input never reaches the user as a traceback: fuzzed scenarios and command lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdbext import cli
from gdbext.errors import GdbextError
from gdbext_sim.scenario import build_machine

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 70), 1 << 70),
    st.sampled_from(["0x1000", "4K", "2M", "1G", "x", "", "-1", "0x", "1P", "WRITABLE"]),
    st.floats(allow_nan=True),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
MAPPING = st.fixed_dictionaries(
    {},
    optional={
        "vaddr": VALUES | st.sampled_from(["0x400000", "0xffff800000000000", "0x1001"]),
        "paddr": VALUES | st.sampled_from(["0x0", "0x200000"]),
        "size": VALUES | st.sampled_from(["4K", "2M", "1G", "4096", "3K"]),
        "count": VALUES | st.integers(-2, 4),
        "flags": VALUES | st.just(["WRITABLE", "NO_EXECUTE"]),
    },
)
SCENARIO = st.fixed_dictionaries(
    {},
    optional={
        "levels": VALUES | st.sampled_from([4, 5, 3]),
        "ram": VALUES | st.sampled_from(["16M", "1M", "0", "1P"]),
        "nxe": VALUES,
        "max_phys_bits": VALUES | st.sampled_from([36, 52, 60]),
        "cpus": VALUES,
        "mappings": st.lists(MAPPING, max_size=3) | VALUES,
        "links": st.lists(
            st.fixed_dictionaries(
                {}, optional={"vaddr": VALUES, "level": VALUES, "count": VALUES,
                              "table_of": VALUES}
            ),
            max_size=2,
        ),
        "entries": st.lists(
            st.fixed_dictionaries(
                {}, optional={"vaddr": VALUES, "level": VALUES, "value": VALUES}
            ),
            max_size=2,
        ),
        "recursive_index": VALUES,
        "bootinfo": VALUES
        | st.fixed_dictionaries(
            {},
            optional={
                "version": st.sampled_from(["0.11", "0.9", "1"]) | VALUES,
                "at": VALUES | st.sampled_from(["0x1000", "0xfffffff000"]),
                "physical_memory_offset": VALUES,
                "features": VALUES,
                "regions": st.lists(
                    st.fixed_dictionaries(
                        {}, optional={"start": VALUES, "end": VALUES, "kind": VALUES}
                    ),
                    max_size=3,
                )
                | VALUES,
            },
        ),
    },
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SCENARIO)
def test_any_scenario_builds_or_fails_with_a_gdbext_error(doc: dict[str, Any]) -> None:
    try:
        machine = build_machine(doc, "fuzz.json")
    except GdbextError as exc:
        assert "\n" not in str(exc)
        return
    # What was built walks and translates without surprises.
    pt = machine.page_table
    for record in pt.iter_runs():
        assert record is not None
    for va in (0, 0x400000, 0xFFFF_8000_0000_0000):
        pt.try_translate(va)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=SCENARIO,
    command=st.sampled_from(
        [
            ["walk"],
            ["walk", "--json", "--no-merge"],
            ["walk", "--format", "qemu-tlb"],
            ["translate", "0x400000", "0xffff800000000000"],
            ["info", "--json"],
            ["heap", "--json"],
            ["walk", "--cr3", "0xfffffff000"],
            ["walk", "--range", "0x3000-0x1000"],
        ]
    ),
)
def test_cli_on_any_scenario_exits_0_1_or_2(
    doc: dict[str, Any], command: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    path: Path = tmp_path_factory.mktemp("fuzz") / "s.json"
    path.write_text(json.dumps(doc, default=str))
    status = cli.main([*command, "--backend", "sim", "--scenario", str(path)])
    assert status in (0, 1, 2)
