"""The training recipes of notebook 04's conditional GANs, defined once: the notebook, the
pretrained models (``tools/pretrain.py``) and the measured table (``tools/cgan_ablation.py``) all
train from these. A recipe holds what the notebook's table varies (how D reads the label, the
extra terms' weights, Adam's settings, batch size, n_critic, lambda, an EMA of G);
:func:`build` turns one into models, optimisers and a step for :func:`common.training.train`.

Introduced in notebooks/04_conditional_gan.ipynb.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import nn

from .cgan import ConditionalDiscriminator, ConditionalGenerator, ProjectionDiscriminator, cdcgan_step, wgan_gp_step
from .ema import EMA
from .layers import channels_last_on_cpu


@dataclass(frozen=True)
class Recipe:
    """What both conditional GANs set: how D reads the label, the classifier term, Adam, batch size."""
    discriminator: str = "heads"       # "channels" (the label as an extra input channel), "heads"
                                       # (one linear head per class on D's features), "projection"
    class_weight: float = 1.0          # auxiliary-classifier (AC-GAN) term; 0 = off
    lr: float = 2e-4
    batch_size: int = 64
    ema: bool = False                  # also keep an EMA of G's weights (decay 0.999) to sample from

    def __post_init__(self):
        if self.discriminator not in ("channels", "heads", "projection") or (
                self.class_weight and self.discriminator == "channels"):
            raise ValueError(f"{self}: discriminator is 'channels', 'heads' or 'projection', and "
                             "class_weight > 0 needs a classifier on D's features ('heads' or 'projection')")


@dataclass(frozen=True)
class CDCGAN(Recipe):
    """The conditional DCGAN: BCE, notebook 03's Adam betas, the matching-aware term."""
    betas: tuple = (0.5, 0.999)        # the DCGAN paper's
    matching_weight: float = 0.5       # matching-aware term (real image + wrong label = fake); 0 = off


@dataclass(frozen=True)
class WGANGP(Recipe):
    """The conditional WGAN-GP: the paper's lambda, betas and batch; n_critic 1, constant lr 2e-4."""
    betas: tuple = (0.0, 0.9)          # the WGAN-GP paper's
    n_critic: int = 1                  # critic steps per generator step (the paper: 5)
    gp_lambda: float = 10.0            # the paper's


class Parts(NamedTuple):
    """What :func:`build` returns."""
    G: ConditionalGenerator
    D: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    step: Callable
    ema: EMA | None


def build(recipe: Recipe, image_shape: tuple, n_classes: int, z_dim: int = 100, g_channels: int = 32,
          d_channels: int = 32, device="cpu") -> Parts:
    """G, D (no batch norm in a WGAN-GP critic), their Adam optimisers, the step and the EMA (or
    None) of one recipe. Seed the global generator first: G's then D's initial weights are drawn."""
    wgan = isinstance(recipe, WGANGP)
    G = ConditionalGenerator(image_shape, n_classes, z_dim, g_channels).to(device)
    if recipe.discriminator == "channels":
        D = ConditionalDiscriminator(image_shape, n_classes, d_channels, batch_norm=not wgan)
    else:
        D = ProjectionDiscriminator(image_shape, n_classes, d_channels, batch_norm=not wgan,
                                    shared=recipe.discriminator == "projection", aux_classifier=recipe.class_weight > 0)
    D = D.to(device)
    channels_last_on_cpu(G, D)                    # faster CPU convolutions, the same maths
    opt_G, opt_D = (torch.optim.Adam(m.parameters(), lr=recipe.lr, betas=recipe.betas) for m in (G, D))
    ema = EMA(G) if recipe.ema else None
    if wgan:
        step = wgan_gp_step(G, D, opt_G, opt_D, recipe.n_critic, recipe.gp_lambda, recipe.class_weight, ema)
    else:
        step = cdcgan_step(G, D, opt_G, opt_D, recipe.matching_weight, recipe.class_weight, ema)
    return Parts(G, D, opt_G, opt_D, step, ema)
