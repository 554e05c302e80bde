"""Which kernel the real-kernel tests boot (``fixtures/guest_host.py``), without QEMU.

``GDBEXT_TEST_KERNEL`` names a vmlinuz (``GDBEXT_KERNEL``, the old name, when it is unset); its
modules are found beside it when the package was unpacked elsewhere with ``dpkg-deb -x``
(``ROOT/boot/vmlinuz-R``, ``ROOT/lib/modules/R``), else under ``/lib/modules/R``, where ``R`` is
the release in the bzImage's setup header. The kernels here are hand-built bzImage headers
(``Documentation/x86/boot.rst``: ``"HdrS"`` at 0x202, ``kernel_version`` at 0x20e pointing at a
string 0x200 before its value).
"""

from __future__ import annotations

import gzip
import lzma
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from guest_host import (
    GuestError,
    MissingPrerequisite,
    find_kernel,
    find_module,
    kernel_release,
    kernel_version,
)
from qemu_guest import build_initramfs

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RELEASE = "6.1.0-99-amd64"
VERSION = f"{RELEASE} (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.999-1"
MODULE = b"\x7fELF a qemu_fw_cfg module"


def bzimage(version: str) -> bytes:
    """The first KiB of a bzImage: the setup header's magic and the version string at 0x300."""
    blob = bytearray(0x400)
    blob[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", blob, 0x20E, 0x100)  # the string at 0x200 + 0x100
    blob[0x300 : 0x300 + len(version) + 1] = version.encode() + b"\0"
    return bytes(blob)


def unpacked(root: Path, *, modules: bool = True, name: str = f"vmlinuz-{RELEASE}") -> Path:
    """A kernel package as ``dpkg-deb -x`` unpacks it under ``root``; the vmlinuz path."""
    (root / "boot").mkdir(parents=True)
    kernel = root / "boot" / name
    kernel.write_bytes(bzimage(VERSION))
    if modules:
        firmware = root / "lib" / "modules" / RELEASE / "kernel" / "drivers" / "firmware"
        firmware.mkdir(parents=True)
        (firmware / "qemu_fw_cfg.ko.xz").write_bytes(lzma.compress(MODULE))
    return kernel


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GDBEXT_TEST_KERNEL", "GDBEXT_KERNEL", "GDBEXT_MODULES"):
        monkeypatch.delenv(name, raising=False)


def test_the_environment_names_the_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    new, old = unpacked(tmp_path / "new"), unpacked(tmp_path / "old")
    monkeypatch.setenv("GDBEXT_KERNEL", str(old))
    assert find_kernel() == old  # the former name, alone
    monkeypatch.setenv("GDBEXT_TEST_KERNEL", str(new))
    assert find_kernel() == new


def test_a_named_kernel_that_is_not_a_file_is_an_error_not_a_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GDBEXT_TEST_KERNEL", str(tmp_path / "vmlinuz-nope"))
    with pytest.raises(GuestError) as info:
        find_kernel()
    assert not isinstance(info.value, MissingPrerequisite)
    assert str(info.value) == (
        f"GDBEXT_TEST_KERNEL={tmp_path / 'vmlinuz-nope'} is not a file (it names the vmlinuz to "
        "boot)"
    )


def test_modules_beside_an_unpacked_kernel(tmp_path: Path) -> None:
    kernel = unpacked(tmp_path)
    assert kernel_version(kernel) == VERSION
    assert kernel_release(kernel) == RELEASE
    assert find_module(kernel, "qemu_fw_cfg") == MODULE  # .ko.xz, decompressed
    assert find_module(kernel, "absent") is None  # built in: nothing to load
    archive = gzip.decompress(build_initramfs(kernel))
    assert MODULE in archive and b"lib/modules/00-qemu_fw_cfg.ko" in archive


def test_the_release_comes_from_the_header_whatever_the_file_name(tmp_path: Path) -> None:
    kernel = unpacked(tmp_path, name="bzImage")
    assert kernel_release(kernel) == RELEASE
    assert find_module(kernel, "qemu_fw_cfg") == MODULE


def test_missing_modules_say_where_they_were_looked_for(tmp_path: Path) -> None:
    kernel = unpacked(tmp_path, modules=False)
    with pytest.raises(MissingPrerequisite) as info:
        find_module(kernel, "qemu_fw_cfg")
    message = str(info.value)
    assert message.startswith(f"no modules for {kernel} (release {RELEASE}): none of ")
    assert str(tmp_path / "lib" / "modules" / RELEASE) in message
    assert f"/lib/modules/{RELEASE}" in message
    assert "dpkg-deb -x" in message and "GDBEXT_MODULES" in message


def test_gdbext_modules_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = unpacked(tmp_path / "a", modules=False)
    elsewhere = tmp_path / "mods"
    elsewhere.mkdir()
    (elsewhere / "qemu_fw_cfg.ko").write_bytes(b"plain")
    monkeypatch.setenv("GDBEXT_MODULES", str(elsewhere))
    assert find_module(kernel, "qemu_fw_cfg") == b"plain"


def test_installed_kernels_release_is_their_file_name() -> None:
    """The header's release of every ``/boot/vmlinuz-R`` on this machine is ``R``."""
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    if not kernels:
        pytest.skip("no /boot/vmlinuz-*")
    for kernel in kernels:
        assert kernel_release(kernel) == kernel.name.removeprefix("vmlinuz-")


def which_kernel(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(FIXTURES / "qemu_guest.py"), "kernel"]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_the_command_says_which_build_the_tests_boot(tmp_path: Path) -> None:
    """``python3 fixtures/qemu_guest.py kernel`` (what ``scripts/system-deps.sh`` prints)."""
    kernel = unpacked(tmp_path)
    env = {**os.environ, "GDBEXT_TEST_KERNEL": str(kernel)}
    proc = which_kernel(env)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == (
        f"real-kernel tests boot {kernel}: {VERSION}; not installed by dpkg; "
        f"modules {tmp_path / 'lib' / 'modules' / RELEASE}\n"
    )
    env["GDBEXT_TEST_KERNEL"] = str(tmp_path / "none")
    proc = which_kernel(env)
    assert proc.returncode == 1
    assert proc.stdout.startswith("real-kernel tests: GDBEXT_TEST_KERNEL=")
