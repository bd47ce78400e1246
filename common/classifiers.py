"""Classifiers used by the course: to pretrain a VAE encoder (notebook 01) and to check what
class generated samples look like (notebooks 03-04).

Introduced in notebooks/01_vae.ipynb.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import register
from .layers import eval_mode, mlp_trunk


@register
class MLPClassifier(nn.Module):
    """Flatten -> Linear(784, hidden) -> ReLU -> Linear(hidden, classes).

    ``trunk`` has exactly the layers of ``MLPVAE.trunk``, so its weights can initialise a VAE
    encoder: ``vae.trunk.load_state_dict(classifier.trunk.state_dict())``.
    """

    def __init__(self, hidden: int = 400, n_classes: int = 10, image_shape: tuple = (1, 28, 28)):
        super().__init__()
        self.hparams = dict(hidden=hidden, n_classes=n_classes, image_shape=tuple(image_shape))
        self.trunk = mlp_trunk(math.prod(image_shape), hidden)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self(x)
        return {"loss": F.cross_entropy(logits, y),
                "accuracy": (logits.argmax(1) == y).float().mean()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Predicted class of each image, in eval mode, batched to bound memory."""
        with eval_mode(self):
            return torch.cat([self(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
