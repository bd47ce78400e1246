"""Building blocks shared by the course's models.

:class:`GenerativeModel` fixes the contract every trained generator keeps, so that notebook 05
(and any script) can measure a model it did not train: ``sample(n, labels=None)`` returns ``n``
images in [0, 1] shaped (n, C, H, W) on the model's device.
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


class GenerativeModel(nn.Module):
    """Base class of the course's generators. Subclasses set ``conditional`` and implement
    ``_sample(n, labels)``; ``hparams`` holds their constructor arguments (for checkpoints)."""

    conditional: bool = False
    n_classes: int = 0
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
