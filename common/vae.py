"""Variational autoencoders: the ELBO's pieces, two architectures, and ``factor_scores`` (how much
of each dSprites factor each latent dimension explains, notebook 01's measure, which
``tools/pretrain.py`` also uses).

Introduced (and written, cell by cell) in notebooks/01_vae.ipynb; reused by notebook 02 (a VAE
prior over a VQ-VAE's latents) and notebook 05 (measured by FID). Both architectures take
``image_shape``.

For an image x with latent z, encoder q(z|x) = N(mu, diag(exp(logvar))), prior p(z) = N(0, I) and
decoder p(x|z), the evidence lower bound is

    log p(x) >= ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z))

and training minimises -ELBO = recon + KL, both summed over pixels / latent dimensions, so the
loss is in nats per image. ``beta`` scales the KL term (beta = 1 is the ELBO).

``likelihood`` is "bernoulli" (the decoder outputs logits, recon = BCE) or "gaussian" (decoder
mean = sigmoid(output), recon = squared error / 2 sigma2 with a fixed ``sigma2``). With
``bounded=False`` (gaussian only) the decoder mean is the raw output, for data that are not in
[0, 1], such as the standardized VQ-VAE latents of notebook 02.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import GenerativeModel, mlp_trunk, resolution_stages
from .machinery import data
from .training import require_finite

LIKELIHOODS = ("bernoulli", "gaussian")


def check_likelihood(likelihood: str, sigma2: float | None, bounded: bool) -> None:
    """The VAE constructor's argument check: a clear error for a combination it cannot train."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    if likelihood == "gaussian" and not (sigma2 and sigma2 > 0):
        raise ValueError("a gaussian likelihood needs sigma2 > 0 (e.g. the data's pixel "
                         "variance, or the MSE of a trained model)")
    if not bounded and likelihood != "gaussian":
        raise ValueError("bounded=False (unbounded decoder mean) needs likelihood='gaussian'")


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): a sample whose gradient flows to mu and logvar."""
    eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) in closed form, summed over dimensions -> shape (B,).

    Per dimension: 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) for independent Bernoulli pixels with mean sigmoid(logits), per image (B,).

    Binary cross-entropy summed over pixels. With grey levels in [0, 1] as targets it is not a
    normalised likelihood: compare such numbers only with each other.
    """
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def gaussian_nll(x_mean: torch.Tensor, x: torch.Tensor, sigma2: float) -> torch.Tensor:
    """-log N(x; x_mean, sigma2 * I) per image (B,): squared error / (2 sigma2) + normaliser."""
    sq = (x - x_mean).pow(2).flatten(1).sum(1)
    d = x[0].numel()                                           # pixels per image, e.g. 784
    return 0.5 * sq / sigma2 + 0.5 * d * math.log(2 * math.pi * sigma2)


class VAE(GenerativeModel):
    """The ELBO of any VAE: a subclass builds ``encoder`` (x -> mu, logvar) and ``decoder`` (z -> x)."""

    def __init__(self, latent_dim: int, likelihood: str = "bernoulli", sigma2: float | None = None,
                 bounded: bool = True):
        super().__init__()
        check_likelihood(likelihood, sigma2, bounded)
        self.latent_dim, self.likelihood, self.sigma2, self.bounded = latent_dim, likelihood, sigma2, bounded
        self.mean = nn.Sigmoid() if bounded else nn.Identity()        # decoder output -> E[x | z]
        self.input_range = (0.0, 1.0) if bounded else (None, None)     # what check_batch expects

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)                   # each (B, latent_dim)
        return mu, logvar.clamp(-15, 15)  # keeps exp(logvar) finite early in training

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.mean(self.decoder(z))                              # (B, *image_shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decoder(reparameterize(mu, logvar)), mu, logvar   # decoder output for one z ~ q(z|x)

    def loss(self, x: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
        out, mu, logvar = self(x)
        recon = (bernoulli_nll(out, x) if self.likelihood == "bernoulli"       # Bernoulli: out are logits
                 else gaussian_nll(self.mean(out), x, self.sigma2)).mean()     # -log p(x|z), batch mean
        kl = gaussian_kl(mu, logvar).mean()
        return {"loss": recon + beta * kl, "recon": recon, "kl": kl}          # nats per image

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])                          # decode the posterior mean

    def _sample(self, n: int, labels=None) -> torch.Tensor:
        return self.decode(torch.randn(n, self.latent_dim, device=self.device))   # z ~ p(z) = N(0, I)


