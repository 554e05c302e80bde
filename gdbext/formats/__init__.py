"""Binary layouts of the dump formats, declared once as data with named fields.

The readers (``gdbext_dump``) and the simulator's writers (``gdbext_sim``) both use these
declarations; nothing here reads a file. :mod:`~gdbext.formats.layout` is the helper,
:mod:`~gdbext.formats.kdump`, :mod:`~gdbext.formats.elf`, :mod:`~gdbext.formats.qemu` and
:mod:`~gdbext.formats.lime` the formats.
"""
