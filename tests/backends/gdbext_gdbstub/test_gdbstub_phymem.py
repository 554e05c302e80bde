"""The live backend over a fake gdbstub: PhyMemMode is back after every operation, errors,
a lost connection and Ctrl-C included.

The fake stub (:class:`support.fakestub.FakeStub`) behaves as QEMU's gdbstub does where it
matters.
"""

from __future__ import annotations

import pytest
from support.fakestub import opened, opened_state, stub_for
from support.fakestub import sim as sim  # the fixture

from gdbext.errors import PhysMemoryError
from gdbext.frontend.commands import translate, walk
from gdbext.plugin.target import Target
from gdbext_gdbstub.link import LiveTargetError, TargetLostError, TargetMemoryError

# --- PhyMemMode ----------------------------------------------------------------------------


@pytest.mark.parametrize("before", [0, 1])
def test_mode_is_back_after_a_command_and_each_bracket_sends_one_query_switch_restore(
    sim: Target, before: int
) -> None:
    stub = stub_for(sim, mode=before)
    target = opened(stub)
    stub.sent.clear()
    assert target.command_scope is not None
    with target.command_scope():
        with target.command_scope():  # re-entrant
            records = list(walk(target).runs())
        assert stub.mode == 1
        translate(target, [0xFFFFFFFF81000000])
    assert stub.mode == before
    expected = ["qqemu.PhyMemMode"] + (["Qqemu.PhyMemMode:1", "Qqemu.PhyMemMode:0"] * (1 - before))
    assert stub.mode_packets() == expected
    assert records == list(walk(sim).runs())
    # Every read went out in physical mode.
    assert {mode for _, _, mode in stub.reads} == {1}


def test_reads_outside_a_scope_bracket_themselves(sim: Target) -> None:
    stub = stub_for(sim)
    target = opened(stub)
    stub.sent.clear()
    assert target.mapper.read(0x1000000, 8) == sim.mapper.read(0x1000000, 8)
    assert stub.mode == 0
    assert stub.mode_packets() == ["qqemu.PhyMemMode", "Qqemu.PhyMemMode:1", "Qqemu.PhyMemMode:0"]
    stub.sent.clear()
    target.mapper.read(0x1000008, 8)  # cached: nothing sent at all
    assert stub.sent == []


def test_a_scope_without_uncached_reads_sends_nothing(sim: Target) -> None:
    stub = stub_for(sim)
    target = opened(stub)
    assert target.command_scope is not None
    with target.command_scope():
        first = list(walk(target).runs())
    stub.sent.clear()
    with target.command_scope():
        assert list(walk(target).runs()) == first
    assert stub.sent == []


@pytest.mark.parametrize("before", [0, 1])
@pytest.mark.parametrize("failure", ["outside-ram", "refused", "interrupt"])
def test_mode_is_back_after_a_failing_read(sim: Target, before: int, failure: str) -> None:
    stub = stub_for(sim, mode=before)
    target = opened(stub)
    assert target.command_scope is not None
    expected: type[BaseException]
    if failure == "refused":

        def refuse(addr: int, size: int) -> None:
            if addr == 0x2000000:
                raise TargetMemoryError(addr, size, "Cannot access memory at address 0x2000000")

        stub.on_read, expected = refuse, PhysMemoryError
    elif failure == "interrupt":

        def interrupt(addr: int, size: int) -> None:
            if addr == 0x2000000:
                raise KeyboardInterrupt

        stub.on_read, expected = interrupt, KeyboardInterrupt
    else:
        expected = PhysMemoryError
    with pytest.raises(expected), target.command_scope():
        target.mapper.read(0x1000000, 8)  # switches the mode
        assert stub.mode == 1
        if failure == "outside-ram":
            target.mapper.read(0x10000000, 8)  # beyond the 256 MiB of RAM
        else:
            target.mapper.read(0x2000000, 8)
    assert stub.mode == before
    assert stub.mode_packets()[-1] == f"Qqemu.PhyMemMode:{before}" or before == 1


def test_a_connection_lost_mid_command_gives_the_read_error_only(sim: Target) -> None:
    stub = stub_for(sim)
    state, target = opened_state(stub)
    assert target.command_scope is not None
    with pytest.raises(TargetLostError, match="lost the connection"), target.command_scope():
        target.mapper.read(0x1000000, 8)
        stub.alive = False  # QEMU killed: nothing to restore, and no second error
        target.mapper.read(0x3000000, 8)
    # The mode it could not put back, for a debugger that reconnects (a stub that stopped
    # answering keeps its mode).
    assert state.bracket.unrestored == 0
    assert target.command_scope is not None
    with target.command_scope():  # the bracket is usable again
        pass


def test_ctrl_c_while_restoring_still_restores(sim: Target) -> None:
    stub = stub_for(sim)
    target = opened(stub)
    assert target.command_scope is not None
    pressed: list[str] = []

    def press_once(text: str) -> None:
        if text == "Qqemu.PhyMemMode:0" and not pressed:
            pressed.append(text)
            raise KeyboardInterrupt

    stub.on_packet = press_once
    with pytest.raises(KeyboardInterrupt), target.command_scope():
        target.mapper.read(0x1000000, 8)
    assert stub.mode == 0 and pressed


def test_a_refused_restore_is_an_error_after_success_only(sim: Target) -> None:
    stub = stub_for(sim)
    target = opened(stub)
    assert target.command_scope is not None

    def refuse_restore(text: str) -> None:
        if text == "Qqemu.PhyMemMode:0":
            raise LiveTargetError("maintenance: boom")

    stub.on_packet = refuse_restore
    restore_error = "could not restore PhyMemMode to 0"
    with pytest.raises(LiveTargetError, match=restore_error), target.command_scope():
        target.mapper.read(0x1000000, 8)
    stub.mode = 0
    with pytest.raises(PhysMemoryError), target.command_scope():  # the command's error wins
        target.mapper.read(0x1200000, 8)
        target.mapper.read(0x10000000, 8)
