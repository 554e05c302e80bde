"""pytest set-up for the whole tree: modules that only load inside a debugger are not collected
(``--doctest-modules`` would import them)."""

collect_ignore = ["gdbext/gdbinit.py"]
collect_ignore_glob = ["backends/gdbext_gdb/gdb_*.py", "backends/gdbext_lldb/lldb_*.py"]
