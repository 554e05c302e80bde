"""The commands, declared once, and what the command line, GDB and LLDB share in running them.

- :mod:`~gdbext.frontend.cmd`: one module per command (``info``, ``walk``, ``translate``,
  ``heap``, ``audit``), each declaring a :class:`~gdbext.frontend.command.Command`;
- :mod:`~gdbext.frontend.commands` and :mod:`~gdbext.frontend.heap`: what the commands compute
  (options in, a result out; nothing printed), also the Python API's;
- :mod:`~gdbext.frontend.parsing`, :mod:`~gdbext.frontend.argtypes`: the parsers built from the
  declarations; :mod:`~gdbext.frontend.runner`: a parsed command run on a target;
- :mod:`~gdbext.frontend.completion`, :mod:`~gdbext.frontend.progress`,
  :mod:`~gdbext.frontend.common`: what the debuggers add (colour comes from the renderers);
- :mod:`~gdbext.frontend.reference`: ``docs/commands.md``, made from the declarations.

The command line (:mod:`gdbext.cli`) and the debuggers' session (:mod:`gdbext.session`) only
read the declarations.
"""
