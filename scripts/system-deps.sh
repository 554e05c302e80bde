#!/usr/bin/env bash
# Install the system packages the real-kernel tests need: QEMU, Debian's kernel, busybox, GDB, LLDB
# (lldb and its Python module, python3-lldb), and liblzo2-dev, gcc and python3-dev (so that
# python-lzo can be built for kdump-lzo pages).
#
# Runs apt-get only as root on a Debian-like machine, and only for what is missing. Elsewhere it
# prints the command to run and returns 0: the tests that need QEMU then skip, unless
# GDBEXT_REQUIRE_QEMU=1 (CI sets it), which makes them fail instead.
set -euo pipefail

packages=(qemu-system-x86 linux-image-amd64 busybox-static gdb lldb python3-lldb liblzo2-dev gcc
    python3-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "gdbext: real-kernel tests need: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
fi
