"""Symbols on a real kernel: a System.map made by the guest's own kernel, used on a KASLR guest.

Debian's ``/boot/System.map`` is a stub, so the map is made here: the same kernel booted with
``nokaslr`` prints its ``/proc/kallsyms`` (``kptr_restrict`` 0; as root the addresses are real,
and without KASLR they are the link addresses) on the serial console. A KASLR + PTI guest then
prints its own ``/proc/kallsyms`` entries (slid) and is stopped and dumped: ``translate`` of a
symbol through the unslid map must land where the guest's own address of it does, as QEMU's
``gva2gpa`` translates it — independent truth for the slide and for the lookup.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gdbext import cli
from gdbext.plugin.host import Host

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = pytest.mark.qemu

#: The symbols the guests print (the kernel image's markers and a few variables): a whole
#: kallsyms over the serial console of a TCG guest takes too long.
NAMES = [
    "_text",
    "_stext",
    "_etext",
    "__start_rodata",
    "__end_rodata",
    "_sdata",
    "_edata",
    "__init_begin",
    "__init_end",
    "__bss_start",
    "__bss_stop",
    "_end",
    "init_task",
    "linux_banner",
    "jiffies",
]
BEGIN, END = "GDBEXT-KALLSYMS-BEGIN", "GDBEXT-KALLSYMS-END"


def _init_script() -> str:
    """The tests' usual ``/init``, printing the kallsyms lines of :data:`NAMES` between
    :data:`BEGIN` and :data:`END` before the ready marker (whose contract it keeps)."""
    from qemu_guest import INIT_SCRIPT, READY_MARKER

    names = "|".join(NAMES)
    show = (
        "echo 0 > /proc/sys/kernel/kptr_restrict\n"
        f"echo {BEGIN}\n"
        f"/bin/busybox grep -E ' ({names})$' /proc/kallsyms\n"
        f"echo {END}\n"
    )
    marker = f'echo "{READY_MARKER}"\n'
    assert marker in INIT_SCRIPT
    return INIT_SCRIPT.replace(marker, show + marker)


def _kallsyms(guest: QemuGuest) -> str:
    """The kallsyms lines the guest printed, as a System.map's text."""
    log = guest.serial_log().replace("\r", "")
    m = re.search(rf"^{BEGIN}\n(.*?)^{END}$", log, re.S | re.M)
    assert m is not None, "the guest printed no kallsyms"
    lines = [line for line in m[1].splitlines() if re.fullmatch(r"[0-9a-f]{16} \w \S+", line)]
    assert {line.split()[2] for line in lines} >= {"_text", "init_task", "linux_banner"}
    return "\n".join(lines) + "\n"


def _guest(kaslr: bool) -> QemuGuest:
    from qemu_guest import CONFIGS, QemuGuest

    from conftest import require_qemu

    require_qemu()
    config = CONFIGS["kaslr-pti"] if kaslr else replace(CONFIGS["4level"], quiet=True)
    return QemuGuest(replace(config, init=_init_script()))


