#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install gdbext into it.
#
# The environment is made from the system Python 3 (/usr/bin/python3) when it is 3.11 or newer:
# that is the interpreter GDB embeds, so GDB can later use the same environment.
# Idempotent: re-running only reinstalls when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
    for py in /usr/bin/python3 python3; do
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$py"
            return
        fi
    done
    echo "gdbext: no Python >= 3.11 found" >&2
    exit 2
}

if [ ! -x .venv/bin/python ]; then
    py="$(pick_python)"
    if ! "$py" -m venv .venv 2>/dev/null; then
        # Debian ships venv separately.
        rm -rf .venv
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        fi
        "$py" -m venv .venv
    fi
fi

# kdump-lzo pages need python-lzo, which builds only where liblzo2's headers are installed
# (Debian: liblzo2-dev, which scripts/system-deps.sh installs).
extras=dev
if [ -f /usr/include/lzo/lzo1x.h ]; then
    extras=dev,lzo
fi

stamp=.venv/.gdbext-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || ! grep -qx "$extras" "$stamp"; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]" 2>&1 |
        grep -v "is ignored: it is neither a file nor a directory" || true
    .venv/bin/python -c 'import gdbext, gdbext_sim, pluggy, elftools' # fail loudly if broken
    echo "$extras" >"$stamp"
fi

# Byte-compile the checkout (pip compiles dependencies, not an editable project): GDB loads
# gdbext/gdbinit.py in well under 0.3 s only from bytecode, and some environments set
# PYTHONDONTWRITEBYTECODE, so that imports never write it themselves. Cheap when up to date.
.venv/bin/python -m compileall -q -j 0 gdbext backends >/dev/null
