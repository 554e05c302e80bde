"""Shared test set-up: ``fixtures/`` on ``sys.path``, the ``qemu`` marker, unpacked kernel dumps,
the booted guests and the headless Chromium shared by the tests of a session."""

from __future__ import annotations

import hashlib
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
    from support.mappage import Browser


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("GDBEXT_REQUIRE_QEMU") == "1":
        import shutil

        # CI: the tests that drive the real gdb and lldb must run, not skip.
        for debugger in ("gdb", "lldb"):
            if shutil.which(debugger) is None:
                raise pytest.UsageError(f"GDBEXT_REQUIRE_QEMU=1 but {debugger} is not installed")
    config.addinivalue_line(
        "markers",
        "qemu: boots a real kernel under QEMU (skipped without QEMU, unless GDBEXT_REQUIRE_QEMU=1)",
    )


#: Where unpacked kernel dumps are kept between runs, by the digest of their ``.elf.xz``.
UNPACKED = FIXTURES.parent / "build" / "test-kernels"
#: The modification time an unpacked dump is given: a write to it (a test that changed the
#: shared copy) sets another, and the next run unpacks it again.
UNPACKED_MTIME_NS = 1_000_000_000_000_000_000


def unpacked_kernel(name: str) -> Path:
    """``fixtures/kernels/NAME.elf.xz`` unpacked (sparse) into ``build/test-kernels/DIGEST/``,
    once: unpacking takes about a second a dump, which every run (and every xdist worker)
    would otherwise pay again."""
    from minimize import unpack

    xz = KERNELS / f"{name}.elf.xz"
    digest = hashlib.sha256(xz.read_bytes()).hexdigest()[:16]
    path = UNPACKED / digest / f"{name}.elf"
    try:
        if path.stat().st_mtime_ns == UNPACKED_MTIME_NS:
            return path
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    unpack(xz, part)
    os.utime(part, ns=(UNPACKED_MTIME_NS, UNPACKED_MTIME_NS))
    os.replace(part, path)  # atomic: a concurrent run sees the old file or the whole new one
    return path


@pytest.fixture(scope="session")
def kernel_dump() -> Callable[[str], Path]:
    """``kernel_dump(NAME)``: ``fixtures/kernels/NAME.elf.xz`` unpacked (sparse), shared by
    every test of every run: tests read it and must not change it (copy it with
    ``minimize.copy_sparse`` to change it)."""
    return unpacked_kernel


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


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One headless Chromium for every page the tests of this process load
    (:class:`support.mappage.Browser`), started on first use; skips the test without Chromium."""
    from support.mappage import Browser, chromium

    chromium()
    shared = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield shared
    shared.close()
