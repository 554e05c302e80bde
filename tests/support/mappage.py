"""Reading ``map``'s HTML page: its embedded data decoded, and the page shown by headless Chromium
(a screenshot's pixels, and the boxes the page reports having drawn in ``#drawn``).

Chromium is Debian's ``chromium`` package (scripts/system-deps.sh installs it, with QEMU); the
tests that need it skip without it, or fail under ``GDBEXT_REQUIRE_CHROMIUM=1`` or
``GDBEXT_REQUIRE_QEMU=1`` (CI's: the same script installs both).

A page is loaded either by a Chromium of its own (``--dump-dom``, ``--screenshot``: what the
benchmark of the first paint needs) or in a :class:`Browser` the tests share (the ``browser``
fixture): one Chromium a test process, each page loaded anew in its one tab of the window's
size and read once its ``load`` event fired, as ``--dump-dom`` and ``--screenshot`` read it (the
same screenshot, byte for byte). Starting Chromium is most of a page's cost (about half a
second of CPU); a page loaded in a running one costs a fifth of that.
"""

from __future__ import annotations

import base64
import fcntl
import html
import io
import json
import os
import re
import select
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image
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


def _url(page: Path, fragment: str) -> str:
    return page.resolve().as_uri() + (f"#{fragment}" if fragment else "")


class Browser:
    """One headless Chromium driven through the DevTools protocol on a pipe
    (``--remote-debugging-pipe``: commands in on its fd 3, answers and events out on its fd 4,
    each a JSON message ended by a NUL byte). :meth:`close` ends it."""

    def __init__(self, profile: Path) -> None:
        commands_in, commands_out = os.pipe()
        answers_in, answers_out = os.pipe()
        # Chromium's ends above 4, so that putting them at 3 and 4 in the child clobbers neither.
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (commands_in, answers_out)]
        for fd in (commands_in, answers_out):
            os.close(fd)

        def chromium_ends() -> None:
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        try:
            self.proc = subprocess.Popen(
                [*_flags(profile), "--remote-debugging-pipe", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                close_fds=False, preexec_fn=chromium_ends,  # every other fd is close-on-exec
            )  # fmt: skip
        finally:
            for fd in ends:
                os.close(fd)
        self._out, self._in = commands_out, answers_in
        self._buffer = b""
        self._last_id = 0
        self._events: list[dict[str, Any]] = []
        self._tab: str | None = None
        try:  # the tab every page is loaded in, of the window's size
            target = self.send("Target.createTarget", url="about:blank")["targetId"]
            attached = self.send("Target.attachToTarget", targetId=target, flatten=True)
            self._tab = str(attached["sessionId"])
            self.send("Emulation.setDeviceMetricsOverride", self._tab, width=WINDOW[0],
                      height=WINDOW[1], deviceScaleFactor=1, mobile=False)  # fmt: skip
            self.send("Page.enable", self._tab)
        except BaseException:
            self.close()
            raise

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._in], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed its end of the pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return dict(json.loads(message))

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """The result of one DevTools command (to the tab ``session`` is attached to); events
        that come first are kept for :meth:`wait_for`."""
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 120
        while True:
            answer = self._receive(deadline)
            if answer.get("id") != self._last_id:
                self._events.append(answer)
            elif "error" in answer:
                raise RuntimeError(f"{method}: {answer['error']}")
            else:
                return dict(answer["result"])

    def wait_for(self, event: str) -> None:
        """Until the tab has sent ``event``."""
        deadline = time.monotonic() + 120
        seen = self._events
        while not any(e.get("method") == event and e.get("sessionId") == self._tab for e in seen):
            seen = [self._receive(deadline)]
            self._events += seen

    def _load(self, page: Path, fragment: str) -> None:
        """``page#fragment`` loaded in the tab, a new document: the tab goes to ``about:blank``
        first (from the same page, a new fragment alone would not load it again)."""
        for url in ("about:blank", _url(page, fragment)):
            self._events.clear()
            self.send("Page.navigate", self._tab, url=url)
            self.wait_for("Page.loadEventFired")

    def dom(self, page: Path, fragment: str = "") -> str:
        """The page's document once loaded at ``page#fragment`` (its script has run)."""
        self._load(page, fragment)
        result = self.send("Runtime.evaluate", self._tab, returnByValue=True,
                           expression="document.documentElement.outerHTML")  # fmt: skip
        return str(result["result"]["value"])

    def screenshot(self, page: Path, fragment: str = "") -> bytes:
        """A PNG of the window showing the page loaded at ``page#fragment``."""
        self._load(page, fragment)
        data = self.send("Page.captureScreenshot", self._tab, format="png")["data"]
        return base64.b64decode(data)

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.proc.wait(timeout=30)
        except (OSError, EOFError, TimeoutError, RuntimeError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._out)
            os.close(self._in)


def dom(page: Path, fragment: str = "", browser: Browser | None = None) -> str:
    """The page's DOM once loaded at ``page#fragment`` (its script has run), in ``browser`` or
    in a Chromium of its own."""
    if browser is not None:
        return browser.dom(page, fragment)
    return subprocess.run(
        [*_flags(page.parent / "chromium-profile"), "--dump-dom", _url(page, fragment)],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip


def element_text(document: str, element_id: str) -> str:
    """The text of the element ``#ELEMENT_ID`` of a dumped DOM (a ``pre`` or a ``div``, its
    child elements' tags dropped)."""
    m = re.search(rf'<(pre|div) id="{element_id}"[^>]*>(.*?)</\1>(?!</div>)', document, re.S)
    assert m is not None, f"no #{element_id}"
    return html.unescape(re.sub(r"<[^>]+>", "\n", m.group(2)))


def drawn(page: Path, fragment: str = "", browser: Browser | None = None) -> dict[str, Any]:
    """What the page reports having drawn (``#drawn``), loaded at ``page#fragment`` (in
    ``browser``, or in a Chromium of its own)."""
    text = element_text(dom(page, fragment, browser), "drawn")
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


def screenshot(page: Path, out: Path, fragment: str = "", browser: Browser | None = None) -> Image:
    """A screenshot of the page at ``page#fragment`` (in ``browser``, or in a Chromium of its
    own), written to ``out`` and decoded."""
    if browser is not None:
        out.write_bytes(browser.screenshot(page, fragment))
    else:
        subprocess.run(
            [*_flags(page.parent / "chromium-profile"), f"--screenshot={out}",
             _url(page, fragment)],
            capture_output=True, timeout=120, check=True,
        )  # fmt: skip
    return read_png(out.read_bytes())


def read_png(data: bytes) -> Image:
    """An 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes), decoded (Pillow)."""
    with PIL.Image.open(io.BytesIO(data)) as png:
        assert png.format == "PNG" and png.mode in ("RGB", "RGBA"), (png.format, png.mode)
        width, height = png.size
        channels = len(png.mode)
        raw = png.tobytes()
    stride = width * channels
    return Image(
        width, height, [raw[y * stride : (y + 1) * stride] for y in range(height)], channels
    )


def rgb(color: str) -> tuple[int, int, int]:
    """``#rrggbb`` as a tuple."""
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)
