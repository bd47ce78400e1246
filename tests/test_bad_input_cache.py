"""The decode cache of image folders and the atomic writes of storage under faults: files rewritten
in place, a full or unwritable disk, a build killed midway, builds racing in threads, a shared
folder's umask and folder names too long for a file name. Each test's name says what it guards."""
import os

import numpy as np
import pytest
from PIL import Image

from common.machinery import checkpoints, folders, storage
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


# --------------------------------------------------------------------------- file modes and names
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_checkpoints_and_caches_get_the_umask_mode_not_0600(tmp_path, monkeypatch, umask):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    previous = os.umask(umask)
    try:
        with storage.atomic_write(tmp_path / "plain.bin") as f:
            f.write(b"x")
        ckpt = checkpoints.save_checkpoint(MLPClassifier((1, 4, 4), 2, hidden=2), "model", {})
        folders.decode_cached(solid_pngs(tmp_path / "imgs", RED[:2]), SIZE, tmp_path, "k")
    finally:
        os.umask(previous)
    cache = tmp_path / "cache" / "k"
    for path in (tmp_path / "plain.bin", ckpt, cache / "images.npy", cache / "meta.json"):
        assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~umask), path
    assert oct(cache.stat().st_mode & 0o777) == oct(0o777 & ~umask)
