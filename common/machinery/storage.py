"""Safe storage: files written all or nothing, content hashes, and saves that a Ctrl-C cannot cut.

Used by checkpoints, FID statistics, decode caches and the pretrained models' manifest: one
atomic write for all of them.
"""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator


def file_hash(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's content, read in blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


_HOST = socket.gethostname().replace(".", "-")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, as another user's
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Delete ``.<name>.<host>-<pid>.*.tmp`` files next to ``path`` that processes of this host
    left behind and that no longer run (on a shared folder, other hosts' files are left alone)."""
    prefix = f".{path.name}.{_HOST}-"
    for tmp in path.parent.iterdir():
        if tmp.name.startswith(prefix) and tmp.name.endswith(".tmp"):
            pid = tmp.name[len(prefix):].split(".")[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                tmp.unlink(missing_ok=True)


@contextmanager
def atomic_write(path: str | Path, check: Callable[[Path], None] | None = None) -> Iterator[IO[bytes]]:
    """Write ``path`` all or nothing: the block writes to a uniquely named temporary file next to
    it (``.<name>.<host>-<pid>.*.tmp``), which is flushed to disk, given to ``check`` (which may
    raise), and renamed over ``path``. On any exception the temporary is removed and ``path`` is
    untouched; temporaries that killed processes of this host left behind are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def signals_deferred():
    """Hold Ctrl-C (SIGINT) and SIGTERM while the block runs and deliver them when it ends, so a
    signal can neither land inside torch's zip writer (which turns it into a RuntimeError) nor
    interrupt the clean-up. Only the main thread can set handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    wanted = [s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None))
              if s is not None and signal.getsignal(s) is not None]  # None: set outside Python, left alone
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(caught):
            signal.raise_signal(s)  # now handled as usual: SIGINT raises KeyboardInterrupt here
