"""The Python API (``gdbext.open``) on the committed dumps and the simulator.

Expected values come from QEMU's goldens for the frozen VM each dump was taken from
(``fixtures/kernels/NAME.gva2gpa.txt``, ``NAME.info-tlb*.txt.xz``, ``NAME.info-registers.txt``,
the kernel's serial log) and from the scenario files, never from gdbext. The README's Python
session is run as a doctest here, and its values are checked against the same goldens.
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.goldens import gva2gpa, info_tlb
from support.paths import DEMO, KERNELS, ROOT

import gdbext
from gdbext.errors import GdbextError, NotMappedError, UsageError
from gdbext.x86.records import AliasRun, Anomaly, LeafRun, Mapping, Translation, WalkStep

README = ROOT / "README.md"
#: Where the README's session opens the demo dump (``scripts/demo.sh`` unpacks it there).
README_DUMP = Path("build/demo/kaslr-pti.elf")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

KernelDump = Callable[[str], Path]


def cr3_of(name: str) -> int:
    m = re.search(r"\bCR3=([0-9a-f]+)", (KERNELS / f"{name}.info-registers.txt").read_text())
    assert m is not None
    return int(m.group(1), 16)


@pytest.fixture
def demo_cwd(kernel_dump: KernelDump, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding ``build/demo/kaslr-pti.elf``, as after scripts/demo.sh."""
    (tmp_path / README_DUMP).parent.mkdir(parents=True)
    (tmp_path / README_DUMP).symlink_to(kernel_dump("kaslr-pti"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- the README ----------------------------------------------------------------------------------


def readme_examples() -> list[doctest.Example]:
    return doctest.DocTestParser().get_examples(README.read_text())


def test_the_readme_session_runs_as_a_doctest(demo_cwd: Path) -> None:
    examples = readme_examples()
    assert 5 <= len(examples) <= 12, "the README's session: about ten lines of Python"
    result = doctest.testfile(str(README), module_relative=False, optionflags=FLAGS, verbose=False)
    assert result.attempted == len(examples)
    assert result.failed == 0, "the README's Python session failed (see the output above)"


def test_the_readme_values_are_qemus() -> None:
    """Each value the README's session shows is QEMU's (or the kernel's own) for that VM."""
    qemu = gva2gpa("kaslr-pti")
    tlb = info_tlb("kaslr-pti.info-tlb")
    checked = set()
    for ex in readme_examples():
        source, want = ex.source.strip(), ex.want.strip()
        if m := re.search(r"translate\((0x[0-9a-f]+)\)\.paddr", source):
            assert qemu[int(m.group(1), 16)] == int(want.strip("'"), 16)
            checked.add("gva2gpa")
        elif m := re.search(r"translate\((0x[0-9a-f]+)\)$", source):
            assert ex.exc_msg is not None and ex.exc_msg.startswith("gdbext.errors.NotMappedError:")
            assert qemu[int(m.group(1), 16)] is None
            checked.add("unmapped")
        elif want.startswith("Mapping("):
            fields = dict(re.findall(r"(\w+)=(\w+)", want))
            paddr, flags = tlb[int(fields["vaddr"], 16)]
            assert int(fields["paddr"], 16) == paddr
            assert fields["user"] == str("U" in flags)
            assert fields["writable"] == str("W" in flags)
            assert fields["executable"] == str(not flags.startswith("X"))
            assert (int(fields["page_size"], 16) > 4096) == ("P" in flags)
            checked.add("info tlb leaf")
        elif "user_pgd=True" in source and "len(" in source:
            user = info_tlb("kaslr-pti.info-tlb-user")
            assert want == f"({len(tlb)}, {len(user)})"
            checked.add("info tlb lines")
        elif 'summary["wx"]' in source:
            serial = (KERNELS / "kaslr-pti.serial.log").read_text()
            assert want.strip("'") in serial
            checked.add("kernel W+X check")
    assert checked == {"gva2gpa", "unmapped", "info tlb leaf", "info tlb lines", "kernel W+X check"}


# --- open, page_table, translate, walk -----------------------------------------------------------


@pytest.mark.parametrize("name", ["4level", "kaslr-pti", "la57"])
def test_translate_equals_qemus_gva2gpa(kernel_dump: KernelDump, name: str) -> None:
    with gdbext.open(kernel_dump(name)) as t:
        pt = t.page_table()
        for vaddr, paddr in gva2gpa(name).items():
            if paddr is None:
                with pytest.raises(GdbextError):
                    pt.translate(vaddr)
            else:
                tr = pt.translate(vaddr)
                assert isinstance(tr, Translation)
                assert (tr.vaddr, tr.paddr) == (vaddr, paddr)
        # Text, as the command line takes addresses.
        some = next(v for v, p in gva2gpa(name).items() if p is not None)
        assert pt.translate(hex(some)) == pt.translate(some)


@pytest.mark.parametrize(
    ("choice", "golden"),
    [
        ({}, "info-tlb"),
        ({"cpu": 0}, "info-tlb"),
        ({"root": "cr3"}, "info-tlb"),
        ({"kernel": True}, "info-tlb-kernel"),
        ({"user_pgd": True}, "info-tlb-user"),
        ({"kernel": True, "user_pgd": True}, "info-tlb-user"),
    ],
)
def test_each_root_choice_walks_what_qemu_lists(
    kernel_dump: KernelDump, choice: dict[str, Any], golden: str
) -> None:
    """page_table() chooses the root as the command line's options do; QEMU's ``info tlb``
    with CR3 set to that root lists the same leaves. (The kernel's user half is CPU 0's: the
    idle CPU runs on a process's tables, whose user PGD QEMU listed.) The choices that name CPU
    0's CR3 (QEMU's ``info registers``) another way are checked to give that root, whose walk
    the default choice compares with QEMU's list."""
    cr3 = cr3_of("kaslr-pti")
    if choice.get("root") == "cr3":
        choice = {"root": cr3}
    expected = info_tlb(f"kaslr-pti.{golden}")
    with gdbext.open(kernel_dump("kaslr-pti")) as t:
        pt = t.page_table(**choice)
        if choice == {"kernel": True, "user_pgd": True}:
            # The kernel's own PTI pair (init_top_pgt | 0x1000) is not the process's: check the
            # root it resolves to rather than the leaves.
            assert pt.root == t.page_table(kernel=True).root | 0x1000
            return
        if golden == "info-tlb":
            assert (pt.root, pt.levels) == (cr3 & ~0xFFF, t.page_table().levels)
            if choice:
                return
        leaves = pt.walk()
    assert {m.vaddr: m.paddr for m in leaves} == {v: p for v, (p, _) in expected.items()}
    assert [m.vaddr for m in leaves] == sorted(expected)
    assert leaves.anomalies == []


def test_walk_options_prune_as_the_scenario_says() -> None:
    """The demo scenario's mappings (fixtures/scenarios/demo.json) decide what each walk holds."""
    with gdbext.open(backend="sim", scenario=str(DEMO)) as t:
        pt = t.page_table()
        user_code = pt.walk(filter="u,x")
        assert [m.vaddr for m in user_code] == [0x400000 + i * 0x1000 for i in range(16)]
        assert [m.paddr for m in user_code] == [0x1000000 + i * 0x1000 for i in range(16)]
        kernel_data = pt.walk((0xFFFFFFFF81000000, 0xFFFFFFFF81400000), filter="w")
        assert [m.vaddr for m in kernel_data] == [
            0xFFFFFFFF81300000 + i * 0x1000 for i in range(256)
        ]
        in_range = pt.walk("0xffff888000000000+0x400000")
        assert [(m.vaddr, m.paddr, m.page_size) for m in in_range] == [
            (0xFFFF888000000000, 0, 0x200000),
            (0xFFFF888000200000, 0x200000, 0x200000),
        ]
        assert pt.walk(range="0xffff888000000000-0xffff888000200000")[0].writable
        # has: the merged mapping holding the address (the 128 direct-map pages of 2 MiB).
        held = pt.walk(has=0xFFFF888001234567)
        assert len(held) == 128 and held[0].vaddr == 0xFFFF888000000000
        # The ESPFIX-like table (two leaves) is linked 1 + 63 times.
        every = 16 + 8 + 33 + 128 + 1 + 2 * (1 + 63) + 512 + 256 + 256
        assert len(pt.walk(max_leaves=None)) == every
        assert pt.walk(filter="wx") == []


def test_audit_returns_the_findings() -> None:
    """audit() is the command line's audit: on the scenario built for the user-kernel rule,
    the ranges its description names (sorted by severity, then address)."""
    scenario = ROOT / "fixtures" / "scenarios" / "audit-space-user-kernel.json"
    with gdbext.open(backend="sim", scenario=str(scenario)) as t:
        result = t.page_table().audit("user-kernel")
    assert result.rules_run == ["user-kernel"]
    found = [(str(f.severity), f.vaddr, f.end, f.user) for f in result.findings]
    assert found == [
        ("high", 0x10000000, 0x10000000 + 3 * 4096, False),  # supervisor RW in the user half
        ("high", 0xFFFF888100000000, 0xFFFF888100200000 + 16 * 4096, True),  # 2 MiB + 16 pages
        ("high", 0xFFFF888100210000, 0xFFFF888100210000 + 2 * 4096, True),  # user R-X
        ("low", 0xFFFFFFFFFF600000, 0xFFFFFFFFFF601000, True),  # the vsyscall page
    ]


def test_the_target_closes_its_dump(kernel_dump: KernelDump) -> None:
    dump = kernel_dump("4level")

    def mapped() -> int:
        links = (os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd"))
        return sum(1 for link in links if link == str(dump.resolve()))

    before = mapped()
    with gdbext.open(dump) as t:
        pt = t.page_table()
        assert mapped() == before + 1
    assert mapped() == before
    assert repr(t) == "<gdbext target core: closed>"
    with pytest.raises(UsageError, match="is closed"):
        pt.translate(0xFFFFFFFF81000000)
    with pytest.raises(UsageError, match="is closed"):
        t.page_table()
    t.close()  # again: nothing to do


# --- reprs ---------------------------------------------------------------------------------------


def test_reprs_show_addresses_in_hex(kernel_dump: KernelDump) -> None:
    with gdbext.open(kernel_dump("kaslr-pti")) as t:
        pt = t.page_table()
        tr = pt.translate(0xFFFFFFFFA7A12ABC)
        leaf = pt.walk(has=0xFFFFFFFFA7A00000)[0]
        assert repr(pt) == "PageTable(root=0x61c4000, levels=4, cpu 0)"  # CR3 in info registers
        assert cr3_of("kaslr-pti") == 0x61C4000
        assert repr(t.page_table(user_pgd=True)).endswith("cpu 0, user half)")
        assert repr(t.page_table(kernel=True)).endswith(", kernel)")
    assert repr(tr).startswith(
        "Translation(vaddr=0xffffffffa7a12abc, paddr=0x1012abc, page_size=0x200000, "
    )
    assert "steps=(WalkStep(level=4, table=0x61c4000, index=511, entry=0x" in repr(tr)
    assert repr(leaf) == (
        "Mapping(vaddr=0xffffffffa7a00000, paddr=0x1000000, page_size=0x200000, "
        "entry=0x10000e1, user=False, writable=False, executable=True)"
    )
    assert repr(WalkStep(2, 0x2000, 17, 0x3063)) == (
        "WalkStep(level=2, table=0x2000, index=17, entry=0x3063)"
    )
    assert repr(LeafRun(0x1000, 0x5000, 3, 4096, 0x5063, False, True, False)).startswith(
        "LeafRun(vaddr=0x1000, paddr=0x5000, count=3, page_size=0x1000, entry=0x5063, "
    )
    assert repr(Anomaly("recursive", 0xFFFF800000000000, 4, 0x1000, 256, 0x1063)) == (
        "Anomaly(kind='recursive', vaddr=0xffff800000000000, level=4, table=0x1000, "
        "index=256, entry=0x1063, detail='')"
    )
    alias = AliasRun(0x200000, 0x400000, 1, 0x9000, 2, 0x0, 512, 0x200000, False, True, False)
    assert "first_vaddr=0x0, leaves=512, mapped=0x200000" in repr(alias)
    assert repr(Mapping(0x400000, 0x1000000, 4096, 0x1000005, True, False, True)).startswith(
        "Mapping(vaddr=0x400000, paddr=0x1000000, page_size=0x1000, entry=0x1000005"
    )


def test_finding_reprs_show_addresses_in_hex() -> None:
    from gdbext.audit.model import Finding, Severity

    f = Finding("wx", Severity.HIGH, "w+x", vaddr=0x1000, end=0x3000, paddr=0x5000)
    assert "vaddr=0x1000, end=0x3000, paddr=0x5000, paddr_end=None" in repr(f)
    assert "pages=0" in repr(f)


# --- errors and import cost ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: gdbext.open(), "needs a dump file or backend=NAME"),
        (lambda: gdbext.open(backend="nope"), "no backend named nope"),
        (lambda: gdbext.open(backend="sim"), "needs --scenario"),
        (lambda: gdbext.open(backend="sim", scenario=str(DEMO), bogus=1), "no backend option"),
        (lambda: gdbext.open("x.elf", backend="sim"), "backend sim takes none"),
        (lambda: gdbext.open(backend="gdb"), "only inside GDB"),
        (lambda: gdbext.open(backend="lldb"), "only inside LLDB"),
        (lambda: gdbext.open("/nonexistent/vmcore"), "No such file"),
        (lambda: gdbext.open(ROOT / "README.md"), "README.md"),
    ],
)
def test_open_errors_are_gdbext_errors(call: Callable[[], object], message: str) -> None:
    with pytest.raises(GdbextError, match=re.escape(message)):
        call()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda pt, t: t.page_table(cpu=3), UsageError, "there is no CPU 3"),
        (lambda pt, t: t.page_table(root=-1), UsageError, "not an address"),
        (lambda pt, t: t.page_table(root=1.5), UsageError, "not an address"),
        (lambda pt, t: t.page_table(kernel=True, root=0x1000), UsageError, "give one of them"),
        (lambda pt, t: t.page_table(levels=3), UsageError, "must be 4 or 5"),
        (lambda pt, t: pt.translate("zero"), UsageError, "not an address"),
        (lambda pt, t: pt.translate(0xFFFF800000000000), NotMappedError, "is not mapped"),
        (lambda pt, t: pt.translate(0x800000000000), GdbextError, "not canonical"),
        (lambda pt, t: pt.walk(filter="q"), UsageError, "filter"),
        (lambda pt, t: pt.walk("nowhere"), UsageError, "range"),
        (lambda pt, t: pt.walk((2, 1)), UsageError, "range"),
        (lambda pt, t: pt.walk(has=0x1000, range=(0, 1)), UsageError, "exclude each other"),
        (lambda pt, t: pt.walk(has=0xFFFF800000000000), NotMappedError, "is not mapped"),
        (lambda pt, t: pt.walk(max_leaves=10), GdbextError, "10"),
        (lambda pt, t: pt.audit("nope"), UsageError, "no audit rule 'nope'"),
    ],
)
def test_page_table_errors_are_gdbext_errors(
    kernel_dump: KernelDump, call: Callable[[Any, Any], object], error: type, message: str
) -> None:
    with gdbext.open(kernel_dump("4level")) as t:
        pt = t.page_table()
        with pytest.raises(error, match=re.escape(message)):
            call(pt, t)


def test_importing_gdbext_loads_nothing_more() -> None:
    """``import gdbext`` (GDB, LLDB and the command line start with it) imports no submodule
    and not even ``typing``; ``gdbext.open`` loads the API on first use."""
    probe = (
        "import sys; before = set(sys.modules); import gdbext\n"
        "print(sorted(set(sys.modules) - before))\n"
        "gdbext.open; print('gdbext.api' in sys.modules, gdbext.open.__module__)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    first, second = proc.stdout.splitlines()
    assert first == "['gdbext']"
    assert second == "True gdbext.api"
    assert set(dir(gdbext)) >= {"open", "GdbextError", "PageTable", "OpenedTarget"}
    assert gdbext.GdbextError is GdbextError
    with pytest.raises(AttributeError):
        gdbext.nothing_here  # noqa: B018
