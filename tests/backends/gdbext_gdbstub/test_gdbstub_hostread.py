"""The host read path without QEMU: this test process plays QEMU. Its own memory holds the
simulated guest's RAM (``mmap``), a fake stub answers ``gpa2hva`` with those addresses, and
the reads go through this process's ``/proc/PID/mem``. The owner of a socket is found from a
real listening socket the test opens.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import mmap
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from support.fakestub import FakeStub, opened_state, stub_for
from support.fakestub import sim as sim  # the fixture

from gdbext.errors import PhysMemoryError
from gdbext.plugin.target import OpenRequest, Target
from gdbext_gdb.naming import NAMING
from gdbext_gdbstub import hostpid
from gdbext_gdbstub.hostmem import HostMemReader, HostRange, _why, map_ram, parse_gpa2hva
from gdbext_gdbstub.hostpid import HostPathUnavailable
from gdbext_gdbstub.link import LiveTargetError, TargetLostError, TargetMemoryError
from gdbext_gdbstub.options import LiveOptions
from gdbext_gdbstub.ram import RamPiece
from gdbext_gdbstub.state import LiveState

#: The fake QEMU's ROM piece of pc.ram (``support.fakestub.MTREE``), kept apart in host memory.
ROM = (0xC0000, 0xCB000)


def address_of(buffer: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


@dataclass
class HostStub(FakeStub):
    """A fake QEMU whose RAM is in this process: ``gpa2hva`` answers with its addresses."""

    main: mmap.mmap | None = None
    rom: mmap.mmap | None = None
    address: tuple[str, int] | None = ("127.0.0.1", 1234)
    refuse: str | None = None
    corrupt: bool = False
    gpa2hva: list[int] = field(default_factory=list)

    def load(self) -> None:
        self.main = mmap.mmap(-1, self.memory.ram_size)
        self.rom = mmap.mmap(-1, ROM[1] - ROM[0])
        for paddr, data in self.memory.iter_frames():
            if ROM[0] <= paddr < ROM[1]:
                self.rom[paddr - ROM[0] : paddr - ROM[0] + len(data)] = data
            else:
                self.main[paddr : paddr + len(data)] = data
        if self.corrupt:
            root = (self.cpus[0].cr3 or 0) & ~0xFFF
            self.main[root : root + 8] = b"\xff" * 8

    def hva(self, gpa: int) -> int:
        assert self.main is not None and self.rom is not None
        if ROM[0] <= gpa < ROM[1]:
            return address_of(self.rom) + gpa - ROM[0]
        return address_of(self.main) + gpa

    def monitor(self, command: str) -> str:
        words = command.split()
        if words[0] != "gpa2hva":
            return super().monitor(command)
        self._check_alive()
        self.sent.append("monitor " + command)
        gpa = int(words[1], 16)
        self.gpa2hva.append(gpa)
        if self.refuse is not None:
            return self.refuse
        return f"Host virtual address for 0x{gpa:x} (pc.ram) is 0x{self.hva(gpa):x}\r\n"

    def stub_address(self) -> tuple[str, int] | None:
        return self.address


def host_stub(sim: Target, **kwargs: object) -> HostStub:
    base = stub_for(sim)
    stub = HostStub(base.memory, cpus=base.cpus, **kwargs)  # type: ignore[arg-type]
    stub.load()
    return stub


def open_host(stub: FakeStub, pid: int | None = None, **options: str) -> tuple[LiveState, Target]:
    state = LiveState(stub, "remote :1234", NAMING, find_pid=lambda _a: pid or os.getpid())
    request = OpenRequest(None, dict(options))
    return state, state.open(LiveOptions.from_request(request, NAMING))


# --- reads ---------------------------------------------------------------------------------


def test_host_reads_equal_the_guest_and_split_at_ram_lines(sim: Target) -> None:
    stub = host_stub(sim)
    state, target = open_host(stub)
    assert target.read_path == f"host memory (/proc/{os.getpid()}/mem)"
    assert isinstance(state.mapper.reader, HostMemReader)
    # Lines 0-0xa0000 and 0xcb000-end are one run each; the ROM piece is elsewhere.
    assert [(r.start, r.end) for r in state.mapper.reader.ranges] == [
        (0, 0xA0000),
        ROM,
        (0xCB000, stub.memory.ram_size),
    ]
    root = (sim.cpus[0].cr3 or 0) & ~0xFFF
    # Opening checked the root table through the stub (PhyMemMode on, and back); from then on
    # no packet is sent.
    assert stub.mode == 0 and stub.reads == [(root, 4096, 1)]
    sent = len(stub.sent)
    reads = [(root, 4096), (0xCA000, 0x2000), (0xCAFFC, 8), (0xC0000, 0x100000), (0x1000004, 13)]
    for paddr, size in reads:
        assert target.mapper.read(paddr, size) == sim.mapper.read(paddr, size), hex(paddr)
    assert len(stub.sent) == sent and len(stub.reads) == 1
    assert target.details["host memory"].startswith(f"QEMU process {os.getpid()}, 3 RAM runs")


def test_each_line_is_mapped_once_per_connection_at_both_ends(sim: Target) -> None:
    stub = host_stub(sim)
    state, _ = open_host(stub)
    end = stub.memory.ram_size
    assert stub.gpa2hva == [0, 0x9FFFF, 0xC0000, 0xCAFFF, 0xCB000, end - 1]
    state.invalidate()
    state.open(LiveOptions())
    assert len(stub.gpa2hva) == 6


def test_reads_outside_ram_raise_as_on_the_other_paths(sim: Target) -> None:
    stub = host_stub(sim)
    _, target = open_host(stub)
    for paddr, size in [(0xA0000, 8), (0x9FFF8, 16), (stub.memory.ram_size, 8)]:
        with pytest.raises(PhysMemoryError, match="outside RAM"):
            target.mapper.read(paddr, size)
    page = mmap.mmap(-1, 0x1000)
    reader = HostMemReader(os.getpid(), [HostRange(0, 0x1000, address_of(page))])
    with pytest.raises(TargetMemoryError, match="0x1000 is not in QEMU's RAM map"):
        reader.read(0xFF8, 16)


def test_the_reader_never_opens_for_writing(sim: Target) -> None:
    state, _ = open_host(host_stub(sim))
    reader = state.mapper.reader
    assert isinstance(reader, HostMemReader)
    assert reader._file.mode == "rb"
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.write(reader._file.fileno(), b"x")


# --- fallback and its reasons --------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"address": None}, "the gdbstub's address is unknown"),
        ({"refuse": "Memory at address 0x0 is not RAM\r\n"}, "did not map 0x0"),
        ({"refuse": "unknown command: 'gpa2hva'\r\n"}, "did not map 0x0"),
        ({"corrupt": True}, "differs from the gdbstub's"),
    ],
)
def test_unusable_host_path_falls_back_to_the_stub(
    sim: Target, change: dict[str, object], reason: str
) -> None:
    stub = host_stub(sim, **change)
    state, target = open_host(stub) if stub.address else opened_state(stub)
    assert target.read_path == "PhyMemMode"
    assert target.details["host memory"].startswith("not used: ")
    assert reason in target.details["host memory"]
    assert reason in state.host_reason
    with pytest.raises(LiveTargetError, match=f"^--read-via host: .*{reason[:20]}"):
        state.open(LiveOptions(read_via="host"))
    assert target.mapper.read(0x1000, 8) == sim.mapper.read(0x1000, 8)


def test_pid_that_cannot_be_read_falls_back(sim: Target) -> None:
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    _, target = open_host(host_stub(sim), pid=dead)
    assert target.read_path == "PhyMemMode"
    assert f"cannot open /proc/{dead}/mem" in target.details["host memory"]


def test_stub_and_named_paths_skip_the_host(sim: Target) -> None:
    stub = host_stub(sim)
    _, target = open_host(stub, read_via="stub")
    assert target.read_path == "PhyMemMode"
    assert "host memory" not in target.details
    assert stub.gpa2hva == []
    _, target = open_host(host_stub(sim), read_via="auto")
    assert target.read_path.startswith("host memory")


def test_qemu_gone_mid_read_is_a_lost_target() -> None:
    page = mmap.mmap(-1, 0x1000)
    page[:4] = b"live"
    child = os.fork()
    if child == 0:  # the child has the page at the same address; it waits to be killed
        try:
            time.sleep(60)
        finally:
            os._exit(0)
    try:
        reader = HostMemReader(child, [HostRange(0, 0x1000, address_of(page))])
        assert reader.read(0, 4) == b"live"
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
    with pytest.raises(TargetLostError, match=f"QEMU's process {child} is gone"):
        reader.read(0, 4)


def test_permission_errors_say_what_is_needed() -> None:
    why = _why(PermissionError(errno.EACCES, "Permission denied"))
    assert "ptrace_scope" in why and "root" in why


def test_map_ram_checks_both_ends_of_a_line() -> None:
    class Split:
        def monitor(self, command: str) -> str:
            gpa = int(command.split()[1], 16)
            hva = 0x7F0000000000 + gpa + (0x1000 if gpa >= 0x5000 else 0)
            return f"Host virtual address for 0x{gpa:x} (pc.ram) is 0x{hva:x}"

    with pytest.raises(HostPathUnavailable, match="not one run of QEMU's memory"):
        map_ram(Split(), [RamPiece(0, 0x8000, "pc.ram")])  # type: ignore[arg-type]
    assert parse_gpa2hva("Host virtual address for 0x5 (x.ram) is 0x10", 5) == ("x.ram", 0x10)


# --- the gdbstub's process -----------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


def test_the_listening_socket_is_found_and_its_owner_is_this_process(listener: int) -> None:
    inodes = hostpid.listening_inodes(listener)
    assert len(inodes) == 1
    assert hostpid.socket_owners(inodes) == [os.getpid()]
    assert hostpid.stub_pid(("127.0.0.1", listener)) == os.getpid()
    assert hostpid.stub_pid(("localhost", listener)) == os.getpid()


def test_an_ipv6_listener_is_found() -> None:
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with s:
        s.listen(1)
        port = int(s.getsockname()[1])
        assert hostpid.stub_pid(("::1", port)) == os.getpid()


def test_no_listener_remote_or_unknown_address_is_a_reason(
    listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = int(s.getsockname()[1])  # bound, not listening
    with pytest.raises(HostPathUnavailable, match=f"no socket of this host listens on port {free}"):
        hostpid.stub_pid(("127.0.0.1", free))
    with pytest.raises(HostPathUnavailable, match=r"192\.0\.2\.1:1234 is not on this host"):
        hostpid.stub_pid(("192.0.2.1", 1234))
    with pytest.raises(HostPathUnavailable, match="address is unknown"):
        hostpid.stub_pid(None)
    monkeypatch.setattr(hostpid, "socket_owners", lambda inodes, proc="/proc": [])
    with pytest.raises(HostPathUnavailable, match="no process found"):
        hostpid.stub_pid(("127.0.0.1", listener))


# --- --read-via ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "read_via"),
    [(None, None), ("auto", None), ("host", "host"), ("stub", "stub"), ("phymem", "phymem")],
)
def test_read_via_values(given: str | None, read_via: str | None) -> None:
    options = {} if given is None else {"read_via": given}
    assert LiveOptions.from_request(OpenRequest(None, options), NAMING).read_via == read_via


def test_read_via_stub_with_neither_phymem_nor_xp_still_takes_the_direct_map(sim: Target) -> None:
    stub = host_stub(sim, has_phymem=False, has_monitor=False, symbols={})
    _, target = open_host(stub, read_via="stub", direct_map="0xffff888000000000")
    assert target.read_path == "direct map at 0xffff888000000000"


def test_a_cpu_without_paging_yet_is_asked_again_at_the_next_stop(sim: Target) -> None:
    stub = host_stub(sim)
    paging = stub.cpus[0]
    stub.cpus = [dataclasses.replace(paging, cr3=0)]  # a VM stopped before the kernel ran
    state, target = open_host(stub)
    assert target.read_path == "PhyMemMode"
    assert "no page table in RAM (CR3)" in target.details["host memory"]
    assert stub.gpa2hva == []  # nothing mapped while nothing can be checked
    stub.cpus = [paging]
    state.invalidate()  # the next stop
    target = state.open(LiveOptions())
    assert target.read_path.startswith("host memory")
    assert target.mapper.read(0x1000004, 13) == sim.mapper.read(0x1000004, 13)
    assert len(stub.gpa2hva) == 6
