"""Tests of :mod:`gdbext.linux`: the layout and its detection, the ptdump walk, e820, the
direct-map offset."""
