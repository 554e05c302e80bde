"""Structure offsets from a vmlinux's DWARF, for users who have the debug build.

A kernel built with ``CONFIG_DEBUG_INFO`` describes every structure in its ``.debug_info``:
a ``DW_TAG_structure_type`` with a name and a byte size, and a ``DW_TAG_member`` for each
member, with its ``DW_AT_data_member_location``. :func:`load_dwarf_types` reads the
structures asked for (pyelftools), from the first compile unit that defines each completely
(a declaration is skipped), and keeps them as plain values so the file can be closed.
:class:`DwarfTypes` answers the same questions as :class:`~gdbext.linux.btf.Btf`
(``member("task_struct", "tasks.next")``), so the task walk takes either; members of
anonymous structures and unions are found through them, as C finds them. Bitfields are not
asked for by the walk and are refused.

Only the compile units' top-level structures are looked at: the kernel's types are declared
at file scope. The scan stops when every structure asked for has been found.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from gdbext.errors import DwarfError
from gdbext.linux.btf import MemberField

if TYPE_CHECKING:
    from elftools.dwarf.die import DIE

__all__ = ["TASK_STRUCTS", "DwarfMember", "DwarfStruct", "DwarfTypes", "load_dwarf_types"]

#: The structures the task walk reads.
TASK_STRUCTS: Final = ("task_struct", "mm_struct", "signal_struct")
#: How deep embedded structures are read (the walk's paths are one or two names long; an
#: anonymous union inside an anonymous struct is two levels).
MAX_DEPTH: Final = 8
#: Tags that only qualify or name another type.
_ALIASES: Final = frozenset(
    (
        "DW_TAG_typedef",
        "DW_TAG_const_type",
        "DW_TAG_volatile_type",
        "DW_TAG_restrict_type",
        "DW_TAG_atomic_type",
    )
)
_COMPOSITE: Final = frozenset(("DW_TAG_structure_type", "DW_TAG_union_type"))
_DW_OP_PLUS_UCONST: Final = 0x23


@dataclass(frozen=True)
class DwarfMember:
    """A member: name (``""``: anonymous), byte offset, size in bytes, whether it is a
    bitfield, and its structure or union when it is one (embedded, not a pointer)."""

    name: str
    offset: int
    size: int
    bitfield: bool = False
    inner: DwarfStruct | None = None


@dataclass(frozen=True)
class DwarfStruct:
    """A structure or union: its name (``""``: anonymous), size and members in order."""

    name: str
    size: int
    members: tuple[DwarfMember, ...] = field(default=())


@dataclass(frozen=True, eq=False)
class DwarfTypes:
    """The structures read from ``path``'s DWARF, by name."""

    path: str
    structs: dict[str, DwarfStruct]

    @property
    def count(self) -> int:
        return len(self.structs)

    def find(self, name: str) -> DwarfStruct:
        """The structure ``name``; :class:`DwarfError` if the file did not define it."""
        found = self.structs.get(name)
        if found is None:
            raise DwarfError(f"no structure {name!r} (or it was not asked for)", self.path)
        return found

    def member(self, struct: str, path: str) -> MemberField:
        """Where member ``path`` (dotted: ``tasks.next``) lies in structure ``struct``: byte
        offset and size (``type`` is 0: DWARF's types are not numbered as BTF's).

        :raises DwarfError: a name is missing, or a bitfield or a member of a non-structure
            is asked for.
        """
        current: DwarfStruct | None = self.find(struct)
        offset = 0
        size = 0
        for name in path.split("."):
            if current is None:
                raise DwarfError(f"{struct}.{path}: {name!r} is inside no structure", self.path)
            found = _member(current, name, 0)
            if found is None:
                raise DwarfError(f"{current.name or 'an anonymous type'} has no {name!r}",
                                 self.path)  # fmt: skip
            at, member = found
            if member.bitfield:
                raise DwarfError(f"{struct}.{path} is a bitfield", self.path)
            offset += at
            size = member.size
            current = member.inner
        return MemberField(offset, 0, size)


def _member(struct: DwarfStruct, name: str, depth: int) -> tuple[int, DwarfMember] | None:
    anonymous = []
    for m in struct.members:
        if m.name == name:
            return m.offset, m
        if not m.name and m.inner is not None:
            anonymous.append(m)
    if depth >= MAX_DEPTH:
        return None
    for m in anonymous:
        assert m.inner is not None
        found = _member(m.inner, name, depth + 1)
        if found is not None:
            return m.offset + found[0], found[1]
    return None


def _name(die: DIE) -> str:
    attr = die.attributes.get("DW_AT_name")
    if attr is None:
        return ""
    value = attr.value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _uleb(data: Iterable[int]) -> int:
    out = shift = 0
    for byte in data:
        out |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return out


