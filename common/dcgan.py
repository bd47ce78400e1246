"""DCGAN (Radford et al., 2016): the generator, the discriminator, the GAN losses and one training step.

Introduced in notebooks/03_dcgan.ipynb; notebook 04 builds its conditional GANs on these parts
(:mod:`common.cgan`). Every model takes ``image_shape`` and derives its stages from it
(:func:`common.layers.resolution_stages`): 7 -> 14 -> 28, or the paper's 4 -> ... -> 64.

Generators output Tanh images in [-1, 1] (the data are scaled to match); ``sample()`` maps them
back to [0, 1] like every model of the course. The discriminator returns one logit per image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import GenerativeModel, Module, frozen, resolution_stages
from .training import require_finite


def d_loss_bce(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator: maximise log D(x) + log(1 - D(G(z))), i.e. minimise the two BCE terms."""
    # D = sigmoid(logit): log D = -softplus(-logit), log(1 - D) = -softplus(logit), finite for any logit
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss_minimax(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator, as in the minimax game: minimise log(1 - D(G(z))). Saturates when D wins."""
    return -F.softplus(fake_logits).mean()


def g_loss_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator, the practical choice: minimise -log D(G(z)). Strong gradients when D wins."""
    return F.softplus(-fake_logits).mean()


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN paper: conv and linear weights ~ N(0, 0.02); batch-norm scale ~ N(1, 0.02); biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def to_tanh_range(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> [-1, 1], the range of the generators' Tanh."""
    return x * 2 - 1


def from_tanh_range(x: torch.Tensor) -> torch.Tensor:
    """A generator's Tanh output in [-1, 1] -> images in [0, 1]."""
    return (x + 1) / 2


def _widths(channels: int, n: int) -> list[int]:
    """Channel widths of n hidden stages, finest first: ``channels`` doubling at each halving
    (the DCGAN paper at 64x64 with channels=128: 128, 256, 512, 1024)."""
    return [channels * 2**i for i in range(n)]


class DCGANGenerator(GenerativeModel):
    """z -> dense -> coarsest maps (7x7 for 28, 4x4 for 32 and 64) -> stride-2 transposed convs
    with BN and ReLU, halving the width at each doubling -> Tanh image. ``channels`` is the width
    of the finest hidden stage (the paper's 64x64 generator: 128, so 1024 maps at 4x4)."""

    def __init__(self, image_shape: tuple, z_dim: int = 100, channels: int = 32):
        super().__init__()
        self.image_shape, self.z_dim = tuple(image_shape), z_dim
        sizes = resolution_stages(image_shape)                # e.g. [7, 14, 28]
        widths = _widths(channels, len(sizes) - 1)[::-1]      # coarsest first, e.g. [64, 32]
        b = sizes[0]
        layers = [nn.Linear(z_dim, widths[0] * b * b, bias=False), nn.Unflatten(1, (widths[0], b, b)),
                  nn.BatchNorm2d(widths[0]), nn.ReLU()]
        for c_in, c_out in zip(widths, widths[1:]):           # doubles H and W each time
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        layers += [nn.ConvTranspose2d(widths[-1], image_shape[0], 4, 2, 1), nn.Tanh()]  # to full size
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z)

    def _sample(self, n: int, labels=None) -> torch.Tensor:
        return from_tanh_range(self(torch.randn(n, self.z_dim, device=self.device)))


class DCGANDiscriminator(Module):
    """Stride-2 convs with LeakyReLU(0.2) down to the coarsest grid, ``channels`` at the first and
    doubling at each halving; batch norm on every conv but the first; one logit."""

    input_range = (-1.0, 1.0)                                 # images in G's Tanh range

    def __init__(self, image_shape: tuple, channels: int = 32):
        super().__init__()
        self.image_shape = tuple(image_shape)
        sizes = resolution_stages(image_shape)
        widths = _widths(channels, len(sizes) - 1)            # finest first, e.g. [32, 64]
        self.first = nn.Conv2d(image_shape[0], widths[0], 4, 2, 1)      # no batch norm (paper)
        layers = [self.first, nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(widths, widths[1:]):           # halves H and W each time
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
        layers += [nn.Flatten(), nn.Linear(widths[-1] * sizes[0] ** 2, 1)]
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """One logit per image of ``x`` in [-1, 1] (the generator's range; see :func:`to_tanh_range`)."""
        return self.net(x).squeeze(1)


def dcgan_step(G: GenerativeModel, D: nn.Module, opt_G: torch.optim.Optimizer, opt_D: torch.optim.Optimizer,
               g_loss=g_loss_nonsaturating):
    """One DCGAN update per batch, for :func:`common.training.train`: D on a real and a fake batch
    (BCE), then G with ``g_loss`` (non-saturating by default) against the just-updated D."""

    def step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        real = to_tanh_range(x)                                     # the data in G's range [-1, 1]
        fake = G(torch.randn(len(x), G.z_dim, device=x.device))
        d_real, d_fake = D(real), D(fake.detach())                  # detached: D's update only
        loss_D = d_loss_bce(d_real, d_fake)
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        require_finite(loss_D, "loss_D")                            # no NaN into the weights
        opt_D.step()
        with frozen(D):                                             # G's update needs no grad for D
            loss_G = g_loss(D(fake))                                # the same fake, through the updated D
            opt_G.zero_grad(set_to_none=True)
            loss_G.backward()
        require_finite(loss_G, "loss_G")
        opt_G.step()
        return {"loss_D": loss_D, "loss_G": loss_G,
                "D(x)": torch.sigmoid(d_real).mean(), "D(G(z))": torch.sigmoid(d_fake).mean()}

    return step
