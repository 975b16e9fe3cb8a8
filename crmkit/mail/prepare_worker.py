"""The poller's second process: parses and keeps messages while the first one files them.

Run as ``python -m crmkit.mail.prepare_worker``; :class:`PreparerProcess` starts
it and talks to it over its stdin and stdout in frames (an 8-byte length, then a
pickle): first the archive, then lists of raw messages, each answered by the list
of what :func:`crmkit.mail.filing.prepare_all` made of them, in order, once the
files it kept are durable (so the poller commits records pointing at them without
a flush of its own).

It is a plain child process rather than multiprocessing's: spawn re-imports the
caller's main script (a script without a ``__main__`` guard would run again), and
fork is unsafe in a poller that runs a thread per mailbox. It ends when its stdin
closes, so it never outlives a poller that was killed.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

__all__ = ["PreparerProcess"]

_LENGTH = struct.Struct(">Q")


def _read_frame(stream: IO[bytes]) -> bytes | None:
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(header)
    body = stream.read(size)
    return body if len(body) == size else None


def _write_frame(stream: IO[bytes], body: bytes) -> None:
    stream.write(_LENGTH.pack(len(body)))
    stream.write(body)
    stream.flush()


class PreparerProcess:
    """The parent's end: send batches, receive their outcomes in the same order."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self._answers: queue.Queue[bytes | None] = queue.Queue()
        # Drain answers as they come: a worker blocked on a full stdout pipe while we block
        # writing the next batch to its stdin would be a deadlock.
        self._reader = threading.Thread(target=self._read, name="crmkit-prepare-reader", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, archive: Any) -> PreparerProcess | None:
        """The worker, started and given ``archive``; None when it cannot start."""
        package_root = str(Path(__file__).resolve().parents[2])  # crmkit importable however we were
        path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "crmkit.mail.prepare_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
        except OSError:
            return None
        worker = cls(process)
        if not worker.send(archive):
            worker.stop()
            return None
        return worker

    def send(self, value: Any) -> bool:
        """Hand the worker a value; False when it is gone."""
        stdin = self._process.stdin
        assert stdin is not None
        try:
            _write_frame(stdin, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        except (OSError, ValueError):
            return False
        return True

    def _read(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        try:
            while (frame := _read_frame(stdout)) is not None:
                self._answers.put(frame)
        except (OSError, ValueError):
            pass
        self._answers.put(None)  # it ended: whoever waits next hears so

    def receive(self) -> Any | None:
        """The answer to the oldest batch not yet received; None when the worker died first."""
        frame = self._answers.get()
        if frame is None:
            self._answers.put(None)
            return None
        try:
            return pickle.loads(frame)
        except Exception:
            return None

    def stop(self) -> None:
        if self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout=1)
        if self._process.stdout is not None:
            self._process.stdout.close()


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives a trip through pickle, else a RuntimeError that says what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        from crmkit.mail.filing import reason

        return RuntimeError(reason(exc))
    return exc


def main() -> int:
    # Ctrl-C reaches the whole process group: the poller finishes its batch and closes our stdin
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = sys.stdin.buffer
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not corrupt the frames
    first = _read_frame(requests)
    if first is None:
        return 0
    archive = pickle.loads(first)
    try:
        _serve(archive, requests, answers)
    except BrokenPipeError:
        # The poller is gone (killed): nobody waits for an answer, and flushing the rest of it
        # at exit would only fail again, loudly.
        os._exit(0)
    return 0


def _serve(archive: Any, requests: IO[bytes], answers: IO[bytes]) -> None:
    from dataclasses import replace

    from crmkit.mail.filing import Prepared, prepare_all

    while (frame := _read_frame(requests)) is not None:
        outcomes: list[Any] = []
        for outcome in prepare_all(archive, pickle.loads(frame)):
            if isinstance(outcome, Prepared):
                # the files are kept; the poller needs their names, not their bytes back
                outcome.parsed.attachments = [replace(a, data=None) for a in outcome.parsed.attachments]
                outcomes.append(outcome)
            else:
                outcomes.append(_portable(outcome))
        archive.sync()  # durable before the poller commits records that point at them
        _write_frame(answers, pickle.dumps(outcomes, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    raise SystemExit(main())
