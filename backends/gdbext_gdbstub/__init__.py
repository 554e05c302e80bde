"""What GDB and LLDB share about QEMU's gdbstub, with no debugger imported.

The :class:`~gdbext_gdbstub.link.DebuggerLink` protocol each debugger's adapter implements
(``gdbext_gdb``, ``gdbext_lldb``), and over it: the PhyMemMode bracket
(:mod:`~gdbext_gdbstub.phymem`), the read paths (:mod:`~gdbext_gdbstub.readpath`), the guest's
RAM (:mod:`~gdbext_gdbstub.ram`), the per-stop page cache (:mod:`~gdbext_gdbstub.mapper`), the
state of one connection (:mod:`~gdbext_gdbstub.state`), the backend options
(:mod:`~gdbext_gdbstub.options`) and the kernel's VMCOREINFO found in live memory
(:mod:`~gdbext_gdbstub.livekernel`).

The package is also the ``gdbstub`` backend (:mod:`~gdbext_gdbstub.plugin`), which needs no
debugger: a link that speaks the remote serial protocol itself (:mod:`~gdbext_gdbstub.rsp`,
:mod:`~gdbext_gdbstub.rsp_link`) over a pwntools tube (:mod:`~gdbext_gdbstub.connection`,
the only module that imports pwntools, on the first connection).
"""
