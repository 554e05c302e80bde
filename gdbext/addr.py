"""Virtual and physical addresses and address ranges.

:class:`VirtAddr` and :class:`PhysAddr` are ``int`` subclasses, so they cost nothing where an
``int`` is expected; their constructors check what the hardware requires.

>>> VirtAddr(0xffff800000000000).is_canonical(48)
True
>>> VirtAddr.new_canonical(0x0000800000000000, 48)
Traceback (most recent call last):
...
gdbext.errors.NonCanonicalAddressError: 0x800000000000 is not canonical for 48-bit virtual addresses
>>> r = AddrRange(0x1000, 0x3000)
>>> r.size, 0x2fff in r, 0x3000 in r
(8192, True, False)
>>> AddrRange.parse("0x1000-0x2000")
AddrRange(start=0x1000, end=0x2000)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from gdbext.errors import MisalignedAddressError, NonCanonicalAddressError
from gdbext.geometry import PAGE_SIZE, geometry
from gdbext.units import parse_int, parse_size, shown

_T = TypeVar("_T", bound=type)

U64_MAX = (1 << 64) - 1
#: Largest physical address width the architecture allows (MAXPHYADDR <= 52).
MAX_PHYS_BITS = 52


def align_down(value: int, alignment: int) -> int:
    """``value`` rounded down to a multiple of ``alignment`` (a power of two)."""
    return value & ~(alignment - 1)


def align_up(value: int, alignment: int) -> int:
    """``value`` rounded up to a multiple of ``alignment`` (a power of two)."""
    return (value + alignment - 1) & ~(alignment - 1)


def is_aligned(value: int, alignment: int) -> bool:
    return value & (alignment - 1) == 0


def check_aligned(value: int, alignment: int, what: str = "address") -> None:
    """Raise :class:`MisalignedAddressError` unless ``value`` is ``alignment``-aligned."""
    if value & (alignment - 1):
        raise MisalignedAddressError(value, alignment, what)


class VirtAddr(int):
    """A 64-bit virtual address."""

    def __new__(cls, value: int) -> VirtAddr:
        if not 0 <= value <= U64_MAX:
            raise ValueError(f"virtual address {value:#x} does not fit in 64 bits")
        return super().__new__(cls, value)

    @classmethod
    def new_canonical(cls, value: int, va_bits: int = 48) -> VirtAddr:
        """``value`` if it is canonical for ``va_bits``, else :class:`NonCanonicalAddressError`."""
        addr = cls(value)
        if not addr.is_canonical(va_bits):
            raise NonCanonicalAddressError(value, va_bits)
        return addr

    @classmethod
    def truncate(cls, value: int, va_bits: int = 48) -> VirtAddr:
        """Sign-extend bit ``va_bits - 1`` of ``value``, as the x86_64 crate's ``new_truncate``."""
        return cls(geometry((va_bits - 12) // 9).canonicalize(value))

    def is_canonical(self, va_bits: int = 48) -> bool:
        top = int(self) >> (va_bits - 1)
        return top == 0 or top == (1 << (65 - va_bits)) - 1

    def page_offset(self) -> int:
        return int(self) & (PAGE_SIZE - 1)

    def indices(self, levels: int = 4) -> tuple[int, ...]:
        """Table indices, top level first."""
        return geometry(levels).indices(int(self))

    def align_down(self, alignment: int) -> VirtAddr:
        return VirtAddr(align_down(int(self), alignment))

    def __repr__(self) -> str:
        return f"VirtAddr(0x{int(self):x})"


class PhysAddr(int):
    """A physical address of at most 52 bits."""

    def __new__(cls, value: int) -> PhysAddr:
        if not 0 <= value < (1 << MAX_PHYS_BITS):
            raise ValueError(f"physical address 0x{value:x} exceeds {MAX_PHYS_BITS} bits")
        return super().__new__(cls, value)

    def align_down(self, alignment: int) -> PhysAddr:
        return PhysAddr(align_down(int(self), alignment))

    def __repr__(self) -> str:
        return f"PhysAddr(0x{int(self):x})"


@dataclass(frozen=True, order=True)
class AddrRange:
    """The half-open range ``[start, end)`` of addresses (virtual or physical)."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end <= U64_MAX + 1:
            raise ValueError(f"bad address range 0x{self.start:x}-0x{self.end:x}")

    @classmethod
    def parse(cls, text: str) -> AddrRange:
        """``"START-END"`` (end exclusive) or ``"START+SIZE"``; numbers as :func:`parse_int`,
        the size as :func:`~gdbext.units.parse_size` (``16M``)."""
        if "+" in text:
            start_text, size_text = text.split("+", 1)
            start = parse_int(start_text)
            return cls(start, start + parse_size(size_text))
        if "-" in text:
            start_text, end_text = text.split("-", 1)
            return cls(parse_int(start_text), parse_int(end_text))
        raise ValueError(f"not an address range (START-END or START+SIZE): {shown(text)}")

    @property
    def size(self) -> int:
        return self.end - self.start

    def __contains__(self, addr: object) -> bool:
        return isinstance(addr, int) and self.start <= addr < self.end

    def __bool__(self) -> bool:
        return self.end > self.start

    def intersects(self, start: int, end: int) -> bool:
        """True if ``[start, end)`` overlaps this range."""
        return start < self.end and self.start < end

    def intersection(self, other: AddrRange) -> AddrRange | None:
        start, end = max(self.start, other.start), min(self.end, other.end)
        return AddrRange(start, end) if start < end else None

    def pages(self, page_size: int = PAGE_SIZE) -> Iterator[int]:
        """Start addresses of the ``page_size`` pages that overlap the range."""
        return iter(range(align_down(self.start, page_size), self.end, page_size))

    def __repr__(self) -> str:
        return f"AddrRange(start=0x{self.start:x}, end=0x{self.end:x})"


def hex_repr(*names: str) -> Callable[[_T], _T]:
    """A class decorator: the class's ``repr`` shows the fields ``names`` in hex, others as
    ``repr`` does, in field order (a NamedTuple's or a dataclass's), ``None`` as ``None``.

    Addresses, entries and page sizes read as people write them (``paddr=0x1000000``, not
    ``paddr=16777216``); the decorator goes outside ``@dataclass``, which makes its own repr.

    >>> from typing import NamedTuple
    >>> @hex_repr("vaddr", "size")
    ... class Leaf(NamedTuple):
    ...     vaddr: int
    ...     size: int
    ...     level: int
    >>> Leaf(0xffffffff81000000, 4096, 1)
    Leaf(vaddr=0xffffffff81000000, size=0x1000, level=1)
    """
    hexed = frozenset(names)

    def decorate(cls: _T) -> _T:
        fields: tuple[str, ...] = getattr(cls, "_fields", None) or tuple(
            f.name for f in dataclasses.fields(cls) if f.repr
        )
        unknown = hexed - set(fields)
        if unknown:
            raise TypeError(f"{cls.__name__} has no fields {sorted(unknown)}")

        def __repr__(self: object) -> str:
            parts = []
            for name in fields:
                value = getattr(self, name)
                is_number = isinstance(value, int) and not isinstance(value, bool) and value >= 0
                shown = f"0x{value:x}" if name in hexed and is_number else repr(value)
                parts.append(f"{name}={shown}")
            return f"{type(self).__name__}({', '.join(parts)})"

        cls.__repr__ = __repr__  # type: ignore[assignment]
        return cls

    return decorate


def merge_ranges(ranges: Iterable[AddrRange]) -> list[AddrRange]:
    """``ranges`` sorted, with touching or overlapping ranges joined and empty ones dropped.

    >>> merge_ranges([AddrRange(8, 12), AddrRange(0, 4), AddrRange(4, 6), AddrRange(9, 9)])
    [AddrRange(start=0x0, end=0x6), AddrRange(start=0x8, end=0xc)]
    """
    merged: list[AddrRange] = []
    for r in sorted(ranges, key=lambda r: r.start):
        if not r:
            continue
        if merged and r.start <= merged[-1].end:
            if r.end > merged[-1].end:
                merged[-1] = AddrRange(merged[-1].start, r.end)
        else:
            merged.append(r)
    return merged
