"""dSprites (Matthey et al., 2017): 64x64 binary images of one white shape, made from known factors.

The published factors: shape (square, ellipse, heart), scale (6 values linearly spaced in
[0.5, 1]), orientation (40 values in [0, 2 pi]), position x and y (32 values each in [0, 1]).
Every combination appears once: 3 * 6 * 40 * 32 * 32 = 737,280 images, indexed as in the
official file (the last factor, position y, varies fastest).

:func:`read_npz` reads the official file when it is in ``data/``; otherwise :func:`render`
generates the same factor grid procedurally. The generated images are *our* rendering of those
factors (shape outlines, sprite size and the pixel grid of positions are our choices, stated
below), so results on them are reported as ``dsprites-procedural``, never as dSprites.
Used by notebook 01 (latent traversals) through :func:`common.machinery.data.load_dataset`.
"""
from __future__ import annotations

import io
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch

from .sources import CorruptDatasetError

NPZ_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
URL = f"https://github.com/deepmind/dsprites-dataset/raw/master/{NPZ_NAME}"  # where it is published
MAX_HEADER_BYTES = 10_000  # of a .npy header; numpy's limit too (the official file's are 128 bytes)
CHUNK_BYTES = 1 << 18  # read_npz holds about three times this of the file at once, beside the rows it keeps
SHAPES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
N_IMAGES = math.prod(FACTOR_SIZES)  # 737,280
SIZE = 64
TEST_FRACTION, SPLIT_SEED = 0.1, 0  # dSprites has no official split: a fixed random 10 % is "test"

# Our rendering: at scale 1 the square is 20 px wide (half side 10 px); position 0 puts the
# sprite's centre at pixel 16 and position 1 at pixel 47, one pixel per step, so a rotated
# sprite of scale 1 (half diagonal 14 px) always stays inside the 64 x 64 frame.
HALF_SIDE, FIRST_CENTRE = 10.0, 16


def factor_values() -> dict[str, torch.Tensor]:
    """The value of each factor's classes, as published."""
    return {"shape": torch.arange(3.0), "scale": torch.linspace(0.5, 1.0, 6),
            "orientation": torch.linspace(0, 2 * math.pi, 40),
            "pos_x": torch.linspace(0, 1, 32), "pos_y": torch.linspace(0, 1, 32)}


def split_indices(split: str, n: int = N_IMAGES) -> np.ndarray:
    """Indices of ``split`` ("train": 90 %, "test": 10 %) in a fixed random order."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test = round(n * TEST_FRACTION)
    return order[:n_test] if split == "test" else order[n_test:]


def factors_of(indices: torch.Tensor) -> torch.Tensor:
    """(N, 5) factor classes (shape, scale, orientation, pos_x, pos_y) of image indices."""
    out, rest = [], indices.long()
    for size in reversed(FACTOR_SIZES):
        out.append(rest % size)
        rest = rest // size
    return torch.stack(out[::-1], 1)


def _inside(shape: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Is (u, v) inside the unit-sized shape? u points right, v up; the shape spans about [-1, 1]."""
    if shape == 0:                                      # square of side 2
        return torch.maximum(u.abs(), v.abs()) <= 1
    if shape == 1:                                      # ellipse, axes 1 and 1/2
        return u**2 + (2 * v) ** 2 <= 1
    x, y = u * 1.139, v * 1.118 + 0.118                 # heart curve, its box mapped onto [-1, 1]^2
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0


def sprites(device: torch.device | str = "cpu") -> torch.Tensor:
    """Every (shape, scale, orientation) sprite centred at pixel 32: bool (3, 6, 40, 64, 64)."""
    values = factor_values()
    c = torch.arange(SIZE, dtype=torch.float64, device=device) + 0.5 - SIZE / 2  # pixel centres
    u, v = c.view(1, -1), -c.view(-1, 1)                # columns go right, rows go down (v up)
    out = torch.zeros(3, 6, 40, SIZE, SIZE, dtype=torch.bool, device=device)
    for k, scale in enumerate(values["scale"].tolist()):
        for r, theta in enumerate(values["orientation"].tolist()):
            cos, sin = math.cos(theta), math.sin(theta)
            ur, vr = (u * cos + v * sin) / (HALF_SIDE * scale), (-u * sin + v * cos) / (HALF_SIDE * scale)
            for s in range(3):
                out[s, k, r] = _inside(s, ur, vr)       # rotating the frame by -theta turns the shape by theta
    return out


