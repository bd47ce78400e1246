"""Building blocks shared by the course's models.

:class:`GenerativeModel` fixes the contract every trained generator keeps, so that notebook 05
(and any script) can measure a model it did not train: ``sample(n, labels=None)`` returns ``n``
images in [0, 1] shaped (n, C, H, W) on the model's device.

:func:`resolution_stages` is how every conv model derives its layers from ``image_shape``:
the same class serves 28x28 grey and 64x64 colour.
"""
from __future__ import annotations

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


def check_image_shape(image_shape) -> tuple[int, int, int]:
    """``image_shape`` as a (C, H, W) tuple of ints, or a ValueError that says what is expected."""
    shape = tuple(int(d) for d in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W), e.g. (1, 28, 28) or (3, 64, 64); got {tuple(image_shape)}")
    return shape


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

    def _check_labels(self, n: int, labels) -> torch.Tensor | None:
        if not self.conditional:
            if labels is not None:
                raise ValueError(f"{type(self).__name__} is unconditional; call sample(n) without labels")
            return None
        if labels is None:
            raise ValueError(f"{type(self).__name__} is conditional; pass labels, e.g. "
                             f"sample(n, labels=torch.arange(n) % {self.n_classes})")
        labels = torch.as_tensor(labels, device=self.device).long().flatten()
        if labels.numel() != n:
            raise ValueError(f"got {labels.numel()} labels for n={n} samples")
        if labels.min() < 0 or labels.max() >= self.n_classes:
            raise ValueError(f"labels must be in [0, {self.n_classes - 1}], got {labels.tolist()}")
        return labels

    @torch.no_grad()
    def sample(self, n: int, labels=None) -> torch.Tensor:
        """``n`` images in [0, 1], shaped (n, C, H, W); ``labels`` only for conditional models."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        labels = self._check_labels(n, labels)
        with eval_mode(self):
            return self._sample(n, labels).clamp(0, 1)

    def _sample(self, n: int, labels: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def mlp_trunk(in_features: int, hidden: int) -> nn.Sequential:
    """Flatten, then one hidden layer: the encoder trunk of the MLP VAE and the MLP classifier."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU())
