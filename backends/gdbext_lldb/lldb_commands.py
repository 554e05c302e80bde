"""The ``pt-*`` commands in LLDB: a thin adapter over :class:`gdbext.session.Session`.

LLDB hands a Python command its raw argument string; this adapter splits it into words (shell
rules), evaluates words that start with ``$`` in LLDB (``pt-translate $rsp``, ``--cr3 $cr3``),
and lets the session parse, run and render exactly as in GDB and on the command line, so the
output is the same bytes. Every expected failure becomes one line through
``SBCommandReturnObject.SetError`` (LLDB prints ``error: ...``), never a Python traceback.

Commands, registered once per LLDB debugger by :func:`install` (``gdbext/lldbinit.py`` calls it):
every command :meth:`gdbext.session.Session.commands` lists (``pt-walk``, ``pt-translate``,
``pt-info``, ``pt-heap``, ``pt-audit``...), ``pt-backend``, and LLDB's own ``pt-connect`` (see
:mod:`gdbext_lldb.lldb_connect`). The live backend is ``lldb`` (:mod:`gdbext_lldb.plugin`), the
default while the selected target is a ``gdb-remote`` connection; the debugger that runs a
command is passed to it as its option ``debugger``.

Output goes into the command's result (LLDB prints it when the command ends); progress of a long
command goes to LLDB's error stream once a second. Ctrl-C: LLDB 14 raises nothing in Python, so
reads and output chunks ask ``WasInterrupted`` and stop; LLDB drops an interrupted command's
result (and goes on with the next command), so ``NAME: interrupted`` is written to its error
stream directly.

Loaded only inside LLDB (it imports ``lldb``).
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import lldb

from gdbext.errors import GdbextError, UsageError
from gdbext.frontend.command import Writer
from gdbext.frontend.common import (
    FrontEnd,
    colour_wanted,
    evaluated,
    failure_line,
    hex_word,
    no_backend_hint,
    one_line,
    remote_default,
)
from gdbext.frontend.progress import progress_after
from gdbext.plugin.host import Host
from gdbext.session import BACKEND_COMMAND, Session
from gdbext_lldb import lldb_symbols
from gdbext_lldb.lldb_settings import raise_packet_timeout
from gdbext_lldb.plugin import NAME as LLDB_BACKEND

CONNECT_COMMAND = "pt-connect"
CONNECT_SUMMARY = (
    "Connect to a gdbstub ([HOST:]PORT), retrying the handshake a running QEMU breaks."
)
CONNECT_HELP = (
    "usage: pt-connect [HOST:]PORT\n\n"
    "gdb-remote [HOST:]PORT, tried again while LLDB's handshake fails at once (LLDB 14 fails "
    "against a running QEMU: the VM's stop reply comes first). The VM is stopped once "
    "connected. LLDB connects through a local relay that turns its kill ('k', which LLDB sends "
    "when it quits) into a detach, and detaches when LLDB goes away: QEMU is never killed, and "
    "'process detach', quitting LLDB or a closed terminal all resume the VM."
)
#: The option of backend ``lldb`` that names the debugger.
DEBUGGER_OPTION = "--debugger"
_EXPRESSION_ERROR = re.compile(r"^error: (?:<user expression \d+>:\d+:\d+: )?(.*)$", re.M)


#: The front end of each debugger (its registered command names), by ``SBDebugger`` ID (commands
#: find theirs here).
_FRONTENDS: dict[int, FrontEnd[str]] = {}


# --- output ----------------------------------------------------------------------------------


class ResultOut:
    """A command's result as a writer; each chunk first asks whether Ctrl-C was pressed."""

    def __init__(self, result: lldb.SBCommandReturnObject, debugger: lldb.SBDebugger) -> None:
        self._result = result
        self._interpreter = debugger.GetCommandInterpreter()

    def write(self, text: str) -> None:
        if self._interpreter.WasInterrupted():
            raise KeyboardInterrupt
        self._result.PutCString(text)


def to_stderr(debugger: lldb.SBDebugger, line: str) -> None:
    """One line on LLDB's error stream, now (progress, or the interrupted message)."""
    stream = debugger.GetErrorFile()
    if stream.IsValid():
        stream.Write(f"{line}\n".encode())
        stream.Flush()
    else:
        sys.stderr.write(f"{line}\n")
        sys.stderr.flush()


