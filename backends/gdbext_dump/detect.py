"""Which dump format a file is in, from its first bytes; ``--format-in`` overrides.

=====================================  =========
magic at offset 0                      format
=====================================  =========
``\\x7fELF``                            elf
``KDUMP   `` (seekable diskdump)        kdump
``makedumpfile\\0`` (flattened)         kdump
``45 4D 69 4C`` (LiME ``0x4C694D45``)   lime
anything else                          raw
=====================================  =========

:func:`gdbext_dump.dump.open_dump` opens a file without magic as raw only when the user says so
(``--format-in raw`` or ``--base``).
"""

from __future__ import annotations

from gdbext.errors import InputError, UsageError
from gdbext.formats.lime import LIME_MAGIC_BYTES
from gdbext.units import shown

FORMATS = ("elf", "kdump", "lime", "raw")
_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x7fELF", "elf"),
    (b"KDUMP   ", "kdump"),
    (b"makedumpfile\0", "kdump"),
    (LIME_MAGIC_BYTES, "lime"),
)
_HEAD = max(len(magic) for magic, _ in _MAGICS)


def format_from_magic(head: bytes) -> str:
    """The format the first bytes of a file announce.

    >>> format_from_magic(b"\\x7fELF\\x02\\x01"), format_from_magic(b"makedumpfile\\0\\0\\0\\0")
    ('elf', 'kdump')
    >>> format_from_magic(b"EMiL\\x01\\0\\0\\0"), format_from_magic(b"\\0" * 16)
    ('lime', 'raw')
    """
    for magic, name in _MAGICS:
        if head.startswith(magic):
            return name
    return "raw"


def detect_format(path: str, format_in: str | None = None) -> str:
    """``format_in`` if given (checked), else the format of the file at ``path`` by magic."""
    if format_in is not None:
        name = format_in.lower()
        if name not in FORMATS:
            raise UsageError(
                f"--format-in must be one of {', '.join(FORMATS)}, not {shown(format_in)}"
            )
        return name
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror or exc}", path) from None
    return format_from_magic(head)
