"""GANs for 28x28 images: DCGAN, conditional DCGAN and conditional WGAN-GP, with one training step.

Introduced in notebooks/03_dcgan.ipynb (losses, DCGAN) and notebooks/04_conditional_gan.ipynb
(label conditioning, upsample + conv generator, the gradient penalty).

Generators output Tanh images in [-1, 1] (the data are scaled to match); ``sample()`` maps them
back to [0, 1] like every model of the course. Discriminators and critics return one raw score per
image (a logit for the BCE-trained DCGANs; an unbounded score for the WGAN critic).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import register
from .layers import GenerativeModel

# --------------------------------------------------------------------------- initialisation


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


# --------------------------------------------------------------------------- losses
# D(x) = sigmoid(logit). With BCE, log D = -softplus(-logit) and log(1 - D) = -softplus(logit).

def d_loss_bce(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator: maximise log D(x) + log(1 - D(G(z))), i.e. minimise the two BCE terms."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss_minimax(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator, as in the minimax game: minimise log(1 - D(G(z))). Saturates when D wins."""
    return -F.softplus(fake_logits).mean()


def g_loss_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator, the practical choice: minimise -log D(G(z)). Strong gradients when D wins."""
    return F.softplus(-fake_logits).mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     labels: torch.Tensor | None = None, lam: float = 10.0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """WGAN-GP: lam * E[(||grad_x D(x_hat)||_2 - 1)^2] on x_hat = a * real + (1 - a) * fake.

    ``a ~ U[0, 1]`` is drawn once **per sample** (not per pixel). Returns (penalty, mean gradient
    norm); the penalty is differentiable w.r.t. the critic's weights (``create_graph=True``).
    """
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device)
    x_hat = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat) if labels is None else critic(x_hat, labels)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.flatten(1).norm(dim=1)
    return lam * (norms - 1).pow(2).mean(), norms.mean().detach()


# --------------------------------------------------------------------------- DCGAN


@register
class DCGANGenerator(GenerativeModel):
    """z (z_dim) -> dense -> 7x7 maps -> transposed convs (BN, ReLU) -> 28x28 Tanh."""

    def __init__(self, z_dim: int = 100, channels: int = 64, out_channels: int = 1):
        super().__init__()
        self.hparams = dict(z_dim=z_dim, channels=channels, out_channels=out_channels)
        c = channels
        self.z_dim = z_dim
        self.net = nn.Sequential(
            nn.Linear(z_dim, c * 7 * 7, bias=False), nn.Unflatten(1, (c, 7, 7)),
            nn.BatchNorm2d(c), nn.ReLU(),
            nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(),  # 7 -> 14
            nn.ConvTranspose2d(c // 2, out_channels, 4, 2, 1), nn.Tanh())                          # 14 -> 28
        init_dcgan_weights(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z)

    def _sample(self, n: int, labels=None) -> torch.Tensor:
        return (self(torch.randn(n, self.z_dim, device=self.device)) + 1) / 2


@register
class DCGANDiscriminator(nn.Module):
    """Strided convs with LeakyReLU(0.2); batch norm on every conv but the first; one logit."""

    def __init__(self, channels: int = 64, in_channels: int = 1):
        super().__init__()
        self.hparams = dict(channels=channels, in_channels=in_channels)
        c = channels
        self.first = nn.Conv2d(in_channels, c, 4, 2, 1)                    # 28 -> 14, no BN
        self.net = nn.Sequential(
            self.first, nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2),  # -> 7
            nn.Flatten(), nn.Linear(2 * c * 7 * 7, 1))
        init_dcgan_weights(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x).squeeze(1)


# --------------------------------------------------------------------------- conditional


class LabelMap(nn.Module):
    """One-hot label -> dense layer -> one (size x size) map, to stack as an extra channel."""

    def __init__(self, n_classes: int, size: int):
        super().__init__()
        self.n_classes, self.size = n_classes, size
        self.dense = nn.Linear(n_classes, size * size)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(labels, self.n_classes).float()
        return self.dense(one_hot).view(-1, 1, self.size, self.size)


def upsample_conv(c_in: int, c_out: int, norm: bool = True) -> nn.Sequential:
    """x2 nearest-neighbour upsampling, then a 3x3 conv: every output pixel gets the same number of
    contributions, so there is no checkerboard pattern (a stride-2 transposed conv's kernel
    overlaps unevenly)."""
    layers = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=not norm)]
    if norm:
        layers += [nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


@register
class ConditionalGenerator(GenerativeModel):
    """z -> dense -> 7x7 maps; the label enters as an extra channel at 7x7 and at 14x14;
    upsample + conv (not transposed convs) to 28x28; Tanh."""

    conditional = True

    def __init__(self, z_dim: int = 100, channels: int = 64, n_classes: int = 10, out_channels: int = 1):
        super().__init__()
        self.hparams = dict(z_dim=z_dim, channels=channels, n_classes=n_classes, out_channels=out_channels)
        c = channels
        self.z_dim, self.n_classes = z_dim, n_classes
        self.project = nn.Sequential(nn.Linear(z_dim, c * 7 * 7, bias=False), nn.Unflatten(1, (c, 7, 7)),
                                     nn.BatchNorm2d(c), nn.ReLU())
        self.label7, self.label14 = LabelMap(n_classes, 7), LabelMap(n_classes, 14)
        self.up1 = upsample_conv(c + 1, c // 2)                          # 7 -> 14
        self.up2 = upsample_conv(c // 2 + 1, out_channels, norm=False)   # 14 -> 28
        init_dcgan_weights(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.project(z)
        h = self.up1(torch.cat([h, self.label7(labels)], 1))
        return torch.tanh(self.up2(torch.cat([h, self.label14(labels)], 1)))

    def _sample(self, n: int, labels: torch.Tensor) -> torch.Tensor:
        return (self(torch.randn(n, self.z_dim, device=self.device), labels) + 1) / 2


@register
class ConditionalDiscriminator(nn.Module):
    """The label's 28x28 map is stacked on the image as a second input channel. ``batch_norm``
    is True for the conditional DCGAN; the WGAN-GP critic has none (the penalty is per sample,
    and batch norm would couple the samples of a batch)."""

    def __init__(self, channels: int = 64, n_classes: int = 10, in_channels: int = 1, batch_norm: bool = True):
        super().__init__()
        self.hparams = dict(channels=channels, n_classes=n_classes, in_channels=in_channels, batch_norm=batch_norm)
        c = channels
        self.label = LabelMap(n_classes, 28)
        self.first = nn.Conv2d(in_channels + 1, c, 4, 2, 1)               # 28 -> 14
        self.net = nn.Sequential(
            self.first, nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, 2, 1, bias=not batch_norm),           # 14 -> 7
            *([nn.BatchNorm2d(2 * c)] if batch_norm else []), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * c * 7 * 7, 1))
        init_dcgan_weights(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, self.label(labels)], 1)).squeeze(1)


# --------------------------------------------------------------------------- training


def to_tanh_range(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> [-1, 1], the range of the generators' Tanh."""
    return x * 2 - 1


