"""Reading ``map``'s HTML page: its embedded data decoded, and the page shown by headless Chromium
(a screenshot's pixels, and the boxes the page reports having drawn in ``#drawn``).

Chromium is Debian's ``chromium`` package (scripts/system-deps.sh installs it, with QEMU); the
tests that need it skip without it, or fail under ``GDBEXT_REQUIRE_CHROMIUM=1`` or
``GDBEXT_REQUIRE_QEMU=1`` (CI's: the same script installs both).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

#: The window the screenshots are taken in.
WINDOW = (1400, 300)


def page_data(page: str) -> dict[str, Any]:
    """The JSON the page embeds."""
    m = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
    assert m is not None, "no data in the page"
    return dict(json.loads(m.group(1).replace("<\\/", "</")))


def decoded_ranges(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The page's ranges as addresses (the flat array read as its docstring says)."""
    out = []
    end = frame = 0
    flat = data["r"]
    for k in range(0, len(flat), 4):
        gap, pages, attr, dframe = flat[k : k + 4]
        perm, user, flags, page_size, kind, state = data["attrs"][attr]
        start = end + gap
        end = start + pages
        rec = {"vaddr": start << 12, "end": end << 12, "perm": perm, "user": bool(user),
               "flags": flags, "page_size": page_size, "kind": kind, "state": state}  # fmt: skip
        if kind == "r":
            rec["paddr"] = (frame + dframe) << 12
            frame = frame + dframe + pages
        out.append(rec)
    return out


def chromium() -> str:
    """The Chromium binary; skips the test without one (fails where it is required)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        for required in ("GDBEXT_REQUIRE_CHROMIUM", "GDBEXT_REQUIRE_QEMU"):
            if os.environ.get(required) == "1":
                pytest.fail(f"{required}=1 but there is no chromium (scripts/system-deps.sh)")
        pytest.skip("no chromium (apt-get install chromium)")
    return found


def _flags(profile: Path) -> list[str]:
    return [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--force-device-scale-factor=1", f"--window-size={WINDOW[0]},{WINDOW[1]}",
            f"--user-data-dir={profile}", "--no-first-run"]  # fmt: skip


def dom(page: Path, fragment: str = "") -> str:
    """The page's DOM once loaded at ``page#fragment`` (its script has run)."""
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    return subprocess.run(
        [*_flags(page.parent / "chromium-profile"), "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip


def element_text(document: str, element_id: str) -> str:
    """The text of the element ``#ELEMENT_ID`` of a dumped DOM (a ``pre`` or a ``div``, its
    child elements' tags dropped)."""
    m = re.search(rf'<(pre|div) id="{element_id}"[^>]*>(.*?)</\1>(?!</div>)', document, re.S)
    assert m is not None, f"no #{element_id}"
    return html.unescape(re.sub(r"<[^>]+>", "\n", m.group(2)))


def drawn(page: Path, fragment: str = "") -> dict[str, Any]:
    """What the page reports having drawn (``#drawn``), loaded at ``page#fragment``."""
    text = element_text(dom(page, fragment), "drawn")
    assert text, "the page reported nothing drawn"
    return dict(json.loads(text))


@dataclass
class Image:
    width: int
    height: int
    #: Rows of RGB(A) bytes.
    rows: list[bytes]
    channels: int

    def pixel(self, x: float, y: float) -> tuple[int, int, int]:
        row = self.rows[int(y)]
        i = int(x) * self.channels
        return row[i], row[i + 1], row[i + 2]


def screenshot(page: Path, out: Path, fragment: str = "") -> Image:
    """A screenshot of the page at ``page#fragment``, written to ``out`` and decoded."""
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    subprocess.run(
        [*_flags(page.parent / "chromium-profile"), f"--screenshot={out}", url],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    return read_png(out.read_bytes())


def read_png(data: bytes) -> Image:
    """An 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes), decoded."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind_byte, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if kind_byte == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind_byte == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind_byte == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind_byte == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return Image(width, height, rows, channels)


def rgb(color: str) -> tuple[int, int, int]:
    """``#rrggbb`` as a tuple."""
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)
