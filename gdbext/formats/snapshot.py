"""The note that marks a ``gdbext snapshot`` file: its format version and what it holds.

A snapshot is an ELF core as QEMU writes it (:mod:`gdbext.formats.elfcore`) holding only the
page-table frames one root reaches. This ``"GDBEXT"`` note (type 1) says so, in ``key=value``
lines of ASCII, so that the ``core`` backend can refuse a snapshot of a format it does not read
and say what was saved:

==================  ==========================================================================
``snapshot``        the format version (:data:`SNAPSHOT_VERSION`)
``root``            the saved table's root (hex), also in CPU 0's CR3
``levels``          4 or 5, also in CPU 0's CR4.LA57
``tables``          how many table frames were saved
``max_phys_bits``   MAXPHYADDR when the source knew it (the QEMU note has no place for it)
``source``          what the table was read from, and how it was selected (free text)
==================  ==========================================================================
"""

from __future__ import annotations

from typing import Final, NamedTuple

#: The note's name and type.
SNAPSHOT_NOTE_NAME: Final = "GDBEXT"
SNAPSHOT_NOTE_TYPE: Final = 1
#: The version this gdbext writes and reads.
SNAPSHOT_VERSION: Final = 1


class SnapshotInfo(NamedTuple):
    """What a snapshot's note says. (A named tuple: opening any ELF dump imports this module,
    and making a dataclass costs start-up time.)"""

    version: int
    root: int
    levels: int
    tables: int
    max_phys_bits: int | None = None
    source: str = ""

    def encode(self) -> bytes:
        """The note's desc."""
        lines = [
            f"snapshot={self.version}",
            f"root=0x{self.root:x}",
            f"levels={self.levels}",
            f"tables={self.tables}",
        ]
        if self.max_phys_bits is not None:
            lines.append(f"max_phys_bits={self.max_phys_bits}")
        lines.append("source=" + " ".join(self.source.split()))
        return ("\n".join(lines) + "\n").encode("ascii", "replace")

    @classmethod
    def decode(cls, desc: bytes) -> SnapshotInfo:
        """Parse a note's desc.

        :raises ValueError: naming what is wrong (not ``key=value`` text, a field missing or
            not a number).

        >>> SnapshotInfo.decode(SnapshotInfo(1, 0x1000, 4, 3, source="x").encode())
        SnapshotInfo(version=1, root=4096, levels=4, tables=3, max_phys_bits=None, source='x')
        """
        fields: dict[str, str] = {}
        for line in desc.rstrip(b"\0").decode("ascii", "replace").splitlines():
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"not a key=value line: {line[:40]!r}")
            fields[key.strip()] = value.strip()
        try:
            version = int(fields["snapshot"])
            if version != SNAPSHOT_VERSION:
                # Later versions may change what the other fields mean: read only the version.
                return cls(version, 0, 0, 0)
            bits = fields.get("max_phys_bits")
            return cls(
                version,
                int(fields["root"], 16),
                int(fields["levels"]),
                int(fields["tables"]),
                None if bits is None else int(bits),
                fields.get("source", ""),
            )
        except KeyError as exc:
            raise ValueError(f"no {exc.args[0]}= line") from None
