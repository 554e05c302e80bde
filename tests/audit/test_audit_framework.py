"""The audit framework: engine, rule selection, skipped rules, ``--fail-on``, the JSON and text
outputs, third-party rules (a plugin object, and an entry point of an installed distribution),
duplicate ids, one-line errors, and ``pt-audit`` in the real GDB.

Expected values come from the scenarios' own numbers, from :meth:`X86PageTable.translate` /
:meth:`X86PageTable.iter_mappings` (the engine's reference walks), or from the command line.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from support.audit import demo, rule, wx_machine
from support.cli import cli_text
from support.paths import DEMO, ROOT

from gdbext import cli
from gdbext.audit.context import AuditContext
from gdbext.audit.engine import run_audit, select_rules
from gdbext.audit.model import Finding, RuleSkipped, Severity
from gdbext.audit.options import AuditOptions
from gdbext.audit.registry import audit_rules
from gdbext.audit.rule import AuditRule
from gdbext.errors import EXIT_FINDINGS, AuditRuleError, PluginError, UsageError
from gdbext.plugin.hookspecs import hookimpl
from gdbext.plugin.host import Host
from gdbext.render.audit import finding_line
from gdbext.x86.paging import X86PageTable

GDBINIT = ROOT / "gdbext" / "gdbinit.py"
BUILTIN = ("cpu-hardening", "global-user", "wx")


def cli_run(*argv: str, host: Host | None = None) -> tuple[int, str]:
    return cli_text(argv, host)


class Plugin:
    """A plugin object providing some rules."""

    def __init__(self, *rules: AuditRule) -> None:
        self.rules = list(rules)

    @hookimpl
    def gdbext_audit_rules(self) -> list[AuditRule]:
        return self.rules


# --- model -----------------------------------------------------------------------------------


def test_severity_parses_case_insensitively_and_prints_lowercase() -> None:
    assert Severity.parse("High") is Severity.HIGH
    assert [str(s) for s in Severity] == ["info", "low", "medium", "high", "critical"]
    with pytest.raises(UsageError, match="choose from info, low, medium, high, critical"):
        Severity.parse("severe")


# --- engine and selection --------------------------------------------------------------------


def test_the_builtin_rules_come_through_the_entry_point() -> None:
    rules = audit_rules(Host.create())
    assert set(BUILTIN) <= set(rules)
    assert list(rules) == sorted(rules)
    # Blocking the entry point 'audit' removes them: they are a plugin like any other.
    blocked = audit_rules(Host.create(block=["audit"]))
    assert not set(BUILTIN) & set(blocked)


def test_selection_rules_and_skip() -> None:
    rules = audit_rules(Host.create())
    # Every rule, but those that scan every address space (opt-in: --all-roots).
    assert [r.id for r in select_rules(rules)] == sorted(set(rules) - {"address-spaces"})
    assert [r.id for r in select_rules(rules, opt_in=True)] == sorted(rules)
    assert [r.id for r in select_rules(rules, ["wx", "cpu-hardening", "wx"])] == [
        "wx",
        "cpu-hardening",
    ]
    assert [r.id for r in select_rules(rules, None, ["wx"])] == sorted(
        set(rules) - {"wx", "address-spaces"}
    )
    with pytest.raises(UsageError, match=r"no audit rule 'nope' \(known: .*cpu-hardening"):
        select_rules(rules, ["nope"])
    with pytest.raises(UsageError, match="no audit rule 'nope'"):
        select_rules(rules, None, ["nope"])


def test_findings_sorted_and_summary_counted() -> None:
    def many(ctx: AuditContext) -> Iterable[Finding]:
        yield Finding("b-rule", Severity.LOW, "low at 0x2000", vaddr=0x2000)
        yield Finding("b-rule", Severity.HIGH, "high at 0x3000", vaddr=0x3000)
        yield Finding("b-rule", Severity.LOW, "low, no address")
        yield Finding("b-rule", Severity.LOW, "low at 0x1000", vaddr=0x1000)

    def other(ctx: AuditContext) -> Iterable[Finding]:
        yield Finding("a-rule", Severity.LOW, "a low", vaddr=0x9000)

    def skip(ctx: AuditContext) -> Iterable[Finding]:
        raise RuleSkipped("not here")

    rules = [rule("b-rule", many), rule("a-rule", other), rule("c-rule", skip)]
    result = run_audit(demo(), AuditOptions(), rules)
    assert [f.message for f in result.findings] == [
        "high at 0x3000",
        "a low",
        "low, no address",
        "low at 0x1000",
        "low at 0x2000",
    ]
    summary = result.summary
    assert summary["findings"] == 5
    assert summary["severities"] == {"critical": 0, "high": 1, "medium": 0, "low": 4, "info": 0}
    assert summary["rules"] == {"a-rule": 1, "b-rule": 4}
    assert summary["rules_run"] == ["a-rule", "b-rule"]
    assert summary["skipped"] == {"c-rule": "not here"}
    assert summary["root"] == f"0x{demo().cpus[0].root:x}" and summary["levels"] == 4


def test_fail_on_gives_exit_status_3() -> None:
    def one(ctx: AuditContext) -> Iterable[Finding]:
        yield Finding("one", Severity.MEDIUM, "medium")

    rules = [rule("one", one)]
    for fail_on, status in [
        (None, 0),
        (Severity.INFO, EXIT_FINDINGS),
        (Severity.MEDIUM, EXIT_FINDINGS),
        (Severity.HIGH, 0),
    ]:
        result = run_audit(demo(), AuditOptions(fail_on=fail_on), rules)
        assert result.exit_status == status, fail_on
    assert EXIT_FINDINGS == 3


def test_duplicate_rule_ids_are_a_plugin_error() -> None:
    twin = rule("wx", lambda ctx: ())
    with pytest.raises(PluginError, match="two plugins provide an audit rule with the id wx"):
        audit_rules(Host.create(extra_plugins=[Plugin(twin)]))
    with pytest.raises(PluginError, match="two audit rules have the id 'x'"):
        run_audit(demo(), AuditOptions(), [rule("x", lambda c: ()), rule("x", lambda c: ())])


def test_a_broken_rule_is_one_line_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    def boom(ctx: AuditContext) -> Iterable[Finding]:
        raise RuntimeError("boom\nand a second line")

    def not_a_finding(ctx: AuditContext) -> Iterable[Finding]:
        return ["text"]  # type: ignore[list-item]

    host = Host.create(extra_plugins=[Plugin(rule("boom", boom), rule("text", not_a_finding))])
    argv = ["audit", "--backend", "sim", "--scenario", str(DEMO)]
    assert cli.main([*argv, "--rules", "boom"], host=host) == 2
    err = capsys.readouterr().err
    assert err == "gdbext: audit rule 'boom' failed: RuntimeError: boom\n"
    assert cli.main([*argv, "--rules", "text"], host=host) == 2
    assert capsys.readouterr().err == "gdbext: audit rule 'text' returned str, not a Finding\n"


@pytest.mark.parametrize(
    ("finding", "what"),
    [
        (Finding("x", 3, "m"), "severity 3, not a Severity"),  # type: ignore[arg-type]
        (Finding("x", "high", "m"), "severity 'high', not a Severity"),  # type: ignore[arg-type]
        (Finding("other", Severity.LOW, "m"), "the rule id 'other'"),
        (Finding("x", Severity.LOW, "m", vaddr="0x10"), "vaddr '0x10', not an address"),  # type: ignore[arg-type]
        (Finding("x", Severity.LOW, "m", end=-1), "end -1, not an address"),
        (Finding("x", Severity.LOW, "m", pages=None), "pages None, not an address"),  # type: ignore[arg-type]
        (Finding("x", Severity.LOW, "m", user=1), "user 1, not a bool"),  # type: ignore[arg-type]
        (Finding("x", Severity.LOW, "two\nlines"), "not one line of text"),
        (Finding("x", Severity.LOW, "m", evidence=("a\nb",)), "not one line of text"),
        (Finding("x", Severity.LOW, "m", evidence="text"), "evidence of type str"),  # type: ignore[arg-type]
    ],
)
def test_a_finding_the_renderers_cannot_show_is_one_line_naming_the_rule(
    capsys: pytest.CaptureFixture[str], finding: Finding, what: str
) -> None:
    """Each of these once gave a traceback (a KeyError in the summary, a format error in the
    text) or broken one-line output (a message with a newline)."""
    host = Host.create(extra_plugins=[Plugin(rule("x", lambda ctx: [finding]))])
    for fmt in ([], ["--json"]):
        argv = ["audit", "--backend", "sim", "--scenario", str(DEMO), "--rules", "x", *fmt]
        assert cli.main(argv, host=host) == 2
        err = capsys.readouterr().err
        assert err.startswith("gdbext: audit rule 'x' returned a finding with "), err
        assert what in err and err.count("\n") == 1
    with pytest.raises(AuditRuleError) as info:
        run_audit(demo(), AuditOptions(rules=("x",)), audit_rules(host))
    assert info.value.rule == "x" and info.value.exit_status == 2


@pytest.mark.parametrize(
    "argv", [["--rules", ""], ["--rules", ","], ["--rules", "wx", "--skip", "wx"]]
)
def test_an_audit_of_no_rule_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """An empty selection once audited nothing and passed any --fail-on (exit 0)."""
    status = cli.main(
        ["audit", "--backend", "sim", "--scenario", str(DEMO), "--fail-on", "info", *argv]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("gdbext: no audit rule selected (known: address-spaces, alias-wx, "), err
    with pytest.raises(UsageError, match="no audit rule selected"):
        select_rules({}, None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rules", "nope"], r"^gdbext: no audit rule 'nope' \(known: .*cpu-hardening, "),
        (["--skip", "wx,nope"], r"^gdbext: no audit rule 'nope'"),
        (["--fail-on", "severe"], r"^gdbext: audit: argument --fail-on: unknown severity"),
        (["--kernel"], r"^gdbext: --kernel needs the dump's VMCOREINFO"),
        (["--memmap", "json"], r"^gdbext: --memmap json takes exactly one FILE"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status = cli.main(["audit", "--backend", "sim", "--scenario", str(DEMO), *argv])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert __import__("re").match(message, err), err


# --- command line: text, JSON, --list-rules, --fail-on ---------------------------------------


def test_text_output_line_by_line() -> None:
    target = wx_machine()
    pt = X86PageTable.from_cpu(target.mapper, target.cpus[0])
    steps = pt.translate(0xFFFF_FFFF_8100_0000).steps
    names = ("PML4", "PDPT", "PD", "PT")
    out = io.StringIO()
    status = cli.run(["audit", "--rules", "wx"], Host.create(), out, target=target)
    text = out.getvalue()
    assert status == 0
    assert text.splitlines() == [
        "high      wx  0xffffffff81000000-0xffffffff81002000 -> 0x1000000-0x1002000  rwx kern  "
        "cr3  2 kernel pages writable and executable",
        *(
            f"    {n}[{s.index}] @0x{s.table:x} = 0x{s.entry:x}"
            for n, s in zip(names, steps, strict=True)
        ),
        "x86/mm: Checked W+X mappings: FAILED, 2 W+X pages found.",
        "audit: 1 finding (high 1) from 1 rule",
    ]


def test_text_line_of_a_finding_with_frames_only() -> None:
    """A finding about frames with no virtual address (a table outside RAM) shows its
    physical range and table; it once showed neither."""
    found = Finding("x", Severity.HIGH, "a table outside RAM", paddr=0x5000, paddr_end=0x6000,
                    root="user")  # fmt: skip
    assert finding_line(found, 1) == "high      x  -> 0x5000-0x6000  user  a table outside RAM"
    scattered = dataclasses.replace(found, paddr_end=None, writable=True, user=False)
    assert (
        finding_line(scattered, 1)
        == "high      x  -> 0x5000...  rw- kern  user  a table outside RAM"
    )
    cpu = Finding("x", Severity.MEDIUM, "CR0.WP is off")
    assert finding_line(cpu, 3) == "medium    x    CR0.WP is off"


def test_text_summary_line_names_skipped_rules() -> None:
    def skip(ctx: AuditContext) -> Iterable[Finding]:
        raise RuleSkipped("no heap options")

    host = Host.create(extra_plugins=[Plugin(rule("needs-heap", skip))])
    status, text = cli_run(
        "audit", "--backend", "sim", "--scenario", str(DEMO), "--rules", "needs-heap,global-user",
        host=host,
    )  # fmt: skip
    assert status == 0
    assert text == "audit: no findings from 1 rule; 1 skipped: needs-heap (no heap options)\n"
    status, text = cli_run(
        "audit", "--backend", "sim", "--scenario", str(DEMO), "--rules", ",".join(BUILTIN)
    )
    # demo.json: CR4 has neither SMEP nor SMAP (the simulator's default CR4).
    assert text.splitlines()[-1] == "audit: 2 findings (medium 2) from 3 rules"


def test_json_output_schema() -> None:
    target = wx_machine()
    out = io.StringIO()
    cli.run(["audit", "--json"], Host.create(), out, target=target)
    doc = json.loads(out.getvalue())
    assert list(doc) == ["findings", "summary"]
    wx = [f for f in doc["findings"] if f["rule"] == "wx"]
    assert wx == [
        {
            "rule": "wx",
            "severity": "high",
            "vaddr": "0xffffffff81000000",
            "end": "0xffffffff81002000",
            "paddr": "0x1000000",
            "user": False,
            "writable": True,
            "executable": True,
            "message": "2 kernel pages writable and executable",
            "paddr_end": "0x1002000",
            "root": "cr3",
            "pages": 2,
            "evidence": wx[0]["evidence"],
            "ranges": [],
        }
    ]
    assert len(wx[0]["evidence"]) == 4 and wx[0]["evidence"][0].startswith("PML4[511] @0x")
    cpu = [f for f in doc["findings"] if f["rule"] == "cpu-hardening"]
    assert cpu and all(f["vaddr"] is None and f["user"] is None for f in cpu)
    summary = doc["summary"]
    assert list(summary)[:8] == [
        "root",
        "levels",
        "nxe",
        "findings",
        "severities",
        "rules",
        "rules_run",
        "skipped",
    ]
    assert summary["wx"] == ["x86/mm: Checked W+X mappings: FAILED, 2 W+X pages found."]
    assert summary["nxe"] == f"on: EFER 0x{target.cpus[0].efer:x}"
    assert summary["findings"] == len(doc["findings"])
    # Deterministic: the same bytes again.
    again = io.StringIO()
    cli.run(["audit", "--format", "json"], Host.create(), again, target=wx_machine())
    assert again.getvalue() == out.getvalue()


def test_list_rules_needs_no_target() -> None:
    status, text = cli_run("audit", "--list-rules")
    assert status == 0
    lines = {line.split()[0]: line.split()[1] for line in text.splitlines()}
    assert {k: lines[k] for k in BUILTIN} == {
        "cpu-hardening": "medium",
        "global-user": "medium",
        "wx": "high",
    }
    status, text = cli_run("audit", "--list-rules", "--json")
    doc = json.loads(text)
    assert {
        "id": "wx",
        "severity": "high",
        "summary": audit_rules(Host.create())["wx"].summary,
    } in doc


def test_fail_on_exit_status_of_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    # Two medium findings from these rules.
    argv = ["audit", "--backend", "sim", "--scenario", str(DEMO), "--rules", ",".join(BUILTIN)]
    assert cli.main([*argv, "--fail-on", "medium"]) == 3
    assert capsys.readouterr().out.endswith("audit: 2 findings (medium 2) from 3 rules\n")
    assert cli.main([*argv, "--fail-on", "HIGH"]) == 0
    assert cli.main([*argv, "--fail-on", "low", "--skip", "cpu-hardening"]) == 0
    gdbext = ROOT / ".venv" / "bin" / "gdbext"
    proc = subprocess.run([str(gdbext), *argv, "--fail-on", "info"], capture_output=True)
    assert proc.returncode == 3 and proc.stderr == b""


# --- third-party rules -----------------------------------------------------------------------

THIRD_PARTY = """
from gdbext.audit.rule import FunctionRule
from gdbext.audit.model import Severity
from gdbext.plugin.hookspecs import hookimpl


