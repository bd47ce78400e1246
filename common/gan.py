"""GANs: DCGAN, conditional DCGAN and conditional WGAN-GP, and a training step for each recipe.

Introduced in notebooks/03_dcgan.ipynb (losses, DCGAN, :func:`dcgan_step`) and
notebooks/04_conditional_gan.ipynb (label conditioning, upsample + conv generator, the gradient
penalty, :func:`wgan_gp_step`, and what makes samples follow their label:
:class:`ProjectionDiscriminator`, the auxiliary-classifier and matching-aware terms of the steps).
Every model takes ``image_shape`` and derives its stages from it
(:func:`common.layers.resolution_stages`): 7 -> 14 -> 28, or the DCGAN paper's 4 -> ... -> 64.

Generators output Tanh images in [-1, 1] (the data are scaled to match); ``sample()`` maps them
back to [0, 1] like every model of the course. Discriminators and critics return one raw score per
image (a logit for the BCE-trained DCGANs; an unbounded score for the WGAN critic).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import register
from .layers import GenerativeModel, check_count, check_input, frozen, resolution_stages
from .training import require_finite

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


def _widths(channels: int, n: int) -> list[int]:
    """Channel widths of n hidden stages, finest first: ``channels`` doubling at each halving
    (the DCGAN paper at 64x64 with channels=128: 128, 256, 512, 1024)."""
    return [channels * 2**i for i in range(n)]


@register
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


@register
class DCGANDiscriminator(nn.Module):
    """Stride-2 convs with LeakyReLU(0.2) down to the coarsest grid, ``channels`` at the first and
    doubling at each halving; batch norm on every conv but the first; one logit."""

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
        check_input(x, self.image_shape, -1, 1, type(self).__name__, self)
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


@register
class ConditionalDiscriminator(nn.Module):
    """The label's full-size map is stacked on the image as one more input channel, then the
    DCGAN discriminator's stride-2 convs. ``batch_norm`` is True for the conditional DCGAN; the
    WGAN-GP critic has none (the penalty is per sample, and batch norm would couple the samples
    of a batch)."""

    def __init__(self, image_shape: tuple, n_classes: int, channels: int = 32, batch_norm: bool = True):
        super().__init__()
        self.image_shape = tuple(image_shape)
        sizes = resolution_stages(image_shape)
        widths = _widths(channels, len(sizes) - 1)
        self.label = LabelMap(n_classes, sizes[-1])
        self.first = nn.Conv2d(image_shape[0] + 1, widths[0], 4, 2, 1)
        layers = [self.first, nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not batch_norm),
                       *([nn.BatchNorm2d(c_out)] if batch_norm else []), nn.LeakyReLU(0.2)]
        layers += [nn.Flatten(), nn.Linear(widths[-1] * sizes[0] ** 2, 1)]
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One score per image of ``x`` in [-1, 1] with its class ``labels``."""
        check_input(x, self.image_shape, -1, 1, type(self).__name__, self)
        return self.net(torch.cat([x, self.label(labels)], 1)).squeeze(1)


