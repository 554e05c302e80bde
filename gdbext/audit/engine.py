"""Running an audit: select rules, run each on one shared context, collect and sort findings.

>>> from gdbext_sim.scenario import load_scenario  # doctest: +SKIP
>>> from gdbext.audit.options import AuditOptions  # doctest: +SKIP
>>> result = run_audit(target, AuditOptions(), audit_rules(host))  # doctest: +SKIP
>>> result.summary["findings"], result.exit_status  # doctest: +SKIP
(0, 0)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gdbext.addr import hex_repr
from gdbext.audit.context import AuditContext
from gdbext.audit.grouping import group_findings
from gdbext.audit.model import Finding, RuleSkipped, Severity
from gdbext.audit.options import AuditOptions
from gdbext.audit.rule import AuditRule
from gdbext.errors import EXIT_FINDINGS, EXIT_OK, AuditRuleError, GdbextError, UsageError
from gdbext.linux.detect import detect_layout, labels_wanted
from gdbext.linux.layout import Layout
from gdbext.plugin.target import Target

__all__ = ["AuditResult", "check_finding", "run_audit", "select_rules"]


@hex_repr("root")
@dataclass
class AuditResult:
    """Findings (sorted: severity, highest first, then rule, then address; grouped by
    region, :mod:`gdbext.audit.grouping`) and the summary."""

    findings: list[Finding]
    #: Rules run, in the order run (by id).
    rules_run: list[str]
    #: Rules skipped -> the reason.
    skipped: dict[str, str]
    root: int
    levels: int
    fail_on: Severity | None = None
    #: What rules added (``"wx"``: the W+X verdict lines).
    extra: dict[str, object] = field(default_factory=dict)
    #: EFER.NXE and how it is known (:class:`~gdbext.audit.context.NxeState`, as text:
    #: ``"on: EFER 0xd01"``, ``"inferred off: no entry uses NX"``).
    nxe: str | None = None

    def ranges(self) -> list[Finding]:
        """The findings with each group replaced by the findings it groups (its ranges): the
        findings as the rules made them, in order."""
        return [r for f in self.findings for r in (f.ranges or (f,))]

    @property
    def summary(self) -> dict[str, object]:
        """Root, levels and EFER.NXE (``"nxe"``: how it is known), counts per severity (every
        severity, highest first) and per rule run, rules run and skipped with reasons, then the
        rules' own entries (``wx``)."""
        by_sev = {str(s): 0 for s in sorted(Severity, reverse=True)}
        by_rule = {rule: 0 for rule in self.rules_run}
        for f in self.findings:
            by_sev[str(f.severity)] += 1
            by_rule[f.rule] = by_rule.get(f.rule, 0) + 1
        summary: dict[str, object] = {
            "root": f"0x{self.root:x}",
            "levels": self.levels,
        }
        if self.nxe is not None:
            summary["nxe"] = self.nxe
        summary |= {
            "findings": len(self.findings),
            "severities": by_sev,
            "rules": by_rule,
            "rules_run": list(self.rules_run),
            "skipped": dict(self.skipped),
        }
        summary.update(self.extra)
        return summary

    @property
    def exit_status(self) -> int:
        """:data:`~gdbext.errors.EXIT_FINDINGS` (3) if ``fail_on`` is set and a finding is at
        least that severe, else 0."""
        if self.fail_on is not None and any(f.severity >= self.fail_on for f in self.findings):
            return EXIT_FINDINGS
        return EXIT_OK


def select_rules(
    rules: Mapping[str, AuditRule],
    only: Sequence[str] | None = None,
    skip: Sequence[str] = (),
    opt_in: bool = False,
) -> list[AuditRule]:
    """The rules to run, by id: ``only`` (every rule if ``None``) without ``skip``. A rule
    whose ``opt_in`` attribute is true (one that scans every address space) is among "every
    rule" only with ``opt_in`` (``--all-roots``); named in ``only`` it runs.

    :raises UsageError: an id that no rule has, naming the known ones; or no rule left to run
        (an audit of nothing would pass ``--fail-on`` whatever the tables hold).
    """
    known = ", ".join(sorted(rules)) or "none"
    for rule_id in (*(only or ()), *skip):
        if rule_id not in rules:
            raise UsageError(f"no audit rule {rule_id!r} (known: {known})")
    if only is None:
        wanted = [r for r in sorted(rules) if opt_in or not getattr(rules[r], "opt_in", False)]
    else:
        wanted = list(dict.fromkeys(only))
        if opt_in:
            wanted += [r for r in sorted(rules) if getattr(rules[r], "opt_in", False)]
            wanted = list(dict.fromkeys(wanted))
    selected = [rules[r] for r in wanted if r not in set(skip)]
    if not selected:
        raise UsageError(f"no audit rule selected (known: {known})")
    return selected


