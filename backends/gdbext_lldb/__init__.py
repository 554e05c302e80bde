"""gdbext in LLDB: the live backend plugin ``lldb`` and the ``pt-*`` commands.

Only the ``lldb_*`` modules import ``lldb`` (they load only inside LLDB's embedded Python); the
backend's logic is the GDB backend's (:mod:`gdbext_gdb.live` and friends) over an LLDB link.
"""