@register
class ProjectionDiscriminator(nn.Module):
    """A conditional discriminator that reads the label at the **end**, not as an input channel.

    The DCGAN discriminator's convs (``channels`` at the first, doubling at each halving; batch
    norm on every conv but the first when ``batch_norm``) see the image alone and give a feature
    vector h (64 x 7 x 7 = 3,136 numbers for 28 x 28 at ``channels=32``). The score of h for class
    y is then a linear function of h chosen by y:

    - ``shared=False`` (the course's default): one linear "head" per class, score = <w_y, h>. Every
      class has its own notion of "real", and an image scored under the wrong class is judged by
      another head.
    - ``shared=True``: Miyato & Koyama's (2018) projection discriminator, score = psi(h) + <w_y, h>:
      one unconditional "is this real?" term plus the class's projection.

    With ``aux_classifier`` (AC-GAN, Odena et al., 2017) one more linear layer reads class logits
    from the same h: D learns to classify real images, and G is rewarded when its samples are
    classified as the class it was asked for (see ``aux`` in :func:`dcgan_step`).
    """

    conditional = True

    def __init__(self, image_shape: tuple, n_classes: int, channels: int = 32, batch_norm: bool = True,
                 shared: bool = False, aux_classifier: bool = True):
        super().__init__()
        self.image_shape, self.n_classes = tuple(image_shape), n_classes
        sizes = resolution_stages(image_shape)
        widths = _widths(channels, len(sizes) - 1)
        self.first = nn.Conv2d(image_shape[0], widths[0], 4, 2, 1)
        layers = [self.first, nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not batch_norm),
                       *([nn.BatchNorm2d(c_out)] if batch_norm else []), nn.LeakyReLU(0.2)]
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        n_features = widths[-1] * sizes[0] ** 2
        self.heads = nn.Embedding(n_classes, n_features)         # row y = class y's weights w_y
        self.shared = nn.Linear(n_features, 1) if shared else None
        self.aux = nn.Linear(n_features, n_classes) if aux_classifier else None
        init_dcgan_weights(self)
        nn.init.normal_(self.heads.weight, 0.0, 0.02)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """h, the trunk's feature vector of each image of ``x`` in [-1, 1]."""
        check_input(x, self.image_shape, -1, 1, type(self).__name__, self)
        return self.trunk(x)

    def score(self, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One score per feature vector, judged as class ``labels``."""
        s = (self.heads(labels) * h).sum(1)
        return s if self.shared is None else s + self.shared(h).squeeze(1)

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        """Class logits from the auxiliary classifier (built with ``aux_classifier=True``)."""
        if self.aux is None:
            raise ValueError("this discriminator has no auxiliary classifier: build it with aux_classifier=True")
        return self.aux(h)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One score per image of ``x`` in [-1, 1] with its class ``labels``."""
        return self.score(self.features(x), labels)


DISCRIMINATORS = ("channels", "heads", "projection")


def conditional_discriminator(kind: str, image_shape: tuple, n_classes: int, channels: int = 32,
                              batch_norm: bool = True, aux: float = 0.0) -> nn.Module:
    """The conditional discriminator of notebook 04 by how it reads the label: ``"channels"`` (the
    reports': an extra input channel, :class:`ConditionalDiscriminator`), ``"heads"`` (one linear
    head per class on D's features) or ``"projection"`` (Miyato & Koyama: shared term + heads),
    both :class:`ProjectionDiscriminator`, with an auxiliary classifier when ``aux > 0``. A WGAN-GP
    critic takes ``batch_norm=False`` (the penalty is per image)."""
    if kind not in DISCRIMINATORS:
        raise ValueError(f"discriminator {kind!r} is not one of {', '.join(DISCRIMINATORS)}")
    if kind == "channels":
        if aux:
            raise ValueError("aux > 0 needs a discriminator with a classifier: use 'heads' or 'projection'")
        return ConditionalDiscriminator(image_shape, n_classes, channels, batch_norm=batch_norm)
    return ProjectionDiscriminator(image_shape, n_classes, channels, batch_norm=batch_norm,
                                   shared=kind == "projection", aux_classifier=aux > 0)


def judge(D: nn.Module, x: torch.Tensor, labels: torch.Tensor, wrong: torch.Tensor | None = None,
          logits: bool = False) -> tuple:
    """D's scores of ``x`` as ``labels``, and optionally as ``wrong`` labels and D's class logits.

    Returns ``(scores, wrong_scores or None, class_logits or None)``. A
    :class:`ProjectionDiscriminator` computes all three from one pass through its trunk; a
    discriminator that takes the label as an input channel needs a second pass for the wrong
    labels and has no classifier."""
    if isinstance(D, ProjectionDiscriminator):
        h = D.features(x)
        return (D.score(h, labels), None if wrong is None else D.score(h, wrong),
                D.classify(h) if logits else None)
    if logits:
        raise ValueError(f"{type(D).__name__} has no auxiliary classifier (aux > 0 needs one): use "
                         "gan.ProjectionDiscriminator(..., aux_classifier=True)")
    return D(x, labels), None if wrong is None else D(x, wrong), None


def wrong_labels(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """A uniformly drawn *other* class for every label (never the label itself)."""
    return (labels + torch.randint(1, n_classes, labels.shape, device=labels.device)) % n_classes


# --------------------------------------------------------------------------- weight averaging


class EMA:
    """An exponential moving average of a generator's weights, the generator to sample from.

    ``ema = gan.EMA(G)`` keeps a copy of ``G``; after every update of ``G``, ``ema.update()``
    moves each of the copy's weights a step ``1 - decay`` towards ``G``'s. A GAN's generator
    jitters around a good solution as the two players chase each other; the average sits in the
    middle of the jitter and samples better than the latest iterate (Yazici et al., 2019; Karras
    et al., 2018 sample all their ProGAN images from one). It costs no training: the average
    never feeds back into ``G``.

    - Early on the decay is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the copy
      follows ``G`` closely while ``G`` is still moving fast and forgets its random start.
    - Batch norm's running statistics are not averaged: they describe the activations of the
      *live* weights. :meth:`recalibrate` recomputes them for the averaged weights, from a few
      batches of noise (and labels), before the copy is sampled from or saved.
    """

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
            avg.lerp_(live, 1.0 - d)

    @torch.no_grad()
    def recalibrate(self, n_batches: int = 20, batch_size: int = 256, seed: int = 0) -> GenerativeModel:
        """Batch norm statistics for the averaged weights: reset, then the exact mean over
        ``n_batches`` batches of fresh noise (class-balanced labels if conditional). Returns the
        averaged model, in eval mode, ready to sample from."""
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return self.model.eval()
        m = self.model
        gen = torch.Generator(device=m.device).manual_seed(seed)
        saved = [bn.momentum for bn in norms]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None                  # cumulative average over the batches below
        m.train()
        try:
            for _ in range(check_count(n_batches, "n_batches")):
                z = torch.randn(batch_size, m.z_dim, generator=gen, device=m.device)
                labels = (torch.randint(0, m.n_classes, (batch_size,), generator=gen, device=m.device)
                          if m.conditional else None)
                m(z, labels)
        finally:
            for bn, mom in zip(norms, saved):
                bn.momentum = mom
            m.eval()
        return m


# --------------------------------------------------------------------------- training steps


def to_tanh_range(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> [-1, 1], the range of the generators' Tanh."""
    return x * 2 - 1


def from_tanh_range(x: torch.Tensor) -> torch.Tensor:
    """A generator's Tanh output in [-1, 1] -> images in [0, 1]."""
    return (x + 1) / 2


def _check_aux(D: nn.Module, weight: float) -> None:
    if weight and getattr(D, "aux", None) is None:
        raise ValueError(f"{type(D).__name__} has no auxiliary classifier (aux > 0 needs one): use "
                         "gan.ProjectionDiscriminator(..., aux_classifier=True), or aux=0")


def dcgan_step(G: GenerativeModel, D: nn.Module, opt_G: torch.optim.Optimizer,
               opt_D: torch.optim.Optimizer, g_loss=g_loss_nonsaturating, ema: EMA | None = None,
               mismatch: float = 0.0, aux: float = 0.0):
    """One step of :func:`common.training.train` for a (conditional) DCGAN: update D on a real and
    a fake batch with BCE, then G with ``g_loss`` (non-saturating by default). Labels are used
    when G is conditional; ``ema`` (an :class:`EMA` of G), if given, is updated after G.

    Two terms for conditional models, both off by default:

    - ``mismatch`` = w > 0, the **matching-aware** loss (after Reed et al., 2016): a real image
      shown with a wrong label is one more kind of fake. D's loss gains w * BCE((real, wrong
      label), 0), so D must check that image and label agree, not only that the image looks real.
    - ``aux`` = a > 0, the **auxiliary classifier** (AC-GAN, Odena et al., 2017; D must be a
      :class:`ProjectionDiscriminator` with one): D adds a * cross-entropy of its class logits on
      the *real* batch, G adds a * cross-entropy of D's logits on its fakes for the requested labels.

    Returns both losses, the mean D(x) and D(G(z)) (and D(x, wrong label) / the classifier's
    losses when used), and the norm of the gradient on D's first-layer weights."""
    if (mismatch or aux) and not G.conditional:
        raise ValueError("mismatch and aux need a conditional generator and discriminator")
    if mismatch < 0 or aux < 0:
        raise ValueError(f"mismatch and aux are loss weights >= 0, got {mismatch} and {aux}; 0 turns a term off")
    _check_aux(D, aux)

    def step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        real, labels = to_tanh_range(x), (y if G.conditional else None)
        fake = G(torch.randn(x.shape[0], G.z_dim, device=x.device), labels)
        wrong = wrong_labels(labels, G.n_classes) if mismatch else None
        d_real, d_wrong, logits_real = judge(D, real, labels, wrong, logits=aux > 0)
        d_fake = D(fake.detach(), labels)                               # fake detached: D's update only
        loss_D = d_loss_bce(d_real, d_fake)
        out = {}
        if mismatch:
            loss_D = loss_D + mismatch * F.softplus(d_wrong).mean()
            out["D(x, wrong label)"] = torch.sigmoid(d_wrong).mean()
        if aux:
            out["class_loss_real"] = F.cross_entropy(logits_real, labels)
            loss_D = loss_D + aux * out["class_loss_real"]
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        grad_first = D.first.weight.grad.norm()
        require_finite(loss_D, "loss_D")                                # no NaN into the weights
        opt_D.step()
        with frozen(D):                          # G's update needs no gradient for D's weights: skip it
            scores, _, logits_fake = judge(D, fake, labels, logits=aux > 0)  # D just updated, as in the paper
            loss_G = g_loss(scores)
            if aux:
                out["class_loss_fake"] = F.cross_entropy(logits_fake, labels)
                loss_G = loss_G + aux * out["class_loss_fake"]
            opt_G.zero_grad(set_to_none=True)
            loss_G.backward()
        require_finite(loss_G, "loss_G")
        opt_G.step()
        if ema is not None:
            ema.update()
        return {"loss_D": loss_D, "loss_G": loss_G, "D(x)": torch.sigmoid(d_real).mean(),
                "D(G(z))": torch.sigmoid(d_fake).mean(), **out, "grad_norm_D_first": grad_first}

    return step


def wgan_gp_step(G: GenerativeModel, D: nn.Module, opt_G: torch.optim.Optimizer,
                 opt_D: torch.optim.Optimizer, n_critic: int = 5, gp_lambda: float = 10.0,
                 ema: EMA | None = None, aux: float = 0.0, aux_g: float | None = None):
    """One step of :func:`common.training.train` for a (conditional) WGAN-GP: every call updates
    the critic on one real batch, minimising E[D(fake)] - E[D(real)] + gradient penalty; every
    ``n_critic``-th call also updates G, minimising -E[D(fake)] (and then ``ema``, if given).

    ``aux`` > 0 adds the auxiliary classifier (AC-WGAN-GP, as in the WGAN-GP paper's conditional
    CIFAR-10 model; D must be a :class:`ProjectionDiscriminator` with one): the critic adds
    ``aux`` * cross-entropy of its class logits on the real batch, G adds ``aux_g`` (default
    ``aux``) * cross-entropy on its fakes. The penalty applies to the score only.

    Returns the losses (``loss_G`` only on the calls that update G), the mean raw scores D(x) and
    D(G(z)), the penalty, the mean ||grad D(x_hat)|| and the norm of the gradient on D's
    first-layer weights (and the classifier's losses when used)."""
    aux_g = aux if aux_g is None else aux_g
    if (aux or aux_g) and not G.conditional:
        raise ValueError("aux needs a conditional generator and discriminator")
    if aux < 0 or aux_g < 0:
        raise ValueError(f"aux and aux_g are loss weights >= 0, got {aux} and {aux_g}; 0 turns the term off")
    _check_aux(D, max(aux, aux_g))
    calls = 0

    def step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        nonlocal calls
        calls += 1
        update_G = calls % n_critic == 0
        real, labels = to_tanh_range(x), (y if G.conditional else None)
        with torch.set_grad_enabled(update_G):   # G's graph only on the calls that update G
            fake = G(torch.randn(x.shape[0], G.z_dim, device=x.device), labels)
        d_real, _, logits_real = judge(D, real, labels, logits=aux > 0)
        d_fake = D(fake.detach(), labels)
        gp, grad_norm = gradient_penalty(D, real, fake, labels, gp_lambda)
        loss_D = d_fake.mean() - d_real.mean() + gp
        out = {"loss_D": loss_D, "D(x)": d_real.mean(), "D(G(z))": d_fake.mean(), "gp": gp,
               "grad_norm_xhat": grad_norm}
        if aux:
            out["class_loss_real"] = F.cross_entropy(logits_real, labels)
            loss_D = out["loss_D"] = loss_D + aux * out["class_loss_real"]
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        out["grad_norm_D_first"] = D.first.weight.grad.norm()
        require_finite(loss_D, "loss_D")
        opt_D.step()
        if update_G:
            with frozen(D):                      # no gradient for the critic's weights here
                scores, _, logits_fake = judge(D, fake, labels, logits=aux_g > 0)
                loss_G = -scores.mean()
                if aux_g:
                    out["class_loss_fake"] = F.cross_entropy(logits_fake, labels)
                    loss_G = loss_G + aux_g * out["class_loss_fake"]
                opt_G.zero_grad(set_to_none=True)
                loss_G.backward()
            require_finite(loss_G, "loss_G")
            opt_G.step()
            if ema is not None:
                ema.update()
            out["loss_G"] = loss_G
        return out

    return step
