"""pytest set-up for the whole tree: modules that only load inside a debugger are not collected
(``--doctest-modules`` would import them), and pytest keeps its rewritten test modules.

pytest caches each test module with its asserts rewritten as bytecode in ``__pycache__``, but
writes that cache only where Python may write bytecode. Under PYTHONDONTWRITEBYTECODE (some
environments set it) every run would parse and rewrite every test module again: about 5 s of
the quick suite's time. The cache is pytest's own and checked against the source, so it is
written here whatever that variable says.
"""

import sys

sys.dont_write_bytecode = False

collect_ignore = ["gdbext/gdbinit.py"]
collect_ignore_glob = ["backends/gdbext_gdb/gdb_*.py", "backends/gdbext_lldb/lldb_*.py"]
