"""JSON lines over stdin/stdout or files: the transport of shell pipelines and tests."""

from __future__ import annotations

import queue
import sys
import threading
from typing import BinaryIO

from hazardctl.errors import ConfigError, DeliveryError
from hazardctl.transports.base import DeliveryCallback, Record

#: A line longer than this is not parsed: it becomes a dead letter holding its first bytes.
MAX_LINE_BYTES = 16 * 1024 * 1024
#: Lines read ahead of the stage loop; a full queue stops the reader, so the OS pipe pushes back.
READ_AHEAD_LINES = 4096
_EOF = object()


class OversizedLine(bytes):
    """The head of a line that was longer than MAX_LINE_BYTES (the rest was skipped)."""


class LineInput:
    """Reads lines on a thread so `poll(timeout)` never blocks the stage loop for longer."""

    def __init__(self, stream: BinaryIO, name: str, max_line_bytes: int = MAX_LINE_BYTES):
        self.name = name
        self._stream = stream
        self._max = max_line_bytes
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._room = threading.Event()  # cleared while the reader waits for the queue to drain
        self._room.set()
        self._exhausted = False
        self._thread = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> None:
        """Queue a line; past READ_AHEAD_LINES stop reading until poll() drained half of them.

        (A bounded queue.Queue would wake this thread once per line; this wakes it once per half
        queue, which keeps the GIL with the stage loop.)"""
        self._queue.put(item)
        if self._queue.qsize() >= READ_AHEAD_LINES:
            self._room.clear()
            if self._queue.qsize() >= READ_AHEAD_LINES:  # re-check: poll() may have drained meanwhile
                self._room.wait()

    def _read(self) -> None:
        lineno = 0
        readline, limit, put = self._stream.readline, self._max + 1, self._put
        try:
            while True:
                line = readline(limit)
                if not line:
                    break
                lineno += 1
                if len(line) == limit and not line.endswith(b"\n"):
                    head = OversizedLine(line[:1024])
                    while line and not line.endswith(b"\n"):  # skip the rest of the huge line
                        line = readline(1 << 20)
                    put((lineno, head))
                    continue
                put((lineno, line))
        except (OSError, ValueError):
            pass  # closed under us: treat as end of input
        finally:
            put(_EOF)

    def poll(self, timeout: float, max_records: int = 500) -> list[Record]:
        if self._exhausted:
            return []
        out: list[Record] = []
        get = self._queue.get
        try:
            item = get(timeout=timeout) if timeout > 0 else get(block=False)
            while True:
                if item is _EOF:
                    self._exhausted = True
                    break
                lineno, line = item
                out.append(Record(value=line, source=self.name, line=lineno))
                if len(out) >= max_records:
                    break
                item = get(block=False)
        except queue.Empty:
            pass
        if not self._room.is_set() and self._queue.qsize() <= READ_AHEAD_LINES // 2:
            self._room.set()
        return out

    @property
    def exhausted(self) -> bool:
        return self._exhausted

    def done(self, record: Record) -> None:
        pass

    def set_paused(self, paused: bool) -> None:
        pass  # the OS pipe buffer is the backpressure: we simply stop reading

    def close(self) -> None:
        pass


class LineOutput:
    """Writes one message per line; a message counts as delivered only once it is flushed to the OS.

    A failed write or flush (downstream closed, disk full) is a delivery error for every message not
    yet flushed, so a task or dead letter is never reported delivered and then lost in a buffer.
    """

    def __init__(self, stream: BinaryIO, name: str, owns_stream: bool = False):
        self.name = name
        self._stream = stream
        self._owns = owns_stream
        self._dirty = False
        self._unflushed: list[DeliveryCallback] = []

    def _failed(self, e: Exception) -> DeliveryError:
        err = DeliveryError(f"{self.name}: downstream closed or full ({type(e).__name__})")
        callbacks, self._unflushed = self._unflushed, []
        for cb in callbacks:
            cb(err)
        return err

    def send(self, value: bytes, key: bytes | None = None, on_delivered: DeliveryCallback | None = None) -> None:
        try:
            self._stream.write(value + b"\n")
        except (ValueError, OSError) as e:  # BrokenPipeError is an OSError
            err = self._failed(e)
            if on_delivered:
                on_delivered(err)
                return
            raise err from None
        self._dirty = True
        if on_delivered:
            self._unflushed.append(on_delivered)

    def poll(self, timeout: float = 0.0) -> None:
        """Flush once per loop iteration: low latency in a pipeline without a syscall per line."""
        if self._dirty:
            self._dirty = False
            try:
                self._stream.flush()
            except (ValueError, OSError) as e:
                self._failed(e)
                return
            callbacks, self._unflushed = self._unflushed, []
            for cb in callbacks:
                cb(None)

    def flush(self, timeout: float) -> int:
        self.poll()
        return 0

    def close(self) -> None:
        self.poll()
        if self._owns:
            try:
                self._stream.close()
            except (ValueError, OSError):
                pass  # a failed flush was already reported to the senders by poll()


def open_line_input(spec: str) -> LineInput:
    if spec == "-":
        # A private reader on fd 0: the reader thread may still block in readline() holding its lock
        # when the process exits (SIGTERM, pipe still open); had it been sys.stdin.buffer, the
        # interpreter's shutdown would abort ("could not acquire lock for <stdin>").
        return LineInput(open(sys.stdin.fileno(), "rb", closefd=False), "stdin")
    try:
        return LineInput(open(spec, "rb"), f"file:{spec}")
    except OSError as e:
        raise ConfigError(f"{spec}: cannot open input ({e.strerror})") from None


def open_line_output(spec: str) -> LineOutput:
    if spec == "-":
        return LineOutput(sys.stdout.buffer, "stdout")
    if spec == "stderr":
        return LineOutput(sys.stderr.buffer, "stderr")
    try:
        return LineOutput(open(spec, "ab"), f"file:{spec}", owns_stream=True)
    except OSError as e:
        raise ConfigError(f"{spec}: cannot open output ({e.strerror})") from None
