"""``python -m gdbext_sim SCENARIO --core OUT``: build a scenario and write it as a QEMU ELF core.

Exit status 0, or 2 with a one-line message for a bad scenario or an unwritable file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gdbext.errors import GdbextError
from gdbext_sim.scenario import load_scenario


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gdbext_sim", description="Build a scenario; write it as an ELF core."
    )
    parser.add_argument("scenario", help="JSON scenario file")
    parser.add_argument("--core", required=True, metavar="OUT", help="ELF core file to write")
    args = parser.parse_args(argv)
    try:
        machine = load_scenario(args.scenario)
        machine.write_core(args.core)
    except GdbextError as exc:
        print(f"gdbext_sim: {exc}", file=sys.stderr)
        return exc.exit_status
    except OSError as exc:
        print(f"gdbext_sim: {args.core}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
