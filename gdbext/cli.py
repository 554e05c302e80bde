"""The ``gdbext`` command line.

``gdbext info|walk|translate|read|heap|audit|backends``, each taking a dump file or ``--backend
NAME`` and that backend's options (the simulator's is ``--scenario FILE``), and ``--format``
(``--json`` is short for ``--format json``). The commands are declared in
:mod:`gdbext.frontend.cmd` (their reference: ``docs/commands.md``); this module runs one command
line: it opens what the command line names, runs the command, closes the target, and turns
errors into one line on stderr.

``gdbext --version`` is answered before anything else is imported (the version is the
package's constant): the commands' declarations and argparse wait for a command.

Exit status: 0 success; 1 an address not mapped, nothing found, or a ``read`` with a gap (bytes
not mapped, not captured or not readable); 2 bad input or usage, with a
one-line message on stderr; 3 ``audit --fail-on SEVERITY`` found something at least that
severe (the findings are printed as ever). No Python traceback reaches the user for bad input.
"""

from __future__ import annotations

import sys

from gdbext import TYPE_CHECKING, __version__

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import IO

    from gdbext.frontend.command import Warn
    from gdbext.plugin.host import Host
    from gdbext.plugin.target import Target


def open_target(host: Host, args: argparse.Namespace, source: str | None = None) -> Target:
    """Open the backend the command line names: ``--backend NAME``, or the dump backend for a
    dump file."""
    from gdbext.errors import UsageError
    from gdbext.frontend.parsing import backend_request
    from gdbext.plugin.host import DUMP_BACKEND

    name = args.backend
    if name is None:
        if source is None:
            raise UsageError("a DUMP or --backend NAME is required (see 'gdbext backends')")
        name = DUMP_BACKEND
    info, request = backend_request(host, name, args, source)
    return info.open(request)


def _list_backends(host: Host, out: IO[str]) -> int:
    from gdbext.errors import EXIT_OK

    for name, info in host.backends().items():
        out.write(f"{name:<10} {info.summary}\n")
    return EXIT_OK


def run(
    argv: Sequence[str],
    host: Host | Callable[[], Host],
    out: IO[str],
    target: Target | None = None,
    warn: Warn | None = None,
) -> int:
    """Run one command line; return the exit status. :class:`GdbextError` propagates.

    :param host: the plugin host, or a function that makes it (not called for ``--version``).
    :param target: the command runs on it (the command line then takes no DUMP, ``--backend``
        or backend options) and it stays open; without it the command line names what to
        open, and it is closed afterwards.
    :param warn: given one-line warnings (see :func:`gdbext.frontend.runner.execute`).
    """
    if list(argv) == ["backends"]:  # needs neither argparse nor the commands' declarations
        return _list_backends(host() if callable(host) else host, out)
    from gdbext.frontend import cmd
    from gdbext.frontend.parsing import build_parser, host_getter, parse_command

    get_host = host_getter(host)
    args = parse_command(build_parser(get_host, target_options=target is None), argv)
    if args.command == "backends":
        return _list_backends(get_host(), out)
    command = cmd.find(args.command)
    if command.without_target is not None:
        status = command.without_target(args, get_host(), out)
        if status is not None:
            return status
    from gdbext.frontend.runner import execute_plan, plan

    checked = plan(args, get_host())
    if target is not None:
        return execute_plan(checked, args, get_host(), out, target, warn=warn)
    target = open_target(get_host(), args, checked.source)
    try:
        return execute_plan(checked, args, get_host(), out, target, warn=warn)
    finally:
        if target.close is not None:
            target.close()


def _warn_stderr(message: str) -> None:
    sys.stdout.flush()
    print(f"gdbext: warning: {message}", file=sys.stderr)


def _create_host() -> Host:
    from gdbext.plugin.host import Host

    return Host.create()


def _stdout_gone() -> None:
    """The reader went away (e.g. ``| head``): not an error of ours. Point stdout at /dev/null
    so that the interpreter's final flush does not complain."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _version() -> int:
    """``gdbext --version``: what argparse's version action prints, without loading argparse
    and the commands' declarations."""
    try:
        sys.stdout.write(f"gdbext {__version__}\n")
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_gone()
    return 0


def _whole_writes() -> None:
    """Under ``python -u`` (or PYTHONUNBUFFERED) stdout's binary layer is the raw file, and the
    text layer drops what a write leaves unwritten: a pipe write that Ctrl-Z (SIGSTOP), a signal
    or a tracer cuts short loses the rest of its block. Put a buffered layer back, which writes
    the rest, flushed at each line as unbuffered output expects."""
    import io

    stream = sys.stdout
    if isinstance(stream, io.TextIOWrapper) and isinstance(stream.buffer, io.RawIOBase):
        raw = io.FileIO(stream.fileno(), "wb", closefd=False)
        sys.stdout = io.TextIOWrapper(
            io.BufferedWriter(raw), stream.encoding, stream.errors, line_buffering=True
        )


def main(argv: Sequence[str] | None = None, host: Host | None = None) -> int:
    """Entry point of the ``gdbext`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--version"]:
        return _version()
    _whole_writes()
    from gdbext.errors import EXIT_BAD_INPUT, EXIT_OK, GdbextError

    try:
        return run(argv, _create_host if host is None else host, sys.stdout, warn=_warn_stderr)
    except GdbextError as exc:
        sys.stdout.flush()
        print(f"gdbext: {exc}", file=sys.stderr)
        return exc.exit_status
    except BrokenPipeError:
        _stdout_gone()
        return EXIT_OK
    except KeyboardInterrupt:
        print("gdbext: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"gdbext: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
