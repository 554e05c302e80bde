"""gdbext: walk, translate and audit x86-64 page tables of live or dumped kernels.

The core (this package, minus the debugger front ends) imports neither ``gdb`` nor ``lldb``.
"""

__version__ = "0.1.0"
