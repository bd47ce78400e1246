"""The decode cache of image folders and the atomic writes of storage under faults: files rewritten
in place, a full or unwritable disk, a build killed midway, builds racing in threads, a shared
folder's umask and folder names too long for a file name. Each test's name says what it guards."""
import errno
import os
import pathlib
import signal
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from common.machinery import checkpoints, data, decode_cache, storage
from common.classifiers import MLPClassifier

SIZE = 8  # decoded side: tiny, so each build takes milliseconds


def solid_pngs(folder, colours, size=(12, 10)):
    """One uncompressed PNG per colour: same dimensions give the same byte size whatever the pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"{i}.png" for i in range(len(colours))]
    for f, c in zip(files, colours):
        Image.new("RGB", size, c).save(f, compress_level=0)
    return files


def expected(colours):
    return np.array(colours, np.uint8)[:, :, None, None] * np.ones((1, 1, SIZE, SIZE), np.uint8)


RED = [(200, 10 * i, 0) for i in range(6)]
BLUE = [(0, 10 * i, 200) for i in range(6)]


def temporaries(folder):
    return sorted(p.name for p in folder.glob(".*tmp")) if folder.exists() else []


# --------------------------------------------------------------------------- stale caches
@pytest.mark.parametrize("rewrite", ["same-time", "later-time"])
def test_images_rewritten_with_the_same_byte_size_are_decoded_again_not_served_stale(tmp_path, monkeypatch,
                                                                                      capsys, rewrite):
    files = solid_pngs(tmp_path / "imgs", RED)
    old = decode_cache.decode_cached(files, SIZE, tmp_path, "k")
    assert np.array_equal(old, expected(RED))
    before = [f.stat() for f in files]
    solid_pngs(tmp_path / "imgs", BLUE)
    assert [f.stat().st_size for f in files] == [s.st_size for s in before]
    if rewrite == "same-time":  # e.g. `rsync -t` or `cp -p` of a new version: only the content tells
        for f, s in zip(files, before):
            os.utime(f, ns=(s.st_atime_ns, s.st_mtime_ns))
    else:  # a large folder is not read to check it: the modification time tells
        monkeypatch.setattr(decode_cache, "CONTENT_HASH_BELOW", 0, raising=False)
        for f, s in zip(files, before):
            os.utime(f, ns=(s.st_atime_ns, s.st_mtime_ns + 10**9))
    capsys.readouterr()
    new = decode_cache.decode_cached(files, SIZE, tmp_path, "k")
    assert np.array_equal(new, expected(BLUE))
    out = capsys.readouterr().out
    assert str(tmp_path / "cache" / "k") in out and "changed" in out and "decoding" in out


# --------------------------------------------------------------------------- a full or unwritable disk
class FillsUp:
    """A real file whose writes fail with ENOSPC past ``room`` bytes, as on a full disk."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, b):
        if self.f.tell() + len(b) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.f.name)
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("full", ["checked-first", "while-writing"])
def test_a_full_disk_decodes_in_memory_with_a_warning_and_leaves_no_partial_cache(tmp_path, monkeypatch, full):
    files = solid_pngs(tmp_path / "imgs", RED)
    root = tmp_path / "root"
    if full == "checked-first":
        real = decode_cache.shutil.disk_usage
        monkeypatch.setattr(decode_cache.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    else:  # the space was there when checked, then another program took it
        monkeypatch.setattr(decode_cache, "open", lambda p, mode="r", *a, **k: FillsUp(open(p, mode, *a, **k), 300),
                            raising=False)
    with pytest.warns(UserWarning) as caught:
        images = decode_cache.decode_cached(files, SIZE, root, "k")
    assert np.array_equal(images, expected(RED))
    message = " ".join(str(w.message) for w in caught)
    assert str(root / "cache" / "k") in message and "DGM_DATA_DIR" in message and "in memory" in message
    assert ("MB free" in message and "needed" in message) if full == "checked-first" else ("No space left" in message)
    assert not (root / "cache").exists() or list((root / "cache").iterdir()) == []  # nothing partial left


@pytest.mark.parametrize("unwritable", ["file-valued", "read-only", "unsearchable"])
def test_an_unwritable_cache_folder_decodes_in_memory_with_one_warning_naming_it(tmp_path, monkeypatch, unwritable):
    files = solid_pngs(tmp_path / "imgs", RED)
    root = tmp_path / "root"
    if unwritable == "file-valued":
        root.write_text("not a folder")
    else:  # chmod does not stop root, which the tests may run as: refuse the way the folder's mode would
        for method in ("mkdir", "stat") if unwritable == "unsearchable" else ("mkdir",):
            def refused(self, *args, _real=getattr(pathlib.Path, method), **kwargs):
                if root in self.parents or self == root:
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
                return _real(self, *args, **kwargs)

            monkeypatch.setattr(pathlib.Path, method, refused)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = decode_cache.decode_cached(files, SIZE, root, "k")
    assert np.array_equal(images, expected(RED))
    (w,) = caught
    assert str(root / "cache" / "k") in str(w.message) and "set DGM_DATA_DIR to a writable folder" in str(w.message)
    monkeypatch.undo()
    assert root.is_file() if unwritable == "file-valued" else not root.exists()


# --------------------------------------------------------------------------- killed and concurrent builds
def test_a_build_killed_midway_leaves_a_temporary_that_the_next_build_removes_but_a_live_one_is_kept(tmp_path):
    files = solid_pngs(tmp_path / "imgs", RED)
    pid = os.fork()
    if pid == 0:  # the child is killed (SIGKILL: no clean-up runs) while decoding its third image
        try:
            calls = []
            decode = decode_cache.decode_one
            decode_cache.decode_one = lambda *a: (calls.append(1), len(calls) == 3 and os.kill(os.getpid(), signal.SIGKILL),
                                              decode(*a))[2]
            decode_cache.decode_cached(files, SIZE, tmp_path, "k")
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    (left,) = temporaries(tmp_path / "cache")
    live = tmp_path / "cache" / f".k.{storage._HOST}-{os.getppid()}.0123abcd.tmp"  # a build of a running process
    live.mkdir()
    images = decode_cache.decode_cached(files, SIZE, tmp_path, "k")
    assert np.array_equal(images, expected(RED))
    assert temporaries(tmp_path / "cache") == [live.name]


def test_concurrent_builds_and_loads_of_one_cache_all_return_its_images(tmp_path):
    files = solid_pngs(tmp_path / "imgs", RED[:4])
    threads, rounds = 8, 25
    barrier = threading.Barrier(threads)

    def load(i):
        barrier.wait()  # all threads of a round start together on a cache nobody has built yet
        return decode_cache.decode_cached(files, SIZE, tmp_path / f"round{i // threads}", "k")

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(load, range(threads * rounds)))
    assert all(np.array_equal(r, expected(RED[:4])) for r in results)
    for r in range(rounds):
        assert sorted(p.name for p in (tmp_path / f"round{r}" / "cache").iterdir()) == ["k"]