def render(factors: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Images of the given factor classes (N, 5): uint8 (N, 1, 64, 64), 0 or 255, on the factors'
    device. Each image is its sprite moved by whole pixels (one per position step)."""
    device = factors.device
    table = sprites(device)
    pad = FIRST_CENTRE
    padded = torch.nn.functional.pad(table.view(-1, SIZE, SIZE), (pad, pad, pad, pad))  # room to shift
    grid = torch.arange(SIZE, device=device)
    out = torch.empty(len(factors), 1, SIZE, SIZE, dtype=torch.uint8, device=device)
    for i in range(0, len(factors), chunk):
        f = factors[i:i + chunk]
        k = (f[:, 0] * 6 + f[:, 1]) * 40 + f[:, 2]      # which sprite
        dx = f[:, 3] + FIRST_CENTRE - SIZE // 2           # shift of the centre, -16 .. 15 px
        dy = f[:, 4] + FIRST_CENTRE - SIZE // 2
        rows = (grid.view(1, -1) - dy.view(-1, 1) + pad)[:, :, None]   # (B, 64, 1)
        cols = (grid.view(1, -1) - dx.view(-1, 1) + pad)[:, None, :]   # (B, 1, 64)
        out[i:i + chunk, 0] = padded[k.view(-1, 1, 1), rows, cols].to(torch.uint8) * 255
    return out


# The official file, read without np.load: that would load a whole 3 GB array to keep `limit` rows,
# and its errors on a bad file suggest allow_pickle=True.
REFETCH = f"delete it and download it again from {URL} (without it, the images are generated from their factors)"


def _open_zip(path: Path) -> zipfile.ZipFile:
    """The .npz as a zip, or an error that says what the file is instead (a web page, nothing, a part)."""
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        why = str(err)
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise CorruptDatasetError(f"{path} is empty (0 bytes): a download that failed; {REFETCH}")
    if head.lstrip()[:1] == b"<":
        raise CorruptDatasetError(f"{path} is a web page (it starts with {head.lstrip()[:30]!r}), not the .npz: "
                                  f"a download saved the page instead of the file; {REFETCH}")
    if head[:2] == b"PK":
        raise CorruptDatasetError(f"{path} is truncated or damaged: its zip directory cannot be read ({why}); {REFETCH}")
    raise CorruptDatasetError(f"{path} is not a .npz (zip) file (it starts with {head[:16]!r}); {REFETCH}")


@dataclass
class _Array:
    """One array of the .npz as its .npy header declares it: the shape and dtype, and where its data starts."""
    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int


def _header(z: zipfile.ZipFile, path: Path, key: str) -> _Array:
    """The header of the member ``key.npy``, checked against the member's size; no data is read and
    nothing is unpickled."""
    try:
        info = z.getinfo(f"{key}.npy")
    except KeyError:
        raise CorruptDatasetError(f"{path} has no {key!r} array, so it is not the dSprites file; {REFETCH}") from None
    try:
        with z.open(info) as f:
            shape, fortran_order, dtype, offset = _npy_header(f)
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise CorruptDatasetError(f"{path}: its {key}.npy has a damaged .npy header ({str(err).splitlines()[0]}); "
                                  f"{REFETCH}") from None
    nbytes, held = math.prod(shape) * dtype.itemsize, info.file_size - offset
    if dtype.hasobject:
        problem = ("holds Python objects (dtype object), which only unpickling could read (it is never unpickled "
                   "here: a pickle can run code)")
    elif fortran_order and len(shape) > 1:
        problem = "is stored in Fortran order, not row by row as published"
    elif shape and shape[0] > N_IMAGES:
        problem = f"declares {shape[0]:,} images, but dSprites has {N_IMAGES:,}"
    elif nbytes != held:
        problem = f"declares shape {shape} ({nbytes:,} bytes), but holds {held:,} bytes"
    else:
        return _Array(key, shape, dtype, offset)
    raise CorruptDatasetError(f"{path}: {key} {problem}; {REFETCH}")


def _npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, offset of the data) of a .npy stream of version 1.0 or 2.0. The
    header's declared length is checked before it is read: numpy reads all of it (up to 4 GB in
    version 2.0) before its own limit of 10,000 bytes applies."""
    start = f.read(12)     # magic (6 bytes), version (2), header length (2 or 4), then the header
    if len(start) < 12 or start[:6] != b"\x93NUMPY" or start[6:8] not in (b"\x01\x00", b"\x02\x00"):
        raise ValueError(f"not a .npy file of version 1.0 or 2.0 (it starts with {start[:8]!r})")
    v1 = start[6] == 1
    length = struct.unpack("<H" if v1 else "<I", start[8:10] if v1 else start[8:12])[0]
    if length > MAX_HEADER_BYTES:
        raise ValueError(f"it declares a header of {length:,} bytes, over numpy's limit of {MAX_HEADER_BYTES:,}")
    offset = (10 if v1 else 12) + length
    head = io.BytesIO(start + f.read(offset - len(start)))
    np.lib.format.read_magic(head)
    read = np.lib.format.read_array_header_1_0 if v1 else np.lib.format.read_array_header_2_0
    return (*read(head), offset)


def _read_rows(z: zipfile.ZipFile, path: Path, array: _Array, rows: np.ndarray) -> np.ndarray:
    """``array[rows]``, holding about CHUNK_BYTES of the file's data at a time besides the rows kept:
    a compressed member can only be read from its start, so it is read in chunks, in order, and the
    wanted rows are copied out of each. Reading stops after the last wanted row."""
    row_shape = array.shape[1:]
    row_bytes = math.prod(row_shape) * array.dtype.itemsize
    per_chunk = max(1, CHUNK_BYTES // max(1, row_bytes))
    out = np.empty((len(rows),) + row_shape, array.dtype)
    order = np.argsort(rows, kind="stable")
    wanted = rows[order]                                     # ascending; out[order[i]] is row wanted[i]
    done = start = 0
    try:
        with z.open(f"{array.key}.npy") as f:
            f.seek(array.offset)
            while done < len(wanted):
                n = min(per_chunk, array.shape[0] - start)
                chunk = np.frombuffer(f.read(n * row_bytes), array.dtype).reshape((n,) + row_shape)
                stop = int(np.searchsorted(wanted, start + n))    # wanted[done:stop] lie in this chunk
                out[order[done:stop]] = chunk[wanted[done:stop] - start]
                done, start = stop, start + n
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:   # a short read cannot be reshaped
        raise CorruptDatasetError(f"{path}: its {array.key} array is truncated or damaged ({err}); {REFETCH}") from None
    return out


def read_npz(path: str | Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The official file's ``imgs`` (M, 64, 64) of 0/1 and factor classes (M, 5), without the colour
    column, of the first ``limit`` images of ``split`` (:func:`split_indices`; all of them for
    ``None``). Only those rows are kept in memory (the whole file holds 3 GB of images), and
    nothing is unpickled (its ``metadata`` entry, a pickle, is never opened).

    The file must be as published: ``imgs`` uint8 of 0 and 1 (a file of 0/255 is refused too, not
    converted), ``latents_classes`` (N, 6) integers within each factor's classes. Anything else
    is a :class:`CorruptDatasetError` naming the file and the fix; values are checked on the rows read."""
    path = Path(path)
    with _open_zip(path) as z:
        images, classes = _header(z, path, "imgs"), _header(z, path, "latents_classes")
        n = images.shape[0] if images.shape else 0
        if len(images.shape) != 3 or images.shape[1:] != (SIZE, SIZE) or classes.shape != (n, 6):
            raise CorruptDatasetError(f"{path}: expected imgs (N, 64, 64) and latents_classes (N, 6), got "
                                      f"{images.shape} and {classes.shape}; {REFETCH}")
        _check_dtypes(path, images.dtype, classes.dtype)
        rows = split_indices(split, n)[:limit]
        found, factors = _read_rows(z, path, images, rows), _read_rows(z, path, classes, rows)[:, 1:]
    _check_values(path, found, factors)
    return found, factors.astype(np.int64)


def _convert(path: Path) -> str:
    return (f"download the official file from {URL}, or convert yours: np.savez({path.name!r}, "
            "imgs=(imgs > imgs.max() / 2).astype(np.uint8), latents_classes=latents_classes)")


def _check_dtypes(path: Path, images: np.dtype, classes: np.dtype) -> None:
    if images != np.uint8:       # float 0..1 would read as zeros, wider integers would wrap
        raise CorruptDatasetError(f"{path}: imgs must be uint8 of 0 and 1 (the published format), found "
                                  f"{images.name}; {_convert(path)}")
    if classes.kind not in "iu":
        raise CorruptDatasetError(f"{path}: latents_classes must be integers, found {classes.name}; {REFETCH}")


def _check_values(path: Path, images: np.ndarray, factors: np.ndarray) -> None:
    if images.size and images.max() > 1:        # e.g. 0/255: times 255 it would wrap
        raise CorruptDatasetError(f"{path}: imgs must be uint8 of 0 and 1 (the published format), found "
                                  f"{images.dtype} of {images.min()} to {images.max()}; {_convert(path)}")
    # The shape (column 0) is the label, which load_dataset checks against the classes for every source.
    for k in range(1, len(FACTOR_NAMES)):
        low, high = (int(factors[:, k].min()), int(factors[:, k].max())) if len(factors) else (0, 0)
        if low < 0 or high >= FACTOR_SIZES[k]:
            raise CorruptDatasetError(f"{path}: {FACTOR_NAMES[k]} classes run from 0 to {FACTOR_SIZES[k] - 1}, "
                                      f"found {low} to {high}; {REFETCH}")
