"""Rule ``address-spaces`` (``audit --all-roots``): every address space, not only the selected
one.

Run only when asked for (``--all-roots``, or by name in ``--rules``): it scans RAM for every
process's top table (:func:`gdbext.frontend.roots.roots`) and reports, each with the process
named (PID and ``comm`` from the kernel's task list when its BTF is there, else the ``argv``
its stack holds):

- user pages both writable and executable, per process (a JIT's, or injected code);
- a table whose kernel half differs from the kernel's own in a few entries (the LDT's apart):
  Linux copies the kernel half into each process's table once (``pgd_alloc``) and never
  changes it afterwards, so one process's table with a kernel-half entry of its own is the
  signature of a hook or rootkit (or of a kernel table that is not a process's: EFI's
  ``efi_mm`` maps the EFI runtime region there). Candidates are those whose half differs in at
  most :data:`NEAR` entries, each differing entry a valid table link, the user half a table.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator

from gdbext.addr import AddrRange
from gdbext.audit.context import AuditContext
from gdbext.audit.model import Finding, Severity
from gdbext.frontend.commands import RootOptions
from gdbext.frontend.roots import AddressSpace, RootsOptions, roots
from gdbext.geometry import index_shift
from gdbext.linux.layout import params
from gdbext.units import format_size, plural
from gdbext.x86.records import LeafRun

#: Most kernel-half entries a hooked table may differ in (of 256: at least 250 equal).
NEAR = 6


def who(space: AddressSpace) -> str:
    """The process of ``space``: its tasks' PIDs and comms, else its argv, else its id."""
    if space.owners:
        return ", ".join(f"pid {pid} {comm}" for pid, comm in space.owners)
    ident = space.identity
    if ident is not None:
        if ident.argv:
            return " ".join(shlex.quote(a) for a in ident.argv)
        return ident.filename
    return f"address space {space.id}"


class AddressSpacesRule:
    id = "address-spaces"
    severity = Severity.HIGH
    summary = (
        "every address space (--all-roots): user W+X per process, kernel-half entries that "
        "differ from the kernel's (a hook)"
    )
    #: Not run by default: only with ``--all-roots`` or named in ``--rules``.
    opt_in = True

    def check(self, ctx: AuditContext) -> Iterator[Finding]:
        base = ctx.options.root
        found = roots(
            ctx.target,
            RootsOptions(root=RootOptions(cpu=base.cpu, levels=base.levels), near=NEAR),
        )
        kpt = ctx.main.pt.with_root(found.kernel_root)
        for space in found.spaces:
            if space.kind == "process" and space.usage.wx_bytes:
                yield from self._wx(ctx, kpt.levels, space)
        for hooked in found.hooked:
            space = hooked.space
            table = kpt.with_root(space.root)
            shift = index_shift(kpt.levels)
            for index in hooked.entries:
                theirs = table.mapper.read(space.root + 8 * index, 8)
                mine = kpt.mapper.read(kpt.root + 8 * index, 8)
                start = ((index - 512) << shift) % (1 << 64)  # sign-extended: higher half
                yield Finding(
                    self.id,
                    Severity.CRITICAL,
                    f"{who(space)}: its top table's kernel-half entry {index} differs from the "
                    "kernel's (a hook?)",
                    vaddr=start,
                    end=start + (1 << shift),
                    root=space.id,
                    evidence=(
                        f"table 0x{space.root:x}[{index}] = 0x{int.from_bytes(theirs, 'little'):x}",
                        f"kernel's 0x{kpt.root:x}[{index}] = 0x{int.from_bytes(mine, 'little'):x}",
                        f"{len(hooked.entries)} of 256 kernel-half entries differ",
                    ),
                    cause="a process's kernel-half entry differs from the kernel's",
                )

    def _wx(self, ctx: AuditContext, levels: int, space: AddressSpace) -> Iterator[Finding]:
        """The W+X user ranges of ``space`` (on the table user mode runs on)."""
        pt = ctx.main.pt.with_root(space.user_root or space.root, cache=False)
        ranges: list[list[int]] = []
        for rec in pt.iter_runs(AddrRange(0, params(levels).user_end), aliases="collapse"):
            if type(rec) is LeafRun and rec.user and rec.writable and rec.executable:
                end = rec.vaddr + rec.count * rec.page_size
                if ranges and ranges[-1][1] == rec.vaddr:
                    ranges[-1][1] = end
                else:
                    ranges.append([rec.vaddr, end])
        for start, end in ranges:
            pages = (end - start) // 4096
            yield Finding(
                self.id,
                self.severity,
                f"{who(space)}: {pages} user page{plural(pages)} writable and executable "
                f"({format_size(end - start)})",
                vaddr=start,
                end=end,
                user=True,
                writable=True,
                executable=True,
                root=space.id,
                pages=pages,
                cause="a process's user pages writable and executable",
            )


RULES = (AddressSpacesRule(),)
