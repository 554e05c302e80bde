"""A C structure's layout as an ordered list of named fields over :mod:`struct`.

In the spirit of pyelftools' structs: a layout is data (name and :mod:`struct` format of each
field, in order), from which come its size, each field's offset, and named unpacking and
packing. One :class:`struct.Struct` does the work, so reading many records (``iter_unpack``)
costs what the bare format string would.

>>> PAIR = Layout("pair", [("kind", "I"), ("", "4x"), ("value", "Q")])
>>> PAIR.size, PAIR.offset("value")
(16, 8)
>>> PAIR.unpack(PAIR.pack(kind=1, value=2))
{'kind': 1, 'value': 2}
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence
from typing import Any

#: A field: its name (``""`` for padding, which holds no value) and its :mod:`struct` format
#: without byte order (``"Q"``, ``"16s"``, ``"6x"``).
Field = tuple[str, str]
#: What a layout unpacks from.
Buffer = bytes | bytearray | memoryview | mmap.mmap


class Layout:
    """The layout of one structure: named fields in order, with one byte order.

    :param name: the C name, for messages and documentation.
    :param fields: ``(name, format)`` in order; a format holds one value (``"Q"``, ``"8s"``)
        or, for a padding field named ``""``, none (``"6x"``).
    :param byte_order: a :mod:`struct` byte order character (``"<"`` little, ``">"`` big).
    :raises ValueError: for a named field whose format holds no value or several, or a padding
        field that holds a value, or a name given twice.
    """

    def __init__(self, name: str, fields: Sequence[Field], byte_order: str = "<") -> None:
        if byte_order not in "<>=!":
            raise ValueError(f"{name}: byte order {byte_order!r} is not one without alignment")
        self.name = name
        self.fields = tuple(fields)
        self.struct = struct.Struct(byte_order + "".join(fmt for _, fmt in self.fields))
        self.size = self.struct.size
        #: The names of the fields that hold a value, in order (the unpacked tuple's order).
        self.names: tuple[str, ...] = tuple(n for n, _ in self.fields if n)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"{name}: a field name is given twice")
        self._offsets: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        at = 0
        for field_name, fmt in self.fields:
            values = len(struct.unpack(byte_order + fmt, bytes(struct.calcsize(fmt))))
            if values != (1 if field_name else 0):
                raise ValueError(f"{name}: field {field_name!r} format {fmt!r} is not one value")
            if field_name:
                self._offsets[field_name] = at
                self._sizes[field_name] = struct.calcsize(byte_order + fmt)
            at += struct.calcsize(byte_order + fmt)

    def offset(self, field: str) -> int:
        """The byte offset of ``field`` in the structure."""
        return self._offsets[field]

    def end(self, field: str) -> int:
        """The byte offset just past ``field``."""
        return self._offsets[field] + self._sizes[field]

    def index(self, field: str) -> int:
        """The position of ``field`` in the tuple :attr:`struct` unpacks."""
        return self.names.index(field)

    def unpack(self, buf: Buffer, offset: int = 0) -> dict[str, Any]:
        """The fields of the structure at ``offset`` of ``buf``, by name."""
        return dict(zip(self.names, self.struct.unpack_from(buf, offset), strict=True))

    def pack(self, **values: Any) -> bytes:
        """The structure's bytes; every named field must be given.

        :raises TypeError: for a field missing or unknown.
        """
        if values.keys() != set(self.names):
            missing = sorted(set(self.names) - values.keys())
            unknown = sorted(values.keys() - set(self.names))
            raise TypeError(f"{self.name}: missing fields {missing}, unknown fields {unknown}")
        return self.struct.pack(*(values[n] for n in self.names))

    def __repr__(self) -> str:
        return f"Layout({self.name!r}, {self.size} bytes)"
