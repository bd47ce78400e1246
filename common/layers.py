"""Building blocks shared by the course's models.

:class:`GenerativeModel` fixes the contract every trained generator keeps, so that notebook 05
(and any script) can measure a model it did not train: ``sample(n, labels=None)`` returns ``n``
images in [0, 1] shaped (n, C, H, W) on the model's device.
"""
from __future__ import annotations

import torch
from torch import nn


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
        was_training = self.training
        self.eval()
        try:
            return self._sample(n, labels).clamp(0, 1)
        finally:
            self.train(was_training)

    def _sample(self, n: int, labels: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def mlp_trunk(in_features: int, hidden: int) -> nn.Sequential:
    """Flatten, then one hidden layer: the encoder trunk of the MLP VAE and the MLP classifier."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU())
