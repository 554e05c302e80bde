"""The ``gdbstub`` backend plugin: a live target read over the remote serial protocol, with no
debugger (``gdbext walk --backend gdbstub 127.0.0.1:1234``, ``gdbext.open(backend="gdbstub",
address="127.0.0.1:1234")``).

The connection (:mod:`gdbext_gdbstub.connection`, which imports pwntools) is made on open and
served by the same :class:`~gdbext_gdbstub.state.LiveState` as GDB's and LLDB's backends. It is
kept per address while open, so that the Python API, which opens a live target again for each
call, reads through one connection (the VM stays stopped meanwhile); the target's ``close``
ends it and leaves the VM as it was found.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gdbext.errors import UsageError
from gdbext.plugin.hookspecs import hookimpl
from gdbext.plugin.target import BackendInfo, BackendOption, OpenRequest, Target
from gdbext.units import shown
from gdbext_gdbstub.options import LIVE_OPTIONS, LiveOptions, Naming

if TYPE_CHECKING:
    from gdbext_gdbstub.connection import GdbstubConnection
    from gdbext_gdbstub.state import LiveState

#: The backend, and who reads for it, as messages and ``info`` name them.
NAMING = Naming(backend="gdbstub", debugger="gdbstub")
NAME = NAMING.backend

OPTIONS = (
    BackendOption("address", "HOST:PORT", "the gdbstub to connect to (or give it as the source)"),
    BackendOption("stub_timeout", "SECONDS", "how long the gdbstub may take to answer (10)"),
    *LIVE_OPTIONS,
)

#: The open connections, by address, and their states.
_OPEN: dict[str, tuple[GdbstubConnection, LiveState]] = {}


def _timeout(text: str | None) -> float:
    from gdbext_gdbstub.connection import DEFAULT_TIMEOUT

    if text is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise UsageError(f"--stub-timeout takes seconds (0 < S <= 3600), not {shown(text)}")
    return value


def open_gdbstub(request: OpenRequest) -> Target:
    """Connect to the gdbstub (or reuse the open connection to it) and open its target."""
    given = request.options.get("address")
    if request.source is not None and given is not None:
        raise UsageError(f"two addresses given: {shown(request.source)} and --address {given}")
    address = request.source if request.source is not None else given
    if address is None:
        raise UsageError("the gdbstub backend needs the stub's HOST:PORT (e.g. 127.0.0.1:1234)")
    live = {k: v for k, v in request.options.items() if k in {o.name for o in LIVE_OPTIONS}}
    options = LiveOptions.from_request(OpenRequest(None, live), NAMING)
    timeout = _timeout(request.options.get("stub_timeout"))
    held = _OPEN.get(address)
    if held is None or not held[0].open:
        from gdbext_gdbstub.connection import open_connection
        from gdbext_gdbstub.state import LiveState

        connection = open_connection(address, timeout)
        state = LiveState(connection.link, f"gdbstub {address}", NAMING)
        held = _OPEN[address] = (connection, state)
    connection, state = held
    if connection.client.unsolicited:
        # A stop reply since the last open: the VM ran (the monitor's cont, then stop).
        connection.client.unsolicited.clear()
        state.invalidate()

    def close() -> None:
        if _OPEN.get(address) is held:
            del _OPEN[address]
        connection.close()

    try:
        target = state.open(options)
    except BaseException:
        close()
        raise
    target.close = close
    return target


@hookimpl
def gdbext_backends() -> Sequence[BackendInfo]:
    return [
        BackendInfo(
            NAME,
            "live target with no debugger: QEMU's gdbstub at HOST:PORT, over its protocol",
            open_gdbstub,
            list(OPTIONS),
            source="HOST:PORT",
        )
    ]
