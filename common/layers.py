"""Building blocks shared by the course's models.

:class:`GenerativeModel` fixes the contract every trained generator keeps, so that notebook 05
(and any script) can measure a model it did not train: ``sample(n, labels=None)`` returns ``n``
images in [0, 1] shaped (n, C, H, W) on the model's device.

:func:`resolution_stages` is how every conv model derives its layers from ``image_shape``:
the same class serves 28x28 grey and 64x64 colour.
"""
from __future__ import annotations

import numbers
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def eval_mode(model: nn.Module | None) -> Iterator[None]:
    """Run a block with ``model`` in eval mode (batch norm uses running statistics), then put it
    back in the mode it was in, even if the block raises. ``None`` does nothing."""
    if model is None:
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Run a block with ``model``'s weights frozen (``requires_grad`` False), then unfreeze them,
    even if the block raises. A GAN step freezes D while G learns: backward then passes through D
    to G's weights without computing gradients for D's own, which G's update does not use."""
    model.requires_grad_(False)
    try:
        yield
    finally:
        model.requires_grad_(True)


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
                "0-255 pixels become [-1, 1] with common.gan.to_tanh_range(x / 255)")
    if low == 0 and -1 - 1e-3 <= lo < 0 and hi <= 1 + 1e-3:
        return "[-1, 1] images (a generator's Tanh output) become [0, 1] with (x + 1) / 2"
    return (f"rescale it to [{low:g}, {high:g}]; if it was normalized (e.g. (x - mean) / std), undo that"
            + (", then map [0, 1] to [-1, 1] with common.gan.to_tanh_range" if low == -1 else ""))


def check_input(x: torch.Tensor, shape: tuple, low: float | None, high: float | None, who: str,
                model: nn.Module | None = None) -> None:
    """Refuse a batch that ``who`` cannot mean: not a float tensor shaped (B, *shape), or (when
    ``low``/``high`` are given) with values outside [low, high] or NaN. The message names what is
    expected and the usual fix.

    The range check costs one small reduction and, on a GPU, one wait for its result. A model
    that passes itself as ``model`` has it done on every call in eval mode but, in training mode,
    only on the first batch it is trained on: a training run feeds every batch through the same
    pipeline, and a per-step wait would slow training (shape and dtype are checked every call)."""
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
    training = model is not None and model.training
    if training and getattr(model, "_range_checked", False):
        return
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if lo != lo or hi != hi:
        raise ValueError(f"{who} got a batch that contains NaN")
    tol = 1e-3 * (high - low)
    if lo < low - tol or hi > high + tol:
        raise ValueError(f"{who} expects values in [{low:g}, {high:g}], got a batch in [{lo:.3g}, {hi:.3g}]; "
                         f"{range_hint(lo, hi, low, high)}")
    if training:
        model._range_checked = True


def check_count(n, what: str = "n") -> int:
    """``n`` as an int >= 1, or a TypeError/ValueError naming ``what``."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{what} must be a whole number >= 1, got {n!r} ({type(n).__name__})")
    if n < 1:
        raise ValueError(f"{what} must be >= 1, got {n}")
    return int(n)


def resolution_stages(image_shape) -> list[int]:
    """The side lengths a conv model passes through, coarsest first: 28 -> [7, 14, 28],
    32 -> [4, 8, 16, 32], 64 -> [4, 8, 16, 32, 64] (the DCGAN paper's 64x64 stages).

    The size is halved while it is even and the half is at least 4. Encoders and discriminators
    walk the list backwards with stride-2 convolutions, generators and decoders forwards.
    """
    c, h, w = check_image_shape(image_shape)
    if h != w:
        raise ValueError(f"conv models need square images, got {h}x{w}; load the dataset with "
                         "image_size=... to centre-crop and resize it")
    sizes = [h]
    while sizes[0] % 2 == 0 and sizes[0] // 2 >= 4:
        sizes.insert(0, sizes[0] // 2)
    if len(sizes) < 2:
        raise ValueError(f"image size {h} cannot be halved down to a coarse grid; use a size divisible "
                         "by 4 such as 28, 32 or 64 (load the dataset with image_size=...)")
    return sizes


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> uint8 on the CPU: how snapshots are stored in a history (4x smaller)."""
    return images.detach().clamp(0, 1).mul(255).round().to("cpu", torch.uint8)


class GenerativeModel(nn.Module):
    """Base class of the course's generators. Subclasses set ``conditional`` and ``image_shape``
    and implement ``_sample(n, labels)``; ``hparams`` holds their constructor arguments (recorded
    by :func:`common.checkpoints.register`)."""

    conditional: bool = False
    n_classes: int = 0
    image_shape: tuple[int, int, int]
    hparams: dict

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    sample_chunk = 1024  # sample() generates at most this many images per forward pass

    def _check_labels(self, n: int, labels) -> torch.Tensor | None:
        name = type(self).__name__
        if not self.conditional:
            if labels is not None:
                raise ValueError(f"{name} is unconditional; call sample(n) without labels")
            return None
        example = f"e.g. sample({n}, labels=torch.arange({n}) % {self.n_classes})"
        if labels is None:
            raise ValueError(f"{name} is conditional; pass one class index per sample, {example}")
        labels = torch.as_tensor(labels, device=self.device)
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"labels must be integer class indices, got {labels.dtype}; {example}")
        if labels.shape != (n,):
            raise ValueError(f"labels must be one class index per sample, shaped ({n},); got shape "
                             f"{tuple(labels.shape)}; {example}")
        lo, hi = (int(v) for v in torch.aminmax(labels))
        if lo < 0 or hi >= self.n_classes:
            raise ValueError(f"labels must be in [0, {self.n_classes - 1}] ({self.n_classes} classes), "
                             f"got values from {lo} to {hi}")
        return labels.long()

    @torch.no_grad()
    def sample(self, n: int, labels=None) -> torch.Tensor:
        """``n`` images in [0, 1], shaped (n, C, H, W); ``labels`` (one integer class per sample)
        only for conditional models. Large ``n`` is generated in chunks of ``sample_chunk``."""
        n = check_count(n, "sample(n): n")
        labels = self._check_labels(n, labels)
        sizes = [min(self.sample_chunk, n - i) for i in range(0, n, self.sample_chunk)]
        chunks = [None] * len(sizes) if labels is None else labels.split(self.sample_chunk)
        with eval_mode(self):
            out = [self._sample(k, y).clamp(0, 1) for k, y in zip(sizes, chunks)]
        return out[0] if len(out) == 1 else torch.cat(out)

    def _sample(self, n: int, labels: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def mlp_trunk(in_features: int, hidden: int) -> nn.Sequential:
    """Flatten, then one hidden layer: the encoder trunk of the MLP VAE and the MLP classifier."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU())


def channels_last_on_cpu(*models: nn.Module) -> None:
    """On the CPU, store the models' conv weights channels-last (NHWC), in place.

    PyTorch's CPU convolutions (oneDNN) run faster in that layout, most of all a conv with few
    output channels (a generator's last 3x3 conv to 1 channel ran 3.5x faster). The conditional
    GAN steps of notebook 04 ran 1.2-1.4x faster with it on a 2-core CPU. Results are the same up
    to float rounding (another order of summation). On other devices nothing changes: we did not
    measure it there."""
    for m in models:
        if next(m.parameters()).device.type == "cpu":
            m.to(memory_format=torch.channels_last)