def _location(die: DIE, path: str) -> int:
    """A member's byte offset: a constant (DWARF 3 and later), or DWARF 2's expression
    ``DW_OP_plus_uconst N``; a union's members may have none (0)."""
    attr = die.attributes.get("DW_AT_data_member_location")
    if attr is None:
        return 0
    value: Any = attr.value
    if isinstance(value, int):
        return value
    if isinstance(value, list) and value and value[0] == _DW_OP_PLUS_UCONST:
        return _uleb(value[1:])
    raise DwarfError(f"member {_name(die)!r}: a location that is not a constant", path)


def _target(die: DIE) -> DIE | None:
    """The type ``die`` refers to, its typedefs and qualifiers stripped (``None``: void)."""
    seen = 0
    t: DIE | None = die.get_DIE_from_attribute("DW_AT_type") if "DW_AT_type" in die.attributes \
        else None  # fmt: skip
    while t is not None and t.tag in _ALIASES and seen < 64:
        t = t.get_DIE_from_attribute("DW_AT_type") if "DW_AT_type" in t.attributes else None
        seen += 1
    return t


def _size(t: DIE | None, path: str) -> int:
    if t is None:
        return 0
    if "DW_AT_byte_size" in t.attributes:
        return int(t.attributes["DW_AT_byte_size"].value)
    if t.tag == "DW_TAG_pointer_type":
        return int(t.cu["address_size"])
    if t.tag == "DW_TAG_array_type":
        count = 1
        for sub in t.iter_children():
            if sub.tag != "DW_TAG_subrange_type":
                continue
            a = sub.attributes
            if "DW_AT_count" in a:
                count *= int(a["DW_AT_count"].value)
            elif "DW_AT_upper_bound" in a:
                low = int(a["DW_AT_lower_bound"].value) if "DW_AT_lower_bound" in a else 0
                count *= int(a["DW_AT_upper_bound"].value) - low + 1
            else:
                count = 0  # a flexible array member
        return count * _size(_target(t), path)
    return 0


def _struct(die: DIE, path: str, depth: int) -> DwarfStruct:
    members = []
    for m in die.iter_children():
        if m.tag != "DW_TAG_member":
            continue
        t = _target(m)
        inner = None
        if t is not None and t.tag in _COMPOSITE and depth < MAX_DEPTH:
            inner = _struct(t, path, depth + 1)
        bitfield = "DW_AT_bit_size" in m.attributes
        members.append(DwarfMember(_name(m), _location(m, path), _size(t, path), bitfield, inner))
    size = int(die.attributes["DW_AT_byte_size"].value) if "DW_AT_byte_size" in die.attributes \
        else 0  # fmt: skip
    return DwarfStruct(_name(die), size, tuple(members))


def load_dwarf_types(
    path: str | os.PathLike[str], names: Iterable[str] = TASK_STRUCTS
) -> DwarfTypes:
    """The structures ``names`` from the DWARF of the ELF file at ``path``.

    :raises DwarfError: the file cannot be read as an ELF, or has no debug info (a vmlinux
        built without ``CONFIG_DEBUG_INFO``, or stripped), or defines none of ``names``.
    """
    from elftools.common.exceptions import DWARFError, ELFError
    from elftools.construct.core import ConstructError
    from elftools.elf.elffile import ELFFile

    name = os.fspath(path)
    wanted = set(names)
    found: dict[str, DwarfStruct] = {}
    try:
        with open(name, "rb") as f:
            elf = ELFFile(f)
            if not elf.has_dwarf_info() or elf.get_section_by_name(".debug_info") is None:
                raise DwarfError(
                    "no debug info (.debug_info): a vmlinux built without CONFIG_DEBUG_INFO, or "
                    "stripped; without --vmlinux the kernel's own BTF is used",
                    name,
                )
            dwarf = elf.get_dwarf_info()
            for cu in dwarf.iter_CUs():
                for die in cu.get_top_DIE().iter_children():
                    if die.tag != "DW_TAG_structure_type" or "DW_AT_declaration" in die.attributes:
                        continue
                    struct_name = _name(die)
                    if struct_name in wanted and struct_name not in found:
                        found[struct_name] = _struct(die, name, 0)
                if len(found) == len(wanted):
                    break
    except OSError as exc:
        raise DwarfError(str(exc.strerror or exc), name) from None
    except (ELFError, DWARFError, ConstructError, ValueError, KeyError) as exc:
        raise DwarfError(f"cannot read its DWARF: {exc}", name) from None
    if not found:
        raise DwarfError(f"its DWARF defines none of {', '.join(sorted(wanted))}", name)
    return DwarfTypes(name, found)
