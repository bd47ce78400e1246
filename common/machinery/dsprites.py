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

import math
from pathlib import Path

import numpy as np
import torch

NPZ_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
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


def read_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The official file's ``imgs`` (N, 64, 64) of 0/1 and factor classes (N, 5), without the
    colour column. Read without unpickling (its ``metadata`` entry, a pickle, is never opened)."""
    with np.load(path, allow_pickle=False) as f:
        try:
            images, classes = f["imgs"], f["latents_classes"]
        except KeyError as err:
            raise ValueError(f"{path} has no {err} array; it is not the dSprites file, delete it") from err
    if images.ndim != 3 or images.shape[1:] != (SIZE, SIZE) or classes.shape != (len(images), 6):
        raise ValueError(f"{path}: expected imgs (N, 64, 64) and latents_classes (N, 6), "
                         f"got {images.shape} and {classes.shape}")
    return images.astype(np.uint8), classes[:, 1:].astype(np.int64)