@pytest.fixture(scope="session")
def unslid_map(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A System.map of the test kernel: its kallsyms booted with ``nokaslr`` (kept in pytest's
    cache for that kernel file, so that only the first run boots for it)."""
    from qemu_guest import find_kernel

    kernel = _guest(kaslr=False).config.kernel or find_kernel()
    stat = kernel.stat()
    key = f"gdbext/kallsyms-map/{kernel.name}"
    stamp = [str(kernel.resolve()), stat.st_size, stat.st_mtime_ns]
    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    cached = cache.get(key, None) if cache is not None else None
    if isinstance(cached, dict) and cached.get("kernel") == stamp:
        text = str(cached["map"])
    else:
        with _guest(kaslr=False) as guest:
            text = _kallsyms(guest)
        if cache is not None:
            cache.set(key, {"kernel": stamp, "map": text})
    path = tmp_path_factory.mktemp("symbols") / "System.map"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def kaslr_stop(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[QemuGuest, dict[str, int], Path]]:
    """A stopped KASLR + PTI guest, its own kallsyms addresses and a dump of the stop."""
    with _guest(kaslr=True) as guest:
        own = {line.split()[2]: int(line.split()[0], 16) for line in _kallsyms(guest).splitlines()}
        guest.stop()
        dump = tmp_path_factory.mktemp("symbols") / "kaslr.elf"
        guest.dump_elf(dump)
        yield guest, own, dump


def _run(*argv: str | Path) -> tuple[int, str]:
    """``gdbext ARGV``: its exit status and output; it must not warn (the kernel's own
    symbols: ``linux_banner`` holds the banner)."""
    out = io.StringIO()
    warnings: list[str] = []
    status = cli.run([str(a) for a in argv], Host.create(), out, warn=warnings.append)
    assert warnings == []
    return status, out.getvalue()


def test_translate_a_symbol_through_an_unslid_map(
    unslid_map: Path, kaslr_stop: tuple[QemuGuest, dict[str, int], Path]
) -> None:
    guest, own, dump = kaslr_stop
    unslid = {
        line.split()[2]: int(line.split()[0], 16) for line in unslid_map.read_text().splitlines()
    }
    assert own["init_task"] != unslid["init_task"]  # KASLR moved it
    status, out = _run("translate", dump, "--kernel", "--system-map", unslid_map, "init_task")
    assert status == 0
    first = out.splitlines()[0]
    expected = guest.gva2gpa(own["init_task"])
    assert expected is not None
    assert first.startswith(f"0x{own['init_task']:016x} <init_task> -> 0x{expected:x} ")
    # And back: an address inside jiffies names it.
    status, out = _run(
        "translate", dump, "--kernel", "--system-map", unslid_map, hex(own["jiffies"] + 4)
    )
    assert (status, out.splitlines()[0].split()[1]) == (0, "<jiffies+0x4>")


def test_read_the_banner_by_name(
    unslid_map: Path, kaslr_stop: tuple[QemuGuest, dict[str, int], Path], tmp_path: Path
) -> None:
    _, _, dump = kaslr_stop
    out = tmp_path / "banner"
    status, _ = _run(
        "read", dump, "--system-map", unslid_map, "linux_banner", "32", "--format", "raw", "-o", out
    )
    assert status == 0
    assert out.read_bytes().startswith(b"Linux version ")


def test_walk_labels_the_image_sections(
    unslid_map: Path, kaslr_stop: tuple[QemuGuest, dict[str, int], Path]
) -> None:
    """The ranges under each section's marker lie in that section as the guest's own kallsyms
    bound it, with the permissions Linux gives it (text r-x; rodata r--; data, bss rw-, and
    nothing but text executable), and the freed init sections map nothing."""
    _, own, dump = kaslr_stop
    status, out = _run("walk", dump, "--kernel", "--system-map", unslid_map)
    assert status == 0
    bounds = {
        ".text": ("_text", "_etext", "r-x"),
        ".rodata": ("__start_rodata", "__end_rodata", "r--"),
        ".data": ("_sdata", "_edata", "rw-"),
        ".bss": ("__bss_start", "__bss_stop", "rw-"),
    }
    section = None
    seen: dict[str, set[str]] = {}
    for line in out.splitlines():
        m = re.fullmatch(r"---\[ (.*) \]---", line)
        if m is not None:
            section = m[1].removeprefix("Kernel image ")
            assert section != "init (freed)", "the freed init sections map nothing"
            continue
        if section not in bounds or line.startswith("#"):
            continue
        start, end, perms = bounds[section]
        first, last = (int(a, 16) for a in line.split()[0].split("-"))
        # Ranges are whole pages: a section's first and last page may be shared.
        assert own[start] & ~0x1FFFFF <= first < last <= (own[end] + 0x1FFFFF) & ~0x1FFFFF
        got = line.split()[3]
        # Only text executes; a data page may be made read-only (set_memory_ro), not executable.
        assert got == perms if section == ".text" else got[2] == "-", line
        seen.setdefault(section, set()).add(got)
    assert {
        name: perms in seen.get(name, ()) for name, (_, _, perms) in bounds.items()
    } == dict.fromkeys(bounds, True)


def test_search_and_walk_by_names(
    unslid_map: Path, kaslr_stop: tuple[QemuGuest, dict[str, int], Path]
) -> None:
    """Names in ``--range``, ``--u64``, ``--has`` and ``--pointer-into`` are where the guest's
    own kallsyms put them: ``init_task`` points to itself (its ``real_parent``, ``parent`` and
    ``group_leader``), each hit's 8 bytes, read from the dump at QEMU's ``gva2gpa`` of the hit
    with pyelftools, are the pointer searched for; and each command prints what it prints
    given the guest's own addresses."""
    import json

    from support.dumps import elf_read

    guest, own, dump = kaslr_stop
    syms: list[str | Path] = ["--kernel", "--system-map", unslid_map, "--json"]
    task = own["init_task"]
    status, out = _run("search", dump, *syms, "--range", "init_task+16K", "--u64", "init_task")
    assert status == 0
    hits = [int(hit["address"], 16) for hit in json.loads(out)["hits"]]
    assert len(hits) >= 3
    for addr in hits:
        assert task <= addr < task + 0x4000
        paddr = guest.gva2gpa(addr)
        assert paddr is not None
        assert int.from_bytes(elf_read(dump, paddr, 8), "little") == task
    numbers = ["--range", f"{task:#x}+16K", "--u64", f"{task:#x}"]
    assert _run("search", dump, *syms, *numbers) == (status, out)
    # Pointers into the kernel's text, in the mapping that holds init_task.
    named = ["--has", "init_task", "--pointer-into", "_text-_etext", "--max", "8"]
    status, out = _run("search", dump, *syms, *named)
    assert status == 0
    for hit in json.loads(out)["hits"]:
        paddr = guest.gva2gpa(int(hit["address"], 16))
        assert paddr is not None
        assert own["_text"] <= int.from_bytes(elf_read(dump, paddr, 8), "little") < own["_etext"]
    numbers = ["--has", f"{task:#x}", "--pointer-into", f"{own['_text']:#x}-{own['_etext']:#x}"]
    assert _run("search", dump, *syms, *numbers, "--max", "8") == (status, out)
    # A walk of .data by name is the walk of the guest's own bounds.
    by_name = _run("walk", dump, *syms, "--range", "_sdata-_edata")
    assert by_name[0] == 0
    assert by_name == _run("walk", dump, *syms, "--range", f"{own['_sdata']:#x}-{own['_edata']:#x}")


def test_pt_translate_in_gdb(
    unslid_map: Path, kaslr_stop: tuple[QemuGuest, dict[str, int], Path]
) -> None:
    """``pt-translate --system-map`` in the real GDB attached to the guest (backend ``gdb``,
    no VMCOREINFO file: the slide from what the live target finds) agrees with QEMU."""
    import shutil
    import subprocess

    from support.debuggers import GDBINIT
    from support.gdblive import gdb_env

    gdb = shutil.which("gdb")
    if gdb is None:
        pytest.skip("no gdb")
    guest, own, _ = kaslr_stop
    expected = guest.gva2gpa(own["init_task"])
    argv = [gdb, "-nx", "-batch", "-ex", f"source {GDBINIT}",
            "-ex", f"target remote 127.0.0.1:{guest.gdb_port}",
            "-ex", f"pt-translate --kernel --system-map {unslid_map} init_task",
            "-ex", "detach"]  # fmt: skip
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=180, env=gdb_env(), check=False
    )
    line = next((x for x in proc.stdout.splitlines() if "<init_task>" in x), None)
    assert line is not None, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert line.startswith(f"0x{own['init_task']:016x} <init_task> -> 0x{expected:x} ")
