"""gdbext in LLDB: the live backend plugin ``lldb`` and the ``pt-*`` commands.

Only the ``lldb_*`` modules import ``lldb`` (they load only inside LLDB's embedded Python); the
backend's logic is shared with GDB's (:mod:`gdbext_gdbstub`) and runs over an LLDB link.
"""