def check_finding(rule_id: str, found: object) -> Finding:
    """``found``, if it is a :class:`Finding` of rule ``rule_id`` that the renderers can show:
    a :class:`Severity`, addresses and page counts as ints (or ``None``), permissions as bools
    (or ``None``), a one-line message and evidence lines.

    :raises AuditRuleError: naming the rule and what is wrong.
    """

    def bad(what: str) -> AuditRuleError:
        return AuditRuleError(f"audit rule {rule_id!r} returned a finding with {what}", rule_id)

    if not isinstance(found, Finding):
        what = type(found).__name__
        raise AuditRuleError(f"audit rule {rule_id!r} returned {what}, not a Finding", rule_id)
    if found.rule != rule_id:
        raise bad(f"the rule id {found.rule!r}")
    if not isinstance(found.severity, Severity):
        raise bad(f"severity {found.severity!r}, not a Severity")
    for name in ("vaddr", "end", "paddr", "paddr_end", "pages"):
        value = getattr(found, name)
        optional = name != "pages"
        if not ((value is None and optional) or (type(value) is int and value >= 0)):
            raise bad(f"{name} {value!r}, not an address or count")
    for name in ("user", "writable", "executable"):
        value = getattr(found, name)
        if value is not None and type(value) is not bool:
            raise bad(f"{name} {value!r}, not a bool")
    if not isinstance(found.evidence, tuple | list):
        raise bad(f"evidence of type {type(found.evidence).__name__}, not a sequence of lines")
    if not isinstance(found.cause, str) or "\n" in found.cause:
        raise bad(f"cause {found.cause!r}, not one line of text")
    if found.ranges:
        raise bad("ranges (the audit groups findings itself)")
    lines = (found.message, found.root, *found.evidence)
    if not all(isinstance(line, str) and "\n" not in line for line in lines):
        raise bad("a message, root or evidence line that is not one line of text")
    return found


def _layout(target: Target, ctx: AuditContext) -> Layout | None:
    """Linux's layout, whose regions group findings; ``None`` if the target is not known to
    be Linux (as ``walk --labels auto`` decides) or its bases cannot be found."""
    if not labels_wanted("auto", target.facts):
        return None
    try:
        return detect_layout(ctx.main.pt, target.facts)
    except GdbextError:
        # Grouping is extra: absurd dump fields (a VMCOREINFO number used in arithmetic) leave
        # the findings ungrouped rather than ending the audit.
        return None


def run_audit(
    target: Target, options: AuditOptions, rules: Mapping[str, AuditRule] | Iterable[AuditRule]
) -> AuditResult:
    """Run the selected ``rules`` on ``target``.

    A rule that raises :class:`RuleSkipped` is listed as skipped with its reason. A
    :class:`~gdbext.errors.GdbextError` ends the audit (bad input: one line, exit status 2);
    any other exception from a rule becomes a :class:`~gdbext.errors.AuditRuleError` naming the
    rule. Findings of one rule, severity, root and cause in one region of a Linux target's
    layout are grouped into one (:func:`~gdbext.audit.grouping.group_findings`).
    """
    if not isinstance(rules, Mapping):
        by_id: dict[str, AuditRule] = {}
        for rule in rules:
            if rule.id in by_id:
                raise AuditRuleError(f"two audit rules have the id {rule.id!r}", rule.id)
            by_id[rule.id] = rule
        rules = by_id
    selected = select_rules(rules, options.rules, options.skip, options.all_roots)
    ctx = AuditContext(target, options)
    main = ctx.main  # opens the selected table (errors here are errors of the input)
    findings: list[Finding] = []
    run: list[str] = []
    skipped: dict[str, str] = {}
    for rule in selected:
        try:
            found = list(rule.check(ctx))
        except RuleSkipped as exc:
            skipped[rule.id] = exc.reason
            continue
        except GdbextError:
            raise
        except Exception as exc:  # a broken rule (a plugin's) names itself in one line
            detail = str(exc).splitlines()[0] if str(exc) else ""
            raise AuditRuleError(
                f"audit rule {rule.id!r} failed: {type(exc).__name__}"
                + (f": {detail}" if detail else ""),
                rule.id,
            ) from exc
        run.append(rule.id)
        findings.extend(check_finding(rule.id, f) for f in found)
    findings.sort(key=Finding.sort_key)
    findings = group_findings(findings, _layout(target, ctx))
    return AuditResult(
        findings,
        run,
        skipped,
        main.pt.root,
        main.pt.levels,
        options.fail_on,
        dict(ctx.summary_extra),
        str(ctx.nxe_state),
    )