def into_result(
    name: str,
    debugger: lldb.SBDebugger,
    result: lldb.SBCommandReturnObject,
    call: Callable[[], Any],
) -> None:
    """``call()``, with every failure as one line in ``result`` (Ctrl-C included): the expected
    ones as :func:`gdbext.frontend.common.failure_line` words them. LLDB's way, unlike GDB's
    (which raises ``gdb.GdbError``): a failure is written into the command's result, an
    unexpected one too (``NAME: TYPE: message``, since LLDB would show a traceback), and the
    Ctrl-C line goes to the error stream, since LLDB drops an interrupted command's result."""
    try:
        call()
    except Exception as exc:  # never a traceback in LLDB
        message = failure_line(name, exc)
        if message is None:
            message = f"{name}: {type(exc).__name__}: {one_line(str(exc))}"
        result.SetError(message)
    except KeyboardInterrupt as exc:
        message = str(failure_line(name, exc))
        if debugger.GetCommandInterpreter().WasInterrupted():
            # Ctrl-C: LLDB drops the command's result and prints "... Interrupted." itself, and
            # an error would also end a batch run; so the line goes to the error stream.
            to_stderr(debugger, message)
        else:
            result.SetError(message)


# --- arguments -------------------------------------------------------------------------------


def split_words(name: str, text: str) -> list[str]:
    """The argument words of ``text`` (shell rules: quotes, backslashes)."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"{name}: {str(exc).lower()}") from None


def lldb_value(
    name: str, word: str, debugger: lldb.SBDebugger, exe_ctx: lldb.SBExecutionContext
) -> str:
    """A word that starts with ``$`` as LLDB evaluates it, in hex: a register of the selected
    frame (``$rsp``, ``$cr3``) or an expression, evaluated without running anything in the
    target (no JIT, so no function call: with an executable loaded LLDB would otherwise ask the
    stub for memory to run code in) and without a ``$N`` result variable (as GDB's
    ``parse_and_eval``). Not shared with GDB's :func:`gdbext_gdb.gdb_commands.gdb_value`: LLDB
    has no one call that evaluates a register or an expression in whatever context there is,
    so this one finds the frame, or the target, itself; only the hex word is common
    (:func:`gdbext.frontend.common.hex_word`). :raises UsageError: ``NAME: WORD: why`` (as GDB
    words it; the why is LLDB's)."""
    options = lldb.SBExpressionOptions()
    options.SetAllowJIT(False)
    options.SetSuppressPersistentResult(True)
    options.SetIgnoreBreakpoints(True)
    frame = exe_ctx.GetFrame()
    if not frame.IsValid():
        process = exe_ctx.GetProcess()
        if not process.IsValid():
            process = debugger.GetSelectedTarget().GetProcess()
        frame = process.GetSelectedThread().GetSelectedFrame()
    if frame.IsValid():
        register = frame.FindRegister(word[1:])
        if register.IsValid():
            error = lldb.SBError()
            value = register.GetValueAsUnsigned(error, 0)
            if error.Success():
                return hex_word(int(value))
        result = frame.EvaluateExpression(word, options)
    else:
        target = exe_ctx.GetTarget()
        if not target.IsValid():
            target = debugger.GetSelectedTarget()
        if not target.IsValid():
            # No target (a dump opened with pt-backend core): LLDB's own expressions then use
            # its dummy target, where `expr unsigned long $va = ...` put $va.
            target = debugger.GetDummyTarget()
        result = target.EvaluateExpression(word, options)
    error = result.GetError()
    if not result.IsValid() or error.Fail():
        text = str(error.GetCString() or "")
        m = _EXPRESSION_ERROR.search(text)
        why = m.group(1) if m else one_line(text) or "cannot evaluate"
        raise UsageError(f"{name}: {word}: {why}")
    return hex_word(int(result.GetValueAsUnsigned()))


# --- the commands ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    """One run of a command: the debugger, the argument words, the execution context LLDB
    gave, and where the output goes."""

    debugger: lldb.SBDebugger
    words: list[str]
    context: lldb.SBExecutionContext
    out: Writer


class PtCommand:
    """A ``pt-*`` command of :meth:`gdbext.session.Session.commands` (subclasses name it);
    LLDB makes one instance per debugger."""

    command_name: ClassVar[str] = ""

    def __init__(self, debugger: lldb.SBDebugger, internal_dict: dict[str, Any]) -> None:
        self._front = _FRONTENDS[int(debugger.GetID())]

    def get_short_help(self) -> str:
        try:
            return self._front.session.summary(self.command_name)
        except Exception:  # help must never fail
            return ""

    def get_long_help(self) -> str:
        """The argparse help (LLDB prints the short help above it)."""
        try:
            return self._front.session.parser(self.command_name).format_help().rstrip()
        except Exception:  # help must never fail
            return ""

    def __call__(
        self,
        debugger: lldb.SBDebugger,
        command: str,
        exe_ctx: lldb.SBExecutionContext,
        result: lldb.SBCommandReturnObject,
    ) -> None:
        name = self.command_name

        def run() -> None:
            words = split_words(name, command)
            self.run(Invocation(debugger, words, exe_ctx, ResultOut(result, debugger)))

        into_result(name, debugger, result, run)

    def run(self, call: Invocation) -> None:
        """Run the command (its argument words in ``call``)."""
        name, debugger = self.command_name, call.debugger
        words = evaluated(call.words, lambda w: lldb_value(name, w, debugger, call.context))
        colour = colour_wanted(bool(debugger.GetUseColor()))
        self._front.session.run(name, words, call.out, colour=colour)


class PtBackendCommand(PtCommand):
    """``pt-backend [NAME [SOURCE] [OPTIONS]]``; ``lldb`` gets this debugger's ID."""

    command_name = BACKEND_COMMAND

    def run(self, call: Invocation) -> None:
        words = call.words
        if words[:1] == [LLDB_BACKEND] and DEBUGGER_OPTION not in words:
            words = [*words, DEBUGGER_OPTION, str(call.debugger.GetID())]
        self._front.session.backend(words, call.out)


class PtConnectCommand(PtCommand):
    """``pt-connect [HOST:]PORT`` (:func:`gdbext_lldb.lldb_connect.connect`)."""

    command_name = CONNECT_COMMAND

    def get_short_help(self) -> str:
        return CONNECT_SUMMARY

    def get_long_help(self) -> str:
        return CONNECT_HELP

    def run(self, call: Invocation) -> None:
        if call.words in (["-h"], ["--help"]):
            call.out.write(CONNECT_HELP + "\n")
            return
        from gdbext_lldb.lldb_connect import connect  # the relay and the link: on first use

        connect(call.debugger, " ".join(call.words), call.out)


def _class_name(name: str) -> str:
    """``pt-walk`` -> ``PtWalkCommand``."""
    return "".join(part.capitalize() for part in re.split(r"[^0-9A-Za-z]+", name)) + "Command"


def command_class(name: str) -> type[PtCommand]:
    """The class LLDB binds to ``name`` (made for each command of the session, and kept in this
    module so that LLDB finds it by its dotted name)."""
    fixed: dict[str, type[PtCommand]] = {
        BACKEND_COMMAND: PtBackendCommand,
        CONNECT_COMMAND: PtConnectCommand,
    }
    if name in fixed:
        return fixed[name]
    class_name = _class_name(name)
    cls = globals().get(class_name)
    if not (isinstance(cls, type) and issubclass(cls, PtCommand)):
        cls = type(class_name, (PtCommand,), {"command_name": name, "__module__": __name__})
        globals()[class_name] = cls
    return cls


class InstallError(GdbextError):
    """LLDB refused to register a command."""


def _connected(debugger: lldb.SBDebugger) -> bool:
    """Whether ``debugger`` has a live ``gdb-remote`` process (the live target's code is loaded
    only when a command first asks)."""
    from gdbext_lldb.lldb_link import live_process

    return live_process(debugger) is not None


def _debugger_option(debugger: lldb.SBDebugger) -> dict[str, str]:
    """Backend ``lldb``'s option that names ``debugger`` (its ``SBDebugger`` ID)."""
    return {"debugger": str(debugger.GetID())}


def install(debugger: lldb.SBDebugger, internal_dict: dict[str, Any]) -> FrontEnd[str]:
    """Create ``debugger``'s session and register the commands; once per debugger (importing
    ``lldbinit.py`` again returns what the first import registered).

    :param internal_dict: the debugger's Python session dictionary (LLDB looks the command
        classes up from it).
    :raises InstallError: LLDB refused a command (one line).
    """
    key = int(debugger.GetID())
    front = _FRONTENDS.get(key)
    if front is not None:
        return front
    host = Host.create()
    session = Session(
        host,
        default=lambda: remote_default(
            host, LLDB_BACKEND, _connected(debugger), _debugger_option(debugger)
        ),
        no_backend_hint=no_backend_hint("pt-connect", LLDB_BACKEND),
        live_backends=(LLDB_BACKEND,),
        progress=lambda line: to_stderr(debugger, line),
        progress_after=progress_after(),
        symbols=lambda: lldb_symbols.selected_target_symbols(debugger),
    )
    front = FrontEnd[str](session)
    _FRONTENDS[key] = front
    raise_packet_timeout(debugger)
    internal_dict["gdbext_lldb"] = sys.modules["gdbext_lldb"]
    interpreter = debugger.GetCommandInterpreter()
    for name in [*session.commands(), BACKEND_COMMAND, CONNECT_COMMAND]:
        cls = command_class(name)
        result = lldb.SBCommandReturnObject()
        interpreter.HandleCommand(
            f"command script add -o -c {__name__}.{cls.__name__} {name}", result, False
        )
        if not result.Succeeded():
            del _FRONTENDS[key]
            raise InstallError(f"cannot add {name}: {one_line(str(result.GetError()))}")
        front.registered.append(name)
    return front


def installed(debugger: lldb.SBDebugger) -> FrontEnd[str] | None:
    """What :func:`install` registered in ``debugger``, if anything (tests reach the session
    through it)."""
    return _FRONTENDS.get(int(debugger.GetID()))
