"""Reading JSON input files (scenarios, memory maps) with one-line errors for bad input.

>>> load_json_text('{"a": 1}', "<text>")
{'a': 1}
>>> load_json_text('{"a": ', "x.json")
Traceback (most recent call last):
...
gdbext.errors.InputError: x.json at offset 0x6: not JSON: Expecting value (line 1)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gdbext.errors import InputError

#: Larger input files are refused (and /dev/zero is not read forever).
MAX_JSON_BYTES = 64 << 20


def load_json_file(path: str | Path, what: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON document in ``path``; :class:`InputError` naming the file for any problem."""
    name = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror or exc}", name) from None
    if len(raw) > max_bytes:
        raise InputError(f"{what} is larger than {max_bytes} bytes", name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} is not UTF-8 text", name, exc.start) from None
    return load_json_text(text, name)


def load_json_text(text: str, name: str) -> Any:
    """The JSON document in ``text``; errors name ``name``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not JSON: {exc.msg} (line {exc.lineno})", name, exc.pos) from None
    except RecursionError:
        raise InputError("JSON nested too deeply", name) from None
    except ValueError as exc:  # e.g. an integer with too many digits
        raise InputError(f"not usable JSON: {exc}", name) from None
