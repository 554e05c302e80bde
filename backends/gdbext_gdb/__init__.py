"""gdbext inside GDB: the live backend (QEMU's gdbstub) and the ``pt-*`` commands.

What the backend does over the stub is shared with LLDB's (:mod:`gdbext_gdbstub`); this package
only speaks GDB.

Modules named ``gdb_*.py`` import ``gdb`` at the top and load only inside GDB; the others also
load outside it (the plugin host lists every backend)."""
