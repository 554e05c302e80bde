"""A local relay between LLDB and a gdbstub that turns LLDB's kill into a detach.

LLDB 14 kills the process it is connected to when it quits (``quit``, the end of ``lldb
--batch``, a batch command that fails, EOF on its input), and for QEMU's gdbstub a kill is the
end of the VM: the stub answers ``k`` with ``W00`` and QEMU exits. ``pt-connect`` therefore
connects LLDB to this relay (:func:`start`), a process of its own that passes every byte both
ways unchanged except:

- a kill packet from LLDB (``k``, ``vKill;PID``) is not forwarded: the relay gives LLDB the reply
  the stub would have given (``W00`` for ``k``, QEMU's answer; ``OK`` for ``vKill``) and detaches
  from the stub instead (:meth:`Session.finish`);
- when LLDB's side closes without a detach (LLDB killed, a closed terminal's ``SIGHUP``), the
  relay detaches likewise.

The detach is QEMU's ``D`` (``D;PID`` once LLDB and the stub agreed on the multiprocess
extension, as QEMU then refuses a bare ``D``): it removes the debugger's breakpoints and resumes
the VM, which is what ``process detach`` in LLDB and GDB's ``detach`` do, and what GDB does when
it quits a QEMU it is connected to (QEMU says the process was attached). Leaving the VM stopped
instead would leave it hung with nobody to resume it, and LLDB's breakpoints in it. Before it,
the relay puts back what the session left behind: a VM LLDB had resumed is stopped first (QEMU
drops a packet that arrives while the VM runs), and a ``Qqemu.PhyMemMode`` LLDB switched and
did not switch back (LLDB died in the middle of a ``pt-*`` command) is put back to the mode the
session found.

The relay runs in its own session (``setsid``): the terminal's ``SIGHUP`` and ``SIGINT`` do not
reach it, and it outlives LLDB long enough to detach. It listens on 127.0.0.1 (an ephemeral
port it prints on its standard output, closed to anyone else once LLDB is past its handshake),
serves LLDB's connection, and exits when either side closes. A connection that ends in LLDB's
handshake (LLDB 14's first attempt against a running VM, which ``pt-connect`` retries) is not a
session: the relay accepts the next one, on a new connection to the stub, and gives up after
:data:`ACCEPT_TIMEOUT` seconds without one.

The packets are recognised by their framing (``$DATA#CK``; acknowledgements ``+``/``-``, the
interrupt byte 0x03 and anything else outside a packet pass through), so run-length encoding and
escapes inside packets pass through untouched; only the relay's own packets get a checksum.
Acknowledgement mode is followed (``QStartNoAckMode``; QEMU 7.2 does not support it).

Standard library only: the relay runs as ``python3 -I -S relay.py HOST:PORT`` (:func:`main`).
With ``GDBEXT_RELAY_LOG=FILE`` in its environment it appends what it did (sessions, the
intercepted kill, its own packets and their replies) to ``FILE``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Seconds the relay waits for LLDB's (next) connection before it gives up.
ACCEPT_TIMEOUT = 30.0
#: Seconds the relay waits for each reply of its own exchanges with the stub.
REPLY_TIMEOUT = 5.0
#: Seconds to wait for the stub to connect, and for the relay to say where it listens.
CONNECT_TIMEOUT = 10.0
#: A packet longer than this without its ``#`` is passed on as plain bytes (never a kill).
MAX_PACKET = 1 << 20
#: Environment variable naming a file the relay appends its events to.
LOG_ENV = "GDBEXT_RELAY_LOG"
ACK = b"+"
NAK = b"-"
INTERRUPT = b"\x03"
#: Packets that resume the target: their reply is the next stop reply.
_RESUME = re.compile(rb"^(?:[cCsS]|vCont;)")
#: The process ID in a stop reply's or ``qC``'s thread ID (``thread:p01.01;``, ``QCp01.01``).
_PID = re.compile(rb"(?:thread:|QC)p([0-9a-fA-F]+)\.")


def checksum(data: bytes) -> int:
    """The remote protocol's checksum of a packet's data.

    >>> hex(checksum(b"k"))
    '0x6b'
    """
    return sum(data) & 0xFF


def frame(data: bytes) -> bytes:
    """``data`` as a packet.

    >>> frame(b"D;1")
    b'$D;1#b0'
    """
    return b"$%s#%02x" % (data, checksum(data))


@dataclass(frozen=True)
class Unit:
    """A piece of the byte stream: one packet (:attr:`data` set) or bytes outside packets."""

    raw: bytes
    #: The packet's data (between ``$`` and ``#``, as sent: escapes and run lengths untouched);
    #: None for bytes outside a packet (acknowledgements, the interrupt byte, noise).
    data: bytes | None = None

    @property
    def valid(self) -> bool:
        """A packet whose checksum matches its data (computed when asked: summing a 4 KiB
        reply costs more than relaying it)."""
        if self.data is None:
            return False
        try:
            return int(self.raw[-2:], 16) == checksum(self.data)
        except ValueError:
            return False


class Framer:
    """Splits a byte stream, fed in chunks, into :class:`Unit` s; a packet is complete once its
    two checksum digits arrived (``#`` never appears unescaped inside one)."""

    def __init__(self, limit: int = MAX_PACKET) -> None:
        self._buffer = b""
        self._limit = limit

    @property
    def pending(self) -> bytes:
        """Bytes of an incomplete packet, held back."""
        return self._buffer

    def feed(self, chunk: bytes) -> list[Unit]:
        """The units ``chunk`` completes.

        >>> f = Framer()
        >>> f.feed(b"+$k#6")
        [Unit(raw=b'+', data=None)]
        >>> f.feed(b"b\\x03")
        [Unit(raw=b'$k#6b', data=b'k'), Unit(raw=b'\\x03', data=None)]
        """
        buf = self._buffer + chunk
        units: list[Unit] = []
        start = 0
        while start < len(buf):
            if buf[start] != 0x24:  # not '$': plain bytes up to the next packet
                end = buf.find(b"$", start)
                end = len(buf) if end < 0 else end
                units.append(Unit(buf[start:end]))
                start = end
                continue
            hash_at = buf.find(b"#", start + 1)
            if hash_at < 0 or hash_at + 3 > len(buf):
                if len(buf) - start > self._limit:  # not a packet after all
                    units.append(Unit(buf[start:]))
                    start = len(buf)
                break
            units.append(Unit(buf[start : hash_at + 3], buf[start + 1 : hash_at]))
            start = hash_at + 3
        self._buffer = buf[start:]
        return units


def is_kill(data: bytes) -> bool:
    """The packet kills the target (``k``, ``vKill`` with or without a PID).

    >>> [is_kill(p) for p in (b"k", b"vKill;1", b"vKill", b"kz", b"vCont;k")]
    [True, True, True, False, False]
    """
    return data == b"k" or data == b"vKill" or data.startswith(b"vKill;")


def kill_reply(data: bytes) -> bytes:
    """What a stub answers to the kill packet ``data``: QEMU's ``W00`` (exited, status 0) for
    ``k``, ``OK`` for ``vKill``."""
    return b"W00" if data == b"k" else b"OK"


def _is_stop_reply(data: bytes) -> bool:
    return data[:1] in (b"T", b"S", b"W", b"X")


class Session:
    """One connection of LLDB (``down``) to the stub (``up``), both connected sockets.

    :param log: receives one line per event.
    :param reply_timeout: seconds each of the relay's own exchanges waits for its reply.
    :param on_established: called once LLDB got past the handshake (the relay then closes its
        listening socket: nobody else gets in).
    """

    def __init__(
        self,
        down: socket.socket,
        up: socket.socket,
        log: Callable[[str], None] = lambda line: None,
        reply_timeout: float = REPLY_TIMEOUT,
        on_established: Callable[[], None] = lambda: None,
    ) -> None:
        self.down, self.up = down, up
        self._log = log
        self._on_established = on_established
        self._reply_timeout = reply_timeout
        self._from_lldb = Framer()
        self._from_stub = Framer()
        #: The stub's units the relay's own exchanges have not looked at yet.
        self._queued: list[Unit] = []
        #: LLDB sent something beyond the handshake's first packet.
        self.established = False
        #: The stub acknowledges packets (until ``QStartNoAckMode`` is answered ``OK``).
        self.acks = True
        #: LLDB's last request that has no reply yet (``None``: none).
        self._request: bytes | None = None
        self._lldb_multiprocess = False
        self.multiprocess = False
        self.pid = 1
        #: LLDB resumed the target and no stop reply came since.
        self.running = False
        #: LLDB sent its own detach, or the relay's was answered ``OK``.
        self.detached = False
        #: The kill packet the relay intercepted, if any.
        self.killed: bytes | None = None
        #: ``qqemu.PhyMemMode`` as the session first found it, and as LLDB last set it.
        self.mode_found: bytes | None = None
        self.mode_set: bytes | None = None
        for sock in (down, up):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # --- passing packets ---

    def run(self) -> str:
        """Relay until a side closes or LLDB sends a kill; detach where the stub would be left
        attached. What ended it: ``detached`` (LLDB's detach), ``killed`` (a kill turned into a
        detach), ``closed`` (LLDB closed without either: the relay detached), ``handshake``
        (LLDB closed during the handshake), ``stub closed``."""
        while True:
            readable, _, _ = select.select([self.down, self.up], [], [])
            if self.up in readable:
                chunk = _recv(self.up)
                if not chunk:
                    self._log("the stub closed the connection")
                    return "stub closed"
                self._stub_bytes(chunk)
            if self.down in readable:
                chunk = _recv(self.down)
                if not chunk:
                    return self._lldb_closed()
                if self._lldb_bytes(chunk):
                    return "killed"

    def _lldb_bytes(self, chunk: bytes) -> bool:
        """Forward what LLDB sent; True once it sent a kill (then handled)."""
        out: list[bytes] = []
        for unit in self._from_lldb.feed(chunk):
            data = unit.data
            if data is None:
                out.append(unit.raw)
                continue
            if unit.valid and is_kill(data):
                _sendall(self.up, b"".join(out))
                self._kill(data)
                return True
            out.append(unit.raw)
            self._note_request(data)
        _sendall(self.up, b"".join(out))
        return False

    def _note_request(self, data: bytes) -> None:
        if data != b"QStartNoAckMode" and not self.established:
            self.established = True
            self._on_established()
        if data.startswith(b"qSupported"):
            self._lldb_multiprocess = b"multiprocess+" in data
        elif data[:1] == b"D":
            # LLDB's own detach, answered or not: after a reply that timed out, LLDB's replies
            # (and so the relay's view of them) are out of step, and a second detach made QEMU
            # 7.2 close the connection and stop listening.
            self.detached = True
        if _RESUME.match(data):
            self.running = True
            self._request = None
        else:
            self._request = data

    def _stub_bytes(self, chunk: bytes) -> None:
        """Forward what the stub sent, unchanged, and follow the session's state in it."""
        _sendall(self.down, chunk)
        for unit in self._from_stub.feed(chunk):
            if unit.data is not None:
                self._note_reply(unit.data)

    def _note_reply(self, data: bytes) -> None:
        if data[:1] in (b"T", b"Q"):
            m = _PID.search(data)
            if m:
                self.pid = int(m.group(1), 16)
        if _is_stop_reply(data) and self._request != b"?":
            self.running = False
            return
        request, self._request = self._request, None
        if request is None:
            return
        if request == b"QStartNoAckMode" and data == b"OK":
            self.acks = False
        elif request.startswith(b"qSupported"):
            self.multiprocess = self._lldb_multiprocess and b"multiprocess+" in data
        elif request == b"qqemu.PhyMemMode" and data in (b"0", b"1"):
            if self.mode_found is None:
                self.mode_found = data
        elif request.startswith(b"Qqemu.PhyMemMode:") and data == b"OK":
            self.mode_set = request.rpartition(b":")[2]

    # --- the end of a session ---

    def _lldb_closed(self) -> str:
        if self.detached:
            return "detached"
        if not self.established:
            self._log("LLDB closed its connection during the handshake")
            return "handshake"
        self._log("LLDB closed its connection without a detach")
        self.finish()
        return "closed"

    def _kill(self, data: bytes) -> None:
        """Answer LLDB's kill as the stub would, then detach from the stub."""
        self.killed = data
        reply = kill_reply(data)
        self._log(f"LLDB sent {data.decode(errors='replace')}: answered {reply.decode()}")
        _sendall(self.down, (ACK if self.acks else b"") + frame(reply))
        with contextlib.suppress(OSError):
            self.down.shutdown(socket.SHUT_WR)
        self.finish()
        # LLDB acknowledges the reply and closes; closing first with its bytes unread would
        # reset the connection.
        with contextlib.suppress(OSError):
            self.down.settimeout(self._reply_timeout)
            while self.down.recv(1 << 16):
                pass

    def finish(self) -> None:
        """Leave the stub as a detach leaves it: stop a VM LLDB resumed, put back a PhyMemMode
        LLDB switched, detach (``D``: QEMU removes the breakpoints and resumes the VM)."""
        try:
            if self._request is not None:  # LLDB went away in the middle of an exchange
                self._read_packet(lambda data: True)
            if self.running:
                _sendall(self.up, INTERRUPT)
                self._read_packet(_is_stop_reply)
                self.running = False
            if self.mode_found is not None and self.mode_set not in (None, self.mode_found):
                self._exchange(b"Qqemu.PhyMemMode:" + self.mode_found)
            forms = [b"D;%x" % self.pid, b"D"] if self.multiprocess else [b"D", b"D;%x" % self.pid]
            for form in forms:
                if self._exchange(form) == b"OK":
                    self.detached = True
                    break
        except (OSError, TimeoutError) as exc:
            self._log(f"detaching failed: {exc}")

    def _exchange(self, data: bytes) -> bytes:
        """Send ``data`` to the stub and return its reply (stop replies skipped)."""
        _sendall(self.up, frame(data))
        reply = self._read_packet(lambda r: not _is_stop_reply(r))
        self._log(f"sent {data.decode(errors='replace')}: {reply.decode(errors='replace')}")
        return reply

    def _read_packet(self, wanted: Callable[[bytes], bool]) -> bytes:
        """The stub's next packet that ``wanted`` accepts (each acknowledged in ack mode).

        :raises TimeoutError: none within the reply timeout.
        :raises ConnectionError: the stub closed the connection.
        """
        deadline = time.monotonic() + self._reply_timeout
        while True:
            while self._queued:
                data = self._queued.pop(0).data
                if data is None:
                    continue
                if self.acks:
                    _sendall(self.up, ACK)
                if wanted(data):
                    return data
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                self.up.settimeout(remaining)
                chunk = self.up.recv(1 << 16)
            except TimeoutError:
                raise TimeoutError("the gdbstub did not answer") from None
            if not chunk:
                raise ConnectionError("the gdbstub closed the connection")
            self._queued += self._from_stub.feed(chunk)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 16)
    except OSError:
        return b""


