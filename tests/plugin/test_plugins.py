"""The plugin host: entry points, built-ins, block list, and a plugin defined in a test."""

from __future__ import annotations

import io
from collections.abc import Sequence
from importlib.metadata import entry_points

import pytest

from gdbext import cli
from gdbext.addr import AddrRange
from gdbext.cpu import CpuState
from gdbext.errors import PluginError, UsageError
from gdbext.plugin.hookspecs import ENTRY_POINT_GROUP, hookimpl
from gdbext.plugin.host import Host, make_plugin_manager
from gdbext.plugin.target import BackendInfo, BackendOption, OpenRequest, Target


class ToyMemory:
    """64 KiB of RAM holding a 4-level table that maps one 4 KiB page 0x5000 -> 0x9000."""

    read_only = True

    def __init__(self) -> None:
        self.data = bytearray(0x10000)
        for table, entry in ((0x1000, 0x2003), (0x2000, 0x3003), (0x3000, 0x4003)):
            self.data[table : table + 8] = entry.to_bytes(8, "little")
        self.data[0x4000 + 5 * 8 : 0x4000 + 6 * 8] = (0x9000 | 0x3).to_bytes(8, "little")

    def read(self, paddr: int, size: int) -> bytes:
        return bytes(self.data[paddr : paddr + size])

    def write(self, paddr: int, data: bytes) -> None:
        raise AssertionError("the toy backend is read-only")


class ToyBackendPlugin:
    @hookimpl
    def gdbext_backends(self) -> Sequence[BackendInfo]:
        def open_toy(request: OpenRequest) -> Target:
            return Target(
                backend="toy",
                description=f"toy {request.options.get('flavour')}",
                mapper=ToyMemory(),
                cpus=[CpuState(cr0=0x80010001, cr3=0x1000, cr4=0x20, efer=0xD00)],
                ram=[AddrRange(0, 0x10000)],
            )

        return [
            BackendInfo(
                "toy",
                "a backend defined in a test",
                open_toy,
                [BackendOption("flavour", "NAME", "any word")],
            )
        ]


def test_builtin_sim_backend_is_an_entry_point() -> None:
    eps = entry_points(group=ENTRY_POINT_GROUP)
    assert "sim" in {ep.name for ep in eps}
    assert "sim" in Host.create().backends()


def test_plugin_defined_in_test_adds_a_backend() -> None:
    host = Host(make_plugin_manager(extra_plugins=[ToyBackendPlugin()]))
    assert set(host.backends()) >= {"sim", "toy"}
    out = io.StringIO()
    status = cli.run(
        ["translate", "--backend", "toy", "--flavour", "x", "--json", "0x5123"], host, out
    )
    assert status == 0
    assert '"paddr": "0x9123"' in out.getvalue()


def test_block_list_removes_a_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "sim" not in Host(make_plugin_manager(block=["sim"])).backends()
    monkeypatch.setenv("GDBEXT_BLOCK_PLUGINS", "sim")
    host = Host.create()
    assert "sim" not in host.backends()
    with pytest.raises(PluginError, match="no backend named sim"):
        host.backend("sim")


def test_output_formats_come_from_the_builtin_plugin() -> None:
    host = Host.create()
    assert set(host.output_formats("walk")) == {"text", "json", "qemu-tlb", "ptdump"}
    host_without = Host(make_plugin_manager(block=["render"]))
    assert host_without.output_formats("walk") == {}


def test_duplicate_backend_names_are_an_error() -> None:
    class Twin(ToyBackendPlugin):
        pass

    host = Host(make_plugin_manager(extra_plugins=[ToyBackendPlugin(), Twin()]))
    with pytest.raises(PluginError, match="two plugins"):
        host.backends()


def test_unknown_backend_is_a_usage_error_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["walk", "--backend", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no backend named nope" in err
    with pytest.raises(UsageError):
        cli.run(["walk"], Host.create(), io.StringIO())
