"""The kernel's BTF: its own types, parsed enough to give structure sizes and member offsets.

Linux built with ``CONFIG_DEBUG_INFO_BTF=y`` (Debian's kernels are) keeps the BPF Type Format
of every type it has in its image's read-only data (``__start_BTF``), so a dump carries the
offsets of ``task_struct``'s members without any debug file. :class:`Btf` parses a blob (the
layouts are :mod:`gdbext.formats.btf`'s): one pass over the type records, bounded by the
header's sizes, notes where each record lies; members are read when asked for.

Every malformed blob (truncated, a count past its section, a name outside the strings, a type
id out of range, a loop of typedefs) raises :class:`~gdbext.errors.BtfError` with the offset of
the bad bytes, counted from ``origin`` (the blob's physical address in a dump).

"""

from __future__ import annotations

import sys
from array import array
from dataclasses import dataclass
from typing import Final

from gdbext.errors import BtfError
from gdbext.formats import btf as fmt
from gdbext.formats.layout import Buffer

__all__ = ["Btf", "BtfType", "Member", "MemberField"]

#: How many typedefs, qualifiers and nested anonymous members a lookup follows before it calls
#: the chain a loop (the kernel's deepest are a handful).
MAX_CHAIN: Final = 64

#: Kinds that only qualify or name another type.
_ALIASES: Final = frozenset(
    (fmt.KIND_TYPEDEF, fmt.KIND_VOLATILE, fmt.KIND_CONST, fmt.KIND_RESTRICT, fmt.KIND_TYPE_TAG)
)
#: Kinds whose ``size_or_type`` is a size.
_SIZED: Final = frozenset(
    (
        fmt.KIND_INT,
        fmt.KIND_STRUCT,
        fmt.KIND_UNION,
        fmt.KIND_ENUM,
        fmt.KIND_DATASEC,
        fmt.KIND_FLOAT,
        fmt.KIND_ENUM64,
    )
)
_COMPOSITE: Final = frozenset((fmt.KIND_STRUCT, fmt.KIND_UNION))
_POINTER_SIZE: Final = 8


@dataclass(frozen=True)
class BtfType:
    """One type record: its id, kind, name (``""``: anonymous), ``vlen``, ``kind_flag``,
    ``size_or_type`` and where its trailer starts in the blob."""

    id: int
    kind: int
    name: str
    vlen: int
    kind_flag: bool
    size_or_type: int
    trailer: int

    @property
    def kind_name(self) -> str:
        return fmt.KIND_NAMES[self.kind]


@dataclass(frozen=True)
class Member:
    """A STRUCT's or UNION's member: name (``""``: anonymous), type id, offset in bits and
    bitfield size in bits (0: not a bitfield)."""

    name: str
    type: int
    bit_offset: int
    bitfield_size: int = 0


@dataclass(frozen=True)
class MemberField:
    """Where a member path (``tasks.next``) lies in its outer structure: byte offset, type id,
    and the type's size in bytes."""

    offset: int
    type: int
    size: int


