"""An exponential moving average (EMA) of a generator's weights, the generator to sample from.

A GAN's generator jitters around a good solution as the two players chase each other; the average
sits in the middle of the jitter and often samples better than the latest weights (Yazici et al.,
2019; Karras et al., 2018 sample all their ProGAN images from one). It costs no training: the
average never feeds back into G. Introduced in notebooks/04_conditional_gan.ipynb.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .layers import GenerativeModel


class EMA:
    """``ema = EMA(G)`` keeps a copy of ``G``; after every update of ``G``, ``ema.update()`` moves
    each of the copy's weights a step ``1 - decay`` towards ``G``'s. Early on the decay is
    ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the copy follows ``G`` closely while
    ``G`` is still moving fast and forgets its random start. Sample from ``ema.model`` after
    :func:`recalibrate_batch_norm`."""

    def __init__(self, model: GenerativeModel, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}; 0.999 averages about the last 1,000 updates")
        self.source, self.decay, self.updates = model, float(decay), 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the source's current weights (call after each G update)."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, live in zip(self.model.parameters(), self.source.parameters()):
            avg.lerp_(live, 1.0 - d)                     # avg = d * avg + (1 - d) * live


@torch.no_grad()
def recalibrate_batch_norm(G: GenerativeModel, n_batches: int = 20, batch_size: int = 256,
                           seed: int = 0) -> GenerativeModel:
    """Batch norm's running statistics for G's current weights, which an EMA's averaged weights do
    not have (the live G's statistics describe the live weights): reset, then the exact mean over
    ``n_batches`` batches of fresh noise (and uniformly drawn labels if G is conditional), from
    its own seeded generator. Returns G in eval mode, ready to sample from."""
    norms = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    gen = torch.Generator(device=G.device).manual_seed(seed)     # the global random stream is untouched
    saved = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None                       # None: a cumulative average over the batches below
    G.train()
    try:
        for _ in range(n_batches):
            z = torch.randn(batch_size, G.z_dim, generator=gen, device=G.device)
            labels = (torch.randint(0, G.n_classes, (batch_size,), generator=gen, device=G.device)
                      if G.conditional else None)
            G(z, labels)
    finally:
        for bn, momentum in zip(norms, saved):
            bn.momentum = momentum
        G.eval()
    return G
