"""``audit --all-roots`` (rule ``address-spaces``) on the simulated machine of
:mod:`tests.linux.test_select`: the W+X pages built in one process, and one entry written into
one process's kernel half, are found and the process named; an honest machine has no hook
finding, and look-alike pages are not taken for hooked tables."""

from __future__ import annotations

import json
from pathlib import Path

from linux.test_select import JIT, SLEEP2, build_machine
from support.cli import cli_text
from support.roots import KERNEL_ROOT, build_roots_machine

from gdbext.audit.engine import run_audit
from gdbext.audit.model import Finding, Severity
from gdbext.audit.options import AuditOptions
from gdbext.audit.registry import audit_rules
from gdbext.flags import PRESENT, WRITABLE
from gdbext.mapper import write_u64
from gdbext.plugin.host import Host
from gdbext.plugin.target import Target
from gdbext_sim.elfcore import write_qemu_elf_core

RULES = audit_rules(Host.create())


def all_roots(target: Target) -> list[Finding]:
    result = run_audit(target, AuditOptions(rules=("cpu-hardening",), all_roots=True), RULES)
    assert result.rules_run == ["cpu-hardening", "address-spaces"]
    return [f for f in result.ranges() if f.rule == "address-spaces"]


def test_an_honest_machine_has_only_its_jit_pages() -> None:
    (wx,) = all_roots(build_machine().target(KERNEL_ROOT))
    assert (wx.vaddr, wx.end, wx.pages, wx.root) == (0x80_0000, 0x80_3000, 3, f"0x{JIT:x}")
    assert wx.severity is Severity.HIGH and wx.message.startswith("pid 60 jit: 3 user pages")
    assert (wx.user, wx.writable, wx.executable) == (True, True, True)


def test_one_changed_kernel_entry_names_the_process() -> None:
    m = build_machine()
    frame = m.frame()
    write_u64(m.memory, SLEEP2 + 8 * 300, frame | PRESENT | WRITABLE | 0x60)
    # A data page: a copy of one kernel entry among zeros is no hooked table.
    m.memory.write(0x2A_0000, bytes(4096))
    m.memory.write(0x2A_0000 + 8 * 511, m.half()[-8:])
    found = all_roots(m.target(KERNEL_ROOT))
    hooks = [f for f in found if f.severity is Severity.CRITICAL]
    assert len(hooks) == 1
    (hook,) = hooks
    assert hook.root == f"0x{SLEEP2:x}" and hook.message.startswith("pid 70 sleep: ")
    assert (hook.vaddr, hook.end) == (0xFFFF_9600_0000_0000, 0xFFFF_9680_0000_0000)
    assert f"table 0x{SLEEP2:x}[300] = 0x{frame | 0x63:x}" in hook.evidence
    assert "kernel's 0x200000[300] = 0x0" in hook.evidence
    # A link outside RAM is no hook's table: not taken.
    write_u64(m.memory, SLEEP2 + 8 * 300, 0x7_0000_0000 | 0x67)
    assert not [f for f in all_roots(m.target(KERNEL_ROOT)) if f.severity is Severity.CRITICAL]


def test_without_btf_the_process_is_named_by_its_argv() -> None:
    m = build_roots_machine()
    write_u64(m.memory, m.processes[0].root + 8 * 300, m.frame() | 0x67)
    found = all_roots(m.target(KERNEL_ROOT))
    hook = next(f for f in found if f.severity is Severity.CRITICAL)
    assert hook.message.startswith("sleep 100007: ")
    assert any(f.message.startswith("./jit: 3 user pages") for f in found)


def test_not_run_unless_asked_for(tmp_path: Path) -> None:
    m = build_machine()
    result = run_audit(m.target(KERNEL_ROOT), AuditOptions(), RULES)
    assert "address-spaces" not in result.rules_run
    core = tmp_path / "hooked.elf"
    write_u64(m.memory, SLEEP2 + 8 * 300, m.frame() | 0x67)
    write_qemu_elf_core(core, m.memory, [m.cpu(KERNEL_ROOT)])
    status, text = cli_text(["audit", str(core), "--all-roots", "--json", "--rules", "wx"])
    findings = json.loads(text)["findings"]
    hooks = [f for f in findings if f["rule"] == "address-spaces" and f["severity"] == "critical"]
    assert status == 0 and len(hooks) == 1 and hooks[0]["root"] == f"0x{SLEEP2:x}"
    status, text = cli_text(["audit", "--list-rules"])
    assert status == 0 and "address-spaces" in text