class Btf:
    """A parsed BTF blob.

    :param data: the blob, from its header to the end of its strings (or more).
    :param origin: the blob's address in what it was read from, for error offsets.
    """

    def __init__(self, data: Buffer, origin: int = 0) -> None:
        self.data = bytes(data)
        self.origin = origin
        hsize = fmt.BTF_HEADER.size
        if len(self.data) < hsize:
            raise BtfError(f"{len(self.data)} bytes is shorter than a header", origin)
        h = fmt.BTF_HEADER.unpack(self.data)
        if h["magic"] != fmt.BTF_MAGIC or h["version"] != fmt.BTF_VERSION:
            raise BtfError(
                f"magic 0x{h['magic']:x} version {h['version']} is not BTF version 1", origin
            )
        if not hsize <= h["hdr_len"] <= len(self.data):
            raise BtfError(f"header length {h['hdr_len']} out of range", origin)
        self.header = h
        base = h["hdr_len"]
        self._types_at = self._section(base + h["type_off"], h["type_len"], "type")
        self._strs_at = self._section(base + h["str_off"], h["str_len"], "string")
        self._types_end: int = self._types_at + h["type_len"]
        self._strs_end: int = self._strs_at + h["str_len"]
        if h["str_len"] == 0 or self.data[self._strs_end - 1] != 0:
            raise BtfError("the string section does not end in NUL", origin + self._strs_end)
        if self.data[self._strs_at] != 0:
            raise BtfError("the string section does not start with NUL", origin + self._strs_at)
        #: Each type's record offset in :attr:`data`; index = type id (0, ``void``, has none).
        self._records: list[int] = [0]
        #: STRUCT and UNION ids by their name's offset in the strings.
        self._composites: dict[int, list[int]] = {}
        self._index()

    @classmethod
    def parse(cls, data: Buffer, origin: int = 0) -> Btf:
        """The blob ``data`` parsed (see the class)."""
        return cls(data, origin)

    @property
    def size(self) -> int:
        """The blob's length: up to the end of its last section."""
        return max(self._types_end, self._strs_end)

    @property
    def count(self) -> int:
        """The number of types (ids ``1`` .. ``count``)."""
        return len(self._records) - 1

    def _section(self, start: int, length: int, what: str) -> int:
        if start + length > len(self.data):
            raise BtfError(
                f"the {what} section (offset {start}, {length} bytes) runs past the "
                f"{len(self.data)} bytes there are",
                self.origin,
            )
        return start

    def _index(self) -> None:
        """One pass over the type records: where each lies, and the composite types by the
        offset of their name. The section is read as 32-bit words (every record and trailer
        is a whole number of them), which a loop indexes faster than it unpacks."""
        start, end = self._types_at, self._types_end
        if (end - start) % 4:
            raise BtfError("the type section is not a whole number of words", self.origin + start)
        words = array("I", self.data[start:end])
        if sys.byteorder != "little":
            words.byteswap()
        rwords = fmt.BTF_TYPE.size // 4
        trailers = {k: (lay.size // 4, many) for k, (lay, many) in fmt.TRAILERS.items()}
        known = fmt.KIND_NAMES
        records = self._records
        append = records.append
        named = self._composites
        shift, kmask, vmask = fmt.KIND_SHIFT, fmt.KIND_MASK, fmt.VLEN_MASK
        n = len(words)
        i = 0
        while i < n:
            if i + rwords > n:
                raise BtfError(
                    "a type record is cut off by the section's end", self.origin + start + 4 * i
                )
            info = words[i + 1]
            kind = (info >> shift) & kmask
            if kind not in known:
                raise BtfError(
                    f"type {len(records)} has unknown kind {kind}", self.origin + start + 4 * i
                )
            if kind == fmt.KIND_STRUCT or kind == fmt.KIND_UNION:
                named.setdefault(words[i], []).append(len(records))
            append(start + 4 * i)
            i += rwords
            trailer = trailers.get(kind)
            if trailer is not None:
                size, many = trailer
                i += size * (info & vmask) if many else size
        if i != n:
            raise BtfError(
                f"type {len(records) - 1}'s trailer runs past the type section's end",
                self.origin + records[-1],
            )

    def _string(self, off: int, where: int) -> str:
        start = self._strs_at + off
        if off >= self._strs_end - self._strs_at:
            raise BtfError(f"name offset {off} is outside the strings", self.origin + where)
        stop = self.data.index(b"\0", start)  # the section ends in NUL: always found
        return self.data[start:stop].decode("utf-8", "replace")

    def type(self, type_id: int) -> BtfType:
        """The record of type ``type_id``; :class:`BtfError` if there is none."""
        if not 1 <= type_id < len(self._records):
            raise BtfError(f"type id {type_id} out of range 1..{self.count}")
        at = self._records[type_id]
        name_off, info, sot = fmt.BTF_TYPE.struct.unpack_from(self.data, at)
        return BtfType(
            type_id,
            (info >> fmt.KIND_SHIFT) & fmt.KIND_MASK,
            self._string(name_off, at),
            info & fmt.VLEN_MASK,
            bool(info >> fmt.KIND_FLAG_BIT),
            sot,
            at + fmt.BTF_TYPE.size,
        )

    def find(self, name: str) -> int:
        """The id of the first STRUCT or UNION named ``name``; :class:`BtfError` if there is
        none. The name's offsets in the strings are searched for, then the types by offset."""
        strs = self.data[self._strs_at : self._strs_end]
        needle = b"\0" + name.encode() + b"\0"
        ids: list[int] = []
        at = strs.find(needle)
        while at >= 0:
            ids += self._composites.get(at + 1, ())
            at = strs.find(needle, at + 1)
        if not ids:
            raise BtfError(f"no structure or union {name!r}")
        return min(ids)

    def members(self, type_id: int) -> list[Member]:
        """The members of STRUCT or UNION ``type_id``, in order."""
        t = self.type(type_id)
        if t.kind not in _COMPOSITE:
            raise BtfError(f"type {type_id} ({t.name or 'anonymous'}) is a {t.kind_name}")
        out = []
        lay = fmt.BTF_MEMBER
        for k in range(t.vlen):
            at = t.trailer + k * lay.size
            name_off, mtype, offset = lay.struct.unpack_from(self.data, at)
            bits = 0
            if t.kind_flag:
                bits = offset >> fmt.MEMBER_BITFIELD_SHIFT
                offset &= fmt.MEMBER_BIT_OFFSET_MASK
            out.append(Member(self._string(name_off, at), mtype, offset, bits))
        return out

    def resolve(self, type_id: int) -> int:
        """``type_id`` with its typedefs and qualifiers stripped (``0``: ``void``)."""
        for _ in range(MAX_CHAIN):
            if type_id == 0:
                return 0
            t = self.type(type_id)
            if t.kind not in _ALIASES:
                return type_id
            type_id = t.size_or_type
        raise BtfError(f"type {type_id}: more than {MAX_CHAIN} typedefs or qualifiers (a loop?)")

    def size_of(self, type_id: int) -> int:
        """The size in bytes of type ``type_id``."""
        for _ in range(MAX_CHAIN):
            t = self.type(self.resolve(type_id))
            if t.kind in _SIZED:
                return t.size_or_type
            if t.kind == fmt.KIND_PTR:
                return _POINTER_SIZE
            if t.kind == fmt.KIND_ARRAY:
                arr = fmt.BTF_ARRAY.unpack(self.data, t.trailer)
                return int(arr["nelems"]) * self.size_of_element(arr["type"])
            raise BtfError(f"type {type_id} ({t.kind_name}) has no size")
        raise BtfError(f"type {type_id}: nesting deeper than {MAX_CHAIN}")

    def size_of_element(self, type_id: int) -> int:
        """:meth:`size_of` for an array's element (an array of arrays recurses once a level)."""
        t = self.type(self.resolve(type_id))
        if t.kind == fmt.KIND_ARRAY:
            arr = fmt.BTF_ARRAY.unpack(self.data, t.trailer)
            if arr["type"] == type_id:
                raise BtfError(f"array type {type_id} contains itself")
            return int(arr["nelems"]) * self.size_of_element(arr["type"])
        return self.size_of(type_id)

    def member(self, struct: str | int, path: str) -> MemberField:
        """Where member ``path`` (dotted: ``tasks.next``) lies in structure ``struct`` (a name
        or a type id); members of anonymous structures and unions are found through them, as C
        finds them. :class:`BtfError` if a name is missing or a bitfield is asked for."""
        type_id = self.find(struct) if isinstance(struct, str) else struct
        offset_bits = 0
        for name in path.split("."):
            found = self._member(self.resolve(type_id), name, 0)
            if found is None:
                raise BtfError(f"{self.type(self.resolve(type_id)).name or 'type'} has no {name!r}")
            bits, member = found
            if member.bitfield_size:
                raise BtfError(f"{path} is a bitfield")
            offset_bits += bits
            type_id = member.type
        if offset_bits % 8:
            raise BtfError(f"{path} is not byte-aligned")
        return MemberField(offset_bits // 8, type_id, self.size_of(type_id))

    def _member(self, type_id: int, name: str, depth: int) -> tuple[int, Member] | None:
        if depth > MAX_CHAIN:
            raise BtfError(f"type {type_id}: anonymous members nested deeper than {MAX_CHAIN}")
        anonymous = []
        for m in self.members(type_id):
            if m.name == name:
                return m.bit_offset, m
            if not m.name:
                anonymous.append(m)
        for m in anonymous:
            inner = self.resolve(m.type)
            if inner and self.type(inner).kind in _COMPOSITE:
                found = self._member(inner, name, depth + 1)
                if found is not None:
                    return m.bit_offset + found[0], found[1]
        return None
