"""Building blocks shared by the course's models.

:class:`GenerativeModel` fixes the contract every trained generator keeps, so that notebook 05
(and any script) can measure a model it did not train: ``sample(n, labels=None)`` returns ``n``
images in [0, 1] shaped (n, C, H, W) on the model's device.

:func:`resolution_stages` is how every conv model derives its layers from ``image_shape``:
the same class serves 28x28 grey and 64x64 colour.
"""
from __future__ import annotations

import copy
import functools
import inspect
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .machinery.checks import check_count, check_image_shape, check_labels


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


class Module(nn.Module):
    """``nn.Module`` plus one thing: it records the arguments it was built with as ``self.hparams``
    (defaults included), so a checkpoint can rebuild it with ``cls(**hparams)``. Every model of the
    course derives from it; nothing else changes."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_arguments(cls.__init__)


def _recording_arguments(init):
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        init(self, *args, **kwargs)      # a subclass's wrapper returns last, so its arguments win
        hparams = copy.deepcopy(dict(list(bound.arguments.items())[1:]))   # without self
        self.hparams = {k: tuple(v) if isinstance(v, list) else v for k, v in hparams.items()}

    return __init__


class GenerativeModel(Module):
    """Base class of the course's generators. Subclasses set ``conditional`` and ``image_shape``
    and implement ``_sample(n, labels)``."""

    conditional: bool = False
    n_classes: int = 0
    image_shape: tuple[int, int, int]
    hparams: dict

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    sample_chunk = 1024  # sample() generates at most this many images per forward pass

    @torch.no_grad()
    def sample(self, n: int, labels=None) -> torch.Tensor:
        """``n`` images in [0, 1], shaped (n, C, H, W); ``labels`` (one integer class per sample)
        only for conditional models. Large ``n`` is generated in chunks of ``sample_chunk``."""
        n = check_count(n, "sample(n): n")
        labels = check_labels(self, n, labels)
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
