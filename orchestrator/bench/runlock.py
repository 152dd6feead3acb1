"""One bench per results folder: an exclusive lock that names its holder and dies with it.

The lock is ``RESULTS/.zoobench.lock``: an ``flock`` held for the whole run (the kernel drops it
when the process dies, however it dies) and a JSON record of the holder (run id, pid, host, start
time, command). A second run on the same folder is refused with the holder's record; a record
left by a dead run is taken over with a note.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ResultsBusy

LOCK_FILE = ".zoobench.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a results folder."""

    run_id: str
    pid: int
    host: str
    started: str
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started} (run {self.run_id})"

    @classmethod
    def me(cls) -> "Holder":
        return cls(uuid.uuid4().hex[:12], os.getpid(), socket.gethostname(),
                   time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), " ".join(sys.argv)[:300])


def _read_holder(fd: int) -> Holder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        return Holder(**json.loads(raw))
    except (ValueError, TypeError):
        return None


class ResultsLock:
    """``with ResultsLock(folder) as me:`` holds ``folder`` for this process; ``me`` is its Holder."""

    def __init__(self, results_dir: Path, note: Callable[[str], None] = lambda m: None) -> None:
        self.path = Path(results_dir) / LOCK_FILE
        self.note = note
        self.holder = Holder.me()
        self._fd: int | None = None

    def acquire(self) -> Holder:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot create the lock file ({exc.strerror}); "
                          "make the results folder writable or pass another --results", str(self.path)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_holder(fd)
            os.close(fd)
            who = other.describe() if other else "another zoobench process"
            raise ResultsBusy(f"results folder {self.path.parent} is in use by {who}; wait for it to finish "
                              "or pass another --results") from None
        previous = _read_holder(fd)
        if previous is not None:
            self.note(f"took over the lock of {self.path.parent} left by {previous.describe()}, which is no longer running")
        payload = json.dumps(asdict(self.holder)).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, payload, 0)
        os.fsync(fd)
        self._fd = fd
        return self.holder

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # an empty record: the folder was released cleanly
        except OSError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> Holder:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
