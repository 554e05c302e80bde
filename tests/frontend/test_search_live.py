"""``search`` on real guests: a marker the test puts in a user process's argv is found live (the
``gdbstub`` backend over the host read path) and in a dump of the same stop at exactly the
addresses the test finds itself.

Each guest (4-level, LA57, KASLR + PTI) boots an ``/init`` that starts a busy shell whose
``$0`` and ``$2`` are a random marker, so that a stop almost always lands in that process, with
its page table in CR3; ``$1`` pads ``$0`` across a page boundary of the stack. The expected
hits: the marker's physical addresses in the dump's PT_LOAD segments (read with pyelftools),
mapped to virtual addresses through QEMU's own ``info tlb`` at that stop (every page whose
frame holds the whole marker), plus the marker across each boundary of two virtually
consecutive pages, read through each page's own frame. Hits across a page boundary and in the
user half are checked once more with QEMU's ``gva2gpa`` and ``xp``.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from elftools.elf.elffile import ELFFile
from support.debuggers import gdb, marked, sections
from support.dumps import elf_find
from support.gdblive import GDB

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = pytest.mark.qemu

K4, M2 = 1 << 12, 1 << 21
#: Canonical addresses below this are the user half (4 and 5 levels alike).
USER_END = 1 << 56
#: Stops tried before giving up on landing in the marker's process (in user mode and in the
#: kernel, with PTI).
STOPS = 40
#: CR3's bit that selects PTI's user PGD, the upper half of the 8 KiB pair.
PTI_USER_BIT = 1 << 12


#: The busy shell's script: a system call each turn, so that stops land in the kernel too.
BUSY = "while :; do : </proc/self/stat; done"

#: ``/init``'s lines that start the busy shell with ``$MARK`` as its ``$0`` and ``$2``, and
#: between them an argument whose length puts ``$0`` across a page boundary. The strings of
#: ``argv`` and ``envp`` are copied to the top of the new stack, so where ``$0`` lands is
#: known from the shell's ``arg_end`` (field 49 of ``/proc/PID/stat``): when it does not
#: straddle, the shell is started again with the padding that moves it there.
BUSY_LINES = f"""b=/bin/busybox
len=${{#MARK}}
pad=
for try in 1 2 3 4 5 6; do
  $b env -i $b sh -c '{BUSY}' "$MARK" "$pad" "$MARK" &
  busy=$!
  # Until env has exec'd the shell (env's own argv holds the marker too): argv[1] is sh.
  until [ "$($b tr '\\0' '\\n' < /proc/$busy/cmdline | $b head -n 2 | $b tail -n 1)" = sh ]
  do :; done
  read -r {"_ " * 48}arg_end _ < /proc/$busy/stat
  arg_end=${{arg_end:-0}}
  at=$(( (arg_end - 2 * (len + 1) - ${{#pad}} - 1) % 4096 ))
  [ $arg_end -gt 0 ] && [ $(( at + len )) -gt 4096 ] && break
  kill $busy
  [ $arg_end -gt 0 ] || continue  # no stack to read: try again
  n=$(( ${{#pad}} + (at - (4096 - len / 2) + 4096) % 4096 ))
  pad=$($b head -c $n /dev/zero | $b tr '\\0' p)
done
echo "GDBEXT-MARK-AT $at"
"""


def busy_init(mark: str) -> str:
    """The default ``/init``, which starts the busy shell (:data:`BUSY_LINES`) before the
    ready marker; the marker comes once that shell has exec'd."""
    from qemu_guest import INIT_SCRIPT, READY_MARKER

    ready = f'echo "{READY_MARKER}"'
    assert ready in INIT_SCRIPT
    return INIT_SCRIPT.replace(ready, f"MARK={mark}\n{BUSY_LINES}{ready}")


@dataclasses.dataclass(frozen=True)
class Page:
    vaddr: int
    paddr: int
    size: int
    #: The leaf's NX, user and writable flags as ``info tlb`` shows them (``X``, ``U``, ``W``).
    perms: str = ""


def tlb_pages(lines: list[str]) -> list[Page]:
    """QEMU's ``info tlb`` lines as pages, in virtual order. The PSE flag (third) marks a
    2 MiB page: the guests' 128 MiB leave the kernel no 1 GiB page to make (a 1 GiB page
    taken for 2 MiB would show as hits missing from the expected set, not hide any)."""
    pages = []
    for line in lines:
        vaddr, rest = line.split(": ")
        paddr, flags = rest.split()
        size = M2 if flags[2] == "P" else K4
        pages.append(Page(int(vaddr, 16), int(paddr, 16), size, flags[0] + flags[7:9]))
    return sorted(pages, key=lambda p: p.vaddr)


class PhysImage:
    """The dump's physical memory, its PT_LOAD segments read once with pyelftools."""

    def __init__(self, path: Path) -> None:
        self.segments: list[tuple[int, bytes]] = []
        with open(path, "rb") as f:
            for seg in ELFFile(f).iter_segments():
                if seg["p_type"] == "PT_LOAD":
                    f.seek(seg["p_offset"])
                    self.segments.append((seg["p_paddr"], f.read(seg["p_filesz"])))
        self.segments.sort(key=lambda s: s[0])
        self.starts = [s[0] for s in self.segments]

    def read(self, paddr: int, size: int) -> bytes | None:
        """``size`` bytes at ``paddr`` from one segment; ``None`` outside the dump (MMIO)."""
        i = bisect.bisect_right(self.starts, paddr) - 1
        if i < 0:
            return None
        start, data = self.segments[i]
        if paddr + size > start + len(data):
            return None
        return data[paddr - start : paddr - start + size]


def expected_hits(
    pages: list[Page], image: PhysImage, dump: Path, mark: bytes
) -> list[tuple[int, int]]:
    """(vaddr, paddr) of every virtual address where ``mark`` is, at this stop."""
    frames = elf_find(dump, mark)
    found = set()
    for page in pages:
        i = bisect.bisect_left(frames, page.paddr)
        while i < len(frames) and frames[i] + len(mark) <= page.paddr + page.size:
            found.add((page.vaddr + frames[i] - page.paddr, frames[i]))
            i += 1
    edge = len(mark) - 1
    for one, two in itertools.pairwise(pages):
        if one.vaddr + one.size != two.vaddr:
            continue
        before = image.read(one.paddr + one.size - edge, edge)
        after = image.read(two.paddr, edge)
        if before is None or after is None:
            continue
        buf = before + after
        j = buf.find(mark)
        while j >= 0:
            found.add((two.vaddr - edge + j, one.paddr + one.size - edge + j))
            j = buf.find(mark, j + 1)
    return sorted(found)


def mapping_of(pages: list[Page], vaddr: int) -> tuple[int, int]:
    """``search --has``'s mapping by ``info tlb``: the virtually consecutive pages around
    ``vaddr`` of one size and the same flags NX, U and W, whatever their frames (the user
    half's upper levels allow all, so a leaf's flags are its permissions)."""
    i = next(n for n, p in enumerate(pages) if p.vaddr <= vaddr < p.vaddr + p.size)
    lo = hi = i

    def joined(a: Page, b: Page) -> bool:
        return a.vaddr + a.size == b.vaddr and (a.size, a.perms) == (b.size, b.perms)

    while lo > 0 and joined(pages[lo - 1], pages[lo]):
        lo -= 1
    while hi + 1 < len(pages) and joined(pages[hi], pages[hi + 1]):
        hi += 1
    return pages[lo].vaddr, pages[hi].vaddr + pages[hi].size


def xp_bytes(guest: QemuGuest, paddr: int, size: int) -> bytes:
    """``size`` bytes at ``paddr`` as QEMU's ``xp /Nbx`` prints them."""
    out = guest.hmp(f"xp /{size}bx {paddr:#x}")
    return bytes(int(b, 16) for line in out.splitlines() for b in line.split(":")[1].split())


def gdbext_search(*argv: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "gdbext.cli", "search", *argv],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    return proc.returncode, json.loads(proc.stdout) if proc.stdout else {}, proc.stderr


def check_stop(guest: QemuGuest, mark: str, dump: Path, notes: list[str]) -> bool:
    """At the current stop: False if CR3's tables map no user page where the marker is across
    a page boundary (the stop is not in the busy shell: what it found there is added to
    ``notes``); else True, once the hits live, in a dump of this stop and found here are
    checked equal."""
    raw = mark.encode()
    cr3 = guest.cr3()
    pages = tlb_pages(guest.info_tlb())
    guest.dump_elf(dump)
    want = expected_hits(pages, PhysImage(dump), dump, raw)
    # The busy shell's $0 straddles two pages of its stack; ``/init``'s memory holds the
    # marker too (its script), whole.
    across = [va for va, _ in want if va < USER_END and va % K4 + len(raw) > K4]
    if not across:
        where = [f"{va:#x}" for va, _ in want if va < USER_END]
        notes.append(f"CR3 {cr3:#x}: the marker in the user half at {where or 'no address'}")
        return False
    # QEMU's own translation and reading of the user-half hits and of those across pages.
    for va, pa in want:
        if va < USER_END or (va + len(raw) - 1) // K4 != va // K4:
            assert guest.gva2gpa(va) == pa, hex(va)
            first = K4 - va % K4
            if first >= len(raw):
                assert xp_bytes(guest, pa, len(raw)) == raw
            else:
                rest = guest.gva2gpa(va + first)
                assert rest is not None
                seen = xp_bytes(guest, pa, first) + xp_bytes(guest, rest, len(raw) - first)
                assert seen == raw, hex(va)
    argv = ["--string", mark, "--json", "--max", "100000"]
    stub = ("--backend", "gdbstub", f"127.0.0.1:{guest.gdb_port}", "--read-via", "host")
    # --has: the stack's pages around $0, by info tlb.
    lo, hi = mapping_of(pages, across[0])
    status, stack, err = gdbext_search(*stub, *argv, "--has", f"{across[0]:#x}")
    assert (status, err) == (0, "")
    in_stack = [(va, pa) for va, pa in want if lo <= va and va + len(raw) <= hi]
    assert [(int(h["address"], 16), int(h["paddr"], 16)) for h in stack["hits"]] == in_stack
    status, live, err = gdbext_search(*stub, *argv)
    assert (status, err) == (0, "")
    if GDB is not None:  # GDB's pt-search on the same stop; it disconnects, the VM stays stopped
        proc = gdb(
            "set pagination off",
            f"target remote 127.0.0.1:{guest.gdb_port}",
            *marked(f"pt-search {' '.join(argv)}", "disconnect"),
            timeout=300,
        )
        assert json.loads(sections(proc.stdout)[0]) == live, proc.stderr[-2000:]
    assert guest.hmp("info status").strip() == "VM status: paused"
    assert guest.cr3() == cr3
    status, dumped, err = gdbext_search(str(dump), *argv)
    assert (status, err) == (0, "")
    assert dumped == live
    hits = live["hits"]
    assert (live["found"], live["more"]) == (len(want), False)
    assert [(int(h["address"], 16), int(h["paddr"], 16)) for h in hits] == want
    assert all(bytes.fromhex(h["context"]).startswith(raw) for h in hits)
    user = [h for h in hits if int(h["address"], 16) < USER_END]
    assert all(h["perms"].endswith(" user") for h in user)
    assert len(across) < len(user)  # $2 is on the stack too, within one page
    return True


@pytest.mark.parametrize("name", ["4level", "la57", "kaslr-pti"])
def test_marker_in_a_process_argv_is_where_the_dump_and_qemu_put_it(
    name: str, tmp_path: Path
) -> None:
    """With PTI, once at a stop in user mode (CR3: the process's user PGD, which maps the user
    half and the entry code) and once in the kernel (its kernel PGD, the direct map too)."""
    from conftest import require_qemu

    require_qemu()
    import qemu_guest

    mark = f"GDBEXT-MARK-{secrets.token_hex(8)}"
    config = dataclasses.replace(qemu_guest.CONFIGS[name], init=busy_init(mark))
    wanted = {"user PGD", "kernel PGD"} if config.pti else {"CR3"}
    notes: list[str] = []
    with qemu_guest.booted(config) as guest:
        for _ in range(STOPS):
            guest.stop()
            kind = "CR3"
            if config.pti:
                kind = "user PGD" if guest.cr3() & PTI_USER_BIT else "kernel PGD"
            if kind in wanted and check_stop(guest, mark, tmp_path / "stop.elf", notes):
                wanted.discard(kind)
                if not wanted:
                    return
            guest.cont()
            time.sleep(0.2)
        at = re.findall(r"GDBEXT-MARK-AT.*", guest.serial_log())
    pytest.fail(
        f"{STOPS} stops, none in the busy shell with {' or '.join(wanted)} ({at}): "
        + "; ".join(sorted(set(notes)))
    )
