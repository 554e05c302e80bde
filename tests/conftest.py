"""Shared test set-up: ``fixtures/`` on ``sys.path``, the ``qemu`` marker, unpacked kernel dumps."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
KERNELS = FIXTURES / "kernels"
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))


def pytest_configure(config: pytest.Config) -> None:
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
