"""Find the project's virtual environment for a debugger's embedded Python, and put it on the path.

The debuggers' entry scripts (``gdbext/gdbinit.py`` for GDB, ``gdbext/lldbinit.py`` for LLDB)
run in the debugger's embedded Python, the system's Python 3.11, before anything of gdbext is
importable. Both load this module by its path (it imports nothing of gdbext nor of a debugger)
and call :func:`load`, which calls :func:`locate`, :func:`activate`, then the ``install`` of the
debugger's front end (``gdbext_gdb.gdb_commands``, ``gdbext_lldb.lldb_commands``):

- the environment is ``.venv`` beside the checkout, or the one ``GDBEXT_VENV`` names; for a
  non-editable install (gdbext inside some ``site-packages``) it is the environment holding it;
- its ``site-packages`` (with its ``.pth`` files, an editable install's finder among them) go in
  front of ``sys.path``, behind the debugger's own Python directory, and the checkout's code too;
  nothing is installed into the system Python;
- what goes wrong is one line (:class:`VenvError`, :func:`import_failure`) naming the command
  that fixes it (``bash .../scripts/setup.sh``).

>>> found = Located("/src/gdbext", "/src/gdbext/.venv", "/v/site-packages", False, "run: x")
>>> import_failure(found, ModuleNotFoundError("No module named 'pluggy'", name="pluggy"))
'cannot import pluggy from /src/gdbext/.venv; run: x'
"""

from __future__ import annotations

import importlib
import os
import site
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import NamedTuple

#: The environment variable that names the environment instead of ``.venv``.
VENV_ENV = "GDBEXT_VENV"


class VenvError(Exception):
    """No usable environment: the message is one line naming the fix."""


class Located(NamedTuple):
    """Where gdbext and its environment are."""

    #: The directory holding the ``gdbext`` package (a checkout, or ``site-packages``).
    checkout: str
    #: The virtual environment.
    venv: str
    #: Its ``site-packages`` for the running Python's version.
    site_dir: str
    #: gdbext is installed into a ``site-packages`` (not run from a checkout).
    installed: bool
    #: What fixes a broken environment (``run: bash .../scripts/setup.sh``).
    fix: str


def locate(
    package_dir: str,
    debugger: str,
    environ: Mapping[str, str] = os.environ,
    version: tuple[int, int] | None = None,
) -> Located:
    """The environment for the ``gdbext`` package at ``package_dir``.

    :param debugger: the debugger whose Python runs this (``GDB``, ``LLDB``), for messages.
    :param version: the running Python's ``(major, minor)`` (default: ``sys.version_info``).
    :raises VenvError: no environment, or one made from another Python version.
    """
    checkout = os.path.dirname(os.path.realpath(package_dir))
    installed = os.path.basename(checkout) == "site-packages"
    setup = os.path.join(checkout, "scripts", "setup.sh")
    fix = f"run: bash {setup}" if os.path.isfile(setup) else "reinstall gdbext into it"
    named = environ.get(VENV_ENV)
    if named:
        venv = os.path.abspath(os.path.expanduser(named))
    elif installed:
        venv = os.path.dirname(os.path.dirname(os.path.dirname(checkout)))
    else:
        venv = os.path.join(checkout, ".venv")
    major, minor = version or sys.version_info[:2]
    python = f"{major}.{minor}"
    site_dir = os.path.join(venv, "lib", f"python{python}", "site-packages")
    if not os.path.isdir(site_dir):
        if named and not os.path.isdir(venv):
            raise VenvError(
                f"{VENV_ENV}={named} is not a directory; unset it to use {checkout}/.venv ({fix})"
            )
        if not os.path.isdir(venv):
            raise VenvError(f"no virtual environment at {venv}; {fix}")
        remove = "" if named else f"rm -rf {venv} and "
        raise VenvError(
            f"{venv} is not a Python {python} environment ({debugger} embeds Python {python}); "
            f"{remove}{fix}"
        )
    return Located(checkout, venv, site_dir, installed, fix)


def activate(found: Located, keep_first: Collection[str] = ()) -> None:
    """Put the environment's ``site-packages`` (and its ``.pth`` entries) in front of
    ``sys.path``, behind the entries in ``keep_first`` (the debugger's own Python directory),
    and, for a checkout, the checkout and its ``backends/`` in front of everything. Calling it
    again changes nothing."""
    if found.site_dir not in sys.path:
        before = set(sys.path)
        site.addsitedir(found.site_dir)  # its .pth files too (an editable install's finder)
        added = [p for p in sys.path if p not in before]
        # In front of the system's dist-packages, whose older copies must not win; behind the
        # debugger's own Python directory.
        rest = [p for p in sys.path if p not in added]
        ours = [p for p in rest if p in keep_first]
        sys.path[:] = ours + added + [p for p in rest if p not in ours]
    if not found.installed:
        # In front even when already on the path (PYTHONPATH): an environment whose editable
        # install names another checkout must not run that checkout's code.
        for path in (os.path.join(found.checkout, "backends"), found.checkout):
            if os.path.isdir(path):
                if path in sys.path:
                    sys.path.remove(path)
                sys.path.insert(0, path)


def import_failure(found: Located, exc: ImportError) -> str:
    """The one line for a dependency that does not import from the environment."""
    return f"cannot import {exc.name or exc} from {found.venv}; {found.fix}"


def load_failure(found: Located, exc: BaseException) -> str:
    """The one line for any other failure while loading (a broken plugin or dependency)."""
    return f"not loaded: {' '.join(str(exc).split())}; {found.fix}"


def load(
    package_dir: str,
    debugger: str,
    front_end: str,
    fail: Callable[[str], None],
    keep_first: Collection[str] = (),
    args: Sequence[object] = (),
) -> None:
    """Set up the path for the ``gdbext`` package at ``package_dir`` (:func:`locate`,
    :func:`activate`), then call ``install(*args)`` of the module ``front_end`` (the debugger's
    front end); whatever goes wrong is one line through ``fail``, never an exception.

    :param debugger: ``GDB``, ``LLDB`` (for messages).
    :param keep_first: ``sys.path`` entries that stay in front (the debugger's own Python).
    """
    # pwntools, once anything imports it inside the debugger, takes the terminal over (or fails
    # on the debugger's stdout) unless this is set first.
    os.environ.setdefault("PWNLIB_NOTERM", "1")
    try:
        found = locate(package_dir, debugger)
    except VenvError as exc:
        fail(str(exc))
        return
    activate(found, keep_first)
    try:
        importlib.import_module(front_end).install(*args)
    except ImportError as exc:
        fail(import_failure(found, exc))
    except Exception as exc:  # a broken plugin or dependency: one line, not a traceback
        fail(load_failure(found, exc))
