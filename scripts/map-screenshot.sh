#!/usr/bin/env bash
# Make the README's picture of an address space, docs/map.png: `gdbext map` of the shipped dump
# of a real Debian 6.1 kernel (KASLR, pti=on; fixtures/kernels/kaslr-pti.elf.xz, unpacked into
# build/demo/ as scripts/demo.sh does), shown by headless Chromium (Debian's chromium package).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { echo "map-screenshot.sh: needs chromium (apt-get install chromium)" >&2; exit 2; }
[ -x .venv/bin/gdbext ] || bash scripts/setup.sh
dump=build/demo/kaslr-pti.elf
if [ ! -f "$dump" ] || [ fixtures/kernels/kaslr-pti.elf.xz -nt "$dump" ]; then
    mkdir -p build/demo
    .venv/bin/python -c 'import sys; sys.path.insert(0, "fixtures")
from pathlib import Path; from minimize import unpack
unpack(Path(sys.argv[1]), Path(sys.argv[2]))' fixtures/kernels/kaslr-pti.elf.xz "$dump"
fi
.venv/bin/gdbext map "$dump" -o build/demo/map.html
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
    --user-data-dir="$profile" --no-first-run --window-size=1200,300 \
    --screenshot="$PWD/docs/map.png" "file://$PWD/build/demo/map.html" >/dev/null 2>&1
echo "docs/map.png: $(stat -c %s docs/map.png) bytes"