# --------------------------------------------------------------------------- file modes and names
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_checkpoints_and_caches_get_the_umask_mode_not_0600(tmp_path, monkeypatch, umask):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    previous = os.umask(umask)
    try:
        with storage.atomic_write(tmp_path / "plain.bin") as f:
            f.write(b"x")
        ckpt = checkpoints.save_checkpoint(MLPClassifier((1, 4, 4), 2, hidden=2), "model", {})
        decode_cache.decode_cached(solid_pngs(tmp_path / "imgs", RED[:2]), SIZE, tmp_path, "k")
    finally:
        os.umask(previous)
    cache = tmp_path / "cache" / "k"
    for path in (tmp_path / "plain.bin", ckpt, cache / "images.npy", cache / "meta.json"):
        assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~umask), path
    assert oct(cache.stat().st_mode & 0o777) == oct(0o777 & ~umask)


def test_a_folder_name_too_long_for_a_file_name_gets_a_short_readable_cache_name(tmp_path):
    folder = tmp_path / "nested" / ("very-long-folder-name-" * 11)  # 242 bytes: the cache key would be 273
    assert len(folder.name.encode()) > 240
    solid_pngs(folder, RED)
    d = data.load_dataset(f"image_folder:{folder}", "train", root=tmp_path / "root", image_size=SIZE)
    assert len(d) > 0 and {tuple(c) for c in d.images[:, :, 0, 0].tolist()} <= set(RED)
    (cache,) = (tmp_path / "root" / "cache").iterdir()
    assert cache.name.startswith("image_folder-very-long-folder-name-") and len(cache.name.encode()) <= 120
    again = data.load_dataset(f"image_folder:{folder}", "train", root=tmp_path / "root", image_size=SIZE)
    assert torch.equal(again.images, d.images) and list((tmp_path / "root" / "cache").iterdir()) == [cache]
