"""Shared test set-up: ``fixtures/`` on ``sys.path``, the ``qemu`` marker, unpacked kernel dumps."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
KERNELS = FIXTURES / "kernels"
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))

if TYPE_CHECKING:
    from qemu_guest import QemuGuest


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("GDBEXT_REQUIRE_QEMU") == "1":
        import shutil

        # CI: the tests that drive the real gdb and lldb must run, not skip.
        for debugger in ("gdb", "lldb"):
            if shutil.which(debugger) is None:
                raise pytest.UsageError(f"GDBEXT_REQUIRE_QEMU=1 but {debugger} is not installed")
    config.addinivalue_line(
        "markers", "qemu: boots a real kernel under QEMU (skipped without QEMU, unless "
        "GDBEXT_REQUIRE_QEMU=1)",
    )


@pytest.fixture(scope="session")
def kernel_dump(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``kernel_dump(NAME)``: ``fixtures/kernels/NAME.elf.xz`` unpacked (sparse), once a session."""
    from minimize import unpack

    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            out = tmp_path_factory.mktemp(f"kernel-{name}") / f"{name}.elf"
            cache[name] = unpack(KERNELS / f"{name}.elf.xz", out)
        return cache[name]

    return get


def require_qemu() -> None:
    """Skip the test without QEMU, a kernel or busybox-static; fail instead under
    ``GDBEXT_REQUIRE_QEMU=1`` (CI)."""
    from qemu_guest import MissingPrerequisite, check_prerequisites

    try:
        check_prerequisites()
    except MissingPrerequisite as exc:
        if os.environ.get("GDBEXT_REQUIRE_QEMU") == "1":
            pytest.fail(f"GDBEXT_REQUIRE_QEMU=1 but {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def qemu_guest() -> Iterator[Callable[[str], QemuGuest]]:
    """``qemu_guest(NAME)``: a running guest of ``qemu_guest.CONFIGS[NAME]`` (``4level``,
    ``kaslr-pti``, ``la57``), booted once a session on first use and killed at its end.

    Tests may stop, resume or attach GDB to it (``guest.gdb_port``); a boot that failed fails
    every later request for the same configuration without booting again.
    """
    from qemu_guest import CONFIGS, GuestError, QemuGuest

    guests: dict[str, QemuGuest] = {}
    failed: dict[str, str] = {}

    def get(name: str) -> QemuGuest:
        require_qemu()
        if name in failed:
            pytest.fail(failed[name])
        if name not in guests:
            guest = QemuGuest(CONFIGS[name])
            try:
                guest.start()
            except GuestError as exc:
                failed[name] = f"guest {name} did not boot: {exc}"
                raise
            guests[name] = guest
        return guests[name]

    yield get
    for guest in guests.values():
        guest.close()
