"""Filters on effective permissions (``walk --filter SPEC``), and what they let a walk prune.

A leaf's *effective* permissions are three bits: user (U ANDed over every level), writable
(W ANDed) and executable (no NX on any level; NX counts only with EFER.NXE). A filter is the set
of the eight (user, writable, executable) combinations it accepts.

Grammar (case-insensitive, blanks ignored)::

    SPEC := TERM ("," TERM)*        every term must hold (AND)
    TERM := "!"* ATOM               each "!" negates
    ATOM := "w"   writable          | "ro"   not writable (read-only)
          | "x"   executable        | "nx"   not executable
          | "u"   user-accessible   | "s"    supervisor only (not user); "k" is the same
          | "wx"  writable and executable (what Linux's W+X check reports)

``!w`` is ``ro``, ``!x`` is ``nx``, ``!u`` is ``s``; ``!wx`` is "not both writable and
executable". Examples: ``wx`` (W+X mappings), ``u,x`` (user code), ``s,w,nx`` (kernel data).

Pruning: permissions only shrink on the way down a page table (U and W are ANDed, NX is ORed),
so a subtree whose path already excludes every accepted combination cannot hold a matching leaf
and is not read at all (:meth:`PermFilter.may_match`).

>>> f = PermFilter.parse("wx")
>>> f.matches(user=False, writable=True, executable=True)
True
>>> f.matches(user=False, writable=True, executable=False)
False
>>> PermFilter.parse("!wx").matches(False, True, False), PermFilter.parse("u,ro").spec
(True, 'u,ro')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gdbext.errors import UsageError
from gdbext.flags import NO_EXECUTE, USER_ACCESSIBLE, WRITABLE
from gdbext.units import shown

__all__ = ["PermFilter", "perm_index"]

# A combination of effective permissions is an index 0..7: bit 0 writable, bit 1 user,
# bit 2 NOT executable (so that it is read straight off an accumulator's W, U and NX bits).
_W, _U, _NX = 1, 2, 4
_ALL = range(8)


def perm_index(eff: int) -> int:
    """The combination index of an effective-permission accumulator (W, U, NX entry bits).

    >>> perm_index(0x2 | 0x4), perm_index(1 << 63)
    (3, 4)
    """
    return ((eff >> 1) & 3) | ((eff >> 61) & 4)


assert perm_index(WRITABLE) == _W and perm_index(USER_ACCESSIBLE) == _U
assert perm_index(NO_EXECUTE) == _NX


def _mask(pred: Callable[[int], int | bool]) -> int:
    return sum(1 << c for c in _ALL if pred(c))


_ATOMS: dict[str, int] = {
    "w": _mask(lambda c: c & _W),
    "ro": _mask(lambda c: not c & _W),
    "x": _mask(lambda c: not c & _NX),
    "nx": _mask(lambda c: c & _NX),
    "u": _mask(lambda c: c & _U),
    "s": _mask(lambda c: not c & _U),
    "k": _mask(lambda c: not c & _U),
    "wx": _mask(lambda c: c & _W and not c & _NX),
}
_FULL = 0xFF


@dataclass(frozen=True)
class PermFilter:
    """The accepted combinations of effective permissions, as an 8-bit set."""

    #: Bit ``c`` set: combination ``c`` (see :func:`perm_index`) is accepted.
    accepted: int
    #: The specification it was parsed from (normalised), for messages.
    spec: str = ""
    #: By combination index: accepted or not (derived).
    leaf_ok: tuple[bool, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "leaf_ok", tuple(bool(self.accepted >> c & 1) for c in _ALL))

    @classmethod
    def parse(cls, spec: str) -> PermFilter:
        """A filter from ``SPEC`` (see the module docstring); :class:`UsageError` if bad."""
        accepted = _FULL
        terms = []
        text = "".join(spec.split()).lower()
        if not text:
            raise UsageError("--filter: empty specification")
        for term in text.split(","):
            atom = term.lstrip("!")
            negations = len(term) - len(atom)
            if atom not in _ATOMS:
                known = ", ".join(sorted(_ATOMS))
                raise UsageError(
                    f"--filter: unknown term {shown(term)} in {shown(spec)} (terms: {known}; "
                    "'!' negates, "
                    "',' means and)"
                )
            mask = _ATOMS[atom]
            if negations % 2:
                mask ^= _FULL
            accepted &= mask
            terms.append(term)
        return cls(accepted, ",".join(terms))

    def matches(self, user: bool, writable: bool, executable: bool) -> bool:
        """True if a leaf with these effective permissions passes the filter."""
        index = (_W if writable else 0) | (_U if user else 0) | (0 if executable else _NX)
        return self.leaf_ok[index]

    def may_match(self, nxe: bool) -> tuple[bool, ...]:
        """By the combination index of a path's accumulated permissions: whether any leaf below
        can still pass. Below a path, a leaf can only lose U and W and gain NX (with NXE)."""
        out = []
        for a in _ALL:
            reachable = [
                c
                for c in _ALL
                if not c & ~a & (_W | _U)  # U and W can only be cleared
                and (c & _NX or not a & _NX)  # NX can only be set...
                and (nxe or not c & _NX)  # ...and only exists with EFER.NXE
            ]
            out.append(any(self.leaf_ok[c] for c in reachable))
        return tuple(out)

    @property
    def empty(self) -> bool:
        """True if no combination passes (``w,ro``): every walk is empty."""
        return self.accepted == 0
