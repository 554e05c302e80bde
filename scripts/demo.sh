#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh), unpack the shipped dump of a real Debian 6.1 kernel (KASLR,
# pti=on; fixtures/kernels/) into build/, and walk its page tables with Linux's region labels.
# Extra arguments go to `gdbext walk`, e.g. `--format ptdump`, `--user-pgd`, `--filter wx`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
dump=build/demo/kaslr-pti.elf
if [ ! -f "$dump" ] || [ fixtures/kernels/kaslr-pti.elf.xz -nt "$dump" ]; then
    mkdir -p build/demo
    .venv/bin/python -c 'import sys; sys.path.insert(0, "fixtures")
from pathlib import Path; from minimize import unpack
unpack(Path(sys.argv[1]), Path(sys.argv[2]))' fixtures/kernels/kaslr-pti.elf.xz "$dump"
fi
exec .venv/bin/gdbext walk "$dump" "$@"