def check(ctx):
    for span in ctx.main.spans:
        run = span.run
        if run.user and run.writable and not run.executable:
            yield ctx.finding(RULE, ctx.main, "user data", span=span)


RULE = FunctionRule("acme-user-data", Severity.LOW, "user data pages", check)


@hookimpl
def gdbext_audit_rules():
    return [RULE]
"""


def test_a_third_party_rule_registered_as_a_plugin_object() -> None:
    namespace: dict[str, object] = {}
    exec(THIRD_PARTY, namespace)
    host = Host.create(extra_plugins=[Plugin(namespace["RULE"])])  # type: ignore[arg-type]
    _, text = cli_run(
        "audit", "--backend", "sim", "--scenario", str(DEMO), "--rules", "acme-user-data",
        host=host,
    )  # fmt: skip
    # demo.json's user data: 8 pages at 0x600000, 33 at 0x7ffffffde000.
    lines = [line for line in text.splitlines() if line.startswith("low ")]
    assert [line.split()[2] for line in lines] == [
        "0x0000000000600000-0x0000000000608000",
        "0x00007ffffffde000-0x00007ffffffff000",
    ]


def test_a_third_party_rule_registered_through_an_entry_point(tmp_path: Path) -> None:
    (tmp_path / "acme_rule.py").write_text(THIRD_PARTY)
    info = tmp_path / "acme_rule-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-rule\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[gdbext.plugins]\nacme = acme_rule\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    argv = [sys.executable, "-m", "gdbext.cli", "audit"]
    listed = subprocess.run([*argv, "--list-rules"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0, listed.stderr
    assert ["acme-user-data", "low", "user", "data", "pages"] in [
        line.split() for line in listed.stdout.splitlines()
    ]
    run = subprocess.run(
        [*argv, "--backend", "sim", "--scenario", str(DEMO), "--json", "--fail-on", "low"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 3, run.stderr
    doc = json.loads(run.stdout)
    acme = [(f["vaddr"], f["pages"]) for f in doc["findings"] if f["rule"] == "acme-user-data"]
    assert acme == [("0x600000", 8), ("0x7ffffffde000", 33)]
    assert "acme-user-data" in doc["summary"]["rules_run"]
    # Blocked by name, it is gone.
    blocked = subprocess.run(
        [*argv, "--list-rules"], capture_output=True, text=True,
        env={**env, "GDBEXT_BLOCK_PLUGINS": "acme"},
    )  # fmt: skip
    assert "acme-user-data" not in blocked.stdout


# --- pt-audit in GDB -------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("gdb") is None, reason="no gdb")
def test_pt_audit_in_gdb_equals_the_command_line(kernel_dump: Callable[[str], Path]) -> None:
    dump = str(kernel_dump("kaslr-pti"))
    mark = "@@audit@@"
    commands = [
        "pt-audit",
        "pt-audit --json",
        "pt-audit --rules wx --user-pgd",
        "pt-audit --fail-on medium",
    ]
    argv = ["gdb", "-nx", "-batch", "-ex", f"source {GDBINIT}", "-ex", f"pt-backend core {dump}"]
    for command in commands:
        argv += ["-ex", f"echo {mark}\\n", "-ex", command]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300)
    got = proc.stdout.split(mark + "\n")[1:]
    gdbext = ROOT / ".venv" / "bin" / "gdbext"
    for command, text in zip(commands, got, strict=True):
        words = command.split()[1:]
        expected = subprocess.run(
            [str(gdbext), "audit", dump, *words], capture_output=True, check=False
        )
        assert text.encode() == expected.stdout, command
    # --fail-on: the findings, then one error line (GDB stops the script there).
    assert proc.stderr == "pt-audit: 2 findings at or above --fail-on medium\n"
    assert "x86/mm: Checking user space page tables" in got[0]