def _sendall(sock: socket.socket, data: bytes) -> None:
    if data:
        with contextlib.suppress(OSError):
            sock.sendall(data)


#: How :meth:`Session.run` ends when LLDB ended the session (detached, killed, or closed).
ENDED_BY_LLDB = ("detached", "killed", "closed")


# --- the relay process ---------------------------------------------------------------------


def serve(
    listener: socket.socket,
    connect: Callable[[], socket.socket],
    first: socket.socket | None = None,
    log: Callable[[str], None] = lambda line: None,
    accept_timeout: float = ACCEPT_TIMEOUT,
    reply_timeout: float = REPLY_TIMEOUT,
) -> str:
    """Serve LLDB's connections on ``listener``, each on a connection to the stub of its own
    (``first``, then ``connect()``), until one is more than a handshake; what ended it (see
    :meth:`Session.run`; ``no connection``, ``stub unreachable``). Closes ``listener``."""
    up = first
    listener.settimeout(accept_timeout)
    try:
        while True:
            try:
                down, _ = listener.accept()
            except TimeoutError:
                log(f"no connection from LLDB in {accept_timeout:.0f} s")
                return "no connection"
            with down:
                try:
                    up = connect() if up is None else up
                except OSError as exc:
                    log(f"cannot connect to the gdbstub: {exc}")
                    return "stub unreachable"
                with up:
                    down.settimeout(None)
                    up.settimeout(None)
                    log("LLDB connected")
                    outcome = Session(down, up, log, reply_timeout, listener.close).run()
                up = None
            log(f"session ended: {outcome}")
            if outcome != "handshake":
                return outcome
    finally:
        listener.close()


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT``) as a host and a port number.

    >>> split_address("127.0.0.1:1234"), split_address("[::1]:9")
    (('127.0.0.1', 1234), ('::1', 9))
    """
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _logger() -> Callable[[str], None]:
    path = os.environ.get(LOG_ENV)
    if not path:
        return lambda line: None
    pid = os.getpid()

    def log(line: str) -> None:
        with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as f:
            f.write(f"{time.time():.3f} relay[{pid}] {line}\n")

    return log


def main(argv: list[str] | None = None) -> int:
    """``relay.py HOST:PORT``: connect to the stub, print the local port to connect LLDB to (or
    ``error: ...``, exit status 1) and close standard output, then relay: exit status 0 when LLDB
    ended the session (:data:`ENDED_BY_LLDB`: its connection is over), 2 when the stub did, or
    LLDB never came."""
    args = sys.argv[1:] if argv is None else argv
    log = _logger()
    try:
        host, port = split_address(args[0])
        first = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except (IndexError, ValueError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"error: cannot connect to the gdbstub: {reason}", flush=True)
        log(f"cannot connect to {args[:1]}: {reason}")
        return 1
    listener = socket.create_server(("127.0.0.1", 0), backlog=1)
    log(f"relaying 127.0.0.1:{listener.getsockname()[1]} to {host}:{port}")
    print(listener.getsockname()[1], flush=True)
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    outcome = serve(
        listener, lambda: socket.create_connection((host, port), CONNECT_TIMEOUT), first, log
    )
    return 0 if outcome in ENDED_BY_LLDB else 2


# --- starting it (in LLDB) -------------------------------------------------------------------


class RelayError(ConnectionError):
    """The relay could not be started, or could not reach the stub (the message says why)."""


@dataclass
class RelayProcess:
    """A started relay: LLDB connects to ``127.0.0.1:port``."""

    port: int
    process: subprocess.Popen[bytes] = dataclasses.field(repr=False)

    def ended_by_lldb(self, wait: float = 0.0) -> bool:
        """The relay has exited, within ``wait`` seconds, because LLDB ended its session (see
        :func:`main`)."""
        try:
            return self.process.wait(timeout=wait) == 0
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> None:
        """End the relay if it still runs (LLDB never connected to it)."""
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)


def python() -> str:
    """The Python to run the relay with: this one (inside LLDB, the system's ``python3``)."""
    if os.path.basename(sys.executable or "").startswith("python"):
        return sys.executable
    found = shutil.which("python3")
    if found is None:
        raise RelayError("no python3 to run the relay with")
    return found


def start(address: str, timeout: float = CONNECT_TIMEOUT + 5) -> RelayProcess:
    """Start a relay to the gdbstub at ``address`` (``HOST:PORT``) in a session of its own.

    :raises RelayError: it did not start, or could not connect to the stub (its reason).
    """
    path = os.environ.get(LOG_ENV)
    err = open(path, "ab") if path else subprocess.DEVNULL  # noqa: SIM115
    try:
        process = subprocess.Popen(
            [python(), "-I", "-S", os.path.abspath(__file__), address],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    except OSError as exc:
        raise RelayError(f"cannot start the relay: {exc}") from None
    finally:
        if not isinstance(err, int):
            err.close()
    assert process.stdout is not None
    line = b""
    deadline = time.monotonic() + timeout
    with process.stdout:
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([process.stdout], [], [], remaining)[0]:
                break
            chunk = os.read(process.stdout.fileno(), 256)
            if not chunk:
                break
            line += chunk
    text = line.decode(errors="replace").strip()
    if text.isdigit():
        return RelayProcess(int(text), process)
    RelayProcess(0, process).stop()
    raise RelayError(text.removeprefix("error: ") or "the relay did not start")


if __name__ == "__main__":
    sys.exit(main())