class MLPVAE(VAE):
    """(C*H*W)-hidden-latent VAE with one hidden layer each way (PyTorch example: 784-400-20)."""

    def __init__(self, image_shape: tuple, latent_dim: int = 20, hidden: int = 400,
                 likelihood: str = "bernoulli", sigma2: float | None = None, bounded: bool = True):
        super().__init__(latent_dim, likelihood, sigma2, bounded)
        self.image_shape = tuple(image_shape)
        d = math.prod(image_shape)                                     # 784 for 1x28x28
        self.trunk = mlp_trunk(d, hidden)  # same layers as MLPClassifier.trunk
        self.encoder = nn.Sequential(self.trunk, nn.Linear(hidden, 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, d), nn.Unflatten(1, self.image_shape))


class ConvVAE(VAE):
    """Stride-2 convolutions down to the coarsest grid, a dense layer of ``hidden`` units on each
    side of the latent, transposed convolutions back up; LeakyReLU(0.2)."""

    def __init__(self, image_shape: tuple, latent_dim: int = 20, channels: int = 32, hidden: int = 256,
                 likelihood: str = "bernoulli", sigma2: float | None = None):
        super().__init__(latent_dim, likelihood, sigma2)
        self.image_shape = tuple(image_shape)
        sizes = resolution_stages(image_shape)             # e.g. [7, 14, 28]
        widths = [channels * 2**i for i in range(len(sizes) - 1)]  # e.g. [32, 64] at 14x14, 7x7
        b, c_top, c_img = sizes[0], widths[-1], image_shape[0]
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        down = []
        for c_in, c_out in zip([c_img] + widths[:-1], widths):
            down += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), act()]   # halves H and W
        self.encoder = nn.Sequential(*down, nn.Flatten(), nn.Linear(c_top * b * b, hidden), act(),
                                     nn.Linear(hidden, 2 * latent_dim))
        up = [nn.Linear(latent_dim, hidden), act(), nn.Linear(hidden, c_top * b * b), act(),
              nn.Unflatten(1, (c_top, b, b))]
        for c_in, c_out in zip(widths[::-1], widths[-2::-1]):
            up += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), act()]  # doubles H and W
        self.decoder = nn.Sequential(*up, nn.ConvTranspose2d(widths[0], c_img, 4, stride=2, padding=1))  # logits


def vae_step(model: VAE, optimizer: torch.optim.Optimizer, beta: float = 1.0):
    """The step :func:`common.training.train` calls per batch: one update on recon + beta * KL."""

    def step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        losses = model.loss(x, beta)                 # y, the class labels, is unused: a VAE is unsupervised
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        require_finite(losses["loss"])               # a NaN loss stops the run before it reaches the weights
        optimizer.step()
        return losses

    return step


@torch.no_grad()
def factor_scores(model: VAE, dataset: data.ImageData) -> tuple[torch.Tensor, torch.Tensor]:
    """KL per latent dimension (nats, mean over the images) and eta^2 (latent dims x factors)."""
    model.eval()
    mu, logvar = (torch.cat(t) for t in zip(*(model.encode(x) for x, _ in dataset.batches(1000, shuffle=False))))
    kl = (0.5 * (mu**2 + logvar.exp() - 1 - logvar)).mean(0)
    eta2 = torch.zeros(mu.shape[1], len(dataset.attribute_names))
    for j in range(eta2.shape[1]):
        g = dataset.attributes[:, j]                       # each image's value of factor j
        counts = torch.bincount(g).clamp_min(1)
        means = torch.zeros(len(counts), mu.shape[1], device=mu.device).index_add_(0, g, mu) / counts[:, None]
        eta2[:, j] = (means[g].var(0) / mu.var(0)).cpu()   # between-value variance / total variance
    return kl.cpu(), eta2
