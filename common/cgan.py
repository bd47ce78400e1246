"""Conditional GANs: the label fed to both players, the WGAN-GP loss and its gradient penalty, and
the two terms that make samples follow their label (the auxiliary classifier, the matching-aware
term), with one training step for each loss: :func:`cdcgan_step` and :func:`wgan_gp_step`.

Introduced in notebooks/04_conditional_gan.ipynb, on the DCGAN parts of :mod:`common.dcgan`.
Every discriminator here has ``features(x)`` (what it computes from the image before the label
enters) and ``score(h, labels)``: one pass of features serves the true label, a wrong label and
the classifier.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dcgan import _widths, d_loss_bce, from_tanh_range, g_loss_nonsaturating, init_dcgan_weights, to_tanh_range
from .layers import GenerativeModel, Module, frozen, resolution_stages
from .training import update


class LabelMap(nn.Module):
    """One-hot label -> dense layer -> one (size x size) map, to stack as an extra channel."""

    def __init__(self, n_classes: int, size: int):
        super().__init__()
        self.n_classes, self.size = n_classes, size
        self.dense = nn.Linear(n_classes, size * size)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(labels, self.n_classes).float()                # (B, n_classes)
        return self.dense(one_hot).view(-1, 1, self.size, self.size)       # (B, 1, size, size)


def conv_trunk(c_in: int, widths: list[int], batch_norm: bool) -> nn.Sequential:
    """The DCGAN discriminator's convs: 4x4 stride 2 (halving H and W), LeakyReLU(0.2), batch norm
    on all but the first when ``batch_norm`` (a WGAN-GP critic has none); flattened at the end."""
    layers = [nn.Conv2d(c_in, widths[0], 4, 2, 1), nn.LeakyReLU(0.2)]
    for c, c_out in zip(widths, widths[1:]):
        layers += [nn.Conv2d(c, c_out, 4, 2, 1, bias=not batch_norm),
                   *([nn.BatchNorm2d(c_out)] if batch_norm else []), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, nn.Flatten())


class ConditionalDiscriminator(Module):
    """The label-channel D: the label's full-size map is stacked on the image as one more input channel,
    then the DCGAN convs and one linear score. ``batch_norm``: True for the conditional DCGAN,
    False for a WGAN-GP critic (the penalty is per sample; batch norm would couple a batch)."""

    input_range = (-1.0, 1.0)

    def __init__(self, image_shape: tuple, n_classes: int, channels: int = 32, batch_norm: bool = True):
        super().__init__()
        self.image_shape = tuple(image_shape)
        sizes = resolution_stages(image_shape)                  # e.g. [7, 14, 28]
        widths = _widths(channels, len(sizes) - 1)              # finest first, e.g. [32, 64]
        self.label = LabelMap(n_classes, sizes[-1])             # one 28x28 map
        self.trunk = conv_trunk(image_shape[0] + 1, widths, batch_norm)
        self.first = self.trunk[0]                              # the first conv (the tests read its gradient)
        self.out = nn.Linear(widths[-1] * sizes[0] ** 2, 1)
        init_dcgan_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What D sees before the label enters: here the label enters at once, so the image itself."""
        return x

    def score(self, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One score per image (from ``features``) with its class ``labels``."""
        return self.out(self.trunk(torch.cat([h, self.label(labels)], 1))).squeeze(1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(x), labels)


def upsample_conv(c_in: int, c_out: int, norm: bool = True) -> nn.Sequential:
    """x2 nearest-neighbour upsampling, then a 3x3 conv: every output pixel gets the same number of
    contributions, so there is no checkerboard pattern (a stride-2 transposed conv's kernel
    overlaps unevenly)."""
    layers = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=not norm)]
    if norm:
        layers += [nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


class ConditionalGenerator(GenerativeModel):
    """z -> dense -> coarsest maps; before every doubling the label enters as one extra channel
    (a :class:`LabelMap` at that size); upsample + conv (not transposed convs); Tanh."""

    conditional = True

    def __init__(self, image_shape: tuple, n_classes: int, z_dim: int = 100, channels: int = 32):
        super().__init__()
        self.image_shape, self.z_dim, self.n_classes = tuple(image_shape), z_dim, n_classes
        sizes = resolution_stages(image_shape)                # e.g. [7, 14, 28]
        widths = _widths(channels, len(sizes) - 1)[::-1] + [image_shape[0]]  # e.g. [64, 32, 1]
        b = sizes[0]
        self.project = nn.Sequential(nn.Linear(z_dim, widths[0] * b * b, bias=False),
                                     nn.Unflatten(1, (widths[0], b, b)), nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.label_maps = nn.ModuleList(LabelMap(n_classes, size) for size in sizes[:-1])  # e.g. 7, 14
        self.ups = nn.ModuleList(upsample_conv(c_in + 1, c_out, norm=i < len(widths) - 2)  # none on the last
                                 for i, (c_in, c_out) in enumerate(zip(widths, widths[1:])))
        init_dcgan_weights(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.project(z)
        for label_map, up in zip(self.label_maps, self.ups):
            h = up(torch.cat([h, label_map(labels)], 1))
        return torch.tanh(h)

    def _sample(self, n: int, labels: torch.Tensor) -> torch.Tensor:
        return from_tanh_range(self(torch.randn(n, self.z_dim, device=self.device), labels))


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


class ProjectionDiscriminator(Module):
    """Reads the label at the **end**: the DCGAN convs turn the image alone into features h, and
    class y's own linear head scores them, <w_y, h>. With ``shared``, Miyato & Koyama's (2018)
    projection discriminator: psi(h) + <w_y, h>, one "is it real?" term for every class. With
    ``aux_classifier``, a linear ``classifier`` also reads class logits from h (AC-GAN)."""

    conditional = True
    input_range = (-1.0, 1.0)

    def __init__(self, image_shape: tuple, n_classes: int, channels: int = 32, batch_norm: bool = True,
                 shared: bool = False, aux_classifier: bool = True):
        super().__init__()
        self.image_shape, self.n_classes = tuple(image_shape), n_classes
        sizes = resolution_stages(image_shape)
        widths = _widths(channels, len(sizes) - 1)
        self.trunk = conv_trunk(image_shape[0], widths, batch_norm)
        self.first = self.trunk[0]
        n_features = widths[-1] * sizes[0] ** 2                  # h: 64 x 7 x 7 = 3,136 for 28 x 28
        self.heads = nn.Embedding(n_classes, n_features)         # row y = class y's weights w_y
        self.shared = nn.Linear(n_features, 1) if shared else None
        self.classifier = nn.Linear(n_features, n_classes) if aux_classifier else None
        init_dcgan_weights(self)
        nn.init.normal_(self.heads.weight, 0.0, 0.02)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """h, the trunk's feature vector of each image of ``x`` in [-1, 1]."""
        return self.trunk(x)

    def score(self, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One score per feature vector, judged as class ``labels``."""
        s = (self.heads(labels) * h).sum(1)                      # <w_y, h>
        return s if self.shared is None else s + self.shared(h).squeeze(1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(x), labels)


def wrong_labels(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """A uniformly drawn *other* class for every label (never the label itself)."""
    return (labels + torch.randint(1, n_classes, labels.shape, device=labels.device)) % n_classes


def matching_aware_loss(D: nn.Module, h_real: torch.Tensor, labels: torch.Tensor,
                        n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """After Reed et al. (2016): a real image shown with a wrong label y' is one more fake, so D
    minimises BCE(D(x, y'), 0) = softplus(D(x, y')). Returns the loss and the mean D(x, y')."""
    d_wrong = D.score(h_real, wrong_labels(labels, n_classes))
    return F.softplus(d_wrong).mean(), torch.sigmoid(d_wrong).mean()


def class_loss(D: nn.Module, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AC-GAN (Odena et al., 2017): cross-entropy of D's classifier on features h for ``labels``."""
    return F.cross_entropy(D.classifier(h), labels)


def generator_update(G: GenerativeModel, D: nn.Module, opt_G: torch.optim.Optimizer, fake: torch.Tensor,
                     labels: torch.Tensor, g_loss, class_weight: float, ema) -> dict[str, torch.Tensor]:
    """G's half of both steps: minimise g_loss(D's scores of the fakes) (+ class_weight times the
    classifier's cross-entropy on them, when > 0) against the just-updated D; then the EMA."""
    with frozen(D):                              # G's update needs no gradient for D's weights: skip it
        h_fake = D.features(fake)
        loss_G, out = g_loss(D.score(h_fake, labels)), {}
        if class_weight:
            out["class_loss_fake"] = class_loss(D, h_fake, labels)
            loss_G = loss_G + class_weight * out["class_loss_fake"]
        update(opt_G, loss_G, "loss_G")          # zero_grad, backward, NaN guard, step (notebook 03's four lines)
    if ema is not None:
        ema.update()
    return {"loss_G": loss_G, **out}


def cdcgan_step(G: GenerativeModel, D: nn.Module, opt_G: torch.optim.Optimizer, opt_D: torch.optim.Optimizer,
                matching_weight: float = 0.0, class_weight: float = 0.0, ema=None, g_loss=g_loss_nonsaturating):
    """One conditional DCGAN update per batch, for :func:`common.training.train`: D with BCE on a
    real and a fake batch, plus ``matching_weight`` x the matching-aware term and ``class_weight``
    x its classifier's cross-entropy on the real batch (each off at 0); then G (:func:`generator_update`)."""

    def step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        real = to_tanh_range(x)                                     # the data in G's range [-1, 1]
        fake = G(torch.randn(len(x), G.z_dim, device=x.device), y)
        h_real = D.features(real)                                   # one pass for every term on x
        d_real, d_fake = D.score(h_real, y), D(fake.detach(), y)    # detached: D's update only
        loss_D, out = d_loss_bce(d_real, d_fake), {}
        if matching_weight:
            loss_matching, out["D(x, wrong label)"] = matching_aware_loss(D, h_real, y, G.n_classes)
            loss_D = loss_D + matching_weight * loss_matching
        if class_weight:
            out["class_loss_real"] = class_loss(D, h_real, y)
            loss_D = loss_D + class_weight * out["class_loss_real"]
        update(opt_D, loss_D, "loss_D")
        out = {"loss_D": loss_D, "D(x)": torch.sigmoid(d_real).mean(), "D(G(z))": torch.sigmoid(d_fake).mean(), **out}
        return {**out, **generator_update(G, D, opt_G, fake, y, g_loss, class_weight, ema)}

    return step


def wgan_g_loss(scores: torch.Tensor) -> torch.Tensor:
    """The WGAN generator's loss: -E[D(G(z))], raise the critic's score of the samples."""
    return -scores.mean()


def wgan_gp_step(G: GenerativeModel, D: nn.Module, opt_G: torch.optim.Optimizer, opt_D: torch.optim.Optimizer,
                 n_critic: int = 5, gp_lambda: float = 10.0, class_weight: float = 0.0, ema=None):
    """One conditional WGAN-GP step per batch, for :func:`common.training.train`: every call updates
    the critic, minimising E[D(fake)] - E[D(real)] + gradient penalty (+ ``class_weight`` x its
    classifier's cross-entropy on the real batch); every ``n_critic``-th call also updates G."""
    calls = 0

    def step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        nonlocal calls
        calls += 1
        update_G = calls % n_critic == 0
        real = to_tanh_range(x)
        with torch.set_grad_enabled(update_G):   # G's graph only on the calls that update G
            fake = G(torch.randn(len(x), G.z_dim, device=x.device), y)
        h_real = D.features(real)
        d_real, d_fake = D.score(h_real, y), D(fake.detach(), y)
        gp, grad_norm = gradient_penalty(D, real, fake, y, gp_lambda)   # on the score only
        loss_D = d_fake.mean() - d_real.mean() + gp                     # -(Wasserstein estimate) + penalty
        out = {"D(x)": d_real.mean(), "D(G(z))": d_fake.mean(), "gp": gp, "grad_norm_xhat": grad_norm}
        if class_weight:
            out["class_loss_real"] = class_loss(D, h_real, y)
            loss_D = loss_D + class_weight * out["class_loss_real"]
        update(opt_D, loss_D, "loss_D")
        if update_G:
            out.update(generator_update(G, D, opt_G, fake, y, wgan_g_loss, class_weight, ema))
        return {"loss_D": loss_D, **out}

    return step
