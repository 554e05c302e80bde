"""``tasks`` on dumps of real guests against the guest's own ``ps``.

The guest's ``/init`` starts a few processes with distinctive argv (sleeps with their own
arguments, a subshell, ``sh -c``), waits for them to settle, prints ``ps -o pid,comm,args``
between markers on the serial console and then only waits: the task list at the stop is the one
``ps`` printed, less ``ps`` itself. The dump's task list, read with the offsets of the kernel's
own BTF, must give the same (PID, comm) pairs for the user processes, kernel threads without a
root, and a root for each process whose kernel half QEMU's ``xp`` reads equal to that of the
table in CR3 at the stop (itself the root of a task, or the kernel's).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from qemu_guest import INIT_PROLOGUE

pytestmark = pytest.mark.qemu

PS_BEGIN = "GDBEXT-PS-BEGIN"
PS_END = "GDBEXT-PS-END"

#: ``/init``: the processes, ``ps`` between markers, then the ready marker and only waiting.
TASKS_INIT = (
    INIT_PROLOGUE
    + f"""sleep 100000 &
sleep 100001 7 &
( sleep 100002 & wait ) &
sh -c 'sleep 100003; echo never' &
sleep 3
echo {PS_BEGIN}
ps -o pid,comm,args
echo {PS_END}
echo GDBEXT-READY
while :; do wait; done
"""
)

_PS_LINE = re.compile(r"^\s*(\d+)\s+(\S+)\s+(.*)$")


def _ps(serial: str) -> list[tuple[int, str, str]]:
    """``(pid, comm, args)`` of the guest's ``ps``, ``ps`` itself left out."""
    body = serial.split(PS_BEGIN, 1)[1].split(PS_END, 1)[0]
    out = []
    for line in body.splitlines():
        m = _PS_LINE.match(line.strip("\r"))
        if m is None or not m.group(1).isdigit():
            continue
        pid, comm, args = int(m.group(1)), m.group(2), m.group(3)
        if comm != "ps":
            out.append((pid, comm, args))
    return out


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gdbext.cli", *argv],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _kernel_half(guest: object, root: int) -> list[str]:
    """QEMU's ``xp`` of the upper 256 entries of the table at ``root``, as printed."""
    text = guest.hmp(f"xp /256gx 0x{root + 0x800:x}")  # type: ignore[attr-defined]
    return [w for line in text.splitlines() for w in line.split(":", 1)[-1].split()]


@pytest.mark.parametrize("config", ["4level", "kaslr-pti", "la57"])
def test_tasks_equal_the_guests_ps(config: str, tmp_path: Path) -> None:
    from conftest import require_qemu

    require_qemu()
    from qemu_guest import CONFIGS, QemuGuest

    cfg = dataclasses.replace(CONFIGS[config], init=TASKS_INIT, quiet=True)
    with QemuGuest(cfg) as guest:
        guest.stop()
        dump = tmp_path / "stop.elf"
        guest.dump_elf(dump)
        cr3 = guest.cr3()
        proc = _cli("tasks", str(dump), "--json")
        assert (proc.returncode, proc.stderr) == (0, "")
        doc = json.loads(proc.stdout)
        ps = _ps(guest.serial_log())
        tasks = doc["tasks"]
        assert doc["error"] is None and doc["threads"] is True
        assert tasks[0]["pid"] == 0 and tasks[0]["comm"] == "swapper/0"

        user_ps = {(pid, comm) for pid, comm, args in ps if not args.startswith("[")}
        user = {(t["pid"], t["comm"]) for t in tasks if t["root"] is not None}
        assert user == user_ps
        assert (1, "init") in user
        assert {c for _, c in user} >= {"init", "sleep", "sh"}
        assert [a for _, _, a in ps if a.startswith("sleep 10000")] == [
            "sleep 100000", "sleep 100001 7", "sleep 100002", "sleep 100003",
        ]  # fmt: skip
        # Kernel threads: none has a root; those ps printed are there (kworkers may come and go).
        kthreads = {(t["pid"], t["comm"]) for t in tasks if t["kernel_thread"]}
        assert all(t["root"] is None for t in tasks if t["kernel_thread"])
        stable = {(p, c) for p, c, a in ps if a.startswith("[") and not c.startswith("kworker")}
        assert stable <= kthreads
        assert all(t["pid"] == t["tgid"] for t in tasks)  # busybox starts no threads

        roots = [int(t["root"], 16) for t in tasks if t["root"] is not None]
        assert len(set(roots)) == len(roots)  # one address space per process
        assert all(r % 4096 == 0 for r in roots)
        kernel_root = int(doc["kernel_root"], 16)
        current = cr3 & ~0xFFF & ~(0x1000 if config == "kaslr-pti" else 0)
        assert current in set(roots) | {kernel_root}
        kernel_half = _kernel_half(guest, current)
        for root in roots:
            assert _kernel_half(guest, root) == kernel_half, hex(root)

        _check_roots(dump, tasks, ps)

        # Live, through the debugger-free backend (QEMU's RAM read on this host): the same list.
        live = _cli("tasks", "--backend", "gdbstub", f"127.0.0.1:{guest.gdb_port}", "--json")
        assert (live.returncode, live.stderr) == (0, "")
        assert json.loads(live.stdout)["tasks"] == tasks
        if config == "4level":
            _check_debuggers(dump)


def _check_roots(
    dump: Path, tasks: list[dict[str, object]], ps: list[tuple[int, str, str]]
) -> None:
    """``roots`` of the same dump: every task with an mm has its root among the address spaces,
    each process's space is owned by the tasks whose root it is and named by the argv ``ps``
    printed for them, and no process's space is listed that no task owns."""
    proc = _cli("roots", str(dump), "--json")
    assert (proc.returncode, proc.stderr) == (0, "")
    doc = json.loads(proc.stdout)
    assert doc["tasks_read"] is True and doc["unlisted_tasks"] == []
    spaces = {s["root"]: s for s in doc["address_spaces"]}
    # busybox's ps writes "{comm} argv" when comm is not argv[0]'s name (a script's shell).
    args = {pid: a.split("} ", 1)[1] if a.startswith("{") else a for pid, _, a in ps}
    owned: dict[str, set[int]] = {}
    for t in tasks:
        if t["root"] is not None:
            owned.setdefault(str(t["root"]), set()).add(int(str(t["pid"])))
    assert set(owned) <= set(spaces)
    for root, space in spaces.items():
        if space["kind"] != "process":
            assert space["tasks"] == [], root
            continue
        pids = {t["pid"] for t in space["tasks"]}
        assert pids and pids == owned[root], root
        ident = space["identity"]
        if ident is not None and ident["argv"] is not None:
            assert " ".join(ident["argv"]) in {args[p] for p in pids}, (root, ident)


def _check_debuggers(dump: Path) -> None:
    """``pt-tasks`` in GDB and LLDB on the dump: the command line's text, byte for byte."""
    import shutil

    from support import lldbrun
    from support.debuggers import gdb, marked, sections, without_progress

    text = _cli("tasks", str(dump))
    assert text.returncode == 0
    if shutil.which("gdb") is not None:
        in_gdb = gdb(f"pt-backend core {dump}", *marked("pt-tasks"))
        assert without_progress(in_gdb.stderr) == ""
        assert sections(in_gdb.stdout) == [text.stdout]
    if shutil.which("lldb") is not None:
        in_lldb = lldbrun.run([f"pt-backend core {dump}", "pt-tasks"])
        assert in_lldb.results[1].err == ""
        assert in_lldb.results[1].out == text.stdout
