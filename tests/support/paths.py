"""Where the tests find the checkout and its fixtures, whatever directory a test lives in."""

from __future__ import annotations

from pathlib import Path

#: The checkout's top directory.
ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
#: The committed kernel dumps and QEMU's goldens for them.
KERNELS = FIXTURES / "kernels"
SCENARIOS = FIXTURES / "scenarios"
#: The demo scenario, ``fixtures/scenarios/demo.json``.
DEMO = SCENARIOS / "demo.json"
