"""How the LLDB backend names itself: in the plugin's listing, in messages and in ``info``."""

from __future__ import annotations

from gdbext_gdbstub.options import Naming

#: The backend and its debugger, as messages and ``info`` name them.
NAMING = Naming(backend="lldb", debugger="LLDB")
