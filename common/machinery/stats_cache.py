"""The on-disk cache of reference FID statistics: file names, the images' identity, reading, writing.

:func:`common.machinery.fid_stats.reference_stats` stands on it. A file under ``data/fid_stats/``
is named by dataset, shape, split, N, seed and extractor id (:func:`cache_name`), and records a
hash of the pixels it was computed from (:func:`images_id`): other images under the same name are
recomputed, with a warning that says why (:func:`cached`). A folder that cannot be written costs
the cache, never the value (:func:`save_or_warn`, one warning per folder).

Nothing here imports :mod:`.fid_stats` (which imports this module): the statistics are handled
through their ``save`` method and the ``load`` function passed in.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch

from . import runtime


def stats_cache_dir() -> Path:
    return runtime.data_dir() / "fid_stats"


def cache_name(data, n: int, seed: int, extractor_id: str) -> str:
    """The file name of the statistics of ``n`` images of a dataset split under ``seed``."""
    return f"{data.tag}-{data.split}-of{len(data)}-n{n}-seed{seed}-{extractor_id}.npz"


def subset_order(total: int, n: int, seed: int) -> torch.Tensor:
    """Which of ``total`` images the statistics of ``n`` use, in order: all of them, or a random
    subset chosen by ``seed``."""
    if n >= total:
        return torch.arange(total)
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]


HASH_CHUNK = 4096   # images hashed per step: a bounded copy, whatever the split's size


def images_id(data, n: int, seed: int) -> str:
    """SHA-1 of the uint8 pixels of the ``n`` images of ``data`` that its statistics use (see
    :func:`subset_order`), with their shape: what names the images a statistics file came from.
    SHA-1 for speed, not for security. Measured on a busy 2-core CPU (issue 27): 8 ms for the
    10,000 Fashion-MNIST test images; 0.28 s for N = 10,000 of 162,770 64x64 colour images in
    memory, 1.6 s for all of them (2 GB). Small beside the features of the same images."""
    images, order = data.images, subset_order(len(data), n, seed)
    h = hashlib.sha1(repr((tuple(images.shape[1:]), str(images.dtype))).encode())
    whole = n == len(data)   # all of them in order: read slices, no gathered copy
    for i in range(0, n, HASH_CHUNK):
        idx = order[i:i + HASH_CHUNK]
        chunk = images[i:i + HASH_CHUNK] if whole else images.index_select(0, idx.to(images.device))
        h.update(chunk.cpu().contiguous().numpy())
    return h.hexdigest()


def cached(name: str, n: int, extractor_id: str, data_id: str, load):
    """The statistics cached as ``name`` (read by ``load``, which raises ValueError on a damaged
    file) if they are those asked for (same N, extractor and images), else None, with a warning
    that says why they are recomputed."""
    try:
        path = stats_cache_dir() / name
        if not path.is_file():
            return None
    except OSError:   # an unusable DGM_DATA_DIR: said when the statistics cannot be saved
        return None
    try:
        stats = load(path)
    except ValueError as err:
        warnings.warn(f"{err}; recomputing it")
        return None
    if stats.n != n or stats.extractor_id != extractor_id:
        warnings.warn(f"{path} holds statistics of N = {stats.n} from {stats.extractor_id}; recomputing it")
    elif not stats.data_id:
        warnings.warn(f"{path} does not record which images it was computed from (an older file); recomputing it")
    elif stats.data_id != data_id:
        warnings.warn(f"{path} was computed from other images of {stats.source} (they changed since); "
                      "recomputing it")
    else:
        return stats
    return None


def save_or_warn(stats, name: str) -> None:
    """Cache ``stats`` as ``name`` in :func:`stats_cache_dir`; where that cannot be done (a
    read-only or full folder, a DGM_DATA_DIR that is a file), warn once per folder and go on: the
    statistics are what was asked for, the file only saves time."""
    try:
        folder = stats_cache_dir()
    except OSError as err:   # runtime.data_dir() names the variable and the fix
        return _warn_uncached(os.environ.get(runtime.DATA_VAR, ""), str(err))
    try:
        stats.save(folder / name)
    except OSError as err:
        _warn_uncached(str(folder), f"cannot write to {folder} ({err.strerror or err}); set {runtime.DATA_VAR} "
                                    "to a writable folder with free space to keep them")


_UNCACHED_WARNED: set[str] = set()   # folders already named in a "not cached" warning


def _warn_uncached(folder: str, why: str) -> None:
    if folder not in _UNCACHED_WARNED:
        _UNCACHED_WARNED.add(folder)
        warnings.warn(f"FID statistics are not cached: {why}. Until then they are recomputed at every call")
