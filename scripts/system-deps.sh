#!/usr/bin/env bash
# Install the system packages the real-kernel tests need: QEMU, Debian's kernel, busybox, GDB, LLDB
# (lldb and its Python module, python3-lldb), liblzo2-dev, gcc and python3-dev (so that
# python-lzo can be built for kdump-lzo pages), and Chromium (the map page's tests drive it
# headless). Then say which kernel build those tests boot.
#
# Runs apt-get only as root on a Debian-like machine, and only for what is missing; it always
# runs `apt-get update` first, so that a stale package list cannot install an old kernel build.
# Elsewhere it prints the command to run and returns 0: the tests that need QEMU then skip,
# unless GDBEXT_REQUIRE_QEMU=1 (CI sets it), which makes them fail instead.
#
# The kernel line comes from fixtures/qemu_guest.py (the tests' own choice): $GDBEXT_TEST_KERNEL,
# else the newest /boot/vmlinuz-* with its modules.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(qemu-system-x86 linux-image-amd64 busybox-static gdb lldb python3-lldb liblzo2-dev gcc
    python3-dev chromium)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        echo "== apt-get update"
        apt-get update -qq
        echo "== apt-get install ${missing[*]}"
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "gdbext: real-kernel tests need: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    fi
fi
# Debian's python3-lldb installs LLDB's Python package (a 600 KB SWIG module) without bytecode,
# so LLDB's embedded Python compiles it again at every start (about 0.15 s) when it may not write
# the cache (a user other than root, or PYTHONDONTWRITEBYTECODE). Compile it as root (compileall
# only recompiles what changed: an upgraded package, 0.2 s otherwise).
if [ "$(id -u)" = 0 ]; then
    for dir in /usr/lib/llvm-*/lib/python3*/dist-packages/lldb; do
        [ -f "$dir/__init__.py" ] || continue
        py="$(basename "$(dirname "$(dirname "$dir")")")"  # python3.X: the Python LLDB embeds
        if command -v "$py" >/dev/null; then
            "$py" -m compileall -q "$dir" >/dev/null || true
        fi
    done
fi
if command -v python3 >/dev/null; then
    echo "== $(python3 fixtures/qemu_guest.py kernel || true)"
fi
