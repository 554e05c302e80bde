"""gdbext: walk, translate and audit x86-64 page tables of live or dumped kernels.

The core (this package, minus the debugger front ends) imports neither ``gdb`` nor ``lldb``.

The Python API (:mod:`gdbext.api`)::

    import gdbext
    with gdbext.open("vmcore.elf") as t:
        pt = t.page_table()                     # or cpu=1, root=..., kernel=True, user_pgd=True
        pt.translate(0xffffffff81000000)        # a Translation, every step
        pt.walk(filter="wx")                    # the leaves (Mapping), as QEMU's info tlb
        pt.audit().findings                     # Finding, most severe first

Importing this package is cheap (GDB, LLDB and the command line start with it): ``open``,
``GdbextError`` and the API's classes load on first use.
"""

__version__ = "0.1.0"

#: ``typing.TYPE_CHECKING`` without importing ``typing`` (type checkers take any name
#: ``TYPE_CHECKING`` as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from gdbext.api import Mappings, OpenedTarget, PageTable
    from gdbext.api import open_target as open
    from gdbext.errors import GdbextError

__all__ = ["GdbextError", "Mappings", "OpenedTarget", "PageTable", "__version__", "open"]

#: Lazily imported names -> (module, attribute).
_LAZY = {
    "open": ("gdbext.api", "open_target"),
    "OpenedTarget": ("gdbext.api", "OpenedTarget"),
    "PageTable": ("gdbext.api", "PageTable"),
    "Mappings": ("gdbext.api", "Mappings"),
    "GdbextError": ("gdbext.errors", "GdbextError"),
}


def __getattr__(name: str) -> object:
    """The API's names, imported when first used (PEP 562)."""
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'gdbext' has no attribute {name!r}") from None
    from importlib import import_module

    value = getattr(import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
