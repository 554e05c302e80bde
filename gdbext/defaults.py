"""The defaults and choices of the commands' options: the bounds on what a command reads or
prints, the values ``--merge`` and ``--labels`` take.

Declared apart from the code that does the work, which imports them from here: a command's
declaration (its arguments, and so its help in GDB and LLDB, which is made when gdbext loads)
needs none of that code.
"""

from __future__ import annotations

from typing import Final

# --- walk ------------------------------------------------------------------------------------

#: Default bound on the leaves one walk produces: far above any real kernel's (Linux with 512 GiB
#: of RAM in 4 KiB pages has 128 M), far below what an alias bomb multiplies into.
DEFAULT_MAX_LEAVES: Final = 1 << 28
#: Default bound on the lines of an output that writes a line per leaf or per merged range
#: with shared tables expanded (``qemu-tlb``, JSON, ``--no-merge``): 4 Mi lines, 16 GiB in
#: 4 KiB pages, about 190 MB of ``qemu-tlb`` (a kernel's tables print far fewer: large pages,
#: merged ranges; the committed 128 MiB guests' ``info tlb`` has 75,000 lines).
DEFAULT_MAX_LINES: Final = 1 << 22
#: The same for ``--format ptdump``, whose lines are fewer (a line per series of equal
#: entries) and whose shared tables are not collapsed: 256 Ki lines (a kernel's ptdump has
#: hundreds to a few thousand).
DEFAULT_MAX_LINES_PTDUMP: Final = 1 << 18
#: ``--merge`` values: ranges contiguous in virtual and physical address (``pa``, the
#: default), or in virtual address only, whatever their frames (``va``).
MERGE_MODES: Final = ("pa", "va")
#: ``--labels`` values: ``auto`` (Linux's layout when the target looks like Linux), ``linux``,
#: ``none``.
LABEL_MODES: Final = ("auto", "linux", "none")

# --- map -------------------------------------------------------------------------------------

#: The most ranges drawn before aggregating (a 75,000-leaf address space of distinct
#: permissions fits; the HTML page stays under 3 MB).
MAP_MAX_RANGES: Final = 100_000
#: The map's bound on leaves (a 512 MiB guest's whole direct map in 4 KiB pages fits).
MAP_MAX_LEAVES: Final = 4_000_000

# --- memory ----------------------------------------------------------------------------------

#: Default bound on one read (``read --max-size``): 64 MiB, about 280 MB of hexdump.
DEFAULT_MAX_SIZE: Final = 64 << 20
#: Default bound on the hits ``search`` reports (``--max``).
DEFAULT_MAX_HITS: Final = 1000
#: Default bound on the leaks ``kaslr --leaks`` reports (``--max``).
DEFAULT_MAX_LEAKS: Final = 1000

# --- address spaces --------------------------------------------------------------------------

#: Most tables the roots scan accepts (a dump crafted to hold millions of copies stays bounded).
DEFAULT_MAX_ROOTS: Final = 1 << 16
#: The most tasks (leaders and threads) a walk of the task list reads before it calls the list
#: corrupt.
MAX_TASKS: Final = 1_000_000
