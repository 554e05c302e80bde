"""The BPF Type Format (BTF): the kernel's own type information, as Linux's ``uapi/linux/btf.h``
declares it.

A BTF blob is a :data:`BTF_HEADER`, then (at ``hdr_len`` + ``type_off``) ``type_len`` bytes of
type records and (at ``hdr_len`` + ``str_off``) ``str_len`` bytes of NUL-terminated names. Each
type record is a :data:`BTF_TYPE` followed by a trailer whose layout and count depend on its
kind (:data:`TRAILERS`); type ids count the records from 1 (0 is ``void``). Little-endian only:
the x86-64 kernels gdbext reads write it so.
"""

from __future__ import annotations

from typing import Final

from gdbext.formats.layout import Layout

BTF_MAGIC: Final = 0xEB9F
BTF_VERSION: Final = 1

#: ``struct btf_header``, 24 bytes (``hdr_len`` may be larger in later versions).
BTF_HEADER: Final = Layout(
    "btf_header",
    [
        ("magic", "H"),
        ("version", "B"),
        ("flags", "B"),
        ("hdr_len", "I"),
        ("type_off", "I"),
        ("type_len", "I"),
        ("str_off", "I"),
        ("str_len", "I"),
    ],
)

#: ``struct btf_type``, 12 bytes. ``info``: bits 0-15 ``vlen``, bits 24-28 the kind, bit 31
#: ``kind_flag``; ``size_or_type`` is a size (INT, ENUM, STRUCT, UNION, DATASEC, FLOAT, ENUM64)
#: or a type id (the others).
BTF_TYPE: Final = Layout("btf_type", [("name_off", "I"), ("info", "I"), ("size_or_type", "I")])

#: ``info``'s fields.
VLEN_MASK: Final = 0xFFFF
KIND_SHIFT: Final = 24
KIND_MASK: Final = 0x1F
KIND_FLAG_BIT: Final = 31

#: The kinds, by number.
KIND_INT: Final = 1
KIND_PTR: Final = 2
KIND_ARRAY: Final = 3
KIND_STRUCT: Final = 4
KIND_UNION: Final = 5
KIND_ENUM: Final = 6
KIND_FWD: Final = 7
KIND_TYPEDEF: Final = 8
KIND_VOLATILE: Final = 9
KIND_CONST: Final = 10
KIND_RESTRICT: Final = 11
KIND_FUNC: Final = 12
KIND_FUNC_PROTO: Final = 13
KIND_VAR: Final = 14
KIND_DATASEC: Final = 15
KIND_FLOAT: Final = 16
KIND_DECL_TAG: Final = 17
KIND_TYPE_TAG: Final = 18
KIND_ENUM64: Final = 19

KIND_NAMES: Final = {
    KIND_INT: "INT",
    KIND_PTR: "PTR",
    KIND_ARRAY: "ARRAY",
    KIND_STRUCT: "STRUCT",
    KIND_UNION: "UNION",
    KIND_ENUM: "ENUM",
    KIND_FWD: "FWD",
    KIND_TYPEDEF: "TYPEDEF",
    KIND_VOLATILE: "VOLATILE",
    KIND_CONST: "CONST",
    KIND_RESTRICT: "RESTRICT",
    KIND_FUNC: "FUNC",
    KIND_FUNC_PROTO: "FUNC_PROTO",
    KIND_VAR: "VAR",
    KIND_DATASEC: "DATASEC",
    KIND_FLOAT: "FLOAT",
    KIND_DECL_TAG: "DECL_TAG",
    KIND_TYPE_TAG: "TYPE_TAG",
    KIND_ENUM64: "ENUM64",
}

#: INT's trailer: bits 0-7 the size in bits, 16-23 the bit offset, 24-27 the encoding.
BTF_INT: Final = Layout("btf_int", [("bits", "I")])
#: ARRAY's trailer.
BTF_ARRAY: Final = Layout("btf_array", [("type", "I"), ("index_type", "I"), ("nelems", "I")])
#: STRUCT's and UNION's, one per member. ``offset`` is in bits; with the type's ``kind_flag``,
#: bits 0-23 are the bit offset and 24-31 the bitfield's size.
BTF_MEMBER: Final = Layout("btf_member", [("name_off", "I"), ("type", "I"), ("offset", "I")])
#: ENUM's, one per value.
BTF_ENUM: Final = Layout("btf_enum", [("name_off", "I"), ("val", "i")])
#: FUNC_PROTO's, one per parameter.
BTF_PARAM: Final = Layout("btf_param", [("name_off", "I"), ("type", "I")])
#: VAR's trailer.
BTF_VAR: Final = Layout("btf_var", [("linkage", "I")])
#: DATASEC's, one per variable.
BTF_VAR_SECINFO: Final = Layout("btf_var_secinfo", [("type", "I"), ("offset", "I"), ("size", "I")])
#: DECL_TAG's trailer.
BTF_DECL_TAG: Final = Layout("btf_decl_tag", [("component_idx", "i")])
#: ENUM64's, one per value.
BTF_ENUM64: Final = Layout("btf_enum64", [("name_off", "I"), ("val_lo32", "I"), ("val_hi32", "I")])

#: Each kind's trailer: its layout and whether there is one per ``vlen`` (else exactly one).
#: Kinds not listed have none.
TRAILERS: Final[dict[int, tuple[Layout, bool]]] = {
    KIND_INT: (BTF_INT, False),
    KIND_ARRAY: (BTF_ARRAY, False),
    KIND_STRUCT: (BTF_MEMBER, True),
    KIND_UNION: (BTF_MEMBER, True),
    KIND_ENUM: (BTF_ENUM, True),
    KIND_FUNC_PROTO: (BTF_PARAM, True),
    KIND_VAR: (BTF_VAR, False),
    KIND_DATASEC: (BTF_VAR_SECINFO, True),
    KIND_DECL_TAG: (BTF_DECL_TAG, False),
    KIND_ENUM64: (BTF_ENUM64, True),
}

#: STRUCT and UNION members' offset with ``kind_flag``.
MEMBER_BITFIELD_SHIFT: Final = 24
MEMBER_BIT_OFFSET_MASK: Final = 0xFFFFFF
