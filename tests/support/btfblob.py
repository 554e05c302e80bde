"""Hand-built BTF blobs for the tests of :mod:`gdbext.linux.btf`, packed with the layouts of
:mod:`gdbext.formats.btf` (the same declarations the reader unpacks with)."""

from __future__ import annotations

from collections.abc import Sequence

from gdbext.formats import btf as fmt

#: A member: ``(name, type id, bit offset)`` or with a bitfield size in bits.
MemberSpec = tuple[str, int, int] | tuple[str, int, int, int]


class BtfBuilder:
    """Types added one by one (each call returns its id), then :meth:`build`."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.strings = bytearray(b"\0")
        self._offsets: dict[str, int] = {"": 0}

    def name(self, text: str) -> int:
        if text not in self._offsets:
            self._offsets[text] = len(self.strings)
            self.strings += text.encode() + b"\0"
        return self._offsets[text]

    def add(
        self,
        kind: int,
        name: str = "",
        vlen: int = 0,
        size_or_type: int = 0,
        trailer: bytes = b"",
        kind_flag: bool = False,
    ) -> int:
        info = (kind << fmt.KIND_SHIFT) | vlen | (int(kind_flag) << fmt.KIND_FLAG_BIT)
        self.records.append(
            fmt.BTF_TYPE.pack(name_off=self.name(name), info=info, size_or_type=size_or_type)
            + trailer
        )
        return len(self.records)

    def integer(self, name: str, size: int) -> int:
        return self.add(fmt.KIND_INT, name, 0, size, fmt.BTF_INT.pack(bits=size * 8))

    def ptr(self, target: int) -> int:
        return self.add(fmt.KIND_PTR, "", 0, target)

    def array(self, elem: int, index: int, nelems: int) -> int:
        trailer = fmt.BTF_ARRAY.pack(type=elem, index_type=index, nelems=nelems)
        return self.add(fmt.KIND_ARRAY, "", 0, 0, trailer)

    def struct(
        self, name: str, size: int, members: Sequence[MemberSpec], union: bool = False
    ) -> int:
        bitfields = any(len(m) == 4 for m in members)
        trailer = b""
        for m in members:
            offset = m[2] | ((m[3] if len(m) == 4 else 0) << fmt.MEMBER_BITFIELD_SHIFT)
            trailer += fmt.BTF_MEMBER.pack(name_off=self.name(m[0]), type=m[1], offset=offset)
        kind = fmt.KIND_UNION if union else fmt.KIND_STRUCT
        return self.add(kind, name, len(members), size, trailer, kind_flag=bitfields)

    def typedef(self, name: str, target: int) -> int:
        return self.add(fmt.KIND_TYPEDEF, name, 0, target)

    def qualifier(self, kind: int, target: int) -> int:
        return self.add(kind, "", 0, target)

    def every_kind(self, base: int) -> None:
        """One record of each kind the others do not add, with its trailer (``base``: an INT)."""
        b = self
        b.add(fmt.KIND_ENUM, "colour", 2, 4,
              fmt.BTF_ENUM.pack(name_off=b.name("RED"), val=0)
              + fmt.BTF_ENUM.pack(name_off=b.name("BLUE"), val=-1))  # fmt: skip
        b.add(fmt.KIND_FWD, "later", 0, 0)
        for kind in (fmt.KIND_VOLATILE, fmt.KIND_CONST, fmt.KIND_RESTRICT):
            b.qualifier(kind, base)
        proto = b.add(fmt.KIND_FUNC_PROTO, "", 2, base,
                      fmt.BTF_PARAM.pack(name_off=b.name("a"), type=base) * 2)  # fmt: skip
        b.add(fmt.KIND_FUNC, "f", 0, proto)
        var = b.add(fmt.KIND_VAR, "v", 0, base, fmt.BTF_VAR.pack(linkage=1))
        b.add(fmt.KIND_DATASEC, ".data", 1, 8, fmt.BTF_VAR_SECINFO.pack(type=var, offset=0, size=4))
        b.add(fmt.KIND_FLOAT, "double", 0, 8)
        b.add(fmt.KIND_DECL_TAG, "tag", 0, var, fmt.BTF_DECL_TAG.pack(component_idx=-1))
        b.add(fmt.KIND_TYPE_TAG, "user", 0, base)
        b.add(fmt.KIND_ENUM64, "big", 1, 8,
              fmt.BTF_ENUM64.pack(name_off=b.name("HUGE"), val_lo32=1, val_hi32=2))  # fmt: skip

    def build(self, **header: int) -> bytes:
        """The blob: header (fields overridable), types, strings."""
        types = b"".join(self.records)
        fields = {
            "magic": fmt.BTF_MAGIC,
            "version": fmt.BTF_VERSION,
            "flags": 0,
            "hdr_len": fmt.BTF_HEADER.size,
            "type_off": 0,
            "type_len": len(types),
            "str_off": len(types),
            "str_len": len(self.strings),
        }
        fields.update(header)
        return fmt.BTF_HEADER.pack(**fields) + types + bytes(self.strings)


def kernel_like() -> tuple[BtfBuilder, dict[str, int]]:
    """The types the task walk reads, laid out like a (much smaller) kernel's:
    ``task_struct`` (96 bytes), ``mm_struct`` with ``pgd`` inside an anonymous structure,
    ``signal_struct``, ``list_head``; returns the builder and the ids by name."""
    b = BtfBuilder()
    u32 = b.integer("unsigned int", 4)
    i32 = b.integer("int", 4)
    ch = b.integer("char", 1)
    u64 = b.integer("long unsigned int", 8)
    pid_t = b.typedef("pid_t", i32)
    # list_head's members point to it: the pointer type comes right after (ids may refer ahead).
    lp = len(b.records) + 2
    list_head = b.struct("list_head", 16, [("next", lp, 0), ("prev", lp, 64)])
    assert b.ptr(list_head) == lp
    pgd_t = b.struct("", 8, [("pgd", u64, 0)])
    pgdp = b.ptr(pgd_t)
    inner = b.struct("", 16, [("mmap_base", u64, 0), ("pgd", pgdp, 64)])
    mm = b.struct("mm_struct", 24, [("", inner, 0), ("cpu_bitmap", u64, 128)])
    signal = b.struct("signal_struct", 24, [("nr_threads", i32, 0), ("thread_head", list_head, 64)])
    comm = b.array(ch, u32, 16)
    task = b.struct(
        "task_struct",
        96,
        [
            ("__state", b.qualifier(fmt.KIND_VOLATILE, u32), 0),
            ("tasks", list_head, 128),
            ("pid", pid_t, 256),
            ("tgid", pid_t, 288),
            ("mm", b.ptr(mm), 320),
            ("comm", comm, 384),
            ("signal", b.ptr(signal), 512),
            ("thread_node", list_head, 576),
            ("exit_state", i32, 704),
        ],
    )
    return b, {"task_struct": task, "mm_struct": mm, "list_head": list_head, "u32": u32}
