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
from bisect import bisect_left
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
        #: Each type's record, as a word index in the type section; index = type id (0,
        #: ``void``, has none: -1 keeps the list sorted).
        self._records: list[int] = [-1]
        self._words = array("I")
        self._members: dict[int, list[Member]] = {}
        self._found: dict[str, int] = {}
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
        """One pass over the type records, noting where each lies. The section is read as
        32-bit words (every record and trailer is a whole number of them), and each kind's
        record length is looked up as ``fixed + per * vlen`` words: the loop does little more
        than add (a kernel has about 100,000 types)."""
        start, end = self._types_at, self._types_end
        if (end - start) % 4:
            raise BtfError("the type section is not a whole number of words", self.origin + start)
        words = array("I", self.data[start:end])
        if sys.byteorder != "little":
            words.byteswap()
        self._words = words
        rwords = fmt.BTF_TYPE.size // 4
        steps: list[tuple[int, int] | None] = [None] * (fmt.KIND_MASK + 1)
        for kind in fmt.KIND_NAMES:
            lay, many = fmt.TRAILERS.get(kind, (None, False))
            size = 0 if lay is None else lay.size // 4
            steps[kind] = (rwords, size) if many else (rwords + size, 0)
        at: list[int] = [-1]
        append = at.append
        shift, kmask, vmask = fmt.KIND_SHIFT, fmt.KIND_MASK, fmt.VLEN_MASK
        n = len(words)
        i = 0
        try:
            while i < n:
                info = words[i + 1]
                fixed, per = steps[(info >> shift) & kmask]  # type: ignore[misc]
                append(i)
                i += fixed + per * (info & vmask)
        except (IndexError, TypeError):
            # words[i + 1] past the end, or a kind without a step (None): say which.
            where = self.origin + start + 4 * i
            if i + rwords > n:
                raise BtfError("a type record is cut off by the section's end", where) from None
            kind = (words[i + 1] >> shift) & kmask
            raise BtfError(f"type {len(at)} has unknown kind {kind}", where) from None
        if i != n:
            last = at[-1]
            where = self.origin + start + 4 * last
            if last + rwords > n:
                raise BtfError("a type record is cut off by the section's end", where)
            raise BtfError(f"type {len(at) - 1}'s trailer runs past the type section's end", where)
        self._records = at

    def _composites(self, name_off: int) -> list[int]:
        """The ids of the STRUCTs and UNIONs whose name is at ``name_off``: the records that
        start with that word, found by searching the type section for its bytes (in C) and
        keeping the hits at a record's start."""
        records = self._records
        shift, kmask = fmt.KIND_SHIFT, fmt.KIND_MASK
        composite = (fmt.KIND_STRUCT, fmt.KIND_UNION)
        needle = name_off.to_bytes(4, "little")
        data, start, end = self.data, self._types_at, self._types_end
        out = []
        at = data.find(needle, start, end)
        while at >= 0:
            word, odd = divmod(at - start, 4)
            type_id = bisect_left(records, word)  # the records are in address order
            if not odd and type_id < len(records) and records[type_id] == word:
                info = int.from_bytes(data[at + 4 : at + 8], "little")
                if (info >> shift) & kmask in composite:
                    out.append(type_id)
            at = data.find(needle, at + 1, end)
        return out

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
        at = self._types_at + 4 * self._records[type_id]
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
        if name in self._found:
            return self._found[name]
        strs = self.data[self._strs_at : self._strs_end]
        needle = b"\0" + name.encode() + b"\0"
        ids: list[int] = []
        at = strs.find(needle)
        while at >= 0:
            ids += self._composites(at + 1)
            at = strs.find(needle, at + 1)
        if not ids:
            raise BtfError(f"no structure or union {name!r}")
        self._found[name] = min(ids)
        return self._found[name]

    def members(self, type_id: int) -> list[Member]:
        """The members of STRUCT or UNION ``type_id``, in order (kept: lookups ask again)."""
        if type_id in self._members:
            return self._members[type_id]
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
        self._members[type_id] = out
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
