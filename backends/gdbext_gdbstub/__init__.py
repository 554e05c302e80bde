"""What GDB and LLDB share about QEMU's gdbstub, with no debugger imported.

The :class:`~gdbext_gdbstub.link.DebuggerLink` protocol each debugger's adapter implements
(``gdbext_gdb``, ``gdbext_lldb``), and over it: the PhyMemMode bracket
(:mod:`~gdbext_gdbstub.phymem`), the read paths (:mod:`~gdbext_gdbstub.readpath`), the guest's
RAM (:mod:`~gdbext_gdbstub.ram`), the per-stop page cache (:mod:`~gdbext_gdbstub.mapper`), the
state of one connection (:mod:`~gdbext_gdbstub.state`), the backend options
(:mod:`~gdbext_gdbstub.options`) and the kernel's VMCOREINFO found in live memory
(:mod:`~gdbext_gdbstub.livekernel`). Not a plugin: the ``gdb`` and ``lldb`` backends are.
"""
