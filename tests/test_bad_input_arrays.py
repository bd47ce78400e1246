"""Array files from outside (issue 27): dSprites' .npz and SVHN's .mat. Values outside each format's
specification are refused with the fix instead of wrapping or zeroing; a damaged or wrong .npz is
one clear error naming the file; a dSprites ``limit`` bounds the memory a load uses."""
import io
import pickle
import re
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch

from common.machinery import data, dsprites

OFFICIAL = re.escape("github.com/deepmind/dsprites-dataset")


# --------------------------------------------------------------------------- dSprites (.npz)


def factor_classes(n):
    """(n, 6) latents_classes as in the official file (colour column first) for n spread-out images."""
    idx = torch.arange(0, dsprites.N_IMAGES, dsprites.N_IMAGES // n)[:n]
    return torch.cat([torch.zeros(n, 1, dtype=torch.long), dsprites.factors_of(idx)], 1).numpy()


def squares(n, seed=0):
    """(n, 64, 64) uint8 images of 0/1: one square each, at a random place (cheap to make, unlike render)."""
    rng = np.random.default_rng(seed)
    imgs = np.zeros((n, 64, 64), np.uint8)
    for img, (r, c) in zip(imgs, rng.integers(0, 48, (n, 2))):
        img[r:r + 16, c:c + 16] = 1
    return imgs


def write_dsprites(root, imgs, classes=None, compressed=False):
    (root / "dsprites").mkdir(exist_ok=True)
    path = root / "dsprites" / dsprites.NPZ_NAME
    classes = factor_classes(len(imgs)) if classes is None else classes
    (np.savez_compressed if compressed else np.savez)(path, imgs=imgs, latents_classes=classes,
                                                      latents_values=classes.astype(float))
    return path


@pytest.mark.parametrize("dtype, one", [(np.uint8, 255), (np.float32, 1.0), (np.float64, 1.0), (np.int16, 1)],
                         ids=["uint8 0/255", "float32 0..1", "float64 0..1", "int16"])
def test_dsprites_images_outside_uint8_zero_one_are_refused_with_the_fix(tmp_path, dtype, one):
    path = write_dsprites(tmp_path, squares(20).astype(dtype) * dtype(one))
    with pytest.raises(data.CorruptDatasetError) as err:
        data.load_dataset("dsprites", "train", root=tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "uint8 of 0 and 1" in msg
    assert (f"{np.dtype(dtype)} of 0 to 255" if one == 255 else np.dtype(dtype).name) in msg   # what was found
    assert re.search(OFFICIAL, msg) and "astype(np.uint8)" in msg                                # the two fixes


def test_dsprites_factor_classes_must_be_whole_numbers_within_each_factor(tmp_path):
    classes = factor_classes(20)
    classes[:, 4] = 32                                   # pos_x has 32 classes, 0-31
    path = write_dsprites(tmp_path, squares(20), classes)
    with pytest.raises(data.CorruptDatasetError, match=r"pos_x classes run from 0 to 31, found 32 to 32") as err:
        data.load_dataset("dsprites", "train", root=tmp_path)
    assert str(path) in str(err.value) and re.search(OFFICIAL, str(err.value))
    write_dsprites(tmp_path, squares(20), factor_classes(20) + 0.5)   # would be cut to whole numbers silently
    with pytest.raises(data.CorruptDatasetError, match=r"latents_classes must be integers, found float64"):
        data.load_dataset("dsprites", "train", root=tmp_path)


def npy_bytes(header: dict, data: bytes = b"", header_len: int | None = None) -> bytes:
    """A .npy file of version 1.0 with any header (padded to ``header_len``) and data."""
    text = repr(header).encode("latin1")
    text = text.ljust((header_len or len(text) + 1) - 1) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


def npz_with(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in members.items():
            z.writestr(name, raw)


def fault(kind, path):
    """Write one kind of bad file at ``path``."""
    classes = io.BytesIO()
    np.save(classes, factor_classes(4))
    if kind == "object array":
        np.savez(path, imgs=np.array([None] * 4, dtype=object), latents_classes=factor_classes(4))
    elif kind == "html page":
        path.write_text("<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body></body></html>\n")
    elif kind == "truncated":
        np.savez(path, imgs=squares(4), latents_classes=factor_classes(4))
        path.write_bytes(path.read_bytes()[:9_000])                    # of 17,100 bytes
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "header too long":          # numpy refuses it and suggests allow_pickle=True
        npz_with(path, {"imgs.npy": npy_bytes({"descr": "|u1", "fortran_order": False, "shape": (4, 64, 64)},
                                              bytes(4 * 4096), header_len=60_000),
                        "latents_classes.npy": classes.getvalue()})
    elif kind == "header declaring 4 GB":    # numpy would read 4 GB before its limit applies
        npz_with(path, {"imgs.npy": b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**32 - 1) + b"{'descr': '|u1'",
                        "latents_classes.npy": classes.getvalue()})
    elif kind == "huge declared shape":
        npz_with(path, {"imgs.npy": npy_bytes({"descr": "|u1", "fortran_order": False, "shape": (10**9, 64, 64)},
                                              bytes(4 * 4096)),
                        "latents_classes.npy": classes.getvalue()})
    elif kind == "shape beyond its data":
        npz_with(path, {"imgs.npy": npy_bytes({"descr": "|u1", "fortran_order": False, "shape": (400, 64, 64)},
                                              bytes(4 * 4096)),
                        "latents_classes.npy": classes.getvalue()})


@pytest.mark.parametrize("kind, says", [
    ("object array", r"imgs holds Python objects"),
    ("html page", r"is a web page .*'<!DOCTYPE html>.*not the \.npz"),
    ("truncated", r"is truncated or damaged"),
    ("empty", r"is empty \(0 bytes\)"),
    ("header too long", r"imgs\.npy has a damaged \.npy header \(it declares a header of 60,000 bytes"),
    ("header declaring 4 GB", r"imgs\.npy has a damaged \.npy header \(it declares a header of 4,294,967,295 bytes"),
    ("huge declared shape", r"imgs declares 1,000,000,000 images, but dSprites has 737,280"),
    ("shape beyond its data", r"imgs declares shape \(400, 64, 64\) \(1,638,400 bytes\), but holds 16,384 bytes"),
])
def test_damaged_dsprites_files_give_one_error_naming_the_file_and_the_fix(tmp_path, kind, says):
    (tmp_path / "dsprites").mkdir()
    path = tmp_path / "dsprites" / dsprites.NPZ_NAME
    fault(kind, path)
    with pytest.raises(data.CorruptDatasetError, match=says) as err:
        data.load_dataset("dsprites", "train", root=tmp_path, limit=3)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "delete it" in msg and re.search(OFFICIAL, msg)
    assert "allow_pickle" not in msg and err.value.__cause__ is None


class Payload:
    """Unpickling this creates the file ``marker``: code in a pickle runs when it is loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_an_object_array_in_the_dsprites_file_is_never_unpickled(tmp_path):
    marker = tmp_path / "pickle-ran"
    (tmp_path / "dsprites").mkdir()
    path = tmp_path / "dsprites" / dsprites.NPZ_NAME
    np.savez(path, imgs=np.array([Payload(marker)], dtype=object), latents_classes=factor_classes(1))
    assert pickle.dumps(Payload(marker))                    # the payload is a real pickle
    with pytest.raises(data.CorruptDatasetError, match="never unpickled"):
        data.load_dataset("dsprites", "train", root=tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
@pytest.mark.parametrize("split, limit", [("train", 7), ("test", None), ("train", None)])
def test_dsprites_reads_the_rows_of_its_split_and_limit(tmp_path, compressed, split, limit, monkeypatch):
    monkeypatch.setattr(dsprites, "CHUNK_BYTES", 5 * 4096, raising=False)     # rows arrive over many chunks
    n = 60
    imgs, classes = squares(n), factor_classes(n)
    write_dsprites(tmp_path, imgs, classes, compressed)
    d = data.load_dataset("dsprites", split, root=tmp_path, limit=limit)
    rows = dsprites.split_indices(split, n)[:limit]
    assert torch.equal(d.images[:, 0], torch.from_numpy(imgs[rows]) * 255)
    assert torch.equal(d.attributes, torch.from_numpy(classes[rows, 1:]))
    assert torch.equal(d.labels, torch.from_numpy(classes[rows, 1]))


@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
def test_dsprites_limit_bounds_the_memory_a_load_uses(tmp_path, compressed):
    n = 2048                                             # imgs: 8 MiB in memory
    write_dsprites(tmp_path, squares(n), compressed=compressed)
    data.load_dataset("dsprites", "train", root=tmp_path, limit=10)   # imports and first-call caches
    tracemalloc.start()
    try:
        d = data.load_dataset("dsprites", "train", root=tmp_path, limit=10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(d) == 10
    assert peak < n * 64 * 64 / 3, f"peak {peak / 2**20:.1f} MiB to load 10 of {n} images"


# --------------------------------------------------------------------------- SVHN (.mat)


def write_svhn(root, x, y):
    from scipy.io import savemat
    (root / "SVHN").mkdir(exist_ok=True)
    path = root / "SVHN" / "test_32x32.mat"
    savemat(path, {"X": x, "y": y})
    return path


@pytest.mark.parametrize("x, found", [
    (np.linspace(0, 1, 32 * 32 * 3 * 4).reshape(32, 32, 3, 4), r"float64 from 0 to 1"),        # would be all zeros
    (np.arange(32 * 32 * 3 * 4, dtype=np.int16).reshape(32, 32, 3, 4) - 100, r"int16 from -100 to 12187"),  # wraps
    (np.full((32, 32, 3, 4), 200.0, np.float32), r"float32 from 200 to 200"),
], ids=["float 0..1", "int16", "float32 0..255"])
def test_svhn_images_that_are_not_uint8_are_refused_with_the_fix(tmp_path, x, found):
    path = write_svhn(tmp_path, x, np.array([[1], [2], [3], [10]], np.uint8))
    with pytest.raises(data.CorruptDatasetError, match=found) as err:
        data.load_dataset("svhn", "test", root=tmp_path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "X must be uint8 (0-255)" in msg
    assert "delete it" in msg and "astype(np.uint8)" in msg          # fetch it again, or convert yours


def test_svhn_labels_must_be_whole_numbers(tmp_path):
    path = write_svhn(tmp_path, np.zeros((32, 32, 3, 2), np.uint8), np.array([[1.5], [2.0]]))
    with pytest.raises(data.CorruptDatasetError, match=r"labels must be whole numbers 1-10, found 1\.5") as err:
        data.load_dataset("svhn", "test", root=tmp_path)
    assert str(path) in str(err.value)
    write_svhn(tmp_path, np.zeros((32, 32, 3, 2), np.uint8), np.array([[1.0], [10.0]]))   # MATLAB's doubles
    assert data.load_dataset("svhn", "test", root=tmp_path).labels.tolist() == [1, 0]
