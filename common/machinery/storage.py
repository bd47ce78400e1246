"""Safe storage: files written all or nothing, content hashes, and saves that a Ctrl-C cannot cut.

Used by checkpoints, FID statistics, decode caches and the pretrained models' manifest: one
atomic write for all of them.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import threading
import uuid
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


def _temporary_prefix(path: Path) -> str:
    """``.<name>.<host>-``: the start of the name of every temporary for ``path``, the name cut to
    100 bytes so that a temporary's name stays a legal file name (255 bytes) for any target."""
    name = path.name.encode()[:100].decode(errors="ignore")
    return f".{name}.{_HOST}-"


def temporary_path(path: str | Path) -> Path:
    """A fresh name next to ``path`` for a temporary file or folder of this process:
    ``.<name>.<host>-<pid>.<random>.tmp``, which :func:`remove_stale_temporaries` recognises."""
    path = Path(path)
    return path.with_name(f"{_temporary_prefix(path)}{os.getpid()}.{uuid.uuid4().hex}.tmp")


def remove_stale_temporaries(path: str | Path) -> None:
    """Delete the temporaries (files or folders) next to ``path`` that processes of this host left
    behind and that no longer run; live ones and other hosts' (on a shared folder) are left alone."""
    path = Path(path)
    prefix = _temporary_prefix(path)
    for tmp in path.parent.iterdir():
        if tmp.name.startswith(prefix) and tmp.name.endswith(".tmp"):
            pid = tmp.name[len(prefix):].split(".")[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                if tmp.is_dir() and not tmp.is_symlink():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink(missing_ok=True)


@contextmanager
def atomic_write(path: str | Path, check: Callable[[Path], None] | None = None) -> Iterator[IO[bytes]]:
    """Write ``path`` all or nothing: the block writes to a uniquely named temporary file next to
    it (:func:`temporary_path`), which is flushed to disk, given to ``check`` (which may raise),
    and renamed over ``path``. On any exception the temporary is removed and ``path`` is
    untouched; temporaries that killed processes of this host left behind are removed first. The
    file gets the mode a plain ``open()`` gives (0o666 less the umask), so a shared data folder
    stays readable to those it is shared with."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, "xb") as f:  # "x": created here, never an existing file or a link
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
