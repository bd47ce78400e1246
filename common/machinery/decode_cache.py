"""The decode cache: the images of a folder decoded once into ``data/cache/<key>/images.npy``.

Later loads memory-map it after checking its size, shape and SHA-256 and that the image files are
unchanged (:func:`_fingerprint`: paths, sizes, modification times, and content for small folders).
Builds are atomic (a temporary folder renamed into place, temporaries of killed builds swept),
safe when several run at once, and checked for free space first; where no cache can be written,
the images are decoded in memory, with one warning. Used by :mod:`.folders`.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import itertools
import json
import os
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .images import DECODE_THREADS, decode_one
from .runtime import progress
from .sources import DatasetNotFoundError
from .storage import file_hash, remove_stale_temporaries, temporary_path

CACHE_VERSION = 2  # raised when the key or layout changes; a cache of another version is rebuilt
CONTENT_HASH_BELOW = 64 << 20  # folders up to this many bytes have their files' content in the key too
SPARE_BYTES = 1 << 20  # left free beyond the cache itself (its meta.json, the file system's own needs)
NAME_BYTES = 120  # longest cache folder name: its temporary's name adds ~110 bytes, and a name holds 255


def _fingerprint(files: list[Path]) -> str:
    """Changes when a file is added, removed, renamed or rewritten: each file's path, size and
    modification time, and, for a folder of up to CONTENT_HASH_BELOW bytes (cheap to read), the
    files' content, which also catches a rewrite that kept size and time (``cp -p``, ``rsync -t``)."""
    stats = [f.stat() for f in files]
    h = hashlib.sha256()
    for f, st in zip(files, stats):
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    if sum(st.st_size for st in stats) <= CONTENT_HASH_BELOW:
        for f in files:
            h.update(file_hash(f).encode())
    return h.hexdigest()[:16]


def cache_dir(root: Path) -> Path:
    return root / "cache"


def _cache_folder(root: Path, key: str) -> Path:
    """``cache/<key>``; a key too long for a file name (from a long folder name) is cut to a
    readable start and a hash of all of it."""
    if len(key.encode()) > NAME_BYTES:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        key = key.encode()[:NAME_BYTES - 17].decode(errors="ignore") + "-" + digest
    return cache_dir(root) / key


def _cached(folder: Path, shape: tuple, fingerprint: str) -> tuple[np.ndarray | None, str]:
    """The cache in ``folder`` as a copy-on-write memory map when it is whole and was built from
    these files; else None and why not ("" when there is none)."""
    meta_path, data_path = folder / "meta.json", folder / "images.npy"
    try:
        if not (meta_path.is_file() and data_path.is_file()):
            return None, ""
    except OSError:  # e.g. a folder this user may not search: as if there were no cache
        return None, ""
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != CACHE_VERSION:
            return None, "it was written by another version of the course"
        if meta["fingerprint"] != fingerprint:
            return None, "the image files changed since it was built (a size, time or content differs)"
        if (tuple(meta["shape"]) == shape and data_path.stat().st_size == meta["bytes"]
                and file_hash(data_path) == meta["sha256"]):
            return np.load(data_path, mmap_mode="c"), ""
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None, "it is damaged"


def _decoded(files: list[Path], size: int, desc: str) -> Iterator[np.ndarray]:
    """The files decoded in order by a pool of threads, with a progress bar."""
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool, \
            progress(total=len(files), desc=desc, unit="img") as bar:
        for img in pool.map(lambda f: decode_one(f, size), files, chunksize=64):
            yield img
            bar.update()


def _write_npy(path: Path, shape: tuple, images: Iterable[np.ndarray]) -> tuple[int, str]:
    """Write ``images`` as one uint8 ``.npy`` array of ``shape`` and return its size and SHA-256.
    Plain writes, so a full disk is an OSError (through a memory map it was a SIGBUS, which kills
    a notebook's kernel without a word)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    h = hashlib.sha256()
    with open(path, "xb") as f:
        for block in itertools.chain([header.getvalue()], (img.tobytes() for img in images)):
            f.write(block)
            h.update(block)
        return f.tell(), h.hexdigest()


def _publish(tmp: Path, folder: Path, shape: tuple, fingerprint: str) -> np.ndarray:
    """Rename the finished cache ``tmp`` to ``folder`` and load it. A good cache already there (a
    concurrent build's) is loaded instead; a stale or damaged one is moved aside and deleted first."""
    for _ in range(3):
        try:
            os.rename(tmp, folder)  # atomic; refuses to replace a folder that holds files
            return np.load(folder / "images.npy", mmap_mode="c")
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        images, _ = _cached(folder, shape, fingerprint)
        if images is not None:
            return images
        aside = temporary_path(folder)
        with contextlib.suppress(FileNotFoundError):  # another build may have moved it already
            os.rename(folder, aside)
        shutil.rmtree(aside, ignore_errors=True)
    raise OSError(errno.EBUSY, "other builds kept replacing it", str(folder))


def _build(files: list[Path], size: int, folder: Path, key: str, shape: tuple, fingerprint: str) -> np.ndarray:
    """Decode into a uniquely named temporary folder next to ``folder`` and publish it; the
    temporaries that killed builds left there are removed first, running builds' are not."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)
    tmp = temporary_path(folder)
    tmp.mkdir()
    try:
        nbytes, sha256 = _write_npy(tmp / "images.npy", shape, _decoded(files, size, f"decoding {key} (once)"))
        meta = {"version": CACHE_VERSION, "shape": shape, "bytes": nbytes, "sha256": sha256,
                "fingerprint": fingerprint, "files": len(files), "source": str(files[0].parent) if files else ""}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        return _publish(tmp, folder, shape, fingerprint)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def decode_cached(files: list[Path], size: int, root: Path, key: str) -> np.ndarray:
    """Decode image files into one uint8 array (N, 3, size, size), cached under ``data/cache/key/``.

    The cache is written into a temporary folder and renamed into place when complete (an
    interrupted decode leaves nothing half-written; a killed one's leftovers go at the next build;
    concurrent builds keep one result), and is checked on every load: the recorded shape, file size
    and SHA-256 must match, and so must the source files (:func:`_fingerprint`). Returns a
    copy-on-write memory map, so a large split is not read into memory until it is used. Where the
    cache cannot be written (too little space, a read-only folder, a file in the way) the images
    are decoded in memory instead, with a warning that says what to change.
    """
    folder = _cache_folder(root, key)
    shape = (len(files), 3, size, size)
    fingerprint = _fingerprint(files)
    images, why = _cached(folder, shape, fingerprint)
    if images is not None:
        return images
    if why:
        print(f"{folder}: {why}; decoding the images again")
    needed = int(np.prod(shape)) + SPARE_BYTES
    try:
        free = shutil.disk_usage(next(p for p in (folder, *folder.parents) if p.exists())).free
        if free >= needed:
            return _build(files, size, folder, key, shape, fingerprint)
        problem = f"{free / 1e6:.1f} MB free, {needed / 1e6:.1f} MB needed"
    except DatasetNotFoundError:  # an image file went missing: not the cache's fault
        raise
    except OSError as err:
        problem = err.strerror or str(err)
    warnings.warn(f"{folder}: cannot cache the decoded images there ({problem}), so they are decoded in memory, "
                  f"again at every load. To cache them, make {needed / 1e6:.0f} MB free there or set DGM_DATA_DIR "
                  "to a writable folder with that much space")
    out = np.empty(shape, np.uint8)
    for i, img in enumerate(_decoded(files, size, f"decoding {key} (in memory)")):
        out[i] = img
    return out
