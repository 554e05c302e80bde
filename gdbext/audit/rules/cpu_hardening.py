"""Rule ``cpu-hardening``: the CPU features that make page-table permissions bite, when off.

One finding per feature that is off, listing the CPUs where it is off: EFER.NXE (without it
nothing is no-execute), CR0.WP (without it the kernel writes through read-only pages),
CR4.SMEP (the kernel may execute user pages) and CR4.SMAP (the kernel may read and write
user pages). A register the target does not know (QEMU's ELF dumps carry no EFER) is not
reported as off; the summary's ``"cpu-hardening"`` names what was unknown. EFER.NXE is the
exception: unknown, it is inferred from the tables (:class:`~gdbext.audit.context.NxeState`),
and when no entry uses NX it is reported as ``off (inferred)`` with that evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from gdbext.audit.context import AuditContext, NxeState
from gdbext.audit.model import Finding, RuleSkipped, Severity
from gdbext.cpu import CpuState

#: (feature, register the bit lives in, is it on, what its absence allows).
FEATURES: tuple[tuple[str, str, Callable[[CpuState], bool], str], ...] = (
    ("EFER.NXE", "efer", lambda c: c.nxe, "no page is no-execute: every writable page is W+X"),
    ("CR0.WP", "cr0", lambda c: c.wp, "the kernel writes through read-only pages"),
    ("CR4.SMEP", "cr4", lambda c: c.smep, "the kernel may execute user pages"),
    ("CR4.SMAP", "cr4", lambda c: c.smap, "the kernel may read and write user pages"),
)


def cpu_list(cpus: Sequence[int]) -> str:
    """``"CPU 0"``, ``"CPUs 0-3, 5"``.

    >>> cpu_list([0]), cpu_list([0, 1, 2, 3, 5])
    ('CPU 0', 'CPUs 0-3, 5')
    """
    parts: list[str] = []
    i = 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        parts.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ("CPU " if len(cpus) == 1 else "CPUs ") + ", ".join(parts)


class CpuHardeningRule:
    id = "cpu-hardening"
    severity = Severity.MEDIUM
    summary = "EFER.NXE, CR0.WP, CR4.SMEP or CR4.SMAP off"

    def check(self, ctx: AuditContext) -> Iterator[Finding]:
        cpus = ctx.cpus
        if not cpus:
            raise RuleSkipped("the target has no CPU state")
        unknown: dict[str, list[int]] = {}
        found: list[Finding] = []
        for feature, register, is_on, why in FEATURES:
            off: list[int] = []
            guessed: list[int] = []
            for n, cpu in enumerate(cpus):
                if getattr(cpu, register) is None:
                    unknown.setdefault(register.upper(), []).append(n)
                    if register == "efer":
                        guessed.append(n)
                elif not is_on(cpu):
                    off.append(n)
            if off:
                found.append(
                    ctx.finding(
                        self,
                        None,
                        f"{feature} is off on {cpu_list(off)}: {why}",
                        evidence=tuple(
                            f"CPU {n}: {register.upper()} = 0x{getattr(cpus[n], register):x}"
                            for n in off
                        ),
                    )
                )
            if guessed:
                state = _inferred(ctx)
                if state is not None and not state.on:
                    found.append(
                        ctx.finding(
                            self,
                            None,
                            f"{feature} is off (inferred) on {cpu_list(guessed)}: {why}",
                            evidence=(f"EFER.NXE {state}", *state.evidence),
                        )
                    )
        if unknown:
            ctx.summary_extra["cpu-hardening"] = {
                "unknown": {reg: cpu_list(sorted(set(ns))) for reg, ns in sorted(unknown.items())}
            }
            none_known = len(unknown) == 3 and all(
                len(set(ns)) == len(cpus) for ns in unknown.values()
            )
            if none_known and not found:
                raise RuleSkipped("the target knows none of CR0, CR4 and EFER")
        yield from found


def _inferred(ctx: AuditContext) -> NxeState | None:
    """EFER.NXE as inferred from the tables of the audited CPU, when its EFER is unknown too
    (the inference reads that CPU's tables: other CPUs share the kernel's NX use)."""
    state = ctx.nxe_state
    return state if state.inferred else None


RULES = (CpuHardeningRule(),)
