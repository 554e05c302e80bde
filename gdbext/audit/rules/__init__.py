"""The built-in audit rules, one module per rule (or small family); each module has ``RULES``,
the sequence of its rules. :mod:`gdbext.audit.builtin` lists the modules."""