def gan_step(G: nn.Module, D: nn.Module, opt_G: torch.optim.Optimizer, opt_D: torch.optim.Optimizer,
             loss: str = "bce", n_critic: int = 1, gp_lambda: float = 10.0, conditional: bool = False,
             g_loss=g_loss_nonsaturating):
    """One step of :func:`common.training.train` for all three GANs.

    Every call updates D (the critic) on one real batch; every ``n_critic``-th call also updates G.
    ``loss="bce"``: DCGAN losses (D: BCE; G: ``g_loss``, non-saturating by default).
    ``loss="wgan-gp"``: D minimises E[D(fake)] - E[D(real)] + gradient penalty; G minimises -E[D(fake)].
    Returns D's and G's losses, D(x) and D(G(z)) (probabilities for BCE, raw scores for WGAN),
    the norm of the gradient on D's first-layer weights, and for WGAN-GP the penalty and mean
    ||grad D(x_hat)||.
    """
    if loss not in ("bce", "wgan-gp"):
        raise ValueError(f"loss must be 'bce' or 'wgan-gp', got {loss!r}")
    calls = [0]

    def step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        real, labels = to_tanh_range(x), (y if conditional else None)
        z = torch.randn(x.shape[0], G.z_dim, device=x.device)
        fake = G(z, labels)
        d_real, d_fake = D(real, labels), D(fake.detach(), labels)
        out = {}
        if loss == "bce":
            loss_D = d_loss_bce(d_real, d_fake)
            out["D(x)"], out["D(G(z))"] = torch.sigmoid(d_real).mean(), torch.sigmoid(d_fake).mean()
        else:
            gp, grad_norm = gradient_penalty(D, real, fake, labels, gp_lambda)
            loss_D = d_fake.mean() - d_real.mean() + gp
            out["D(x)"], out["D(G(z))"] = d_real.mean(), d_fake.mean()
            out["gp"], out["grad_norm_xhat"] = gp, grad_norm
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        out["grad_norm_D_first"] = D.first.weight.grad.norm()
        opt_D.step()
        out["loss_D"] = loss_D
        calls[0] += 1
        if calls[0] % n_critic == 0:
            scores = D(fake, labels)
            loss_G = g_loss(scores) if loss == "bce" else -scores.mean()
            opt_G.zero_grad(set_to_none=True)
            loss_G.backward()
            opt_G.step()
            out["loss_G"] = loss_G
        return out

    return step
