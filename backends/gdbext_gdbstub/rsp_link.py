"""The :class:`~gdbext_gdbstub.link.DebuggerLink` spoken directly to a gdbstub, no debugger
between: :class:`RspLink` over an :class:`~gdbext_gdbstub.rsp.RspClient`.

- memory: ``m ADDR,LEN``, split into reads of :attr:`RspLink.max_read` bytes (QEMU answers at
  most 2 KiB a packet: its packets hold 4096 characters, two a byte);
- registers: the numbers of ``cr0``, ``cr3``, ``cr4`` and ``efer`` come from the stub's target
  description (``qXfer:features:read:target.xml`` and the documents it includes: QEMU's x86-64
  one numbers them after the general, segment, x87 and SSE registers); read with ``p N`` after
  ``Hg THREAD``, or from the ``g`` block when the stub refuses ``p``;
- threads: ``qfThreadInfo``/``qsThreadInfo`` (QEMU: one per vCPU, ``p1.N`` for CPU N-1); the
  link numbers them as GDB does (1, 2, ...: the thread id's own number);
- ``monitor``: ``qRcmd`` (QEMU's HMP);
- no symbols (:meth:`RspLink.symbol_value` is ``None``: the direct map's base is then given
  with ``--direct-map``, or VMCOREINFO read from memory).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gdbext.units import shown
from gdbext_gdbstub.link import CONTROL_REGISTERS, LiveTargetError, TargetMemoryError
from gdbext_gdbstub.rsp import RspClient

#: The most bytes one ``m`` packet asks for (QEMU: 4096-character packets, two a byte).
MAX_READ = 2048
#: The most target-description bytes asked for at once.
XFER_CHUNK = 0xFFB
#: Included documents followed, at most (a stub that includes itself stops here).
MAX_DOCUMENTS = 16
_ERROR = re.compile(r"E[0-9a-fA-F]{2}$")
_THREAD = re.compile(r"thread:([^;]+);")
#: A ``<reg .../>`` element and its attributes (read without an XML parser: the description's
#: ``xi:include`` prefix is declared nowhere, and only these elements matter).
_REG = re.compile(r"<reg\s[^>]*>")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_ATTR = re.compile(r"([A-Za-z_:-]+)\s*=\s*\"([^\"]*)\"")


@dataclass(frozen=True)
class Register:
    """A register of the target description: its number and its place in the ``g`` block."""

    name: str
    number: int
    #: Byte offset in the ``g`` block (``None`` after a register of unknown size).
    offset: int | None
    size: int


def parse_registers(documents: list[str]) -> dict[str, Register]:
    """The registers of a target description, its documents in include order: numbered from
    0, or from a ``regnum`` attribute on, as GDB numbers them; their offsets in the ``g``
    block follow their sizes.

    >>> regs = parse_registers(['<feature><reg name="rax" bitsize="64"/>'
    ...                         '<reg name="cr0" bitsize="64" regnum="5"/><reg name="cr3" '
    ...                         'bitsize="64"/></feature>'])
    >>> [(r.name, r.number, r.offset) for r in regs.values()]
    [('rax', 0, 0), ('cr0', 5, 8), ('cr3', 6, 16)]
    >>> list(parse_registers(['<!--reg name="ss_base" bitsize="64"/--><reg name="cr0"/>']))
    ['cr0']
    """
    found: dict[str, Register] = {}
    number = 0
    offset: int | None = 0
    for text in documents:
        for tag in _REG.findall(_COMMENT.sub("", text)):
            attrs = dict(_ATTR.findall(tag))
            name = attrs.get("name", "")
            try:
                if "regnum" in attrs:
                    number = int(attrs["regnum"])
                bits = int(attrs.get("bitsize", "0") or 0)
            except ValueError:
                raise LiveTargetError(
                    f"the gdbstub's target description has a bad register: {shown(tag[:60])}"
                ) from None
            found[name.lower()] = Register(name, number, offset, bits // 8)
            number += 1
            offset = None if offset is None or bits % 8 or not bits else offset + bits // 8
    return found


def includes(text: str) -> list[str]:
    """The ``href`` of each ``xi:include`` of a description document."""
    return re.findall(r"<xi:include\s+href=\"([^\"]+)\"", text)


def thread_number(thread_id: str) -> int:
    """GDB's number of a thread id: ``p1.2`` and ``2`` are thread 2 (QEMU's CPU 1).

    >>> thread_number("p01.02"), thread_number("3")
    (2, 3)
    """
    tid = thread_id.rpartition(".")[2] if thread_id.startswith("p") else thread_id
    return int(tid, 16)


class RspLink:
    """:class:`~gdbext_gdbstub.link.DebuggerLink` over a gdbstub connection.

    :param client: the connection, handshake done.
    :param stop_reply: the reply to ``?`` (its ``thread:`` is the selected thread).
    :param address: the stub's ``(host, port)``, for the host read path; ``None``: unknown.
    """

    def __init__(
        self, client: RspClient, stop_reply: str, address: tuple[str, int] | None = None
    ) -> None:
        self.client = client
        self._address = address
        self.max_read = MAX_READ
        self._registers: dict[str, Register] | None = None
        self._thread_ids: dict[int, str] = {}
        self._selected: int | None = None
        self._hg: str | None = None
        self._p_works = True
        m = _THREAD.search(stop_reply)
        if m is not None:
            self._selected = thread_number(m[1])
            self._thread_ids[self._selected] = m[1]

    # --- DebuggerLink ---

    def connected(self) -> bool:
        return self.client.open

    def stub_address(self) -> tuple[str, int] | None:
        return self._address

    def is_running(self) -> bool:
        """Never: the gdbstub backend holds the VM stopped while a target is open."""
        return False

    def packet(self, text: str) -> str:
        return self.client.request(text)

    def monitor(self, command: str) -> str:
        output, final = self.client.monitor(command)
        if final == "":
            raise LiveTargetError("the gdbstub has no monitor (qRcmd)")
        if final != "OK":
            raise LiveTargetError(f"monitor {command}: the gdbstub answered {shown(final)}")
        return output

    def read_memory(self, addr: int, size: int) -> bytes:
        parts: list[bytes] = []
        at, end = addr, addr + size
        while at < end:
            n = min(self.max_read, end - at)
            reply = self.client.request(f"m{at:x},{n:x}")
            if _ERROR.match(reply) or not reply:
                why = f"error {reply[1:]}" if reply else "not supported"
                raise TargetMemoryError(at, n, f"cannot read 0x{n:x} bytes at 0x{at:x} ({why})")
            try:
                data = bytes.fromhex(reply)
            except ValueError:
                raise LiveTargetError(
                    f"the gdbstub's reply to m{at:x},{n:x} is not hex: {shown(reply[:40])}"
                ) from None
            if not data:
                raise TargetMemoryError(at, n, f"cannot read memory at 0x{at:x}")
            parts.append(data[:n])
            at += len(data[:n])
        return b"".join(parts)

    def registers(self, thread: int | None = None) -> dict[str, int]:
        regs = self.description()
        wanted = [regs[name] for name in CONTROL_REGISTERS if name in regs]
        if thread is None:
            thread = self._selected
        if thread is not None:
            self._select(thread)
        values: dict[str, int] = {}
        block: bytes | None = None
        for reg in wanted:
            raw = self._read_p(reg) if self._p_works else None
            if raw is None:
                if block is None:
                    block = self._g_block()
                if reg.offset is None or reg.offset + reg.size > len(block):
                    continue
                raw = block[reg.offset : reg.offset + reg.size]
            values[reg.name.lower()] = int.from_bytes(raw, "little")
        if self._selected is not None and thread != self._selected:
            self._select(self._selected)  # virtual reads go through the selected CPU
        return values

    def thread_numbers(self) -> list[int]:
        ids: list[str] = []
        reply = self.client.request("qfThreadInfo")
        while reply.startswith("m"):
            ids += [t for t in reply[1:].split(",") if t]
            reply = self.client.request("qsThreadInfo")
        if reply not in ("l", ""):
            raise LiveTargetError(f"unexpected reply to qfThreadInfo: {shown(reply[:40])}")
        for tid in ids:
            self._thread_ids[thread_number(tid)] = tid
        return sorted(thread_number(t) for t in ids)

    def selected_thread(self) -> int | None:
        return self._selected

    def flush_cache(self) -> None:
        """Nothing to flush: the link keeps no memory."""

    def symbol_value(self, name: str) -> int | None:
        return None

    def symbol_address(self, name: str) -> int | None:
        return None

    # --- registers ---

    def description(self) -> dict[str, Register]:
        """The stub's registers (its target description, read once)."""
        if self._registers is None:
            documents: list[str] = []
            pending = ["target.xml"]
            while pending and len(documents) < MAX_DOCUMENTS:
                text = self._xfer(pending.pop(0))
                if text is None:
                    break
                documents.append(text)
                pending += includes(text)
            self._registers = parse_registers(documents) if documents else {}
        return self._registers

    def _xfer(self, annex: str) -> str | None:
        """One description document (``qXfer:features:read``), ``None`` if the stub has none."""
        out: list[str] = []
        offset = 0
        while True:
            reply = self.client.request(f"qXfer:features:read:{annex}:{offset:x},{XFER_CHUNK:x}")
            if not reply or _ERROR.match(reply):
                return None if not out else "".join(out)
            out.append(reply[1:])
            offset += len(reply) - 1
            if reply[0] == "l" or len(reply) == 1:
                return "".join(out)

    def _select(self, thread: int) -> None:
        tid = self._thread_ids.get(thread)
        if tid is None:
            self.thread_numbers()
            tid = self._thread_ids.get(thread)
            if tid is None:
                raise LiveTargetError(f"the gdbstub has no thread {thread}")
        if self._hg == tid:
            return
        reply = self.client.request(f"Hg{tid}")
        if reply != "OK":
            raise LiveTargetError(f"the gdbstub refused Hg{tid} ({shown(reply)})")
        self._hg = tid

    def _read_p(self, reg: Register) -> bytes | None:
        reply = self.client.request(f"p{reg.number:x}")
        if not reply or _ERROR.match(reply):
            self._p_works = False
            return None
        try:
            return bytes.fromhex(reply)
        except ValueError:
            raise LiveTargetError(f"the gdbstub's reply to p{reg.number:x} is not hex") from None

    def _g_block(self) -> bytes:
        reply = self.client.request("g")
        if not reply or _ERROR.match(reply):
            raise LiveTargetError(f"the gdbstub refused g ({shown(reply or 'not supported')})")
        try:
            return bytes.fromhex(reply.replace("x", "0"))  # "xx": a register it cannot read
        except ValueError:
            raise LiveTargetError("the gdbstub's reply to g is not hex") from None
