"""Load gdbext into GDB: ``source /path/to/gdbext/gdbinit.py`` (in ``~/.gdbinit`` say).

GDB runs this in its embedded Python (the system's Python 3.11, not the ``python3`` on PATH). It
finds the project's virtual environment, ``.venv`` beside the checkout or the one named by
``GDBEXT_VENV``, puts its site-packages (and the checkout, whose code it runs) in front of
``sys.path`` without installing anything into the system Python, and registers the commands
``pt-walk``, ``pt-translate``, ``pt-info``, ``pt-heap``, ``pt-backend`` and the functions
``$pt_phys``, ``$pt_virt`` (``gdbext_gdb.gdb_commands``). Sourcing it again changes nothing. A
missing environment or dependency is one line on GDB's stderr naming the command that fixes it.

This is GDB's entry script, not part of the core: it may import ``gdb``.
"""

from __future__ import annotations


def _gdbext_load() -> None:
    import os
    import sys

    # pwntools, once anything imports it inside GDB, takes the terminal over (or fails on GDB's
    # stdout) unless this is set first.
    os.environ.setdefault("PWNLIB_NOTERM", "1")

    import gdb

    def fail(message: str) -> None:
        gdb.write(f"gdbext: {message}\n", gdb.STDERR)

    # This file's path: GDB leaves __file__ alone when a script is sourced from another one.
    package = os.path.dirname(os.path.realpath(sys._getframe().f_code.co_filename))
    checkout = os.path.dirname(package)
    installed = os.path.basename(checkout) == "site-packages"  # a non-editable install
    setup = os.path.join(checkout, "scripts", "setup.sh")
    fix = f"run: bash {setup}" if os.path.isfile(setup) else "reinstall gdbext into it"
    named = os.environ.get("GDBEXT_VENV")
    if named:
        venv = os.path.abspath(os.path.expanduser(named))
    elif installed:
        venv = os.path.dirname(os.path.dirname(os.path.dirname(checkout)))
    else:
        venv = os.path.join(checkout, ".venv")
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    site_dir = os.path.join(venv, "lib", f"python{version}", "site-packages")
    if not os.path.isdir(site_dir):
        if named and not os.path.isdir(venv):
            fail(
                f"GDBEXT_VENV={named} is not a directory; unset it to use {checkout}/.venv ({fix})"
            )
        elif not os.path.isdir(venv):
            fail(f"no virtual environment at {venv}; {fix}")
        else:
            fail(
                f"{venv} is not a Python {version} environment (GDB embeds Python {version}); "
                f"{'rm -rf ' + venv + ' and ' if not named else ''}{fix}"
            )
        return

    if site_dir not in sys.path:
        import site

        before = set(sys.path)
        site.addsitedir(site_dir)  # its .pth files too (an editable install's finder)
        added = [p for p in sys.path if p not in before]
        # In front of the system's dist-packages, whose older copies must not win; behind
        # GDB's own Python directory (the gdb package).
        rest = [p for p in sys.path if p not in added]
        ours = [p for p in rest if p == gdb.PYTHONDIR]
        sys.path[:] = ours + added + [p for p in rest if p not in ours]
    if not installed:
        for path in (os.path.join(checkout, "backends"), checkout):
            if os.path.isdir(path) and path not in sys.path:
                sys.path.insert(0, path)

    try:
        from gdbext_gdb import gdb_commands

        gdb_commands.install()
    except ImportError as exc:
        fail(f"cannot import {exc.name or exc} from {venv}; {fix}")
    except Exception as exc:  # a broken plugin or dependency: one line, not a traceback
        fail(f"not loaded: {' '.join(str(exc).split())}; {fix}")


_gdbext_load()
del _gdbext_load
