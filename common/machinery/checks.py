"""Input checks at the doors: a batch, a count, an image shape, refused with the fix.

The teaching code never calls these inside ``forward``; they run once where data enter a run:
the training loop's first batch (:func:`common.training.train`), :func:`~common.machinery.data.load_dataset`,
FID's extractors, and checkpoint loading.
"""
from __future__ import annotations

import numbers

import torch
from torch import nn


def check_image_shape(image_shape) -> tuple[int, int, int]:
    """``image_shape`` as a (C, H, W) tuple of ints, or a ValueError that says what is expected."""
    shape = tuple(int(d) for d in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W), e.g. (1, 28, 28) or (3, 64, 64); got {tuple(image_shape)}")
    return shape


def _shape(shape) -> str:
    return "(B, " + ", ".join(map(str, shape)) + ")"


def range_hint(lo: float, hi: float, low: float, high: float) -> str:
    """How to bring a batch seen in [lo, hi] into [low, high] (the course's two ranges)."""
    if hi > 2 and lo >= -1e-3:
        return ("0-255 pixels become [0, 1] with x / 255" if low == 0 else
                "0-255 pixels become [-1, 1] with common.dcgan.to_tanh_range(x / 255)")
    if low == 0 and -1 - 1e-3 <= lo < 0 and hi <= 1 + 1e-3:
        return "[-1, 1] images (a generator's Tanh output) become [0, 1] with (x + 1) / 2"
    return (f"rescale it to [{low:g}, {high:g}]; if it was normalized (e.g. (x - mean) / std), undo that"
            + (", then map [0, 1] to [-1, 1] with common.dcgan.to_tanh_range" if low == -1 else ""))


def check_input(x: torch.Tensor, shape: tuple, low: float | None, high: float | None, who: str) -> None:
    """Refuse a batch that ``who`` cannot mean: not a float tensor shaped (B, *shape), or (when
    ``low``/``high`` are given) with values outside [low, high] or NaN. The message names what is
    expected and the usual fix. The range check costs one reduction and, on a GPU, one wait for its
    result: call it at a door (once per run), not on every step."""
    if not torch.is_tensor(x):
        raise TypeError(f"{who} expects a tensor of images shaped {_shape(shape)}, got {type(x).__name__}")
    if tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{who} expects a batch shaped {_shape(shape)}, got {tuple(x.shape)}. Build the model "
                         f"for the data's shape (image_shape=data.image_shape), or load the dataset with "
                         f"image_size=... to resize it")
    if not x.is_floating_point():
        raise TypeError(f"{who} expects float images, got {x.dtype}; uint8 pixels become [0, 1] "
                        "floats with x.float() / 255 (ImageData does this when indexed: x, y = data[idx])")
    if low is None or x.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if lo != lo or hi != hi:
        raise ValueError(f"{who} got a batch that contains NaN")
    tol = 1e-3 * (high - low)
    if lo < low - tol or hi > high + tol:
        raise ValueError(f"{who} expects values in [{low:g}, {high:g}], got a batch in [{lo:.3g}, {hi:.3g}]; "
                         f"{range_hint(lo, hi, low, high)}")


def input_spec(model: nn.Module) -> tuple[tuple, float | None, float | None]:
    """What ``model`` takes: (shape without the batch axis, low, high). Every model of the course
    has ``image_shape``; ``input_range`` is (0, 1) unless the class says otherwise (a GAN's
    discriminator: (-1, 1); a VAE over unbounded latents: (None, None))."""
    low, high = getattr(model, "input_range", (0.0, 1.0))
    return tuple(model.image_shape), low, high


def check_batch(x: torch.Tensor, model: nn.Module) -> None:
    """The door check of a batch for ``model``: shape, dtype and value range (see :func:`check_input`)."""
    shape, low, high = input_spec(model)
    check_input(x, shape, low, high, type(model).__name__)


def check_finite_floats(x: torch.Tensor, who: str = "the training loop") -> None:
    """The door check when no model is named: a float tensor without NaN or infinite values."""
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"{who} expects float tensors, got {getattr(x, 'dtype', type(x).__name__)}; uint8 "
                        "pixels become [0, 1] floats with x.float() / 255 (ImageData does this when indexed)")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{who} got a first batch that contains NaN or infinite values")


def check_count(n, what: str = "n") -> int:
    """``n`` as an int >= 1, or a TypeError/ValueError naming ``what``."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{what} must be a whole number >= 1, got {n!r} ({type(n).__name__})")
    if n < 1:
        raise ValueError(f"{what} must be >= 1, got {n}")
    return int(n)


def check_labels(model: nn.Module, n: int, labels) -> torch.Tensor | None:
    """``labels`` for ``model.sample(n, labels)`` as a long tensor on its device, or the error that says what a
    conditional (or unconditional) model takes."""
    name = type(model).__name__
    if not model.conditional:
        if labels is not None:
            raise ValueError(f"{name} is unconditional; call sample(n) without labels")
        return None
    example = f"e.g. sample({n}, labels=torch.arange({n}) % {model.n_classes})"
    if labels is None:
        raise ValueError(f"{name} is conditional; pass one class index per sample, {example}")
    labels = torch.as_tensor(labels, device=model.device)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got {labels.dtype}; {example}")
    if labels.shape != (n,):
        raise ValueError(f"labels must be one class index per sample, shaped ({n},); got shape "
                         f"{tuple(labels.shape)}; {example}")
    lo, hi = (int(v) for v in torch.aminmax(labels))
    if lo < 0 or hi >= model.n_classes:
        raise ValueError(f"labels must be in [0, {model.n_classes - 1}] ({model.n_classes} classes), "
                         f"got values from {lo} to {hi}")
    return labels.long()

