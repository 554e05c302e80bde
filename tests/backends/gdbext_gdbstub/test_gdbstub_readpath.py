"""The live backend over a fake gdbstub: the three read paths (PhyMemMode, ``monitor xp``, the
direct map) and the options that choose one.

The fake stub (:class:`support.fakestub.FakeStub`) behaves as QEMU's gdbstub does where it
matters.
"""

from __future__ import annotations

import pytest
from support.fakestub import DIRECT_MAP, opened, stub_for
from support.fakestub import sim as sim  # the fixture

from gdbext.errors import UsageError
from gdbext.frontend.commands import walk
from gdbext.plugin.target import OpenRequest, Target
from gdbext_gdb.naming import NAMING
from gdbext_gdbstub.link import LiveTargetError, TargetMemoryError
from gdbext_gdbstub.mapper import LiveMapper
from gdbext_gdbstub.options import LiveOptions
from gdbext_gdbstub.readpath import parse_xp

# --- read paths ------------------------------------------------------------------------------


def test_xp_when_phymem_is_refused_equals_physical_reads(sim: Target) -> None:
    stub = stub_for(sim, has_phymem=False)
    target = opened(stub)
    assert target.read_path == "monitor xp"
    assert target.mapper.read(0x1000004, 13) == sim.mapper.read(0x1000004, 13)
    assert target.command_scope is not None
    with target.command_scope():
        assert list(walk(target).runs()) == list(walk(sim).runs())
    assert stub.reads == []  # no memory reads: only monitor commands
    assert not [s for s in stub.sent if s.startswith("Qqemu")]


def test_xp_can_be_chosen_and_is_batched(sim: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gdbext_gdbstub.readpath.XP_CHUNK_QWORDS", 1024)
    stub = stub_for(sim)
    target = opened(stub, read_via="xp")
    assert target.read_path == "monitor xp"
    mapper = target.mapper
    assert isinstance(mapper, LiveMapper)
    stub.sent.clear()
    mapper.prefetch([0x1000000 + i * 4096 for i in range(4)])
    assert stub.sent == ["monitor xp /1024gx 0x1000000", "monitor xp /1024gx 0x1002000"]
    assert mapper.read(0x1000000, 0x4000) == sim.mapper.read(0x1000000, 0x4000)
    assert stub.mode == 0


def test_xp_output_errors() -> None:
    with pytest.raises(TargetMemoryError):
        parse_xp("0000000010000000: Cannot access memory\r\n", 0x10000000, 1)
    with pytest.raises(LiveTargetError, match="expected 0x1000"):
        parse_xp("0000000000002000: 0x0000000000000000\r\n", 0x1000, 1)
    with pytest.raises(LiveTargetError, match="1 of 2 words"):
        parse_xp("0000000000001000: 0x0000000000000000\r\n", 0x1000, 2)
    with pytest.raises(LiveTargetError, match="unexpected"):
        parse_xp("unknown command: 'xp'\r\n", 0x1000, 1)


def test_direct_map_for_stubs_with_neither(sim: Target) -> None:
    stub = stub_for(sim, has_phymem=False, has_monitor=False)
    with pytest.raises(LiveTargetError, match="--direct-map ADDR"):
        opened(stub)
    target = opened(stub, direct_map=hex(DIRECT_MAP))
    assert target.read_path == f"direct map at 0x{DIRECT_MAP:x}"
    assert target.facts.direct_map_base == DIRECT_MAP
    assert list(walk(target).runs()) == list(walk(sim).runs())
    assert {addr >= DIRECT_MAP for addr, _, _ in stub.reads} == {True}
    stub.symbols["page_offset_base"] = DIRECT_MAP
    target = opened(stub)
    assert target.read_path == f"direct map at 0x{DIRECT_MAP:x}"


def test_direct_map_on_qemu_holds_the_stub_in_virtual_mode(sim: Target) -> None:
    stub = stub_for(sim, mode=1)
    target = opened(stub, read_via="direct-map", direct_map=hex(DIRECT_MAP))
    assert target.mapper.read(0x1000000, 8) == sim.mapper.read(0x1000000, 8)
    assert {mode for _, _, mode in stub.reads} == {0}
    assert stub.mode == 1


def test_forced_paths_that_do_not_exist(sim: Target) -> None:
    with pytest.raises(LiveTargetError, match="no PhyMemMode"):
        opened(stub_for(sim, has_phymem=False), read_via="phymem")
    with pytest.raises(LiveTargetError, match="monitor xp"):
        opened(stub_for(sim, has_monitor=False), read_via="xp")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"read_via": "magic"}, "--read-via must be one of"),
        ({"direct_map": "banana"}, "--direct-map"),
        ({"direct_map": "0xffff888000000001"}, "page-aligned"),
    ],
)
def test_bad_options(options: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        LiveOptions.from_request(OpenRequest(None, options), NAMING)
    with pytest.raises(UsageError, match="not vmcore"):
        LiveOptions.from_request(OpenRequest("vmcore", {}), NAMING)
